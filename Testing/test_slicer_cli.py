"""The scripted CLI run as Slicer runs it (arguments from the XML), on synthetic cases."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HER2RadiomicsCLI"))
import HER2RadiomicsCLI as CLI


def test_single_image_with_label(cohort, tmp_path, capsys):
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    img, mask = str(cohort / row["image"]), str(cohort / row["mask"])
    rc = CLI.main(["--inputVolume", img, "--inputLabel", mask, "--rings", "3,5", "--annuli",
                   "--preset", "cui2023", "--outputLabel", str(tmp_path / "labels.nrrd"),
                   "--outputTable", str(tmp_path / "out.tsv")])
    assert rc == 0
    out = capsys.readouterr().out
    fractions = [float(v) for v in
                 __import__("re").findall(r"<filter-progress>([\d.]+)</filter-progress>", out)]
    assert fractions[0] < fractions[-1] == 1.0 and fractions == sorted(fractions)
    t = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    loaded, m = load_case(img, mask)
    regs = build_regions(loaded.image, m, "3,5", annuli=True)
    ref, _ = FeatureExtractor("cui2023").extract(loaded.image, regs.masks)
    assert np.allclose(t.loc[0, list(ref)].to_numpy(float), list(ref.values()), equal_nan=True)
    assert t.loc[0, "mask_source"] == "label map"
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nrrd")))
    assert set(np.unique(lab)) == {0, 1, 2, 3}            # tumour, 0-3 mm, 3-5 mm
    assert (lab == 1).sum() == (sitk.GetArrayFromImage(m) > 0).sum()


def test_cnn_when_no_label_and_manifest_keeps_going(cohort, tmp_path, capsys):
    rows = pd.read_csv(cohort / "cohort.csv").iloc[:2]
    (tmp_path / "no.png").write_bytes(b"exists but unreadable")
    man = pd.DataFrame({"case_id": list(rows.case_id) + ["BAD", "GONE"],
                        "image": [str(cohort / p) for p in rows.image]
                        + [str(tmp_path / "no.png"), str(tmp_path / "missing.png")],
                        "mask": [str(cohort / p) for p in rows["mask"]] + ["", ""]})
    man.to_csv(tmp_path / "m.csv", index=False)
    rc = CLI.main(["--manifest", str(tmp_path / "m.csv"), "--preset", "cui2023", "--rings", "3",
                   "--outputTable", str(tmp_path / "m.csv.out.csv"),
                   "--outputErrors", str(tmp_path / "failed.tsv")])
    # Slicer reads the tables back only after exit 0: the cases that worked must arrive
    assert rc == 0
    got = capsys.readouterr()
    assert got.err == ""                       # Slicer logs any stderr as an error
    t = pd.read_csv(tmp_path / "m.csv.out.csv")
    assert t.case_id.tolist() == list(rows.case_id)
    f = pd.read_csv(tmp_path / "failed.tsv", sep="\t")
    assert f.case_id.tolist() == ["BAD", "GONE"]
    assert f.file.tolist() == [str(tmp_path / "no.png"), str(tmp_path / "missing.png")]
    assert "cannot read image" in f.error[0] and "file not found" in f.error[1]
    # single image without a label: the CNN draws it
    rc = CLI.main(["--inputVolume", str(cohort / rows.image.iloc[0]), "--preset", "cui2023",
                   "--rings", "3", "--outputTable", str(tmp_path / "cnn.tsv"),
                   "--caseId", "left breast 10 o'clock"])
    assert rc == 0
    one = pd.read_csv(tmp_path / "cnn.tsv", sep="\t")
    assert one.loc[0, "mask_source"] == "CNN auto-mask"
    assert one.loc[0, "case_id"] == "left breast 10 o'clock"


def test_manifest_where_nothing_succeeds_is_one_error_line(cohort, tmp_path, capsys):
    pd.DataFrame({"case_id": ["A"], "image": [str(tmp_path / "gone.png")], "mask": [""]}).to_csv(
        tmp_path / "m.csv", index=False)
    rc = CLI.main(["--manifest", str(tmp_path / "m.csv"), "--outputTable",
                   str(tmp_path / "o.tsv"), "--outputErrors", str(tmp_path / "e.tsv")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'm.csv'}: no case succeeded")
    assert not (tmp_path / "o.tsv").exists()


@pytest.mark.parametrize("args, words", [
    ([], "--inputVolume"),
    (["--inputVolume", "x.png", "--spacingMm", "0,1"], "two positive numbers"),
    (["--inputVolume", "x.png", "--clinical", "age"], "name=value"),
])
def test_bad_arguments_exit_2_with_one_line(args, words, capsys):
    assert CLI.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_clinical_values_in_every_accepted_form():
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.modelling.clinical import parse_clinical
    want = {"age": 52.0, "er": 1.0, "ki67": 30.5}
    assert parse_clinical("age=52, er=1; ki67=30.5") == want          # panel / Slicer CLI
    assert parse_clinical(["age=52", "er=1", "ki67=30.5"]) == want    # her2radiomics --clinical
    assert parse_clinical("") == {}
    with pytest.raises(InputError, match="must be a number"):
        parse_clinical("age=old")


def test_output_label_keeps_the_input_volumes_3d_geometry(cohort, tmp_path):
    """Slicer hands the CLI a one-slice 3D volume; the label map must come back on that grid
    (origin, spacing, direction) to overlay it, not as a 2D image at z = 0 (issue 15, item 8)."""
    from HER2RadiomicsLib.imaging.io import load_case
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    loaded, m = load_case(cohort / row["image"], cohort / row["mask"])
    vol = sitk.JoinSeries(loaded.image)
    vol.SetOrigin((-12.0, 30.5, 42.25))
    vol.SetSpacing(loaded.image.GetSpacing() + (2.5,))
    vol.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))          # RAS-flipped, as Slicer writes
    msk = sitk.JoinSeries(sitk.Cast(m, sitk.sitkUInt8))
    msk.CopyInformation(vol)
    sitk.WriteImage(vol, str(tmp_path / "vol.nrrd"))
    sitk.WriteImage(msk, str(tmp_path / "msk.nrrd"))
    rc = CLI.main(["--inputVolume", str(tmp_path / "vol.nrrd"), "--inputLabel",
                   str(tmp_path / "msk.nrrd"), "--rings", "3", "--preset", "cui2023",
                   "--outputLabel", str(tmp_path / "labels.nrrd")])
    assert rc == 0
    lab = sitk.ReadImage(str(tmp_path / "labels.nrrd"))
    assert lab.GetDimension() == 3 and lab.GetSize() == vol.GetSize()
    assert lab.GetOrigin() == vol.GetOrigin() and lab.GetDirection() == vol.GetDirection()
    assert lab.GetSpacing() == pytest.approx(vol.GetSpacing())
    arr = sitk.GetArrayFromImage(lab)[0]
    assert ((arr == 1) == (sitk.GetArrayFromImage(m) > 0)).all()   # the tumour, in place
    assert (arr == 2).any()                                          # and its ring


def test_library_is_found_from_a_multi_configuration_build_tree(tmp_path):
    tree = tmp_path / "lib" / "Slicer-5.10"
    (tree / "qt-scripted-modules" / "Release" / "HER2RadiomicsLib").mkdir(parents=True)
    here = tree / "cli-modules" / "Release"
    found = [c for c in CLI.libraryCandidates(str(here))
             if (Path(c) / "HER2RadiomicsLib").is_dir()]
    assert found == [str(tree / "qt-scripted-modules" / "Release")]


def test_manifest_runs_through_the_batch_engine_and_resumes(cohort, tmp_path, capsys,
                                                            monkeypatch):
    """Manifest mode uses the library's batch engine: parallel workers, progress lines, CNN
    masks; with --resume a rerun into the same table recomputes nothing, and without it
    every case is computed afresh (issue 15, item 11; issue 26, D2)."""
    import HER2RadiomicsLib.extraction.batch as B
    rows = pd.read_csv(cohort / "cohort.csv").iloc[:3]
    man = pd.DataFrame({"case_id": list(rows.case_id),
                        "image": [str(cohort / p) for p in rows.image],
                        "mask": [str(cohort / rows["mask"].iloc[0]), "",
                                 str(cohort / rows["mask"].iloc[2])]})
    man.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "cohort.tsv"
    args = ["--manifest", str(tmp_path / "m.csv"), "--preset", "cui2023", "--rings", "3",
            "--outputTable", str(out), "--resume"]
    assert CLI.main(args + ["--jobs", "2"]) == 0
    text = capsys.readouterr().out
    fractions = [float(v) for v in
                 __import__("re").findall(r"<filter-progress>([\d.]+)</filter-progress>", text)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5
    t = pd.read_csv(out, sep="\t")
    assert t.case_id.tolist() == list(rows.case_id)
    assert t.mask_source.tolist() == ["label map", "CNN auto-mask", "label map"]
    assert (tmp_path / "cohort.tsv.work" / "masks" / f"{rows.case_id.iloc[1]}.nrrd").exists()
    # the rerun reuses every finished case and the CNN mask: nothing is computed again
    computed = []
    real = B._safe_case
    monkeypatch.setattr(B, "_safe_case", lambda *a, **k: computed.append(1) or real(*a, **k))
    import HER2RadiomicsLib.segmentation.inference as S
    monkeypatch.setattr(S, "get_segmenter", lambda *a, **k: pytest.fail("CNN rerun"))
    before = t.copy()
    assert CLI.main(args) == 0
    assert computed == []
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t"), before)
    # without --resume nothing of that work is looked at
    monkeypatch.undo()
    assert CLI.main(args[:-1]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t"), before)


def _tiny_bundle(path, feats):
    """A five-feature tumour-only bundle whose features vary around one real case's values;
    returns the bundle's path and its input columns."""
    from test_bundle_allowlist import _pipeline
    from HER2RadiomicsLib.extraction.features import load_params
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    cols = [c for c in feats if "firstorder" in c][:5]
    rng = np.random.default_rng(0)
    X = pd.DataFrame([{c: feats[c] * (1 + 0.1 * rng.normal()) for c in cols} for _ in range(60)])
    y = (X[cols[0]] > X[cols[0]].median()).astype(int).to_numpy()
    bundle = save_bundle(path, {"pipeline": _pipeline(X, y), "nomogram": None},
                         {"name": "t", "classes": ["zero", "low"], "positive_class": "1",
                          "input_columns": cols, "threshold": 0.5, "regions": ["tumor"],
                          "rings": {}, "params_name": "cui2023",
                          "params_yaml": load_params("cui2023")[1], "batch_col": None})
    return bundle, cols


