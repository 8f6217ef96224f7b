"""The reader's page in the station: the app bar, the tools, window/level, the ring legend, the
prediction card and the messages, and what a browser may set on it (a part of
:class:`.web.ReaderStation`, which mixes it in; trame and trame-slicer come with the
``station`` extra and are imported when the page is built)."""
from __future__ import annotations

from . import gate
from .reader_view import BRUSH_MM

#: where trame-slicer keeps the Paint brush's diameter (its PaintEffectState typed state)
PAINT_BRUSH_KEY = "PaintEffectState__brush_diameter_slider__SliderState__value"
#: a note longer than this (characters) is cut: a flag is a sentence, not a file
MAX_NOTE = 500


class ReaderPage:
    """The page of a reader's station (mixed into :class:`.web.ReaderStation`, whose
    ``server``, ``ctrl``, ``state`` and actions it wires to the page's widgets)."""

    def _build_ui(self):
        from trame.widgets import html
        from trame.widgets import vuetify3 as v
        from trame_slicer.app.ui import SegmentEditorUI, SegmentEditorUndoRedoUI, ViewerLayout

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
                       click=self.ctrl.st_save, disabled=("st_finished",),
                       prepend_icon="mdi-content-save")
                v.VBtn("Skip", id="st-skip", variant="tonal", classes="mx-1",
                       click=self.ctrl.st_skip, disabled=("st_finished",),
                       prepend_icon="mdi-skip-next")
                v.VTextField(v_model=("st_flag_note",), placeholder="note", id="st-note",
                             density="compact", hide_details=True, style="max-width: 12em;",
                             classes="mx-1", maxlength=MAX_NOTE)
                v.VBtn("Flag", id="st-flag", variant="tonal", classes="mx-1",
                       click=self.ctrl.st_flag, disabled=("st_finished",),
                       prepend_icon="mdi-flag")
            with layout.drawer, html.Div(classes="d-flex flex-column"):
                # the Segment Editor's own options come last; what a reader needs without
                # scrolling at 1280 x 800 comes first: the tools (icon and word), the brush
                # size in mm, window/level, the ring legend
                with html.Div(style="order: 10;"):
                    self.editor_ui = SegmentEditorUI()
                with html.Div(classes="mx-3 mt-2", id="st-tools", style="order: 1;"):
                    html.Div("Tools", classes="text-caption")
                    self._tool_buttons(html, v)
                    html.Div("Brush diameter: {{ %s }} mm (Paint, Erase)" % self._brush_key(),
                             classes="text-caption mt-1", id="st-brush")
                with html.Div(classes="mx-3 mt-2", style="order: 2;"):
                    html.Div("Window / level (grey values)", classes="text-caption")
                    v.VRangeSlider(v_model=("st_wl", [0, 255]), min=("st_wl_min", 0),
                                   max=("st_wl_max", 255), step=1, hide_details=True,
                                   density="compact", id="st-wl", thumb_label=True)
                    v.VBtn("Auto window", click=self.ctrl.st_wl_auto, size="small",
                           variant="text", id="st-wl-auto", prepend_icon="mdi-contrast")
                with html.Div(v_if=("st_rings",), classes="mx-3 mt-1 text-caption",
                              id="st-legend", style="order: 3;"):
                    with html.Span(v_for="r in st_legend", key="r.name", classes="mr-3"):
                        html.Span(style=("{background: r.rgb, display: 'inline-block', "
                                         "width: '12px', height: '12px', "
                                         "marginRight: '4px'}",))
                        html.Span("ring {{ r.name }}")
                with html.Div(style="order: 4;"):
                    v.VBtn("Predict HER2 for this contour", v_if=("st_has_bundle",),
                           id="st-predict", click=self.ctrl.st_predict, classes="ma-2",
                           variant="tonal", prepend_icon="mdi-chart-bar")
                    with v.VCard(v_if=("st_prediction",), classes="ma-2", id="st-prediction"):
                        v.VCardTitle("{{ st_prediction.cls }}")
                        with v.VCardText():
                            html.Div("P({{ p.k }}) = {{ p.p }}",
                                     v_for="p in st_prediction.probs", key="p.k")
                            html.Div("Rad-score {{ st_prediction.rad }}",
                                     v_if=("st_prediction.rad",))
                            html.Div("{{ w }}", v_for="w in st_prediction.warnings", key="w",
                                     classes="text-warning")
                            html.Div("{{ st_prediction.engine }}", classes="text-caption")
                            html.Div("Research use only; not a diagnostic device.",
                                     classes="text-caption")
            with layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.editor_ui)
            with layout.content:
                # every message on top of everything (app bar, drawers, the view), centred
                # just under the app bar: seen at once, and never over a button
                with html.Div(id="st-banner", style=(
                        "position: fixed; top: 72px; left: 50%; transform: translateX(-50%); "
                        "z-index: 5000; max-width: 60vw; pointer-events: none;")):
                    v.VAlert("{{ st_message }}", v_show=("st_message",), type="success",
                             density="compact", id="st-message", classes="mb-1",
                             style="pointer-events: auto;")
                    v.VAlert("{{ st_error }}", v_show=("st_error",), type="error",
                             density="compact", id="st-error",
                             style="pointer-events: auto;")
                with v.VCard(v_if=("st_finished",), id="st-finished", style=(
                        "position: absolute; inset: 0; z-index: 20; display: flex; "
                        "flex-direction: column; justify-content: center; "
                        "align-items: center;")):
                    v.VCardTitle("All cases of your queue are done.")
                    v.VCardText("{{ st_summary }}", id="st-summary")
                self.layout_manager.initialize_layout_grid(layout)
        self.editor_logic.set_ui(self.editor_ui)
        self.ctrl.st_save = self.save
        self.ctrl.st_skip = self.skip
        self.ctrl.st_flag = self.flag
        self.ctrl.st_predict = self.predict
        self.state.change("st_rings")(self._on_rings)
        self.state.change("st_wl")(self._on_window)
        self.ctrl.st_wl_auto = self.auto_window
        self.ctrl.trigger("h2r_hidden")(self._on_hidden)
        self.ctrl.trigger("h2r_visible")(self._on_visible)
        self.ctrl.trigger("h2r_reconnected")(self._on_reconnected)
        self.slicer.segmentation_editor.segmentation_modified.connect(self._on_modified)

    def _tool_buttons(self, html, v):
        from trame_slicer.segmentation import (SegmentationEffectDraw,
                                               SegmentationEffectErase,
                                               SegmentationEffectNoTool,
                                               SegmentationEffectPaint,
                                               SegmentationEffectScissors)
        with html.Div(classes="d-flex flex-wrap"):
            for name, icon, effect in (("Paint", "mdi-brush", SegmentationEffectPaint),
                                       ("Erase", "mdi-eraser", SegmentationEffectErase),
                                       ("Draw", "mdi-draw", SegmentationEffectDraw),
                                       ("Scissors", "mdi-content-cut",
                                        SegmentationEffectScissors),
                                       ("View only", "mdi-cursor-default",
                                        SegmentationEffectNoTool)):
                with v.VBtn(size="small", variant="tonal", classes="ma-1",
                            id=f"st-tool-{name.split()[0].lower()}",
                            active=self.editor_ui.is_active_effect(effect),
                            click=(lambda e=effect: self.editor_ui.effect_button_clicked(e))):
                    v.VIcon(icon, start=True)
                    html.Span(name)

    @staticmethod
    def _brush_key():
        """The Paint brush's diameter in trame-slicer's state (its typed state's name)."""
        return PAINT_BRUSH_KEY

    def _validators(self):
        """What a browser may set, and how (:func:`.gate.install`)."""
        lo_b, hi_b = BRUSH_MM

        def brush(value):
            return min(max(gate.finite(value), lo_b), hi_b)

        def window(value):
            lo, hi = (gate.finite(v) for v in value)
            vmin, vmax = float(self.state.st_wl_min), float(self.state.st_wl_max)
            return [min(max(lo, vmin), vmax), min(max(hi, vmin), vmax)]

        def note(value):
            return str(value)[:MAX_NOTE]

        def flag(value):
            return bool(value)
        return {(lambda k: k.endswith("__SliderState__value") and "brush" in k): brush,
                (lambda k: k == "st_wl"): window, (lambda k: k == "st_flag_note"): note,
                (lambda k: k == "st_rings"): flag,
                (lambda k: k.startswith("st_") and k not in (
                    "st_wl", "st_flag_note", "st_rings")): _read_only}


def _read_only(value):
    raise ValueError("set by the station, not by the browser")
