"""The panel's 'can this step run now, and why' rules, without Qt or Slicer."""
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HER2Radiomics"))
from HER2RadiomicsModuleLib.controller import STEPS, PanelState, parseRingsText, stepStatus

READY = PanelState(volumeSelected=True, spacingKnown=True, tumourSegment=True,
                   bundleLoaded=True, predictionDone=True, readerSegmentations=2)


def test_everything_enabled_when_ready():
    st = stepStatus(READY)
    assert set(st) == set(STEPS)
    assert all(s.enabled for s in st.values()), {k: v.reason for k, v in st.items()}


def test_nothing_but_input_without_a_volume():
    st = stepStatus(PanelState())
    assert not any(s.enabled for s in st.values())
    assert "image" in st["autoSegment"].reason.lower()


@pytest.mark.parametrize("change, step, words", [
    ({"tumourSegment": False}, "rings", "tumour segment"),
    ({"spacingKnown": False}, "rings", "pixel spacing"),
    ({"ringsText": "3,x"}, "rings", "'x' is not a number"),
    ({"ringsText": "3,3"}, "rings", "different"),
    ({"ringsText": "0"}, "rings", "between 0 and 50"),
    ({"segmenterAvailable": False}, "autoSegment", "PyTorch"),
    ({"paramsValid": False, "paramsProblem": "x.yaml does not exist."}, "features",
     "x.yaml does not exist"),
    ({"bundleLoaded": False}, "predict", "Load a model bundle"),
    ({"bundleNeedsSite": True}, "predict", "scanner site"),
    ({"bundleNeedsRings": True, "spacingKnown": False}, "predict", "pixel spacing"),
    ({"bundleProblems": ["trained on mammography"]}, "predict", "trained on mammography"),
    ({"readerSegmentations": 1}, "readerStudy", "at least two"),
    ({"predictionDone": False}, "report", "Predict first"),
])
def test_each_block_says_why(change, step, words):
    st = stepStatus(replace(READY, **change))
    assert not st[step].enabled
    assert words in st[step].reason
    others = [k for k, v in stepStatus(READY).items() if k != step]
    # the change does not block unrelated steps (except where it is a shared precondition)
    shared = {"tumourSegment": {"features", "predict"}, "spacingKnown": {"predict", "rings"}}
    for k in others:
        if not any(k in shared.get(c, ()) for c in change):
            assert st[k].enabled, (k, st[k].reason)


def test_site_given_unblocks_prediction():
    st = stepStatus(replace(READY, bundleNeedsSite=True, site="A"))
    assert st["predict"].enabled


def test_busy_job_blocks_every_step_with_its_name():
    st = stepStatus(replace(READY, busy="feature extraction"))
    assert all(not s.enabled and "feature extraction" in s.reason for s in st.values())


def test_parse_rings():
    assert parseRingsText(" 8; 3 ,5") == [3.0, 5.0, 8.0]
    with pytest.raises(ValueError, match="at least one"):
        parseRingsText(" , ")


def test_an_unset_path_parameter_is_not_a_file():
    """Path() is what a parameter-node Path field holds before a file is chosen: it prints
    "." and is truthy, so "Load model" was enabled with nothing chosen (issue 15, item 6)."""
    from HER2RadiomicsModuleLib.controller import chosenPath
    assert bool(Path()) and str(Path()) == "."          # the trap
    for unset in (None, "", ".", " ", Path(), Path("")):
        assert chosenPath(unset) is None, unset
    assert chosenPath(Path("/data/model_bundle.zip")) == "/data/model_bundle.zip"
    assert chosenPath("bundle.zip") == "bundle.zip"
    # the widget decides with it everywhere a Path parameter is read
    import re
    src = (Path(__file__).resolve().parents[1] / "HER2Radiomics" / "HER2Radiomics.py").read_text()
    reads = [line for line in src.splitlines()
             if re.search(r"\.(bundleFile|paramsFile|reportFile)\b", line) and 'f"' not in line]
    assert len(reads) >= 5 and all("chosenPath(" in line for line in reads), reads


def test_auto_segment_stays_usable_without_pytorch():
    """Without PyTorch the button is enabled and says the first run installs it (it was
    disabled, pointing at an extension already installed: issue 15, item 3)."""
    st = stepStatus(replace(READY, torchMissing=True))
    assert st["autoSegment"].enabled
    assert "install PyTorch" in st["autoSegment"].reason
    assert "PyTorch" not in stepStatus(READY)["autoSegment"].reason
