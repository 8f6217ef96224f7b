"""Which panel step can run now, and if not, why: pure Python, no Slicer, no Qt.

The widget collects a :class:`PanelState` from the scene and the parameter node, calls
:func:`stepStatus` and only *displays* the answer (button enabled state and tooltip). Keeping the
rules here means they are tested without Qt (``Testing/test_slicer_controller.py``) and the GUI
never offers an action that cannot run.

Example::

    state = PanelState(volumeSelected=True, spacingKnown=False, tumourSegment=True)
    stepStatus(state)["rings"]
    # StepStatus(enabled=False, reason='Rings are in millimetres: enter the pixel spacing ...')
"""
from dataclasses import dataclass, field

STEPS = ("autoSegment", "rings", "features", "predict", "readerStudy", "report")


@dataclass(frozen=True)
class StepStatus:
    enabled: bool
    reason: str


@dataclass
class PanelState:
    """Everything the rules look at (filled by the widget from MRML + parameter node)."""

    volumeSelected: bool = False
    spacingKnown: bool = False
    segmenterAvailable: bool = True
    segmenterProblem: str = ""
    torchMissing: bool = False        # the first Auto-segment then asks to install PyTorch
    tumourSegment: bool = False
    ringsText: str = "3,5,8"
    ringsBuilt: bool = False
    paramsValid: bool = True
    paramsProblem: str = ""
    bundleLoaded: bool = False
    bundleProblems: list = field(default_factory=list)   # blocking mismatches, one line each
    bundleNeedsSite: bool = False
    site: str = ""
    bundleNeedsRings: bool = False
    predictionDone: bool = False
    readerSegmentations: int = 0
    busy: str = ""                                         # name of the running job, if any


def chosenPath(value):
    """The file a ``Path`` parameter names, or None when nothing is chosen.

    A parameter-node ``Path`` field defaults to ``Path()``, which prints as "." and is truthy,
    so ``bool(path)`` cannot tell "nothing chosen" (None, "" and "." are all unset).
    """
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", ".") else text


def parseRingsText(text):
    """``"3, 5, 8"`` -> [3.0, 5.0, 8.0]; raises ValueError with a one-line reason."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("enter at least one ring distance in mm, e.g. 3,5,8")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"'{p}' is not a number of millimetres") from None
        if not (0 < v <= 50):     # beyond 50 mm a "peritumoral" ring covers most of a US frame
            raise ValueError(f"{p} mm: ring distances must be between 0 and 50 mm")
        values.append(v)
    if len(set(values)) != len(values):
        raise ValueError("ring distances must be different")
    return sorted(values)


def _first(rules, okReason):
    """The first (blocked, reason) rule that applies, else the step is enabled."""
    for blocked, reason in rules:
        if blocked:
            return StepStatus(False, reason)
    return StepStatus(True, okReason)


def stepStatus(state: PanelState) -> dict:
    """For each step in :data:`STEPS`, whether it can run now and a one-line reason."""
    try:
        rings = parseRingsText(state.ringsText)
        ringsError = ""
    except ValueError as exc:
        rings, ringsError = [], str(exc)
    # shared preconditions, in the order the user meets them
    busy = (bool(state.busy), f"Wait: {state.busy} is running (or cancel it).")
    volume = (not state.volumeSelected, "Select the ultrasound or mammography image first.")
    tumour = (not state.tumourSegment, "Create the tumour segment first (Auto-segment, or "
                                       "draw it in the Segment Editor).")
    return {
        "autoSegment": _first([
            busy, volume,
            (not state.segmenterAvailable,
             state.segmenterProblem or "The CNN needs PyTorch (install the PyTorch extension)."),
        ], "Run the CNN on the image (a markups point or two-point box guides it)."
           + (" The first run asks to install PyTorch (several GB, once)."
              if state.torchMissing else "")),
        "rings": _first([
            busy, volume, tumour,
            (not state.spacingKnown,
             "Rings are in millimetres: enter the pixel spacing of this image first."),
            (bool(ringsError), ringsError[:1].upper() + ringsError[1:] + "."),
        ], "Create ring segments at " + ", ".join(f"{r:g}" for r in rings) + " mm."),
        "features": _first([
            busy, volume, tumour,
            (not state.paramsValid, state.paramsProblem or "Choose a valid params file."),
        ], "Extract features of the tumour" + (" and rings" if state.ringsBuilt else "")
           + " into a table."),
        "predict": _first([
            busy,
            (not state.bundleLoaded, "Load a model bundle first."),
            volume, tumour,
            (state.bundleNeedsRings and not state.spacingKnown,
             "This model uses peritumoral rings in mm: enter the pixel spacing."),
            (state.bundleNeedsSite and not state.site,
             "This model harmonises scanners: choose the scanner site."),
            (bool(state.bundleProblems), (state.bundleProblems or [""])[0]),
        ], "Predict HER2 status with the loaded model."),
        "readerStudy": _first([
            busy, volume,
            (state.readerSegmentations < 2, "Pick at least two segmentations (one per reader)."),
        ], f"Compare {state.readerSegmentations} readers' contours (Dice, HD95)."),
        "report": _first([
            busy,
            (not state.predictionDone, "Predict first: the report shows the prediction."),
        ], "Save the HTML or PDF report of this prediction."),
    }
