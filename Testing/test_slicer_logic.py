"""The panel's Logic on real MRML (slicer-core): segmentation/table conversions, every step
end to end on a synthetic case, the worker-thread job with cancel, and bad input."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HER2Radiomics"))
from HER2RadiomicsModuleLib import core as C  # noqa: E402
from HER2RadiomicsModuleLib import mrml as M  # noqa: E402



def _oblique_image(spacing=(0.2, 0.3)):
    rng = np.random.default_rng(1)
    img = sitk.GetImageFromArray(rng.rayleigh(30, (60, 80)).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin((12.0, -4.0))
    a = np.deg2rad(25)
    img.SetDirection([np.cos(a), -np.sin(a), np.sin(a), np.cos(a)])
    return img


def _disk(img, centre=(40, 30), radius_px=9):
    yy, xx = np.indices(sitk.GetArrayViewFromImage(img).shape)
    m = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius_px ** 2).astype(np.uint8)
    mask = sitk.GetImageFromArray(m)
    mask.CopyInformation(img)
    return mask


def test_segment_round_trip_on_oblique_grid(scene):
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mask = _disk(img)
    sid = M.sitkToSegment(mask, seg, vol, "tumour", (1, 0, 0), region="tumor")
    back = M.segmentToSitk(seg, sid, vol)
    assert back.GetDimension() == 2
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mask))
    assert back.GetSpacing() == pytest.approx(img.GetSpacing())
    assert back.GetOrigin() == pytest.approx(img.GetOrigin())
    assert back.GetDirection() == pytest.approx(img.GetDirection())
    # updating by region tag keeps the id and replaces the content
    smaller = _disk(img, radius_px=4)
    assert M.sitkToSegment(smaller, seg, vol, "tumour", region="tumor") == sid
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert sitk.GetArrayFromImage(M.segmentToSitk(seg, sid, vol)).sum() == \
        sitk.GetArrayFromImage(smaller).sum()


def test_segment_export_resamples_to_reference_grid(scene):
    """A reader's segmentation drawn on another volume still lines up physically."""
    img = _oblique_image((0.2, 0.2))
    vol = M.sitkToVolumeNode(img, scene, "US")
    coarse = sitk.Image([40, 30], sitk.sitkFloat32)
    coarse.SetSpacing((0.4, 0.4))
    coarse.SetOrigin(img.GetOrigin())
    coarse.SetDirection(img.GetDirection())
    other = M.sitkToVolumeNode(coarse, scene, "coarse")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    cm = _disk(coarse, (20, 15), 5)
    sid = M.sitkToSegment(cm, seg, other, "lesion")
    fine = M.segmentToSitk(seg, sid, vol)
    # same physical disk: area in mm2 agrees within a pixel ring, centroid within 0.2 mm
    area = lambda m: sitk.GetArrayFromImage(m).sum() * np.prod(m.GetSpacing())  # noqa: E731
    assert area(fine) == pytest.approx(area(cm), rel=0.12)
    f = sitk.LabelShapeStatisticsImageFilter()
    f.Execute(fine)
    c1 = f.GetCentroid(1)
    f.Execute(cm)
    assert np.allclose(c1, f.GetCentroid(1), atol=0.2)


def test_table_round_trip(scene):
    t = scene.AddNewNodeByClass("vtkMRMLTableNode")
    df = pd.DataFrame({"region": ["tumor", "peri_0-3mm"], "value": [1.5, np.nan],
                       "n": [3, 4]})
    M.dataFrameToTableNode(df, t)
    back = M.tableNodeToDataFrame(t)
    assert back["region"].tolist() == ["tumor", "peri_0-3mm"]
    assert back["value"].iloc[0] == 1.5 and np.isnan(back["value"].iloc[1])
    assert back["n"].tolist() == [3.0, 4.0]


