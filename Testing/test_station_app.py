"""The reader station's app in process (Slicer's core through trame-slicer, no browser): the
contour read back from the Segment Editor is the mask put in, pixel for pixel; Save writes it in
the image's geometry; the ring overlay is the rings module's label map without the tumour; the
prediction card equals ``predict_case`` run from the files."""
import itertools

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

pytest.importorskip("trame_slicer")

from HER2RadiomicsLib.station.store import StudyStore

_names = (f"station-test-{i}" for i in itertools.count())


def _reference_mask(cohort, case):
    rows = pd.read_csv(cohort / "cohort.csv").set_index("case_id")
    return sitk.ReadImage(str(cohort / rows.loc[case, "mask"]))


def _put(app, mask_img):
    """Load a mask into the app's Segment Editor as if the reader had drawn it."""
    scene = app.slicer.scene
    scene.RemoveNode(app.segmentation_node)
    app.segmentation_node = app._segmentation_from(mask_img)
    app.slicer.segmentation_editor.set_active_segmentation(app.segmentation_node,
                                                           app.volume_node)


@pytest.fixture
def app(cohort, tmp_path):
    from HER2RadiomicsLib.station.web import ReaderStation
    store, _ = StudyStore.create(tmp_path / "study", cohort / "cohort.csv", ["R1"],
                                 start="empty", seed=2)
    return ReaderStation(store, "R1", server=next(_names))


