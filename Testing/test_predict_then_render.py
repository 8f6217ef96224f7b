"""Predict, then render: one extraction per prediction and report, on every path (the
``report`` command, the Slicer scripted CLI, the Slicer panel), and no temporary folder left
behind; the report only draws the result it is given."""
import json
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "HER2Radiomics" / "Resources" / "Testing"
CASE = json.loads((SHIPPED / "case.json").read_text())
CLINICAL = [f"{k}={v}" for k, v in CASE["clinical"].items()]


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """``(extraction calls, the temporary folder)``: every FeatureExtractor.extract is counted
    and the process's temporary folder is a fresh, empty one."""
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    calls = []
    real = FeatureExtractor.extract

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)
    monkeypatch.setattr(FeatureExtractor, "extract", counting)
    fresh = tmp_path / "tmp"
    fresh.mkdir()
    monkeypatch.setenv("TMPDIR", str(fresh))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    return calls, fresh


def test_report_command_extracts_once_and_leaves_no_temporary_folder(counted, tmp_path):
    from HER2RadiomicsLib.cli import main
    calls, fresh = counted
    out = tmp_path / "out" / "case.html"
    assert main(["report", "--bundle", str(SHIPPED / "model_bundle.zip"),
                 "--image", str(SHIPPED / "case.nrrd"), "--mask", str(SHIPPED / "case_mask.nrrd"),
                 "--site", CASE["site"], "--clinical", *CLINICAL, "--out", str(out)]) == 0
    assert len(calls) == 1
    assert "Research use only" in out.read_text()
    assert list(fresh.iterdir()) == []


def test_report_command_with_the_cnn_keeps_its_mask_in_memory(counted, tmp_path):
    pytest.importorskip("torch")
    from HER2RadiomicsLib.cli import main
    calls, fresh = counted
    out = tmp_path / "out" / "case.html"
    assert main(["report", "--bundle", str(SHIPPED / "model_bundle.zip"),
                 "--image", str(SHIPPED / "case.nrrd"), "--site", CASE["site"],
                 "--out", str(out)]) == 0
    assert len(calls) == 1 and "CNN auto-mask" in out.read_text()
    assert list(fresh.iterdir()) == []                  # no h2r_report_* with a mask in it
    assert [p.name for p in out.parent.iterdir()] == ["case.html"]


def test_slicer_cli_prediction_features_and_report_from_one_extraction(counted, tmp_path):
    sys.path.insert(0, str(ROOT / "HER2RadiomicsCLI"))
    import HER2RadiomicsCLI as CLI
    calls, fresh = counted
    out = tmp_path / "out"
    rc = CLI.main(["--inputVolume", str(SHIPPED / "case.nrrd"),
                   "--inputLabel", str(SHIPPED / "case_mask.nrrd"),
                   "--bundle", str(SHIPPED / "model_bundle.zip"), "--site", CASE["site"],
                   "--clinical", ",".join(CLINICAL), "--outputTable", str(out / "t.tsv"),
                   "--outputJson", str(out / "d.json"), "--outputReport", str(out / "r.html")])
    assert rc == 0 and len(calls) == 1
    details = json.loads((out / "d.json").read_text())
    assert details["features"] and details["prediction"]["predicted_class"]
    assert (out / "r.html").exists()
    assert list(fresh.iterdir()) == []
    # a cohort with the bundle (the params file lives only while it is extracted), and a
    # cohort where nothing succeeds: the work folder is gone either way
    man = tmp_path / "m.csv"
    man.write_text(f"case_id,image,mask,site\nA,{SHIPPED / 'case.nrrd'},"
                   f"{SHIPPED / 'case_mask.nrrd'},{CASE['site']}\n")
    assert CLI.main(["--manifest", str(man), "--bundle", str(SHIPPED / "model_bundle.zip"),
                     "--outputTable", str(out / "m.tsv")]) == 0
    man.write_text(f"case_id,image,mask\nB,{tmp_path / 'gone.nrrd'},\n")
    assert CLI.main(["--manifest", str(man), "--outputTable", str(out / "n.tsv")]) == 1
    assert list(fresh.iterdir()) == []


def test_the_report_only_draws(counted, tmp_path, monkeypatch):
    """write_case_report draws the result it is given: it neither extracts nor predicts,
    and leaves the result as it was."""
    import copy

    import HER2RadiomicsLib as h2r
    import HER2RadiomicsLib.modelling.predict as P
    calls, _ = counted
    bundle = h2r.load_bundle(SHIPPED / "model_bundle.zip")
    result = h2r.predict_case(bundle, SHIPPED / "case.nrrd", SHIPPED / "case_mask.nrrd",
                              site=CASE["site"], clinical=CASE["clinical"])
    assert len(calls) == 1
    assert result.predicted_class == result.prediction.predicted_class    # reads through
    model_inputs = set(bundle.meta["input_columns"]) - {"site"} - set(CASE["clinical"])
    assert set(result.features) >= model_inputs
    before = copy.deepcopy(result.prediction)
    monkeypatch.setattr(P, "predict_rows", lambda *a, **k: pytest.fail("predicted again"))
    out, shown = h2r.write_case_report(bundle, result, tmp_path / "case.html",
                                       mask_source="reader X", mask_flags=["doubt"])
    assert len(calls) == 1
    assert shown.qc["mask_source"] == "reader X" and shown.warnings[0] == "doubt"
    assert result.prediction == before
    assert f"{result.probabilities[result.predicted_class]:.3f}" in out.read_text()


def test_slicer_panel_prediction_and_report_share_one_result(counted, tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    from HER2RadiomicsModuleLib import core as C
    from HER2RadiomicsModuleLib import mrml as M

    import HER2RadiomicsLib as h2r
    calls, fresh = counted
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    try:
        loaded, mask = h2r.load_case(SHIPPED / "case.nrrd", SHIPPED / "case_mask.nrrd")
        vol = M.sitkToVolumeNode(loaded.image, scene, "case")
        vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, loaded.spacing_source)
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "R0")
        M.sitkToSegment(mask, seg, vol, "tumour", region="tumor")
        logic = C.HER2RadiomicsCoreLogic()
        bundle = logic.loadBundle(SHIPPED / "model_bundle.zip")
        job = logic.startPrediction(bundle, SHIPPED / "model_bundle.zip", vol, seg,
                                    CASE["site"], ", ".join(CLINICAL),
                                    reportPath=tmp_path / "case.html")
        pred, report = logic.finishPrediction(job)
        assert len(calls) == 1
        assert Path(report).exists() and pred.qc["mask_source"]
        logic.saveReport(bundle, vol, seg, tmp_path / "again.html", CASE["site"],
                         CASE["clinical"])            # features remembered: no extraction
        assert len(calls) == 1
        assert list(fresh.iterdir()) == []
    finally:
        scene.Clear(1)