def test_markups_prompt_in_pixels(scene):
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    mk = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    # physical LPS point of pixel (30, 20) -> RAS for the markups
    lps = img.TransformContinuousIndexToPhysicalPoint((30.0, 20.0))
    mk.AddControlPointWorld([-lps[0], -lps[1], 0.0])
    kind, xy = M.markupsToPrompt(mk, vol)
    assert kind == "click" and xy == pytest.approx((30.0, 20.0), abs=1e-6)
    lps2 = img.TransformContinuousIndexToPhysicalPoint((10.0, 45.0))
    mk.AddControlPointWorld([-lps2[0], -lps2[1], 0.0])
    kind, box = M.markupsToPrompt(mk, vol)
    assert kind == "box" and box == pytest.approx((10.0, 20.0, 30.0, 45.0), abs=1e-6)


def test_spacing_sources(scene, tmp_path):
    logic = C.HER2RadiomicsCoreLogic()
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    assert logic.spacingInfo(vol).source == "volume"
    # a PNG carries no spacing: Slicer's 1 x 1 mm is a placeholder -> unknown
    png = tmp_path / "scan.png"
    sitk.WriteImage(sitk.Cast(sitk.RescaleIntensity(img), sitk.sitkUInt8), str(png))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(png))
    vol.SetAndObserveStorageNodeID(storage.GetID())
    info = logic.spacingInfo(vol)
    assert not info.known and "scan.png" in info.note
    with pytest.raises(ValueError, match="spacing is unknown"):
        logic.buildRings(vol, scene.AddNewNodeByClass("vtkMRMLSegmentationNode"), [3])
    logic.setUserSpacing(vol, 0.1, 0.1)
    info = logic.spacingInfo(vol)
    assert info.known and info.source == "user" and info.spacing_mm == (0.1, 0.1)
    with pytest.raises(ValueError, match="positive"):
        logic.setUserSpacing(vol, 0, 0.1)


def test_multi_slice_volume_is_refused(scene):
    logic = C.HER2RadiomicsCoreLogic()
    v = M.sitkToVolumeNode(sitk.Image([10, 10, 3], sitk.sitkFloat32), scene, "cine")
    with pytest.raises(ValueError, match="3 slices"):
        logic.loadedImage(v)


@pytest.fixture(scope="module")
def example_bundle(tmp_path_factory):
    return C.exampleBundle(tmp_path_factory.mktemp("bundle"))