def test_the_contour_round_trips_through_the_segment_editor_and_save(app, cohort):
    case = app.case_id
    ref = _reference_mask(cohort, case)
    want = (sitk.GetArrayFromImage(ref) > 0).astype(np.uint8)
    assert not app.current_mask().any()                     # the study starts empty
    _put(app, ref)
    assert np.array_equal(app.current_mask(), want)         # pixel for pixel, not shifted
    app.save()
    saved = sitk.ReadImage(str(app.store.root / "contours" / "R1" / f"{case}.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(saved), want)
    image = app.store.load_image(case).image
    assert saved.GetSize() == image.GetSize()
    assert np.allclose(saved.GetSpacing(), image.GetSpacing())
    assert np.allclose(saved.GetOrigin(), image.GetOrigin())
    assert app.case_id != case and app.store.is_done("R1", case)   # next case opened


def test_ring_overlay_is_the_rings_label_map_without_the_tumour(app, cohort):
    from HER2RadiomicsLib.imaging.rings import build_regions
    ref = _reference_mask(cohort, app.case_id)
    _put(app, ref)
    app._on_rings(st_rings=True)
    node = app.rings_node
    assert node is not None
    from vtkmodules.util.numpy_support import vtk_to_numpy
    data = node.GetImageData()
    got = vtk_to_numpy(data.GetPointData().GetScalars()).reshape(data.GetDimensions()[::-1])
    got = np.squeeze(got)
    m = sitk.Cast(ref > 0, sitk.sitkUInt8)
    m.CopyInformation(app.image)
    regions = build_regions(app.image, m, (3, 5, 8), annuli=True)
    want = sitk.GetArrayFromImage(regions.label_map)
    want[want == 1] = 0
    assert np.array_equal(got, want)
    assert set(np.unique(got)) == {0, 2, 3, 4}              # three annuli, no tumour
    comp = app.slicer.view_manager.get_slice_views()[0]._logic.GetSliceCompositeNode()
    assert comp.GetLabelVolumeID() == node.GetID()
    app._on_rings(st_rings=False)
    assert app.rings_node is None and not comp.GetLabelVolumeID()


@pytest.fixture
def bundle(cohort, tmp_path):
    """A small genuine bundle on two cui2023 tumour features of the cohort."""
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    from HER2RadiomicsLib.modelling.study import training_ranges
    from HER2RadiomicsLib.modelling.transformers import ColumnSelector, make_classifier
    from pathlib import Path
    import HER2RadiomicsLib
    rows = pd.read_csv(cohort / "cohort.csv")
    fx = FeatureExtractor("cui2023")
    feats, cols = [], None
    for r in rows.itertuples():
        loaded, mask = load_case(cohort / r.image, cohort / r.mask)
        f, _ = fx.extract(loaded.image, {"tumor": mask}, spacing_known=loaded.spacing_known)
        cols = cols or ["tumor__original_firstorder_Mean",
                        sorted(k for k in f if "_glcm_" in k)[0]]
        feats.append({c: f[c] for c in cols})
    X = pd.DataFrame(feats)
    y = (rows["her2"] != "zero").astype(int).to_numpy()
    pl = Pipeline([("select", ColumnSelector()),
                   ("scale", StandardScaler().set_output(transform="pandas")),
                   ("classifier", make_classifier("logistic"))]).fit(X, y)
    params = Path(HER2RadiomicsLib.__file__).parent / "params" / "cui2023.yaml"
    meta = {"name": "station-test", "classes": ["zero", "nonzero"], "positive_class": "1",
            "input_columns": cols, "threshold": 0.5, "regions": ["tumor"], "rings": {},
            "params_name": "cui2023", "params_yaml": params.read_text(), "batch_col": "site",
            "engine": {"name": "native", "version": "1.0.0"},
            "training_ranges": training_ranges(pl, X)}
    return save_bundle(tmp_path / "bundle.zip", {"pipeline": pl, "nomogram": None}, meta)


def test_prediction_card_equals_predict_case_from_the_files(cohort, tmp_path, bundle):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import predict_case
    from HER2RadiomicsLib.station.web import ReaderStation
    store, _ = StudyStore.create(tmp_path / "study", cohort / "cohort.csv", ["R1"],
                                 start="empty", seed=2)
    app = ReaderStation(store, "R1", server=next(_names), bundle=bundle)
    assert app.state.st_has_bundle and app.state.st_prediction is None   # nothing drawn yet
    assert app.predict() is None and "Draw the lesion" in app.state.st_error
    case = app.case_id
    _put(app, _reference_mask(cohort, case))
    pr = app.predict()
    card = app.state.st_prediction
    rows = pd.read_csv(cohort / "cohort.csv").set_index("case_id")
    ref = predict_case(load_bundle(bundle), cohort / rows.loc[case, "image"],
                       cohort / rows.loc[case, "mask"], case_id=case)
    assert pr.probabilities.keys() == ref.probabilities.keys()
    for k, v in ref.probabilities.items():
        assert pr.probabilities[k] == pytest.approx(v, rel=1e-9, abs=1e-12)
        assert {"k": k, "p": f"{v:.3f}"} in card["probs"]
    assert card["cls"] == f"Predicted: {ref.predicted_class}"


def test_window_level_slider_sets_the_volume_display(app):
    d = app.volume_node.GetScalarVolumeDisplayNode()
    arr = sitk.GetArrayViewFromImage(app.image)
    assert app.state.st_wl_min == np.floor(arr.min()) and app.state.st_wl_max == np.ceil(arr.max())
    auto = [d.GetWindowLevelMin(), d.GetWindowLevelMax()]
    assert app.state.st_wl == auto
    app._on_window(st_wl=[40, 120])
    assert not d.GetAutoWindowLevel()
    assert (d.GetWindowLevelMin(), d.GetWindowLevelMax()) == (40, 120)
    assert (d.GetWindow(), d.GetLevel()) == (80, 80)
    app.auto_window()
    assert d.GetAutoWindowLevel() and app.state.st_wl == auto


def test_autosave_is_resumed_by_a_new_station_process(app, cohort):
    from HER2RadiomicsLib.station.web import AUTOSAVE_S, ReaderStation
    case = app.case_id
    ref = _reference_mask(cohort, case)
    _put(app, ref)
    app._last_autosave -= AUTOSAVE_S + 1          # as if the last autosave were 20 s ago
    app._on_modified()                            # an edit: the contour in progress is kept
    assert app.store.autosaved("R1", case) is not None and not app.store.is_done("R1", case)
    again = ReaderStation(StudyStore(app.store.root), "R1", server=next(_names))
    assert again.case_id == case
    assert again._edits[0] == {"start": "restored autosave (started from empty)"}
    assert "Restored your contour in progress" in again.state.st_message
    assert np.array_equal(again.current_mask(), (sitk.GetArrayFromImage(ref) > 0).astype(np.uint8))


def test_every_case_shows_the_contour_the_same_way(app, cohort):
    """An outline and a light fill on every case (the first case was opaque)."""
    looks = []
    for _ in range(2):
        d = app.segmentation_node.GetDisplayNode()
        looks.append((d.GetVisibility2DOutline(), d.GetVisibility2DFill(),
                      d.GetOpacity2DOutline(), round(d.GetOpacity2DFill(), 3)))
        _put(app, _reference_mask(cohort, app.case_id))
        app.save()
    assert looks[0] == looks[1] == (True, True, 1.0, 0.4)
