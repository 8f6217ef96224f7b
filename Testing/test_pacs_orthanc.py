"""``pacs run`` and ``pacs query`` against a real Orthanc (Debian's orthanc + orthanc-dicomweb)
started once for this module on a free loopback port.

References are independent of the code under test: the features come from ``extract`` on the
same image and mask files, the rings from the library's ``build_regions``, the SEG's pixels are
decoded by highdicom and the SR's values read through highdicom's SR API; the stored objects are
fetched with dicomweb-client directly and validated by dciodvfy.
"""
import csv
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pytest.importorskip("dicomweb_client", reason="the [pacs] extra (dicomweb-client) is not installed")
pydicom = pytest.importorskip("pydicom")

from HER2RadiomicsLib.pacs import orthanc as local  # noqa: E402

pytestmark = pytest.mark.skipif(bool(local.missing_reason()), reason=local.missing_reason()
                                or "Orthanc present")
DCIODVFY = shutil.which("dciodvfy")
SMALL_PARAMS = """\
setting: {label: 1, binWidth: 5, minimumROIDimensions: 2, minimumROISize: 16}
imageType: {Original: {}}
featureClass: {shape2D: , firstorder: , glcm: }
"""
RINGS = "3,5"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc with the synthetic cohort's images (three patients, one image each used)."""
    from dicomweb_client.api import DICOMwebClient
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    root = tmp_path_factory.mktemp("pacs")
    generate_cohort(root / "cohort", n_cases=4, seed=7, reader_fraction=0.0)
    with open(root / "cohort" / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    params = root / "small.yaml"
    params.write_text(SMALL_PARAMS)
    with local.LocalOrthanc() as server:
        client = DICOMwebClient(server.dicomweb_url)
        cases = {}
        for r in rows:
            ds = pydicom.dcmread(root / "cohort" / r["image"])
            if ds.StudyInstanceUID in {c["study"] for c in cases.values()}:
                continue                        # one image per study keeps the module fast
            client.store_instances([ds])
            cases[r["case_id"]] = {"study": ds.StudyInstanceUID, "sop": ds.SOPInstanceUID,
                                   "image": root / "cohort" / r["image"],
                                   "mask": root / "cohort" / r["mask"], "ds": ds}
        yield {"server": server, "client": client, "cases": list(cases.values()),
               "params": params, "root": root}


def _reader_seg(case, study=None):
    """The synthetic reader's contour as a MANUAL SEG of the case's image."""
    import SimpleITK as sitk
    from pydicom.uid import generate_uid
    from HER2RadiomicsLib.pacs import seg as dseg
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case["mask"]))) > 0
    ds = dseg.build_seg(case["ds"], {"tumor": mask}, dseg.Algorithm("MANUAL"),
                        series_uid=generate_uid(), sop_uid=generate_uid(),
                        series_description="Reader contour", content_creator="Reader^A")
    if study:
        ds.StudyInstanceUID = study
    return ds, mask


def _run(pacs, case, out, *extra):
    from HER2RadiomicsLib.cli import main
    return main(["pacs", "run", "--url", pacs["server"].dicomweb_url, "--study", case["study"],
                 "--params", str(pacs["params"]), "--rings", RINGS, "--out", str(out), *extra])


def _ours(pacs, study, modality):
    """The instances of ``modality`` the tool stored in ``study``, fetched with
    dicomweb-client."""
    client = pacs["client"]
    out = []
    for s in client.search_for_series(study, search_filters={"Modality": modality}):
        series = s["0020000E"]["Value"][0]
        for i in client.search_for_instances(study, series):
            ds = client.retrieve_instance(study, series, i["00080018"]["Value"][0])
            if str(ds.SeriesDescription).startswith("HER2Radiomics"):
                out.append(ds)
    return out


def _count(pacs, study) -> int:
    return len(pacs["client"].search_for_instances(study))