def test_manifest_with_a_bundle_extracts_its_features_and_predicts(cohort, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    rows = pd.read_csv(cohort / "cohort.csv").iloc[:2]
    loaded, m = load_case(cohort / rows.image.iloc[0], cohort / rows["mask"].iloc[0])
    feats, _ = FeatureExtractor("cui2023").extract(loaded.image, {"tumor": m})
    bundle, cols = _tiny_bundle(tmp_path / "b.zip", feats)
    pd.DataFrame({"case_id": rows.case_id, "image": [str(cohort / p) for p in rows.image],
                  "mask": [str(cohort / p) for p in rows["mask"]]}).to_csv(
        tmp_path / "m.csv", index=False)
    rc = CLI.main(["--manifest", str(tmp_path / "m.csv"), "--bundle", str(bundle),
                   "--outputTable", str(tmp_path / "p.csv")])
    assert rc == 0, capsys.readouterr().err
    t = pd.read_csv(tmp_path / "p.csv")
    assert t.prediction_predicted_class.isin(["zero", "low"]).all()
    assert np.isclose(t.loc[0, cols[0]], feats[cols[0]], rtol=1e-9)


def test_single_image_cnn_prompt_mask_and_details(cohort, tmp_path, capsys):
    """What the panel's Auto-segment runs in the CLI's process: the CNN with a prompt, the
    mask on the input's grid, the confidence and flags as JSON (issue 26, GUI thread)."""
    import json
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    img = str(cohort / row["image"])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / row["mask"]))) > 0
    ys, xs = np.nonzero(truth)
    cx, cy = int(xs.mean()), int(ys.mean())
    rc = CLI.main(["--inputVolume", img, "--prompt", f"click:{cx},{cy}",
                   "--outputMask", str(tmp_path / "m.nrrd"),
                   "--outputJson", str(tmp_path / "d.json")])
    assert rc == 0 and capsys.readouterr().err == ""
    m = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nrrd"))).squeeze() > 0
    assert m[cy, cx]                                      # the clicked lesion
    assert 2 * (m & truth).sum() / (m.sum() + truth.sum()) > 0.6
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["cnn"]["prompt"] == "click" and 0 < d["cnn"]["confidence"] <= 1
    assert CLI.main(["--inputVolume", img, "--prompt", "box:1,2", "--outputMask",
                     str(tmp_path / "x.nrrd")]) == 2
    assert "expected box:X0,Y0,X1,Y1" in capsys.readouterr().err