@pytest.mark.slow
def test_end_to_end_like_the_panel(scene, example_bundle, tmp_path):
    """Load -> CNN -> rings -> features (thread) -> predict -> reader Dice -> report, compared
    with the library's own file-based prediction of the same image and mask."""
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.modelling.predict import predict_case
    bundle_path, cohort = example_bundle
    logic = C.HER2RadiomicsCoreLogic()
    row = pd.read_csv(cohort / "cohort.csv").query("site != 'C'").iloc[0]
    loaded, truth = load_case(cohort / row["image"], cohort / row["mask"])
    vol = M.sitkToVolumeNode(loaded.image, scene, str(row.case_id))
    vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, loaded.spacing_source)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "R0")

    ok, why = logic.segmenterAvailable()
    assert ok, why
    sid = logic.autoSegment(vol, seg)
    cnn = sitk.GetArrayFromImage(M.segmentToSitk(seg, sid, vol)) > 0
    gt = sitk.GetArrayFromImage(truth) > 0
    assert 2 * (cnn & gt).sum() / (cnn.sum() + gt.sum()) > 0.8      # CNN found the lesion
    assert "CNN" in logic.maskSource(seg)

    # replace the CNN mask by the reference mask (as a reader's correction would)
    M.sitkToSegment(truth, seg, vol, "tumour", region="tumor")
    regs, qc = logic.buildRings(vol, seg, [3, 5], annuli=True)
    names = [seg.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    assert names == ["tumour", "ring 0-3 mm", "ring 0-5 mm", "ring 3-5 mm"]
    assert set(qc.region) == {"tumor", "peri_0-3mm", "peri_0-5mm", "peri_3-5mm"}
    assert qc.set_index("region").loc["peri_0-3mm", "area_mm2"] > 0

    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    job = logic.startFeatureExtraction(vol, seg, "cui2023", table)
    assert job.wait(120)
    feats = logic.finishFeatureExtraction(job)
    direct, _ = __import__("HER2RadiomicsLib.extraction.features", fromlist=["x"]).FeatureExtractor(
        "cui2023").extract(loaded.image, {r: m for r, m in regs.masks.items()})
    assert feats.keys() == direct.keys()
    assert np.allclose([feats[k] for k in direct], list(direct.values()), equal_nan=True)
    long = M.tableNodeToDataFrame(table)
    assert len(long) == len(feats) and set(long.region) == set(regs.masks)

    bundle = logic.loadBundle(bundle_path)
    needs = logic.bundleNeeds(bundle)
    assert needs["rings"] and needs["site"]
    clinical = {k: float(row[k]) for k in needs["clinical"]}
    ptable = scene.AddNewNodeByClass("vtkMRMLTableNode")
    pred = logic.predict(bundle, vol, seg, site=row.site, clinical=clinical, tableNode=ptable)
    ref = predict_case(bundle, cohort / row["image"], cohort / row["mask"], site=row.site,
                       clinical=clinical)
    for k, v in ref.probabilities.items():
        assert pred.probabilities[k] == pytest.approx(v, abs=1e-9)
    items = M.tableNodeToDataFrame(ptable).set_index("item")["value"]
    assert items["predicted class"] == ref.predicted_class
    with pytest.raises(ValueError, match="site"):
        logic.predict(bundle, vol, seg, site=None)
    assert "Research use only" in logic.modelCardText(bundle)
    warns = logic.bundleWarnings(bundle, vol, "default")
    assert any("differ from the model's 'cui2023'" in w for w in warns)
    assert not any("spacing" in w for w in warns)          # calibrated DICOM spacing
    vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, "user")
    assert any("not from a calibrated file" in w for w in logic.bundleWarnings(bundle, vol))
    vol.SetAttribute(C.SPACING_SOURCE_ATTRIBUTE, loaded.spacing_source)

    # reader study: two readers
    seg2 = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "R2")
    M.sitkToSegment(sitk.BinaryErode(truth, [2, 2]), seg2, vol, "tumour", region="tumor")
    agree = logic.readerAgreement(vol, [seg, seg2])
    a, b = gt, sitk.GetArrayFromImage(sitk.BinaryErode(truth, [2, 2])) > 0
    assert agree.dice.iloc[0] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert "hd95_mm" in agree

    out = logic.saveReport(bundle, vol, seg, tmp_path / "case.html", site=row.site,
                           clinical=clinical)
    html = out.read_text()
    assert "Research use only" in html and f"{pred.probabilities[pred.predicted_class]:.3f}" in html


def test_feature_job_cancel_keeps_gui_state(scene):
    logic = C.HER2RadiomicsCoreLogic()
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    M.sitkToSegment(_disk(img), seg, vol, "tumour", region="tumor")
    logic.buildRings(vol, seg, [1, 2, 3], annuli=True)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    job = logic.startFeatureExtraction(vol, seg, "default", table)
    job.cancel()
    assert job.wait(120)
    from HER2RadiomicsLib.errors import Cancelled
    with pytest.raises(Cancelled):
        logic.finishFeatureExtraction(job)
    assert table.GetTable().GetNumberOfColumns() == 0      # nothing half-written