def _errors(path):
    res = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_round_trip_seg_in_features_seg_and_sr_out(pacs, tmp_path, capsys):
    import highdicom as hd
    from HER2RadiomicsLib.cli import main
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    from HER2RadiomicsLib.pacs import codes
    import SimpleITK as sitk
    case = pacs["cases"][0]
    seg_in, mask = _reader_seg(case)
    seg_in.ContentDate = "20200101"                     # drawn long before this run
    pacs["client"].store_instances([seg_in])
    assert _run(pacs, case, tmp_path / "run1") == 0
    # features.csv: the same columns and values as `extract` on the image and mask files
    ref = tmp_path / "extract.csv"
    assert main(["extract", "--image", str(case["image"]), "--mask", str(case["mask"]),
                 "--case-id", case["sop"], "--params", str(pacs["params"]), "--rings", RINGS,
                 "--out", str(ref), "--no-progress"]) == 0
    got, want = _read_csv(tmp_path / "run1" / "features.csv"), _read_csv(ref)
    assert list(got[0]) == list(want[0]) and got == want
    # the stored SEG: lesion = the input contour, rings = the library's rings
    (seg,) = _ours(pacs, case["study"], "SEG")
    parsed = hd.seg.Segmentation.from_dataset(seg)
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    pixels = parsed.get_pixels_by_source_instance(
        [case["sop"]], segment_numbers=list(range(1, len(labels) + 1)))[0]
    assert labels[0] == "tumor" and np.array_equal(pixels[..., 0] > 0, mask)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    loaded, m = load_case(case["image"], case["mask"])
    regions = build_regions(loaded, m, [3.0, 5.0])
    assert labels == list(regions.masks)
    for i, name in enumerate(labels):
        assert np.array_equal(pixels[..., i] > 0, sitk.GetArrayFromImage(regions.masks[name]) > 0)
    # the stored SR: every CSV number, in its region's group, referencing that region's segment
    (sr,) = _ours(pacs, case["study"], "SR")
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content \
        .get_volumetric_roi_measurement_groups()
    by_region = {}
    for g in groups:
        region = str(g.tracking_identifier)
        ref_seg = g.referenced_segment[0].ReferencedSOPSequence[0]
        assert ref_seg.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert labels[int(ref_seg.ReferencedSegmentNumber) - 1] == region
        by_region[region] = {(str(x.name.value), str(x.name.scheme_designator),
                              str(x.method.meaning)): x.value for x in g.get_measurements()}
    n = 0
    for column, value in want[0].items():
        if "__" not in column or value == "":
            continue
        region, _, key = column.partition("__")
        (cv, cs, _), (_, _, method), _ = codes.feature_code(key)
        assert by_region[region][(cv, cs, method)] == float(value), column
        n += 1
    assert n == sum(len(v) for v in by_region.values())          # nothing more, nothing less
    if DCIODVFY:
        for name, ds in (("seg", seg), ("sr", sr)):
            ds.save_as(tmp_path / f"{name}.dcm")
            assert _errors(tmp_path / f"{name}.dcm") == [], name
    # Slicer's converter (dcmqi) gives the archive's SEG back on the image's calibration
    from test_pacs_dcmqi import SEG2ITK, _labels
    if SEG2ITK:
        seg.save_as(tmp_path / "seg_dcmqi.dcm")
        converted = _labels(tmp_path / "seg_dcmqi.dcm", tmp_path / "dcmqi")
        assert list(converted) == labels
        for name, (img, value) in converted.items():
            assert img.GetSpacing()[:2] == pytest.approx(loaded.image.GetSpacing(), rel=1e-9)
            assert np.array_equal(sitk.GetArrayFromImage(img)[0] == value,
                                  sitk.GetArrayFromImage(regions.masks[name]) > 0), name
    # a second run adds nothing to the archive
    before = _count(pacs, case["study"])
    capsys.readouterr()
    assert _run(pacs, case, tmp_path / "run1") == 0            # into the same folder
    assert _count(pacs, case["study"]) == before
    assert "SEG already there, SR already there" in capsys.readouterr().out
    assert _read_csv(tmp_path / "run1" / "features.csv") == want
    # a reader's new contour wins over the run's own SEG even when drawn (ContentDate) before it
    import scipy.ndimage as ndi
    from pydicom.uid import generate_uid
    from HER2RadiomicsLib.pacs import seg as dseg
    smaller = ndi.binary_erosion(mask, iterations=2)
    late = dseg.build_seg(case["ds"], {"tumor": smaller}, dseg.Algorithm("MANUAL"),
                          series_uid=generate_uid(), sop_uid=generate_uid())
    late.ContentDate = "20210101"          # after the first contour, before this tool's SEG
    assert str(late.ContentDate) < str(seg.ContentDate)
    pacs["client"].store_instances([late])
    assert _run(pacs, case, tmp_path / "run1") == 0
    assert f"SEG {late.SOPInstanceUID} segment 1 (MANUAL); SEG stored, SR stored" \
        in capsys.readouterr().out
    assert _count(pacs, case["study"]) == before + 3          # the reader's, a SEG and an SR


