"""``reader-study`` reads readers' contours from DICOM SEG files: a ``seg`` column in the
manifest, or a folder of SEGs matched by the image each references and its content creator
(the newest per image and reader). A SEG of another image stops the run in one line.

References are independent of the code under test: the masks given to the SEG writer, and a
Dice computed here from those arrays.
"""
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")

from us_dicom import dice, lesion, us_image  # noqa: E402

from HER2RadiomicsLib.cli import main  # noqa: E402
from HER2RadiomicsLib.pacs import seg as dseg  # noqa: E402

CENTRES = [(30, 40), (28, 36), (34, 44)]
#: reader -> pixels wider than the lesion its contour is
GROW = {"R1": 0, "R2": 2}


def _seg(image_path, mask, reader, path, when=None):
    from pydicom.uid import generate_uid
    ds = dseg.build_seg(pydicom.dcmread(image_path), {"tumor": mask}, dseg.Algorithm("MANUAL"),
                        series_uid=generate_uid(), sop_uid=generate_uid(),
                        content_creator=f"{reader}^")
    if when:
        ds.ContentDate, ds.ContentTime = when
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


@pytest.fixture
def cases(tmp_path):
    """Three DICOM cases, each contoured by R1 and R2 as SEG files."""
    rows = []
    for i, centre in enumerate(CENTRES):
        img = us_image(tmp_path / "images" / f"c{i}.dcm", seed=i, centre=centre)
        for reader, grow in GROW.items():
            seg = _seg(img, lesion(centre=centre, grow=grow), reader,
                       tmp_path / "segs" / f"c{i}_{reader}.dcm")
            rows.append({"case_id": f"c{i}", "image": f"images/c{i}.dcm", "reader": reader,
                         "seg": f"segs/{seg.name}"})
    return tmp_path, pd.DataFrame(rows)


def _expected_dice(i):
    return dice(lesion(centre=CENTRES[i], grow=GROW["R1"]),
                lesion(centre=CENTRES[i], grow=GROW["R2"]))


def test_a_seg_column_gives_the_readers_contours(cases, capsys):
    root, rows = cases
    rows.to_csv(root / "m.csv", index=False)
    out = root / "study"
    rc = main(["reader-study", "--manifest", str(root / "m.csv"), "--out", str(out),
               "--no-progress"])
    assert rc in (0, 1), capsys.readouterr().err
    for i, centre in enumerate(CENTRES):          # the label maps hold the SEGs' pixels
        for reader, grow in GROW.items():
            m = sitk.ReadImage(str(out / "seg_contours" / f"c{i}@{reader}.nrrd"))
            assert np.array_equal(sitk.GetArrayFromImage(m) > 0,
                                  lesion(centre=centre, grow=grow))
            assert m.GetSpacing() == pytest.approx((0.1, 0.1))
    agree = pd.read_csv(out / "agreement.csv").set_index("case_id")   # 6 significant digits
    for i in range(len(CENTRES)):
        assert agree.loc[f"c{i}", "dice"] == pytest.approx(_expected_dice(i), abs=1e-5)
    assert (out / "icc.csv").exists()


def test_a_seg_folder_is_matched_by_image_and_creator_newest_first(cases, capsys):
    root, rows = cases
    # an older SEG of R1 on c0 (a different, smaller contour) must lose to the newer one
    img0 = root / "images" / "c0.dcm"
    _seg(img0, lesion(centre=CENTRES[0], grow=-4), "R1", root / "segs" / "old_R1.dcm",
         when=("19990101", "000000"))
    # a SEG of an image outside the manifest is ignored, with a warning
    other = us_image(root / "other" / "x.dcm", seed=9)
    _seg(other, lesion(), "R1", root / "segs" / "foreign.dcm")
    rows[["case_id", "image"]].drop_duplicates().to_csv(root / "cohort.csv", index=False)
    out = root / "study"
    rc = main(["reader-study", "--manifest", str(root / "cohort.csv"), "--seg-dir",
               str(root / "segs"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc in (0, 1), err
    assert "1 SEG(s) reference no image of the manifest" in err
    man = pd.read_csv(out / "seg_contours" / "reader_manifest.csv")
    assert sorted(man["reader"].unique()) == ["R1", "R2"] and len(man) == 6
    assert not man["seg"].str.endswith("old_R1.dcm").any()
    agree = pd.read_csv(out / "agreement.csv").set_index("case_id")   # 6 significant digits
    assert agree.loc["c0", "dice"] == pytest.approx(_expected_dice(0), abs=1e-5)


def test_a_seg_of_another_image_is_one_line_and_writes_nothing(cases, capsys):
    root, rows = cases
    wrong = rows.copy()
    wrong.loc[0, "seg"] = rows.loc[2, "seg"]        # c0's row names a SEG of c1's image
    wrong.to_csv(root / "m.csv", index=False)
    out = root / "study"
    rc = main(["reader-study", "--manifest", str(root / "m.csv"), "--out", str(out),
               "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert str(root / rows.loc[2, "seg"]) in err[0] and "references image" in err[0]
    assert not out.exists()


def test_a_seg_on_a_png_or_without_a_reader_is_refused_in_one_line(cases, capsys):
    root, rows = cases
    png = root / "c0.png"
    sitk.WriteImage(sitk.Image(80, 64, sitk.sitkUInt8), str(png))
    bad = rows.copy()
    bad.loc[0, "image"] = "c0.png"
    bad.to_csv(root / "m.csv", index=False)
    assert main(["reader-study", "--manifest", str(root / "m.csv"), "--out",
                 str(root / "o1"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(png) in err[0] and "DICOM" in err[0], err
    rows[["case_id", "image"]].drop_duplicates().to_csv(root / "cohort.csv", index=False)
    (root / "empty").mkdir()
    assert main(["reader-study", "--manifest", str(root / "cohort.csv"), "--seg-dir",
                 str(root / "empty"), "--out", str(root / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no DICOM SEG" in err[0], err
