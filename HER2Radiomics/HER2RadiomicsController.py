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


def stepStatus(state: PanelState) -> dict:
    """For each step in :data:`STEPS`, whether it can run now and a one-line reason."""
    out = {}

    def block(step, reason):
        out[step] = StepStatus(False, reason)

    def ok(step, reason):
        out[step] = StepStatus(True, reason)

    busy = f"Wait: {state.busy} is running (or cancel it)." if state.busy else ""
    noVolume = "Select the ultrasound or mammography image first."
    noTumour = "Create the tumour segment first (Auto-segment, or draw it in the Segment Editor)."

    # 2. segmentation
    if busy:
        block("autoSegment", busy)
    elif not state.volumeSelected:
        block("autoSegment", noVolume)
    elif not state.segmenterAvailable:
        block("autoSegment", state.segmenterProblem or "The CNN needs PyTorch (install the "
                                                        "PyTorch extension).")
    else:
        ok("autoSegment", "Run the CNN on the image (a markups point or two-point box guides it).")

    # 3. rings
    try:
        rings = parseRingsText(state.ringsText)
        ringsError = ""
    except ValueError as exc:
        rings, ringsError = [], str(exc)
    if busy:
        block("rings", busy)
    elif not state.volumeSelected:
        block("rings", noVolume)
    elif not state.tumourSegment:
        block("rings", noTumour)
    elif not state.spacingKnown:
        block("rings", "Rings are in millimetres: enter the pixel spacing of this image first.")
    elif ringsError:
        block("rings", ringsError[0].upper() + ringsError[1:] + ".")
    else:
        ok("rings", "Create ring segments at " + ", ".join(f"{r:g}" for r in rings) + " mm.")

    # 4. features
    if busy:
        block("features", busy)
    elif not state.volumeSelected:
        block("features", noVolume)
    elif not state.tumourSegment:
        block("features", noTumour)
    elif not state.paramsValid:
        block("features", state.paramsProblem or "Choose a valid params file.")
    else:
        ok("features", "Extract features of the tumour" + (" and rings" if state.ringsBuilt
                                                             else "") + " into a table.")

    # 5. prediction
    if busy:
        block("predict", busy)
    elif not state.bundleLoaded:
        block("predict", "Load a model bundle first.")
    elif not state.volumeSelected:
        block("predict", noVolume)
    elif not state.tumourSegment:
        block("predict", noTumour)
    elif state.bundleNeedsRings and not state.spacingKnown:
        block("predict", "This model uses peritumoral rings in mm: enter the pixel spacing.")
    elif state.bundleNeedsSite and not state.site:
        block("predict", "This model harmonises scanners: choose the scanner site.")
    elif state.bundleProblems:
        block("predict", state.bundleProblems[0])
    else:
        ok("predict", "Predict HER2 status with the loaded model.")

    # 6. reader study
    if busy:
        block("readerStudy", busy)
    elif not state.volumeSelected:
        block("readerStudy", noVolume)
    elif state.readerSegmentations < 2:
        block("readerStudy", "Pick at least two segmentations (one per reader).")
    else:
        ok("readerStudy", f"Compare {state.readerSegmentations} readers' contours (Dice, HD95).")

    # 7. report
    if busy:
        block("report", busy)
    elif not state.predictionDone:
        block("report", "Predict first: the report shows the prediction.")
    else:
        ok("report", "Save the HTML or PDF report of this prediction.")
    return out
