"""The panel's feature extraction through the scripted CLI (issue 15, item 5), on slicer-core.

Slicer's ``slicer.cli.run`` is emulated the way Slicer executes a CLI module: each parameter
is looked up in ``HER2RadiomicsCLI.xml`` (an unknown name or a wrong kind fails the test),
input volume nodes are written to NRRD with MRML's own storage node, booleans become bare
flags, the CLI runs as a separate process, ``<filter-progress>`` lines drive the node's
progress, ``Cancel()`` stops the process, and the output table is read back with MRML's table
storage node. Only ``qSlicerCLIModule``'s GUI is missing.
"""
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HER2Radiomics"))
from HER2RadiomicsModuleLib import core as C  # noqa: E402
from HER2RadiomicsModuleLib import mrml as M  # noqa: E402

CLI_DIR = ROOT / "HER2RadiomicsCLI"


def _xml():
    out = {}
    for group in ET.parse(CLI_DIR / "HER2RadiomicsCLI.xml").getroot().findall("parameters"):
        for p in group:
            if p.tag not in ("label", "description"):
                out[p.find("name").text] = (p.tag, p.find("longflag").text,
                                            (p.findtext("channel") or "input"))
    return out


class EmulatedCliNode(slicer.vtkMRMLCommandLineModuleNode):
    """A CLI node whose process Slicer would run; state is read when the GUI polls."""

    def start(self, parameters):
        spec = _xml()
        self.work = Path(tempfile.mkdtemp(prefix="h2r_cli_emul_"))
        self.outputs, self.killed, self.fraction = {}, False, 0.0
        argv = [sys.executable, str(CLI_DIR / "HER2RadiomicsCLI.py")]
        for name, value in parameters.items():
            assert name in spec, f"'{name}' is not a parameter of HER2RadiomicsCLI.xml"
            tag, flag, channel = spec[name]
            if tag in ("image", "table"):
                assert isinstance(value, slicer.vtkMRMLNode), f"{name}: Slicer passes a node"
                path = self.work / f"{name}.{'tsv' if tag == 'table' else 'nrrd'}"
                if channel == "input":
                    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
                    storage.SetFileName(str(path))
                    assert storage.WriteData(value), f"{name}: could not be written"
                else:
                    self.outputs[name] = (value, path)
                argv += [f"--{flag}", str(path)]
            elif tag == "boolean":
                assert isinstance(value, bool), f"{name}: a boolean parameter"
                argv += [f"--{flag}"] if value else []
            else:
                assert isinstance(value, (str, int, float)), f"{name}: {type(value)}"
                argv += [f"--{flag}", str(value)]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, False)),
                         threading.Thread(target=self._read, args=(self.proc.stderr, True))]
        for t in self._readers:
            t.start()
        self.progressSeen = []
        self._final = None
        return self

    def _read(self, stream, isErr):
        for line in stream:
            if isErr:
                self.stderr.append(line)
            elif line.startswith("<filter-progress>"):
                self.fraction = float(line.split(">")[1].split("<")[0])

    def GetProgress(self):
        value = round(100 * self.fraction)
        self.progressSeen.append(value)
        return value

    def GetStatus(self):
        if self._final is None and self.proc.poll() is not None:
            for t in self._readers:
                t.join()
            if self.killed:
                self._final = self.Cancelled
            elif self.proc.returncode == 0:
                for node, path in self.outputs.values():
                    if not path.exists():       # Slicer: a warning, no storage node
                        continue
                    storage = (slicer.vtkMRMLTableStorageNode() if path.suffix == ".tsv"
                               else slicer.vtkMRMLVolumeArchetypeStorageNode())
                    storage.SetFileName(str(path))
                    assert storage.ReadData(node), f"{path}: not readable"
                self._final = self.Completed
            else:
                self._final = self.CompletedWithErrors
        return self._final if self._final is not None else self.Running

    def GetStatusString(self):
        return {self.Running: "Running", self.Completed: "Completed",
                self.CompletedWithErrors: "CompletedWithErrors",
                self.Cancelled: "Cancelled"}[self.GetStatus()]

    def GetErrorText(self):
        self.GetStatus()
        return "".join(self.stderr)

    def Cancel(self):
        self.killed = True
        self.proc.kill()