def test_cnn_contour_and_prediction_are_stored(pacs, tmp_path):
    pytest.importorskip("torch")
    from pathlib import Path
    from HER2RadiomicsLib.pacs import sr as dsr
    bundle = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing" \
        / "model_bundle.zip"
    case = pacs["cases"][1]
    assert _run(pacs, case, tmp_path / "out", "--bundle", str(bundle), "--site", "A") == 0
    (seg,) = _ours(pacs, case["study"], "SEG")
    lesion = seg.SegmentSequence[0]
    assert lesion.SegmentAlgorithmType == "AUTOMATIC"
    assert "CNN" in lesion.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
    (sr,) = _ours(pacs, case["study"], "SR")
    content = dsr.read_sr(sr)
    report = (tmp_path / "out" / "reports" / f"{case['sop']}.html").read_text()
    assert content.prediction["predicted_class"] in content.prediction["probabilities"]
    assert abs(sum(content.prediction["probabilities"].values()) - 1) < 1e-9
    assert content.prediction["model"]["name"] == "peritumoral2025"
    assert len(content.prediction["model"]["digest"]) == 64
    assert "CNN auto-mask" in report


def test_query_lists_what_the_tool_stored(pacs, capsys):
    from HER2RadiomicsLib.cli import main
    assert main(["pacs", "query", "--url", pacs["server"].dicomweb_url]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == len(pacs["cases"])
    assert "modalities" in out and "US" in out
    study = pacs["cases"][0]["study"]
    assert main(["pacs", "query", "--url", pacs["server"].dicomweb_url, "--study", study]) == 0
    out = capsys.readouterr().out
    assert "[HER2Radiomics]" in out or "stored by HER2Radiomics: nothing" in out
    ours = [ln for ln in out.splitlines() if ln.endswith("[HER2Radiomics]")]
    assert ours and not any(" date - " in ln for ln in ours)     # the tool's series are dated


def test_a_killed_parent_takes_its_orthanc_with_it(tmp_path):
    """``kill -9`` of the process that started Orthanc (``pacs demo``) stops Orthanc too."""
    import os
    import signal
    import sys
    import time
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    code = ("from HER2RadiomicsLib.pacs.orthanc import LocalOrthanc; import time\n"
            "s = LocalOrthanc().start(); print(s.process.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("Orthanc outlived its parent")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unreachable_server_is_one_line(tmp_path, capsys):
    port = local._free_port()                           # nothing listens there
    from HER2RadiomicsLib.cli import main
    assert main(["pacs", "run", "--url", f"http://127.0.0.1:{port}/dicom-web", "--study", "1.2.3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot reach the server (connection refused)" in _one_error_line(capsys)
    # a query string (a token, say) in --url is refused and never echoed back
    assert main(["pacs", "query", "--url",
                 f"http://127.0.0.1:{port}/dicom-web?access_token=SECRET"]) == 2
    line = _one_error_line(capsys)
    assert "SECRET" not in line and "no query string" in line


def test_wrong_credentials_are_one_line(tmp_path, capsys, monkeypatch):
    from HER2RadiomicsLib.cli import main
    for name in ("HER2RADIOMICS_PACS_TOKEN", "HER2RADIOMICS_PACS_USER"):
        monkeypatch.delenv(name, raising=False)
    with local.LocalOrthanc(users={"alice": "right"}) as server:
        assert main(["pacs", "query", "--url", server.dicomweb_url]) == 2
        assert "the server requires credentials (HTTP 401): set HER2RADIOMICS_PACS_TOKEN" \
            in _one_error_line(capsys)
        monkeypatch.setenv("HER2RADIOMICS_PACS_USER", "alice")
        monkeypatch.setenv("HER2RADIOMICS_PACS_PASSWORD", "wrong")
        assert main(["pacs", "query", "--url", server.dicomweb_url]) == 2
        assert "refused the credentials (HTTP 401)" in _one_error_line(capsys)
        monkeypatch.setenv("HER2RADIOMICS_PACS_PASSWORD", "right")
        assert main(["pacs", "query", "--url", server.dicomweb_url]) == 0


def test_a_study_without_ultrasound_is_one_line(pacs, tmp_path, capsys):
    from pydicom.uid import generate_uid
    ds = pydicom.Dataset(pacs["cases"][0]["ds"])
    ds = pydicom.dcmread(pacs["cases"][0]["image"])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"                                   # a secondary capture, not ultrasound
    pacs["client"].store_instances([ds])
    from HER2RadiomicsLib.cli import main
    assert main(["pacs", "run", "--url", pacs["server"].dicomweb_url, "--study",
                 ds.StudyInstanceUID, "--out", str(tmp_path / "o")]) == 2
    assert "has no ultrasound image (it holds OT)" in _one_error_line(capsys)


def test_a_seg_of_another_image_is_one_line_and_the_rest_runs(pacs, tmp_path, capsys):
    case, other = pacs["cases"][2], pacs["cases"][0]
    stray, _ = _reader_seg(other, study=case["study"])  # in this study, of another's image
    own, _ = _reader_seg(case)
    pacs["client"].store_instances([stray, own])
    assert _run(pacs, case, tmp_path / "o") == 1          # the image itself is done
    line = _one_error_line(capsys)
    assert f"SEG {stray.SOPInstanceUID} references image {other['sop']}" in line
    assert len(_read_csv(tmp_path / "o" / "features.csv")) == 1


def test_fetch_makes_a_manifest_extract_reads_as_files(pacs, tmp_path):
    from HER2RadiomicsLib.cli import main
    case = pacs["cases"][3]
    seg, mask = _reader_seg(case)
    pacs["client"].store_instances([seg])
    out = tmp_path / "fetched"
    assert main(["pacs", "fetch", "--url", pacs["server"].dicomweb_url, "--study", case["study"],
                 "--out", str(out)]) == 0
    (row,) = _read_csv(out / "manifest.csv")
    assert row["case_id"] == case["sop"] and row["mask"] == f"masks/{case['sop']}.png"
    assert (out / row["image"]).read_bytes() != b""
    common = ["--params", str(pacs["params"]), "--rings", RINGS, "--no-progress"]
    assert main(["extract", "--manifest", str(out / "manifest.csv"), *common,
                 "--out", str(tmp_path / "pacs.csv")]) == 0
    assert main(["extract", "--image", str(case["image"]), "--mask", str(case["mask"]),
                 "--case-id", case["sop"], *common, "--out", str(tmp_path / "files.csv")]) == 0
    assert _read_csv(tmp_path / "pacs.csv") == _read_csv(tmp_path / "files.csv")


def test_reader_picks_that_readers_seg_among_several(pacs, tmp_path):
    """Two readers' station SEGs of one image: the newest wins by default, ``--reader`` takes
    the named reader's contour whatever its date, and a reader with none leaves no contour."""
    import SimpleITK as sitk
    from HER2RadiomicsLib.cli import main
    case = pacs["cases"][1]
    seg_a, mask_a = _reader_seg(case)                    # Reader^A: the synthetic contour
    seg_b, _ = _reader_seg(case)
    mask_b = np.zeros_like(mask_a)
    ys, xs = np.nonzero(mask_a)
    mask_b[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True   # Reader^B: its bounding box
    from pydicom.uid import generate_uid
    from HER2RadiomicsLib.pacs import seg as dseg
    seg_b = dseg.build_seg(case["ds"], {"tumor": mask_b}, dseg.Algorithm("MANUAL"),
                           series_uid=generate_uid(), sop_uid=generate_uid(),
                           series_description="Reader contour", content_creator="Reader^B")
    seg_a.ContentDate, seg_a.ContentTime = "20260101", "100000"
    seg_b.ContentDate, seg_b.ContentTime = "20260102", "100000"      # B saved last
    pacs["client"].store_instances([seg_a, seg_b])

    def fetched(*extra):
        out = tmp_path / f"f{len(list(tmp_path.iterdir()))}"
        rc = main(["pacs", "fetch", "--url", pacs["server"].dicomweb_url, "--study",
                   case["study"], "--out", str(out), *extra])
        if rc == 1:
            return None
        assert rc == 0
        (row,) = _read_csv(out / "manifest.csv")
        if not row["mask"]:
            return None
        return sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["mask"]))) > 0

    assert np.array_equal(fetched(), mask_b)
    assert np.array_equal(fetched("--reader", "Reader^A"), mask_a)
    assert np.array_equal(fetched("--reader", "Reader^B"), mask_b)
    assert fetched("--reader", "Reader^A") is not None


def test_reader_names_the_station_writes_match_and_others_are_left_out(pacs, tmp_path, capsys):
    """The station writes ``R1^`` (a DICOM PN): ``--reader R1`` takes it; a reader who did not
    contour the image gets one error line and the image is left out (no CNN contour)."""
    from pydicom.uid import generate_uid
    from HER2RadiomicsLib.pacs import seg as dseg
    from HER2RadiomicsLib.pacs.reader_segs import person_name
    case = pacs["cases"][2]
    import SimpleITK as sitk
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case["mask"]))) > 0
    seg = dseg.build_seg(case["ds"], {"tumor": mask}, dseg.Algorithm("MANUAL"),
                         series_uid=generate_uid(), sop_uid=generate_uid(),
                         content_creator=person_name("R1"))
    assert str(seg.ContentCreatorName) == "R1^"
    pacs["client"].store_instances([seg])
    capsys.readouterr()
    assert _run(pacs, case, tmp_path / "r1", "--reader", "R1", "--no-store") == 0
    assert f"SEG {seg.SOPInstanceUID} segment 1 (MANUAL)" in capsys.readouterr().out
    assert _run(pacs, case, tmp_path / "r9", "--reader", "R9", "--no-store") == 2
    line = _one_error_line(capsys)
    assert f"image {case['sop']} of study {case['study']}: no SEG of reader R9" in line
    assert not (tmp_path / "r9" / "features.csv").exists()


