"""The browser reader station: one trame-slicer process per reader, one for the coordinator.

Needs the ``station`` extra (trame-slicer 2.0.0 on slicer-core 5.11); imported only by
``her2radiomics station``. All study rules (queues, blinding, atomic contours, access) live in
:mod:`.store`; this module is the web front end on top of it.

Why one process per reader: a trame server shares its state (and its rendered views) with every
client connected to it, so two readers in one process would see each other's contours. Each
reader gets a port; the coordinator gets its own. A process admits a browser only when the
websocket handshake carries that process's token (``?secret=<token>`` in the URL, which the
trame client sends in wslink's hello and then removes from the address bar): without it the
server sends nothing and runs no call.

Rendering: trame-slicer asks for 8x multisampling per view, which software (Mesa) rendering on a
machine without a GPU pays about 6x for; a 2D slice view gains nothing from it, so it is off, and
frames are streamed as JPEG.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .store import AccessDenied, StudyStore

log = logging.getLogger(__name__)

#: ring distances shown by the overlay (mm), the peritumoral design of the studies
OVERLAY_RINGS_MM = (3.0, 5.0, 8.0)
#: default brush diameter in mm (absolute, not relative to the screen: readers think in mm)
DEFAULT_BRUSH_MM = 3.0
#: autosave the contour in progress this often (seconds) when it changed
AUTOSAVE_S = 20.0


def _token_gate(store: StudyStore, role: str, reader: str | None):
    """A wslink link protocol admitting only this process's token."""
    from wslink.websocket import LinkProtocol

    class TokenGate(LinkProtocol):
        async def validateToken(self, token, client_id):          # noqa: N802 (wslink's name)
            try:
                who = store.authenticate(token)
            except AccessDenied:
                log.warning("refused a client with a wrong token")
                return False
            ok = who.role == role and (role == "coordinator" or who.reader == reader)
            if not ok:
                log.warning("refused %s token on the %s station", who.role, role)
            return ok

    return TokenGate()


def _install_gate(server, gate):
    server.add_protocol_to_configure(lambda root: root.registerLinkProtocol(gate))