def test_bad_input_is_a_one_line_value_error(scene):
    logic = C.HER2RadiomicsCoreLogic()
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(ValueError, match="no tumour segment"):
        logic.extractFeatures(vol, seg)
    empty = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(img)
    seg.GetSegmentation().AddEmptySegment("", "tumour")
    with pytest.raises(ValueError, match="empty"):
        logic.tumourMask(vol, seg)
    with pytest.raises(ValueError, match="model|bundle|zip|not"):
        logic.loadBundle(Path(__file__))
    with pytest.raises(ValueError, match="at least two"):
        logic.readerAgreement(vol, [seg])


def test_calibrated_dicom_spacing_replaces_the_volume_geometry(scene, cohort):
    """Slicer's DICOM reader ignores the ultrasound-region calibration; the panel re-reads it."""
    from HER2RadiomicsLib.imaging.io import read_image
    logic = C.HER2RadiomicsCoreLogic()
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    ref = read_image(cohort / row["image"])
    assert ref.spacing_source == "dicom-us-region"
    img = sitk.Image(list(ref.image.GetSize()), sitk.sitkFloat32)     # 1 x 1 mm, as loaded
    vol = M.sitkToVolumeNode(img, scene, "US")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(cohort / row["image"]))
    vol.SetAndObserveStorageNodeID(storage.GetID())
    info = logic.spacingInfo(vol)
    assert info.known and info.source == "dicom-us-region"
    assert info.spacing_mm == pytest.approx(ref.spacing_mm)
    assert "replaces the volume's 1 x 1 mm" in info.note
    assert logic.loadedImage(vol).image.GetSpacing() == pytest.approx(ref.spacing_mm)


def test_synchronous_extraction_reports_progress_and_cancels(scene):
    from HER2RadiomicsLib.errors import Cancelled
    logic = C.HER2RadiomicsCoreLogic()
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    M.sitkToSegment(_disk(img), seg, vol, "tumour", region="tumor")
    logic.buildRings(vol, seg, [1, 2])
    seen = []
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    feats = logic.extractFeatures(vol, seg, "cui2023", table,
                                  progress=lambda f, m: seen.append(f) or True)
    # tumour + two rings are computed together; progress counts the filtered images done
    assert seen == [0.0, 1.0]                                # cui2023: the original only
    assert table.GetNumberOfRows() == len(feats) > 0
    seen = []
    with pytest.raises(Cancelled):                           # 8 images: stops half-way
        logic.extractFeatures(vol, seg, "default",
                              progress=lambda f, m: seen.append(f) or f < 0.5)
    assert seen == [0.0, 0.125, 0.25, 0.375, 0.5]


def test_failed_calibration_read_is_not_cached(scene, cohort, monkeypatch):
    """Before the dependencies are installed the library cannot read a DICOM's calibration:
    the spacing is then unknown (not Slicer's 1 x 1 mm placeholder marked known), and once
    the read works the calibrated spacing is used (issue 15, item 4)."""
    import HER2RadiomicsLib.imaging.io as io_mod
    logic = C.HER2RadiomicsCoreLogic()
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    ref = io_mod.read_image(cohort / row["image"])
    img = sitk.Image(list(ref.image.GetSize()), sitk.sitkFloat32)     # 1 x 1 mm, as loaded
    vol = M.sitkToVolumeNode(img, scene, "US")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(cohort / row["image"]))
    vol.SetAndObserveStorageNodeID(storage.GetID())
    real = io_mod.read_image

    def missing(*a, **k):
        raise ImportError("No module named 'pydicom'")
    monkeypatch.setattr(io_mod, "read_image", missing)
    info = logic.spacingInfo(vol)
    assert not info.known and info.source == "unknown"
    assert "could not be read" in info.note and "pydicom" in info.note
    monkeypatch.setattr(io_mod, "read_image", real)           # the install happened
    info = logic.spacingInfo(vol)
    assert info.known and info.source == "dicom-us-region"
    assert info.spacing_mm == pytest.approx(ref.spacing_mm)
    # a successful read is cached until cleared
    monkeypatch.setattr(io_mod, "read_image", missing)
    assert logic.spacingInfo(vol).known
    logic.clearSpacingCache()
    assert not logic.spacingInfo(vol).known