def runCli(scene, started):
    def run(parameters):
        node = EmulatedCliNode()
        scene.AddNode(node)
        started.append(node)
        return node.start(parameters)
    return run


def _case(scene, cohort):
    import pandas as pd

    from HER2RadiomicsLib.imaging.io import load_case
    row = pd.read_csv(cohort / "cohort.csv").iloc[1]
    loaded, truth = load_case(cohort / row["image"], cohort / row["mask"])
    vol = M.sitkToVolumeNode(loaded.image, scene, "US")
    vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, loaded.spacing_source)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    M.sitkToSegment(truth, seg, vol, "tumour", region="tumor")
    seg.CreateDefaultDisplayNodes()      # as in Slicer, where these exist before any export
    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    return vol, seg


def _visibleNodes(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def test_panel_extraction_runs_in_the_cli_and_equals_the_in_process_result(scene, cohort):
    logic = C.HER2RadiomicsCoreLogic()
    vol, seg = _case(scene, cohort)
    logic.buildRings(vol, seg, [3, 5], annuli=True)
    # a reader trims the 0-5 mm ring by hand: the CLI must extract the edited segment, not
    # rebuild the ring from the tumour
    sid = M.findSegmentId(seg, region="peri_0-5mm")
    ring = M.segmentToSitk(seg, sid, vol)
    arr = sitk.GetArrayFromImage(ring)
    arr[: arr.shape[0] // 2] = 0
    edited = sitk.GetImageFromArray(arr)
    edited.CopyInformation(ring)
    M.sitkToSegment(edited, seg, vol, "ring 0-5 mm", region="peri_0-5mm")

    before = _visibleNodes(scene)
    reference = logic.extractFeatures(vol, seg, "cui2023")      # in process, same regions
    table, started = scene.AddNewNodeByClass("vtkMRMLTableNode"), []
    job = logic.startFeatureExtraction(vol, seg, "cui2023", table,
                                       runCli=runCli(scene, started))
    assert isinstance(job, C.CliJob)
    progress = []
    while not job.done:
        progress.append(job.progress)
        job.wait(0.05)
    feats = logic.finishFeatureExtraction(job)
    # temporary image, label map, output table and the CLI node are gone
    assert _visibleNodes(scene) - before == {table.GetID()}

    assert feats.keys() == reference.keys()
    ref = np.array(list(reference.values()))
    got = np.array([feats[k] for k in reference])
    # equal up to the last bit of the spacing, which goes through the NRRD's direction matrix
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    # the edited ring really went through: its area is about half the rebuilt ring's
    rebuilt = logic.extractFeatures(vol, _rebuilt(scene, vol, seg, logic), "cui2023")
    key = "peri_0-5mm__original_firstorder_TotalEnergy"     # a sum over the pixels
    assert feats[key] == pytest.approx(reference[key], rel=1e-12)
    assert feats[key] < 0.75 * rebuilt[key]
    long = M.tableNodeToDataFrame(table)
    assert len(long) == len(feats) and set(long.region) == {
        "tumor", "peri_0-3mm", "peri_0-5mm", "peri_3-5mm"}
    # the CLI got its inputs as Slicer passes them, and its progress was seen
    argv = started[0].argv
    assert "--inputRegions" in argv and "--spacingUnknown" not in argv
    assert argv[argv.index("--regionNames") + 1] == "tumor,peri_0-3mm,peri_0-5mm,peri_3-5mm"
    assert argv[argv.index("--preset") + 1] == "cui2023"
    assert progress == sorted(progress) and 0 <= progress[0] and max(progress) <= 1.0


def _rebuilt(scene, vol, seg, logic):
    fresh = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    M.sitkToSegment(logic.tumourMask(vol, seg), fresh, vol, "tumour", region="tumor")
    logic.buildRings(vol, fresh, [3, 5], annuli=True)
    return fresh


def test_cli_error_is_one_line_and_leaves_the_table_alone(scene, cohort):
    """Unknown spacing and mm-based params: the CLI refuses; the panel shows its one line."""
    logic = C.HER2RadiomicsCoreLogic()
    vol, seg = _case(scene, cohort)
    vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, "unknown")
    table, started = scene.AddNewNodeByClass("vtkMRMLTableNode"), []
    before = _visibleNodes(scene)
    job = logic.startFeatureExtraction(vol, seg, "default", table,
                                       runCli=runCli(scene, started))
    assert job.wait(120)
    assert "--spacingUnknown" in started[0].argv
    with pytest.raises(ValueError) as err:
        logic.finishFeatureExtraction(job)
    msg = str(err.value)
    assert "spacing" in msg and "Traceback" not in msg and "\n" not in msg
    assert table.GetTable().GetNumberOfColumns() == 0
    assert _visibleNodes(scene) == before              # temporary nodes and CLI node removed


def test_cancel_stops_the_cli_process(scene, cohort):
    logic = C.HER2RadiomicsCoreLogic()
    vol, seg = _case(scene, cohort)
    logic.buildRings(vol, seg, [1, 2, 3, 4, 5, 6, 7, 8], annuli=True)
    table, started = scene.AddNewNodeByClass("vtkMRMLTableNode"), []
    job = logic.startFeatureExtraction(vol, seg, "default", table,    # minutes of wavelets
                                       runCli=runCli(scene, started))
    job.cancel()
    assert job.wait(30)
    assert started[0].proc.returncode != 0
    from HER2RadiomicsLib.errors import Cancelled
    with pytest.raises(Cancelled):
        logic.finishFeatureExtraction(job)
    assert table.GetTable().GetNumberOfColumns() == 0
    assert not list(Path(started[0].work).glob("outputTable*"))      # nothing half-written


def test_region_bits_round_trip_overlapping_rings():
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.imaging.rings import decode_region_bits, encode_region_bits
    rng = np.random.default_rng(4)
    ref = sitk.GetImageFromArray(np.zeros((20, 30), np.float32))
    ref.SetSpacing((0.3, 0.2))
    masks = {}
    for i in range(31):        # the most one label map carries, all overlapping
        m = sitk.GetImageFromArray((rng.random((20, 30)) < 0.4).astype(np.uint8))
        m.CopyInformation(ref)
        masks[f"r{i}"] = m
    bits, names = encode_region_bits(masks)
    assert names == list(masks)
    assert int(sitk.GetArrayViewFromImage(bits).max()) < 2 ** 31
    back = decode_region_bits(sitk.JoinSeries(bits), ",".join(names), ref)   # Slicer's 3D
    for name, m in masks.items():
        assert np.array_equal(sitk.GetArrayFromImage(back[name]),
                              sitk.GetArrayFromImage(m)), name
        assert back[name].GetSpacing() == ref.GetSpacing()
    with pytest.raises(InputError, match="at most 31"):
        encode_region_bits({**masks, "extra": masks["r0"]})
    with pytest.raises(InputError, match="'r1' .bit 1. is empty"):
        decode_region_bits(bits & 1, "r0,r1", ref)
    with pytest.raises(InputError, match="size"):
        decode_region_bits(bits, names, sitk.GetImageFromArray(np.zeros((5, 5), np.float32)))
    with pytest.raises(InputError, match="repeat"):
        decode_region_bits(bits, "r0,r0", ref)


# -- the CNN, the prediction and the report off the GUI thread (issue 26) -----------------------

def _small_bundle(tmp_path, loaded, truth):
    """A two-class bundle on the tumour's first-order features (cui2023, no rings)."""
    import pandas as pd
    from test_bundle_allowlist import _pipeline
    from HER2RadiomicsLib.extraction.features import FeatureExtractor, load_params
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    feats, _ = FeatureExtractor("cui2023").extract(loaded.image, {"tumor": truth})
    cols = [c for c in feats if "firstorder" in c][:5]
    rng = np.random.default_rng(1)
    X = pd.DataFrame([{c: feats[c] * (1 + 0.1 * rng.normal()) for c in cols} for _ in range(60)])
    y = (X[cols[0]] > X[cols[0]].median()).astype(int).to_numpy()
    return save_bundle(tmp_path / "b.zip", {"pipeline": _pipeline(X, y), "nomogram": None},
                       {"name": "t", "classes": ["zero", "low"], "positive_class": "1",
                        "input_columns": cols, "threshold": 0.5, "regions": ["tumor"],
                        "rings": {}, "params_name": "cui2023",
                        "params_yaml": load_params("cui2023")[1], "batch_col": None})


def test_auto_segment_runs_in_the_cli_and_becomes_the_tumour_segment(scene, cohort):
    logic = C.HER2RadiomicsCoreLogic()
    vol, reference = _case(scene, cohort)
    truth = sitk.GetArrayFromImage(logic.tumourMask(vol, reference)) > 0
    seg, started = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CNN"), []
    seg.CreateDefaultDisplayNodes()          # as the panel does before it starts the CNN
    before = _visibleNodes(scene)
    job = logic.startAutoSegment(vol, seg, runCli=runCli(scene, started))
    assert isinstance(job, C.CliJob) and job.wait(120)
    sid = logic.finishAutoSegment(job)
    cnn = sitk.GetArrayFromImage(M.segmentToSitk(seg, sid, vol)) > 0
    assert 2 * (cnn & truth).sum() / (cnn.sum() + truth.sum()) > 0.8
    assert logic.maskSource(seg).startswith("CNN auto-mask, confidence 0.")
    assert _visibleNodes(scene) == before               # temporary nodes, CLI node gone
    assert "--outputMask" in started[0].argv


def test_prediction_reuses_the_features_just_extracted_and_else_runs_in_the_cli(scene, cohort,
                                                                               tmp_path,
                                                                               monkeypatch):
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import predict_case
    import pandas as pd
    logic = C.HER2RadiomicsCoreLogic()
    vol, seg = _case(scene, cohort)
    row = pd.read_csv(cohort / "cohort.csv").iloc[1]
    loaded, truth = load_case(cohort / row["image"], cohort / row["mask"])
    path = _small_bundle(tmp_path, loaded, truth)
    bundle = load_bundle(path)
    ref = predict_case(bundle, cohort / row["image"], cohort / row["mask"])

    # nothing extracted yet: the prediction goes to the CLI's process
    started = []
    assert not logic.canPredictNow(bundle, vol, seg)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    job = logic.startPrediction(bundle, path, vol, seg, tableNode=table,
                                runCli=runCli(scene, started))
    assert isinstance(job, C.CliJob) and job.wait(120)
    pred, report = logic.finishPrediction(job)
    assert len(started) == 1 and report is None
    for k, v in ref.probabilities.items():
        assert pred.probabilities[k] == pytest.approx(v, abs=1e-9)
    assert M.tableNodeToDataFrame(table).set_index("item").loc[
        "predicted class", "value"] == ref.predicted_class

    # the same pixels again (and an HTML report): made at once, nothing extracted, no CLI
    monkeypatch.setattr(FeatureExtractor, "extract",
                        lambda *a, **k: pytest.fail("extracted a second time"))
    assert logic.canPredictNow(bundle, vol, seg)
    html = tmp_path / "case.html"
    job = logic.startPrediction(bundle, path, vol, seg, reportPath=html,
                                runCli=runCli(scene, started))
    assert job.done and len(started) == 1
    again, out = logic.finishPrediction(job)
    assert again.probabilities == pred.probabilities and "Research use only" in out.read_text()

    # a reader edits the tumour: the kept features are not for these pixels any more
    edited = sitk.BinaryErode(logic.tumourMask(vol, seg), [2, 2])
    M.sitkToSegment(edited, seg, vol, "tumour", region="tumor")
    assert not logic.canPredictNow(bundle, vol, seg)


def test_the_panels_own_extraction_feeds_the_prediction(scene, cohort, tmp_path, monkeypatch):
    """Extract (cui2023, tumour) then Predict with a cui2023 tumour-only bundle: one
    extraction in all."""
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    import pandas as pd
    logic = C.HER2RadiomicsCoreLogic()
    vol, seg = _case(scene, cohort)
    row = pd.read_csv(cohort / "cohort.csv").iloc[1]
    loaded, truth = load_case(cohort / row["image"], cohort / row["mask"])
    bundle = load_bundle(_small_bundle(tmp_path, loaded, truth))
    table, started = scene.AddNewNodeByClass("vtkMRMLTableNode"), []
    job = logic.startFeatureExtraction(vol, seg, "cui2023", table,
                                       runCli=runCli(scene, started))
    assert job.wait(120)
    feats = logic.finishFeatureExtraction(job)
    monkeypatch.setattr(FeatureExtractor, "extract",
                        lambda *a, **k: pytest.fail("extracted a second time"))
    pred = logic.predict(bundle, vol, seg)
    assert set(pred.probabilities) == {"zero", "low"}
    assert feats[bundle.meta["input_columns"][0]] > 0