class ReaderStation:
    """The reader's web app: queue, image, Segment Editor, rings, Save / Skip / Flag.

    Parameters
    ----------
    store : StudyStore
    reader : str
        The reader this process serves (its token is the only one admitted).
    server : trame Server, optional
    bundle : str or Path, optional
        A model bundle: a prediction card for the current contour.
    """

    def __init__(self, store: StudyStore, reader: str, server=None, bundle=None):
        from trame.app import get_server
        from trame_rca.encoders import RcaImageEncoder
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.app.logic.segmentation import SegmentEditorLogic
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        store._reader(reader)
        self.store, self.reader = store, reader
        self.server = get_server(server, client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        _install_gate(self.server, _token_gate(store, "reader", reader))
        self.state, self.ctrl = self.server.state, self.server.controller

        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server,
                               rca_encoder=RcaImageEncoder.TURBO_JPEG)
        # Views first: an effect's pipelines are made per view when the effect registers, and
        # a pipeline made while its view is still being built never gets the view.
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager,
                                            self.server)
        self.layout_manager.register_layout(
            "station", Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view()]))
        self.layout_manager.set_layout("station")
        for view in self.slicer.view_manager.get_views():
            view.render_window().SetMultiSamples(0)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer)

        self._tmp = tempfile.TemporaryDirectory(prefix="her2station-")
        self.case_id = None
        self.volume_node = None
        self.segmentation_node = None
        self.rings_node = None
        self._opened_at = time.monotonic()
        self._edits: list = []
        self._last_autosave = time.monotonic()
        self._dirty = False
        self._bundle = None
        if bundle:
            from ..modelling.bundle import load_bundle
            self._bundle = load_bundle(bundle)     # a bad bundle stops the start, one line

        self._init_state()
        self._build_ui()
        self._set_brush_mm(DEFAULT_BRUSH_MM)
        self.open_case(store.next_case(reader))

    # -- state and UI ----------------------------------------------------------------------------

    def _init_state(self):
        s = self.state
        s.trame__title = f"HER2Radiomics station: {self.reader}"
        s.st_reader = self.reader
        s.st_case = None
        s.st_position = ""
        s.st_message = ""
        s.st_error = ""
        s.st_rings = False
        s.st_flag_note = ""
        s.st_finished = False
        s.st_prediction = None
        s.st_has_bundle = self._bundle is not None
        s.st_spacing = ""

    def _build_ui(self):
        from trame.widgets import html
        from trame.widgets import vuetify3 as v
        from trame_slicer.app.ui import (
            SegmentEditorToolbarUI,
            SegmentEditorUI,
            SegmentEditorUndoRedoUI,
            ViewerLayout,
        )

        with ViewerLayout(self.server, title="HER2Radiomics reader station",
                          is_drawer_visible=True) as layout:
            self.ui = layout
            with layout.appbar:
                html.Span("{{ st_reader }}", classes="mx-2 text-caption", id="st-reader")
                html.Span("{{ st_case }}", classes="mx-2", id="st-case")
                html.Span("{{ st_position }}", classes="mx-2", id="st-position")
                html.Span("{{ st_spacing }}", classes="mx-2 text-caption", id="st-spacing")
                v.VSwitch(v_model=("st_rings",), label="3/5/8 mm rings", hide_details=True,
                          density="compact", classes="mx-2", id="st-rings",
                          style="flex: 0 0 auto;")
                v.VBtn("Save", id="st-save", color="primary", variant="flat", classes="mx-1",
                       click=self.ctrl.st_save, disabled=("st_finished",))
                v.VBtn("Skip", id="st-skip", variant="tonal", classes="mx-1",
                       click=self.ctrl.st_skip, disabled=("st_finished",))
                v.VTextField(v_model=("st_flag_note",), placeholder="note", id="st-note",
                             density="compact", hide_details=True, style="max-width: 12em;",
                             classes="mx-1")
                v.VBtn("Flag", id="st-flag", variant="tonal", classes="mx-1",
                       click=self.ctrl.st_flag, disabled=("st_finished",))
            with layout.drawer:
                self.editor_ui = SegmentEditorUI()
                html.Div("Paint and Erase brush sizes are diameters in mm of the image.",
                         classes="mx-4 text-caption")
                with html.Div(classes="mx-4 mt-2"):
                    html.Div("Window / level (grey values)", classes="text-caption")
                    v.VRangeSlider(v_model=("st_wl", [0, 255]), min=("st_wl_min", 0),
                                   max=("st_wl_max", 255), step=1, hide_details=True,
                                   density="compact", id="st-wl", thumb_label=True)
                    v.VBtn("Auto window", click=self.ctrl.st_wl_auto, size="small",
                           variant="text", id="st-wl-auto")
                v.VBtn("Predict HER2 for this contour", v_if=("st_has_bundle",),
                       id="st-predict", click=self.ctrl.st_predict, classes="ma-2",
                       variant="tonal")
                with v.VCard(v_if=("st_prediction",), classes="ma-2", id="st-prediction"):
                    v.VCardTitle("{{ st_prediction.cls }}")
                    with v.VCardText():
                        html.Div("P({{ p.k }}) = {{ p.p }}", v_for="p in st_prediction.probs",
                                 key="p.k")
                        html.Div("Rad-score {{ st_prediction.rad }}",
                                 v_if=("st_prediction.rad",))
                        html.Div("{{ w }}", v_for="w in st_prediction.warnings", key="w",
                                 classes="text-warning")
                        html.Div("{{ st_prediction.engine }}", classes="text-caption")
                        html.Div("Research use only; not a diagnostic device.",
                                 classes="text-caption")
            with layout.toolbar:
                SegmentEditorToolbarUI(editor_ui=self.editor_ui)
            with layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.editor_ui)
            with layout.content:
                with html.Div(style="position: absolute; top: 4px; left: 8px; z-index: 10;"):
                    html.Div("{{ st_message }}", id="st-message", classes="text-success")
                    html.Div("{{ st_error }}", id="st-error", classes="text-error")
                    html.Div("All cases of your queue are done.", v_if=("st_finished",),
                             id="st-finished")
                self.layout_manager.initialize_layout_grid(layout)
        self.editor_logic.set_ui(self.editor_ui)
        self.ctrl.st_save = self.save
        self.ctrl.st_skip = self.skip
        self.ctrl.st_flag = self.flag
        self.ctrl.st_predict = self.predict
        self.state.change("st_rings")(self._on_rings)
        self.state.change("st_wl")(self._on_window)
        self.ctrl.st_wl_auto = self.auto_window
        self.slicer.segmentation_editor.segmentation_modified.connect(self._on_modified)

    # -- cases -----------------------------------------------------------------------------------

    def _position(self):
        queue = self.store.queue(self.reader)
        done = sum(self.store.is_done(self.reader, c) for c in queue)
        if self.case_id is None:
            return f"{done} of {len(queue)} done"
        return f"case {queue.index(self.case_id) + 1} of {len(queue)} ({done} done)"

    def open_case(self, case_id):
        """Show a case of the reader's queue with the study's starting contour (or the
        autosaved contour in progress)."""
        scene = self.slicer.scene
        self.slicer.segmentation_editor.deactivate_effect()
        for node in (self.segmentation_node, self.volume_node, self.rings_node):
            if node is not None:
                scene.RemoveNode(node)
        self.segmentation_node = self.volume_node = self.rings_node = None
        self.case_id = case_id
        with self.state:
            self.state.st_case = case_id
            self.state.st_finished = case_id is None
            self.state.st_rings = False
            self.state.st_prediction = None
            self.state.st_position = self._position()
        if case_id is None:
            return
        loaded = self.store.load_image(case_id)
        self.loaded, self.image = loaded, loaded.image
        path = Path(self._tmp.name) / "image.nrrd"
        sitk.WriteImage(loaded.image, str(path))
        self.volume_node = self.slicer.io_manager.load_volumes(str(path))[0]
        self.volume_node.SetName(str(case_id))
        start = self.store.autosaved(self.reader, case_id)
        source = "autosave"
        if start is None:
            source = self.store.meta["start"]
            start = self._cnn_proposal(loaded) if source == "cnn" else None
        self.segmentation_node = self._segmentation_from(start)
        editor = self.slicer.segmentation_editor
        editor.set_active_segmentation(self.segmentation_node, self.volume_node)
        if editor.n_segments == 0:
            editor.add_empty_segment(segment_name="lesion")
        editor.set_active_segment_id(editor.get_nth_segment_id(0))
        self.slicer.display_manager.show_volume_in_slice_background(self.volume_node)
        self.slicer.display_manager.reset_views()
        arr = sitk.GetArrayViewFromImage(loaded.image)
        with self.state:
            self.state.st_wl_min = float(np.floor(arr.min()))
            self.state.st_wl_max = float(np.ceil(arr.max()))
        self.auto_window()
        self._opened_at = time.monotonic()
        self._edits = [{"start": source}]
        self._dirty = False
        sx, sy = loaded.image.GetSpacing()[:2]
        with self.state:
            self.state.st_spacing = f"{sx:.3g} x {sy:.3g} mm ({loaded.spacing_source})"
        if self._bundle is not None and self.current_mask().any():
            self.predict()

    def _cnn_proposal(self, loaded):
        try:
            from ..segmentation.commands import get_segmenter
            return get_segmenter().predict(loaded.image).mask
        except Exception as exc:                      # noqa: BLE001 (the reader contours by hand)
            log.warning("CNN proposal unavailable for %s: %s", self.case_id, exc)
            with self.state:
                self.state.st_error = f"No CNN proposal ({exc}); contour by hand."
            return None

    def _segmentation_from(self, mask):
        """A segmentation node holding ``mask`` (or nothing) in the volume's geometry."""
        editor = self.slicer.segmentation_editor
        if mask is None:
            return editor.create_empty_segmentation_node()
        node = self._labelmap_node(np.squeeze(sitk.GetArrayFromImage(mask)) > 0, "lesion")
        seg = editor.create_segmentation_node_from_labelmap(node)
        self.slicer.scene.RemoveNode(node)
        return seg

    def _mask_image(self, arr) -> sitk.Image:
        """A 2D array as a uint8 image in the case image's geometry."""
        img = sitk.GetImageFromArray(np.asarray(arr).astype(np.uint8))
        img.CopyInformation(self.image)
        return img

    def _labelmap_node(self, arr, name):
        """A label-map node of ``arr`` in the image's geometry, read through Slicer's own
        volume reader (it converts the file's LPS geometry to the scene's RAS)."""
        path = Path(self._tmp.name) / f"{name}.nrrd"
        sitk.WriteImage(self._mask_image(arr), str(path))
        scene = self.slicer.scene
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        node.SetName(name)
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        storage.ReadData(node)
        scene.RemoveNode(storage)
        return node

    def _set_brush_mm(self, diameter_mm):
        """Paint and Erase brushes in mm of the image (Slicer's default is a share of the
        screen, which changes with zoom; readers think in mm)."""
        from trame_slicer.app.logic.segmentation.brush_effect_logic import BrushEffectLogic
        from trame_slicer.app.ui import SliderState
        from trame_slicer.segmentation import BrushDiameterMode
        for logic in self.editor_logic._effect_logic:
            if isinstance(logic, BrushEffectLogic):
                data = logic._brush_state.data
                data.brush_diameter_mode = BrushDiameterMode.Absolute
                data.brush_diameter_slider = SliderState(min_value=0.5, max_value=20.0,
                                                         step=0.5, value=float(diameter_mm))
                data.use_sphere_brush = False

    def current_mask(self) -> np.ndarray:
        """The reader's contour on the image grid (2D uint8).

        Exported in the volume's reference geometry, so voxel (j, i) of the label map is pixel
        (y, x) of the image as SimpleITK reads it (both keep the file's index order).
        """
        from vtkmodules.util.numpy_support import vtk_to_numpy
        shape = sitk.GetArrayViewFromImage(self.image).shape
        editor = self.slicer.segmentation_editor
        node = editor.export_segmentation_to_labelmap(self.segmentation_node)
        try:
            data = node.GetImageData()
            scalars = data.GetPointData().GetScalars() if data is not None else None
            if scalars is None or data.GetNumberOfPoints() == 0:
                return np.zeros(shape, np.uint8)                # nothing drawn yet
            dims = data.GetDimensions()
            arr = vtk_to_numpy(scalars).reshape(dims[::-1])
            arr = np.squeeze(arr, axis=0) if arr.ndim == 3 else arr
        finally:
            self.slicer.scene.RemoveNode(node)
        if arr.shape != shape:
            raise RuntimeError(f"contour grid {arr.shape} differs from the image's {shape}")
        return (arr > 0).astype(np.uint8)

    def _on_modified(self, *_):
        self._dirty = True
        self._edits.append({"t_s": round(time.monotonic() - self._opened_at, 2),
                            "effect": self.slicer.segmentation_editor.get_active_effect_name()})
        if time.monotonic() - self._last_autosave > AUTOSAVE_S:
            self.autosave()

    def autosave(self):
        if self.case_id is None or not self._dirty:
            return
        try:
            self.store.autosave(self.reader, self.case_id, self.current_mask())
            self._last_autosave = time.monotonic()
        except Exception as exc:                      # noqa: BLE001 (keep the session alive)
            log.warning("autosave failed: %s", exc)

    # -- actions ---------------------------------------------------------------------------------

    def _commit_pending(self):
        """Finish what an effect still holds before the mask is read: a Paint stroke whose
        release has not arrived, a Draw polygon not yet closed (Slicer closes it on a right
        click). Their widgets apply the stroke when painting stops."""
        effect = self.slicer.segmentation_editor.active_effect
        for ref in list(getattr(effect, "_pipelines", []) if effect is not None else []):
            pipeline = ref()
            widget = getattr(pipeline, "widget", None)
            if widget is not None and widget.is_painting():
                widget.stop_painting()

    def save(self):
        if self.case_id is None:
            return
        self._commit_pending()
        try:
            path = self.store.save_contour(
                self.reader, self.case_id, self.current_mask(),
                start_source=self._edits[0]["start"] if self._edits else None,
                seconds=time.monotonic() - self._opened_at, edits=self._edits[1:])
        except Exception as exc:                      # noqa: BLE001 (shown, nothing lost)
            with self.state:
                self.state.st_error = f"Not saved: {exc}"
            return
        with self.state:
            self.state.st_error = ""
            self.state.st_message = f"Saved {self.case_id} ({path.name})"
        self.open_case(self.store.next_case(self.reader))

    def skip(self):
        if self.case_id is None:
            return
        self.store.skip(self.reader, self.case_id)
        with self.state:
            self.state.st_message = f"Skipped {self.case_id}"
        self.open_case(self.store.next_case(self.reader))

    def flag(self):
        if self.case_id is None:
            return
        self.store.flag(self.reader, self.case_id, self.state.st_flag_note or "")
        with self.state:
            self.state.st_message = f"Flagged {self.case_id}"
            self.state.st_flag_note = ""

    # -- overlays and prediction -----------------------------------------------------------------

    def _display(self):
        return self.volume_node.GetScalarVolumeDisplayNode() if self.volume_node else None

    def auto_window(self):
        """Slicer's automatic window/level for the image, shown on the slider."""
        d = self._display()
        if d is None:
            return
        d.AutoWindowLevelOn()
        with self.state:
            self.state.st_wl = [d.GetWindowLevelMin(), d.GetWindowLevelMax()]

    def _on_window(self, st_wl=None, **_):
        d = self._display()
        if d is None or not st_wl or len(st_wl) != 2:
            return
        lo, hi = float(min(st_wl)), float(max(st_wl))
        if (lo, hi) == (d.GetWindowLevelMin(), d.GetWindowLevelMax()):
            return
        d.AutoWindowLevelOff()
        d.SetWindowLevelMinMax(lo, max(hi, lo + 1e-3))
        for view in self.slicer.view_manager.get_slice_views():
            view.schedule_render()

    def _on_rings(self, st_rings=False, **_):
        scene = self.slicer.scene
        if self.rings_node is not None:
            scene.RemoveNode(self.rings_node)
            self.rings_node = None
        views = self.slicer.view_manager.get_slice_views()
        if st_rings and self.case_id is not None:
            mask = self.current_mask()
            if not mask.any():
                with self.state:
                    self.state.st_error = "Draw the lesion first: the rings grow from it."
                    self.state.st_rings = False
                return
            from ..imaging.rings import build_regions
            regions = build_regions(self.image, self._mask_image(mask), OVERLAY_RINGS_MM,
                                    annuli=True)
            arr = sitk.GetArrayFromImage(regions.label_map).astype(np.uint8)
            arr[arr == regions.labels.get("tumor", 1)] = 0     # the reader's contour shows it
            self.rings_node = self._labelmap_node(arr, "rings")
            self.rings_node.CreateDefaultDisplayNodes()
        for view in views:
            logic = view._logic                         # trame-slicer keeps the slice logic here
            logic.GetSliceCompositeNode().SetLabelVolumeID(
                self.rings_node.GetID() if self.rings_node else None)
            logic.GetSliceNode().SetUseLabelOutline(True)      # outlines keep the image visible
            view.schedule_render()

    def predict(self):
        """The bundle's prediction card for the current contour (features extracted with the
        bundle's own params and regions)."""
        if self._bundle is None or self.case_id is None:
            return None
        from ..modelling.predict import predict_case
        mask = self.current_mask()
        if not mask.any():
            with self.state:
                self.state.st_error = "Draw the lesion first: the prediction needs a contour."
            return None
        try:
            pr = predict_case(self._bundle, None, self._mask_image(mask), loaded=self.loaded,
                              case_id=self.case_id)
        except Exception as exc:                      # noqa: BLE001 (shown, the case stays)
            with self.state:
                self.state.st_error = f"No prediction: {exc}"
            return None
        card = {"cls": f"Predicted: {pr.predicted_class}",
                "probs": [{"k": k, "p": f"{v:.3f}"} for k, v in pr.probabilities.items()],
                "rad": None if pr.rad_score is None else f"{pr.rad_score:.3f}",
                "warnings": list(pr.warnings), "engine": pr.qc.get("engine", "")}
        with self.state:
            self.state.st_prediction = card
            self.state.st_error = ""
        return pr