def test_core_logic_initialises_once_under_cooperative_slicer_base():
    """The Logic inherits Slicer's base (whose __init__ calls super().__init__()) and the
    core logic; the core's state must be set up once, not reset by a second call."""
    calls = []

    class CooperativeBase:                    # what ScriptedLoadableModuleLogic.__init__ does
        def __init__(self):
            super().__init__()

    class Logic(CooperativeBase, C.HER2RadiomicsCoreLogic):
        def __init__(self):
            CooperativeBase.__init__(self)
            self._fileSpacing["seen"] = 1                # state set in between
            C.HER2RadiomicsCoreLogic.__init__(self)

    orig = C.HER2RadiomicsCoreLogic.__init__

    def counting(self):
        calls.append(1)
        orig(self)
    C.HER2RadiomicsCoreLogic.__init__ = counting
    try:
        logic = Logic()
    finally:
        C.HER2RadiomicsCoreLogic.__init__ = orig
    assert len(calls) == 2                                # reached twice, as in Slicer ...
    assert logic._fileSpacing == {"seen": 1}              # ... but initialised once


def test_segment_export_leaves_no_node_behind(scene):
    """Slicer's export gives each temporary label map a new colour table; before the fix every
    extraction left one per region in the user's scene."""
    img = _oblique_image()
    vol = M.sitkToVolumeNode(img, scene, "US")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.CreateDefaultDisplayNodes()
    sid = M.sitkToSegment(_disk(img), seg, vol, "tumour", region="tumor")
    M.segmentToSitk(seg, sid, vol)              # the first export may add scene singletons
    n = scene.GetNumberOfNodes()
    for _ in range(3):
        M.segmentToSitk(seg, sid, vol)
    assert scene.GetNumberOfNodes() == n


def test_self_test_data_shipped_with_the_module(scene):
    """The module's self-test runs on the shipped case and bundle (no pip install, no
    training): read as Slicer's loadVolume / loadLabelVolume and ImportLabelmapToSegmentationNode
    do, the case goes through rings, features and prediction, and the panel's prediction equals
    the library's file-based one."""
    import json

    from HER2RadiomicsLib.modelling.predict import predict_case
    data = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing"
    meta = json.loads((data / "case.json").read_text())
    assert (data / "model_bundle.zip").stat().st_size < 512 * 1024      # stays tiny

    def load(name, cls):
        node = scene.AddNewNodeByClass(cls, name)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(data / name))
        node.SetAndObserveStorageNodeID(storage.GetID())
        assert storage.ReadData(node), name
        return node
    vol = load("case.nrrd", "vtkMRMLScalarVolumeNode")
    label = load("case_mask.nrrd", "vtkMRMLLabelMapVolumeNode")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, seg)
    seg.GetSegmentation().GetNthSegment(0).SetName("tumour")

    logic = C.HER2RadiomicsCoreLogic()
    info = logic.spacingInfo(vol)
    assert info.known and info.spacing_mm == pytest.approx(meta["spacing_mm"], abs=1e-9)
    _regs, qc = logic.buildRings(vol, seg, [3, 5, 8])
    assert seg.GetSegmentation().GetNumberOfSegments() == 4 and (qc.area_mm2 > 0).all()
    bundle = logic.loadBundle(data / "model_bundle.zip")
    assert logic.bundleNeeds(bundle)["clinical"] == list(meta["clinical"])
    pred = logic.predict(bundle, vol, seg, site=meta["site"], clinical=meta["clinical"])
    ref = predict_case(bundle, data / "case.nrrd", data / "case_mask.nrrd", site=meta["site"],
                       clinical=meta["clinical"])
    assert pred.predicted_class == ref.predicted_class
    for k, v in ref.probabilities.items():
        assert pred.probabilities[k] == pytest.approx(v, abs=1e-9)