def test_another_site_gives_another_sr_and_the_same_site_no_duplicate(pacs, tmp_path):
    """The SR's UID follows its content: ``--site B`` after ``--site A`` stores a second SR
    (each equal to the run's local file); the same site again stores nothing."""
    from pathlib import Path
    bundle = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing" \
        / "model_bundle.zip"
    case = pacs["cases"][3]
    seg, _ = _reader_seg(case)
    pacs["client"].store_instances([seg])
    outs = {}
    for site in ("A", "B"):
        outs[site] = tmp_path / site
        assert _run(pacs, case, outs[site], "--bundle", str(bundle), "--site", site) == 0
    srs = {str(ds.SOPInstanceUID): ds for ds in _ours(pacs, case["study"], "SR")}
    local_files = {site: pydicom.dcmread(outs[site] / "dicom" / f"{case['sop']}_sr.dcm")
                   for site in outs}
    assert len(srs) == 2
    for site, ds in local_files.items():
        assert ds.SOPInstanceUID in srs
        assert srs[ds.SOPInstanceUID].ContentSequence == ds.ContentSequence, site
    before = _count(pacs, case["study"])
    assert _run(pacs, case, tmp_path / "A2", "--bundle", str(bundle), "--site", "A") == 0
    assert _count(pacs, case["study"]) == before


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_failed_or_interrupted_run_leaves_the_previous_folder_as_it_was(pacs, tmp_path,
                                                                          capsys, monkeypatch):
    from HER2RadiomicsLib.cli import main
    from HER2RadiomicsLib.pacs import run as prun
    case, other = pacs["cases"][0], pacs["cases"][1]
    out = tmp_path / "out"
    assert _run(pacs, case, out, "--no-store") == 0
    good = _snapshot(out)
    assert "features.csv" in good and "pacs_run.json" in good
    assert not any(".parts" in name for name in good)        # the batch's parts stay aside
    # a report path is relative to --out (the run was built in a staging folder)
    doc = __import__("json").loads(good["pacs_run.json"])
    assert doc["cases"][0]["report"] == f"reports/{case['sop']}.html"
    # no image done (exit 2): nothing replaced
    capsys.readouterr()
    assert _run(pacs, case, out, "--no-store", "--reader", "Nobody") == 2
    assert _snapshot(out) == good
    # interrupted after features.csv was written: nothing replaced, exit 130

    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(prun, "_finish_case", interrupted)
    assert _run(pacs, case, out, "--no-store", "--rings", "3") == 130
    assert _snapshot(out) == good
    monkeypatch.undo()
    # another study into the same folder: refused, one line, nothing changed
    capsys.readouterr()
    assert _run(pacs, other, out, "--no-store") == 2
    assert f"holds the pacs run of study {case['study']}" in _one_error_line(capsys)
    assert _snapshot(out) == good
    # a pacs fetch folder is not a pacs run folder, nor the other way round
    fetched = tmp_path / "fetched"
    assert main(["pacs", "fetch", "--url", pacs["server"].dicomweb_url, "--study",
                 case["study"], "--out", str(fetched)]) == 0
    assert _run(pacs, case, fetched, "--no-store") == 2
    assert "written by 'her2radiomics pacs fetch'" in _one_error_line(capsys)
    assert main(["pacs", "fetch", "--url", pacs["server"].dicomweb_url, "--study",
                 case["study"], "--out", str(out)]) == 2
    assert "written by 'her2radiomics pacs run'" in _one_error_line(capsys)