class CoordinatorStation:
    """The coordinator's web app: progress per reader, flags, Dice / HD95 as soon as two
    readers saved a case, the reader manifest and the full reader-study report (ICC per
    feature, stable features) on the finished cases."""

    def __init__(self, store: StudyStore, server=None, params="cui2023", rings="3,5,8"):
        from trame.app import get_server
        self.store = store
        self.server = get_server(server, client_type="vue3")
        _install_gate(self.server, _token_gate(store, "coordinator", None))
        self.state, self.ctrl = self.server.state, self.server.controller
        s = self.state
        s.trame__title = "HER2Radiomics station: coordinator"
        s.co_progress, s.co_agreement, s.co_flags, s.co_icc = [], [], [], []
        s.co_params, s.co_rings = params, rings
        s.co_message, s.co_error, s.co_running, s.co_summary = "", "", False, None
        self._build_ui()
        self.refresh()

    def _build_ui(self):
        from trame.ui.vuetify3 import SinglePageLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        def table(rows_var, cols, table_id):
            with v.VTable(density="compact", id=table_id):
                with html.Thead(), html.Tr():
                    for c in cols:
                        html.Th(c)
                with html.Tbody():
                    with html.Tr(v_for=f"row in {rows_var}", key="row.key"):
                        for c in cols:
                            html.Td(f"{{{{ row['{c}'] }}}}")

        with SinglePageLayout(self.server) as layout:
            layout.title.set_text("HER2Radiomics reader study: coordinator")
            with layout.toolbar:
                v.VSpacer()
                v.VBtn("Refresh", id="co-refresh", click=self.ctrl.co_refresh, classes="mx-1")
                v.VBtn("Export reader manifest", id="co-export", click=self.ctrl.co_export,
                       classes="mx-1")
                v.VBtn("Run reader study", id="co-run", click=self.ctrl.co_run,
                       loading=("co_running",), classes="mx-1", color="primary")
            with layout.content, v.VContainer(fluid=True):
                html.Div("{{ co_message }}", id="co-message", classes="text-success")
                html.Div("{{ co_error }}", id="co-error", classes="text-error")
                html.H3("Progress per reader")
                table("co_progress", ["reader", "done", "skipped", "flagged", "left", "total"],
                      "co-progress")
                html.H3("Contour agreement (cases two readers saved)", classes="mt-4")
                table("co_agreement", ["case_id", "reader_a", "reader_b", "dice", "hd95_mm",
                                       "area_diff_pct"], "co-agreement")
                html.H3("Flags", classes="mt-4")
                table("co_flags", ["reader", "case_id", "note"], "co-flags")
                html.H3("Reader study (ICC per feature)", classes="mt-4")
                html.Div("{{ co_summary }}", id="co-summary")
                table("co_icc", ["feature", "ICC", "CI95", "band"], "co-icc")
        self.ctrl.co_refresh = self.refresh
        self.ctrl.co_export = self.export
        self.ctrl.co_run = self.run_study

    def refresh(self):
        prog = self.store.progress()
        agree = self.store.agreement()
        flags = [{"key": f"{r}:{c}", "reader": r, "case_id": c, "note": n}
                 for r, c, n in self.store.flags()]
        with self.state:
            self.state.co_progress = [dict(row, key=row["reader"])
                                      for row in prog.to_dict("records")]
            self.state.co_agreement = [
                {"key": f"{r.case_id}:{r.reader_a}:{r.reader_b}", "case_id": r.case_id,
                 "reader_a": r.reader_a, "reader_b": r.reader_b, "dice": f"{r.dice:.4f}",
                 "hd95_mm": f"{r.hd95_mm:.2f}", "area_diff_pct": f"{r.area_diff_pct:.1f}"}
                for r in agree.itertuples()]
            self.state.co_flags = flags

    def export(self):
        path = self.store.root / "reader_manifest.csv"
        self.store.export_reader_manifest(path)
        with self.state:
            self.state.co_message = f"Wrote {path}"
        return path

    async def run_study(self):
        """Export the manifest and run the reader-study engine on it (in a worker thread, so
        the page stays live); show the ICC table and the report's path."""
        import asyncio

        import pandas as pd

        from ..readers.study import run_reader_study
        if self.state.co_running:
            return
        with self.state:
            self.state.co_running, self.state.co_error = True, ""
        try:
            manifest = self.export()
            if len(pd.read_csv(manifest)) == 0:
                raise RuntimeError("no case has two saved contours yet")
            out = self.store.root / "reader_study"
            doc = await asyncio.get_running_loop().run_in_executor(
                None, lambda: run_reader_study(manifest, out, params=self.state.co_params,
                                               rings=self.state.co_rings, progress=False))
            icc = pd.read_csv(out / "icc.csv")
            form = doc.get("form", "ICC2")
            rows = [{"key": r["feature"], "feature": r["feature"], "ICC": f"{r[form]:.3f}",
                     "CI95": f"{r[form + '_ci_low']:.2f} to {r[form + '_ci_high']:.2f}",
                     "band": str(r.get("band", ""))}
                    for r in icc.to_dict("records")]
            with self.state:
                self.state.co_icc = rows
                self.state.co_summary = (
                    f"{doc['n_cases']} cases, {doc['n_readers']} readers, "
                    f"{doc['n_stable']} of {doc['n_features']} features stable "
                    f"({form} >= {doc['threshold']}); mean Dice {doc['mean_dice']:.3f}; "
                    f"report {doc['html']}")
                self.state.co_message = "Reader study done"
        except Exception as exc:                      # noqa: BLE001 (shown to the coordinator)
            with self.state:
                self.state.co_error = f"Reader study failed: {exc}"
        finally:
            with self.state:
                self.state.co_running = False
            self.refresh()


def serve_coordinator(study, host="127.0.0.1", port=0, ready_file=None):
    """Run the coordinator's station (blocking)."""
    app = CoordinatorStation(StudyStore(study))
    _start(app.server, host, port, ready_file)


def serve_reader(study, reader, host="127.0.0.1", port=0, bundle=None, ready_file=None):
    """Run one reader's station (blocking)."""
    store = StudyStore(study)
    app = ReaderStation(store, reader, bundle=bundle)
    _start(app.server, host, port, ready_file)


def _start(server, host, port, ready_file):
    @server.controller.add("on_server_ready")
    def _ready(**_):
        if ready_file:
            Path(ready_file).write_text(json.dumps({"port": server.port, "pid": os.getpid()}))

    server.start(host=host, port=int(port), open_browser=False, show_connection_info=False,
                 timeout=0, disable_logging=True)
