"""The browser reader station: one trame-slicer process per reader, one for the coordinator.

Needs the ``station`` extra (trame-slicer 2.0.0 on slicer-core 5.11); imported only by
``her2radiomics station``. All study rules (queues, blinding, atomic contours, access) live in
:mod:`.store`, who may connect and what a browser may send in :mod:`.gate`; this module is the
reader's web front end (the coordinator's is :mod:`.coordinator`).

Why one process per reader: a trame server shares its state (and its rendered views) with every
client connected to it, so two readers in one process would see each other's contours. Each
reader gets a port; the coordinator gets its own; the launcher restarts a process that dies,
on its port, and the page reconnects by itself (``static/station.js``).

No edit is lost: the contour in progress is autosaved at most :data:`AUTOSAVE_QUIET_S` after the
last stroke, when the page is hidden and when the browser goes away; a restarted station opens
it again and says so. Save writes the contour first; the next case's CNN proposal was made
when the study was created (once, for every reader), so no reader process loads the CNN.

Rendering: trame-slicer asks for 8x multisampling per view, which software (Mesa) rendering on a
machine without a GPU pays about 6x for; a 2D slice view gains nothing from it, so it is off, and
frames are streamed as JPEG.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..modelling.bundle import load_bundle
from ..modelling.predict import predict_case
from ..segmentation.inference import get_segmenter
from . import gate
from .coordinator import CoordinatorStation
from .reader_page import MAX_NOTE, ReaderPage
from .reader_view import RING_COLOURS, ReaderView
from .store import StudyStore

# trame, trame_slicer, vtk and aiohttp are imported inside the methods that build and serve
# the app: they come with the optional [station] extra (Slicer's core), which the stores and
# the rest of the command line never need

log = logging.getLogger(__name__)

#: default brush diameter in mm (absolute, not relative to the screen: readers think in mm)
DEFAULT_BRUSH_MM = 3.0
#: autosave this long after the last stroke (s); the issue's bound is 2 s
AUTOSAVE_QUIET_S = 1.5
#: strokes closer than this (s) are one edit (a stroke fires several modified events)
STROKE_GAP_S = 0.4
#: a confirmation stays this long on the page (s); errors stay until the next action
MESSAGE_S = 8.0
#: autosave every this many seconds of continuous editing even without a pause (s)
AUTOSAVE_S = 20.0

STATIC = Path(__file__).with_name("static")


class ReaderStation(ReaderPage, ReaderView):
    """The reader's web app: queue, image, Segment Editor, rings, Save / Skip / Flag.

    Parameters
    ----------
    store : StudyStore
    reader : str
        The reader this process serves (its sign-in is the only one admitted).
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
        self.server.enable_module({"serve": {"h2r_station": str(STATIC)},
                                   "scripts": ["h2r_station/station.js"]})
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
        self._edits: list = []
        self._last_edit = 0.0
        self._last_modified = 0.0
        self._last_autosave = time.monotonic()
        self._dirty = False
        self._active_s, self._active_since = 0.0, time.monotonic()
        self._restored = ""
        self._bundle = None
        if bundle:
            self._bundle = load_bundle(bundle)     # a bad bundle stops the start, one line

        self._init_state()
        self._build_ui()
        self._set_brush_mm(DEFAULT_BRUSH_MM)
        self.gate = gate.install(self.server, gate.Sessions(store, "reader", reader),
                                 self._validators(), on_connect=self._on_connect,
                                 on_close=self._on_close,
                                 routes={("POST", "/h2r/beacon"): self._beacon})
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
        s.st_summary = ""
        s.st_prediction = None
        s.st_has_bundle = self._bundle is not None
        s.st_spacing = ""
        s.st_legend = [{"name": k, "rgb": "rgb(%d,%d,%d)" % tuple(int(255 * c) for c in v)}
                       for k, v in RING_COLOURS.items()]

    def _say(self, message="", error=""):
        """A confirmation (cleared after :data:`MESSAGE_S`) or an error, at the top centre."""
        with self.state:
            self.state.st_message, self.state.st_error = message, error
        if message:
            stamp = message

            def clear():
                if self.state.st_message == stamp:
                    with self.state:
                        self.state.st_message = ""
            _later_if_loop(MESSAGE_S, clear)

    # -- cases -----------------------------------------------------------------------------------

    def _position(self):
        queue = self.store.queue(self.reader)
        done = sum(self.store.is_done(self.reader, c) for c in queue)
        if self.case_id is None:
            return f"{done} of {len(queue)} done"
        return f"case {queue.index(self.case_id) + 1} of {len(queue)} ({done} done)"

    def _summary(self):
        queue = self.store.queue(self.reader)
        q = self.store._read_queue(self.reader)
        done = sum(self.store.is_done(self.reader, c) for c in queue)
        return (f"{done} saved, {len(q['skipped'])} skipped, {len(q['flags'])} flagged, of "
                f"{len(queue)} cases. Thank you. You can close this page.")

    def open_case(self, case_id):
        """Show a case of the reader's queue with the study's starting contour (or the
        autosaved contour in progress, said so on the page)."""
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
            self.state.st_flag_note = ""         # a note belongs to the case it was written on
            self.state.st_position = self._position()
            self.state.st_summary = self._summary() if case_id is None else ""
        self._restored = ""
        if case_id is None:
            return
        loaded = self.store.load_image(case_id)
        self.loaded, self.image = loaded, loaded.image
        path = Path(self._tmp.name) / "image.nrrd"
        sitk.WriteImage(loaded.image, str(path))
        self.volume_node = self.slicer.io_manager.load_volumes(str(path))[0]
        self.volume_node.SetName(str(case_id))
        start = self.store.autosaved(self.reader, case_id)
        info = self.store.autosave_info(self.reader, case_id) if start is not None else {}
        if start is not None:
            first = info.get("start_source", "unknown")
            source = f"restored autosave (started from {first})"
            when = str(info.get("autosaved", ""))[11:16]
            self._restored = (f"restored your contour in progress of {case_id}"
                              + (f" (autosaved at {when})" if when else ""))
        else:
            source = self.store.meta["start"]
            start = self._cnn_proposal(case_id, loaded) if source == "cnn" else None
        self.segmentation_node = self._segmentation_from(start)
        editor = self.slicer.segmentation_editor
        editor.set_active_segmentation(self.segmentation_node, self.volume_node)
        if editor.n_segments == 0:
            editor.add_empty_segment(segment_name="lesion")
        editor.set_active_segment_id(editor.get_nth_segment_id(0))
        self._style_contour()
        self.slicer.display_manager.show_volume_in_slice_background(self.volume_node)
        self.slicer.display_manager.reset_views()
        arr = sitk.GetArrayViewFromImage(loaded.image)
        with self.state:
            self.state.st_wl_min = float(np.floor(arr.min()))
            self.state.st_wl_max = float(np.ceil(arr.max()))
        self.auto_window()
        self._edits = [{"start": source}]
        self._last_edit = 0.0
        self._active_s = float(info.get("seconds") or 0.0)
        self._active_since = time.monotonic()
        self._dirty = False
        if info.get("edits"):
            self._edits += [dict(e) for e in info["edits"] if isinstance(e, dict)]
        sx, sy = loaded.image.GetSpacing()[:2]
        with self.state:
            self.state.st_spacing = f"{sx:.3g} x {sy:.3g} mm ({loaded.spacing_source})"
        if self._restored:
            self._say(self._restored[0].upper() + self._restored[1:] + ".")
        if self._bundle is not None and self.current_mask().any():
            self.predict()

    def _cnn_proposal(self, case_id, loaded):
        """The study's CNN proposal (made once at creation, for every reader: the station's
        processes never load the CNN); made here only for a study that lacks it."""
        mask = self.store.proposal(case_id)
        if mask is not None:
            return mask if sitk.GetArrayViewFromImage(mask).any() else None
        try:
            mask = get_segmenter().predict(loaded.image).mask
            self.store.save_proposal(case_id, mask)
            return mask
        except Exception as exc:                      # noqa: BLE001 (the reader contours by hand)
            log.warning("CNN proposal unavailable for %s: %s", case_id, exc)
            self._say(error=f"No CNN proposal ({exc}); contour by hand.")
            return None

    # -- edits, active time, autosave --------------------------------------------------------------

    def _on_modified(self, *_):
        now = time.monotonic()
        self._dirty = True
        if now - self._last_edit > STROKE_GAP_S:        # a new stroke: one edit
            self._edits.append({"t_s": round(self._seconds(), 2), "effect":
                                self.slicer.segmentation_editor.get_active_effect_name()})
        self._last_edit = self._last_modified = now
        if now - self._last_autosave > AUTOSAVE_S:     # long continuous editing
            self.autosave()
        _later_if_loop(AUTOSAVE_QUIET_S, self._autosave_when_quiet)

    def _autosave_when_quiet(self):
        if time.monotonic() - self._last_modified >= AUTOSAVE_QUIET_S - 0.05:
            self.autosave()

    def _seconds(self) -> float:
        """Active time on the case: while its page is open and shown."""
        run = time.monotonic() - self._active_since if self._active_since is not None else 0.0
        return self._active_s + run

    def _pause_clock(self):
        if self._active_since is not None:
            self._active_s += time.monotonic() - self._active_since
            self._active_since = None

    def _resume_clock(self):
        if self._active_since is None:
            self._active_since = time.monotonic()

    def autosave(self):
        if self.case_id is None or not self._dirty:
            return
        try:
            self._commit_pending()
            start = self._edits[0]["start"] if self._edits else None
            if isinstance(start, str) and start.startswith("restored autosave"):
                start = start[start.find("from ") + 5:].rstrip(")")
            self.store.autosave(self.reader, self.case_id, self.current_mask(), info={
                "start_source": start, "seconds": round(self._seconds(), 1),
                "edits": self._edits[1:]})
            self._last_autosave = time.monotonic()
            self._dirty = False
        except Exception as exc:                      # noqa: BLE001 (keep the session alive)
            log.warning("autosave failed: %s", exc)

    def _on_hidden(self, why="hidden"):
        """The page was hidden (another tab, minimised) or is being left: keep the work."""
        self.autosave()
        self._pause_clock()
        return "saved"

    def _on_visible(self):
        self._resume_clock()

    def _on_connect(self):
        self._resume_clock()

    def _on_close(self):
        """The browser went away (closed, reloaded, crashed, network): keep the work."""
        self.autosave()
        self._pause_clock()

    async def _beacon(self, request):
        """``navigator.sendBeacon`` from a page being left (signed in: the gate checked)."""
        from aiohttp import web
        await request.content.read(256)
        self._on_hidden("pagehide")
        return web.Response(status=204)

    def _on_reconnected(self):
        self._resume_clock()
        return self._restored or "the station is back"

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
        """Write the contour (before anything else), then open the next case."""
        if self.case_id is None:
            return
        self._commit_pending()
        try:
            source = self._edits[0]["start"] if self._edits else None
            path = self.store.save_contour(
                self.reader, self.case_id, self.current_mask(), start_source=source,
                seconds=round(self._seconds(), 1), edits=self._edits[1:])
        except Exception as exc:                      # noqa: BLE001 (shown, nothing lost)
            self._say(error=f"Not saved: {exc}")
            return
        saved = self.case_id
        self.open_case(self.store.next_case(self.reader))
        self._say(f"Saved {saved} ({path.name})"
                  + (f"; {self._restored}" if self._restored else ""))

    def skip(self):
        if self.case_id is None:
            return
        skipped = self.case_id
        self.autosave()                  # an edited contour stays for when the case is back
        self.store.skip(self.reader, skipped)
        self.open_case(self.store.next_case(self.reader))
        self._say(f"Skipped {skipped}" + (f"; {self._restored}" if self._restored else ""))

    def flag(self):
        if self.case_id is None:
            return
        self.store.flag(self.reader, self.case_id, str(self.state.st_flag_note or "")[:MAX_NOTE])
        with self.state:
            self.state.st_flag_note = ""
        self._say(f"Flagged {self.case_id}")

    # -- overlays and prediction -----------------------------------------------------------------
    def predict(self):
        """The bundle's prediction card for the current contour (features extracted with the
        bundle's own params and regions)."""
        if self._bundle is None or self.case_id is None:
            return None
        mask = self.current_mask()
        if not mask.any():
            self._say(error="Draw the lesion first: the prediction needs a contour.")
            return None
        try:
            pr = predict_case(self._bundle, self.loaded, self._mask_image(mask),
                              case_id=self.case_id).prediction
        except Exception as exc:                      # noqa: BLE001 (shown, the case stays)
            self._say(error=f"No prediction: {exc}")
            return None
        card = {"cls": f"Predicted: {pr.predicted_class}",
                "probs": [{"k": k, "p": f"{v:.3f}"} for k, v in pr.probabilities.items()],
                "rad": None if pr.rad_score is None else f"{pr.rad_score:.3f}",
                "warnings": list(pr.warnings), "engine": pr.qc.get("engine", "")}
        with self.state:
            self.state.st_prediction = card
            self.state.st_error = ""
        return pr


def _later_if_loop(delay_s, fn):
    """Call ``fn`` after ``delay_s`` on the server's event loop; nothing without a running
    loop (a station used in process: its tests call the step themselves)."""
    try:
        asyncio.get_running_loop().call_later(delay_s, fn)
    except RuntimeError:
        pass


def serve_coordinator(study, host="127.0.0.1", port=0, ready_file=None, **options):
    """Run the coordinator's station (blocking)."""
    app = CoordinatorStation(StudyStore(study), **options)
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

    try:
        server.start(host=host, port=int(port), open_browser=False, show_connection_info=False,
                     timeout=0, disable_logging=True)
    except OSError as exc:        # a busy port: one line (the launcher checks first, too)
        raise InputError(f"port {port} on {host}: {exc.strerror or exc}; choose another "
                         "--port") from None