def test_prediction_and_report_come_from_one_extraction(cohort, tmp_path, monkeypatch):
    """Predict + report in the CLI's process: one extraction of the bundle's regions gives the
    features, the prediction and the report (before: the preset's features, then the bundle's
    again, then the report's a third time)."""
    import json
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.modelling.predict import predict_case
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    img, mask = cohort / row["image"], cohort / row["mask"]
    loaded, m = load_case(img, mask)
    feats, _ = FeatureExtractor("cui2023").extract(loaded.image, {"tumor": m})
    bundle, cols = _tiny_bundle(tmp_path / "b.zip", feats)
    calls = []
    real = FeatureExtractor.extract
    monkeypatch.setattr(FeatureExtractor, "extract",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    rc = CLI.main(["--inputVolume", str(img), "--inputLabel", str(mask), "--bundle",
                   str(bundle), "--caseId", "P1", "--outputTable", str(tmp_path / "o.tsv"),
                   "--outputJson", str(tmp_path / "d.json"),
                   "--outputReport", str(tmp_path / "r.html")])
    assert rc == 0 and len(calls) == 1
    monkeypatch.setattr(FeatureExtractor, "extract", real)
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    ref = predict_case(load_bundle(bundle), img, mask, case_id="P1")
    d = json.loads((tmp_path / "d.json").read_text())["prediction"]
    assert d["predicted_class"] == ref.predicted_class
    for k, v in ref.probabilities.items():
        assert d["probabilities"][k] == pytest.approx(v, abs=1e-12)
    t = pd.read_csv(tmp_path / "o.tsv", sep="\t")
    assert t.loc[0, cols[0]] == pytest.approx(feats[cols[0]], rel=1e-9)
    page = (tmp_path / "r.html").read_text()
    assert "Research use only" in page and ref.predicted_class in page