def test_a_url_that_is_not_dicomweb_is_one_line_naming_the_fix(pacs, tmp_path, capsys):
    """Orthanc's own root (its REST API, not DICOMweb): query, run and fetch say so (and
    suggest /dicom-web) instead of a crash or 'study not found'."""
    from HER2RadiomicsLib.cli import main
    root, case = pacs["server"].url, pacs["cases"][0]
    capsys.readouterr()
    assert main(["pacs", "query", "--url", root]) == 2
    line = _one_error_line(capsys)
    assert "does not answer DICOMweb QIDO-RS" in line and f"{root}/dicom-web?" in line
    for cmd in ("run", "fetch"):
        assert main(["pacs", cmd, "--url", root, "--study", case["study"],
                     "--out", str(tmp_path / cmd)]) == 2
        line = _one_error_line(capsys)
        assert "does not answer DICOMweb QIDO-RS" in line and "not found" not in line, cmd


def test_an_image_whose_only_seg_is_unusable_is_an_error_not_a_cnn_case(pacs, tmp_path,
                                                                          capsys):
    """A reader's SEG cut short: one error line, nothing stored for the image (no CNN)."""
    from pydicom.uid import generate_uid
    ds = pydicom.dcmread(pacs["cases"][0]["image"])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    case = {**pacs["cases"][0], "ds": ds, "study": ds.StudyInstanceUID, "sop": ds.SOPInstanceUID}
    seg, _ = _reader_seg(case)
    seg.PixelData = bytes(seg.PixelData)[:len(seg.PixelData) // 3]
    pacs["client"].store_instances([ds, seg])
    capsys.readouterr()
    assert _run(pacs, case, tmp_path / "o") == 2
    captured = capsys.readouterr()
    assert "CNN" not in captured.out + captured.err
    (line,) = [ln for ln in captured.err.splitlines() if ln.startswith("error: ")]
    assert seg.SOPInstanceUID in line and f"image {case['sop']} left out" in line
    assert _count(pacs, case["study"]) == 2                 # the image and the reader's SEG


def test_a_missing_or_unknown_site_is_refused_before_any_work(pacs, tmp_path, capsys,
                                                             monkeypatch):
    from pathlib import Path
    from HER2RadiomicsLib.pacs import dicomweb
    bundle = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing" \
        / "model_bundle.zip"

    def no_server(*a, **kw):
        raise AssertionError("the server was asked before the site was checked")
    monkeypatch.setattr(dicomweb.Pacs, "instances", no_server)
    capsys.readouterr()
    for extra, words in (((), "give the scanner site"), (("--site", "Z"), "unknown")):
        assert _run(pacs, pacs["cases"][0], tmp_path / "o", "--bundle", str(bundle),
                    *extra) == 2
        assert words in _one_error_line(capsys)


def test_an_image_without_calibration_takes_spacing_mm_and_is_named_by_uid(pacs, tmp_path,
                                                                           capsys):
    from pydicom.uid import generate_uid
    ds = pydicom.dcmread(pacs["cases"][1]["image"])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for kw in ("SequenceOfUltrasoundRegions", "PixelSpacing"):
        if kw in ds:
            delattr(ds, kw)
    case = {**pacs["cases"][1], "ds": ds, "study": ds.StudyInstanceUID, "sop": ds.SOPInstanceUID}
    seg, _ = _reader_seg(case)
    pacs["client"].store_instances([ds, seg])
    capsys.readouterr()
    assert _run(pacs, case, tmp_path / "a", "--no-store") == 2
    line = _one_error_line(capsys)
    assert f"image {case['sop']}" in line and "--spacing-mm" in line
    assert "her2radiomics-pacs-" not in line                  # not the deleted temporary copy
    assert _run(pacs, case, tmp_path / "b", "--no-store", "--spacing-mm", "0.1", "0.1") == 0
    (prov,) = _read_csv(tmp_path / "b" / "features_provenance.csv")
    assert float(prov["spacing_x_mm"]) == 0.1 and float(prov["spacing_y_mm"]) == 0.1
