"""One auto_mask for every caller: the CNN's mask, or one clear error when it finds no lesion."""
import numpy as np
import pytest
import SimpleITK as sitk


class _StandIn:
    """A segmenter that draws what it is told (no network): records its prompts."""

    def __init__(self, lesion_px):
        self.lesion_px, self.calls = lesion_px, []

    def predict(self, image, box=None, click=None):
        from HER2RadiomicsLib.segmentation.inference import SegmentationResult
        self.calls.append((box, click))
        arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
        arr.flat[:self.lesion_px] = 1
        mask = sitk.GetImageFromArray(arr)
        mask.CopyInformation(image)
        return SegmentationResult(mask, sitk.Cast(mask, sitk.sitkFloat32),
                                  {"lesion_px": int(arr.sum()), "confidence": 0.9,
                                   "prompt": "box" if box else "none", "flags": []})


def _loaded():
    from HER2RadiomicsLib.imaging.io import LoadedImage
    img = sitk.GetImageFromArray(np.ones((20, 30), np.float32))
    img.SetSpacing((0.2, 0.3))
    return LoadedImage(img, "us.png", "user")


def test_the_mask_comes_back_on_the_image_grid_with_the_prompt():
    from HER2RadiomicsLib import auto_mask
    seg = _StandIn(25)
    res = auto_mask(_loaded(), segmenter=seg, box=(1, 2, 10, 12))
    assert res.info["lesion_px"] == 25 and seg.calls == [((1, 2, 10, 12), None)]
    assert res.mask.GetSpacing() == (0.2, 0.3)


def test_no_lesion_is_one_input_error_with_the_callers_words():
    from HER2RadiomicsLib import InputError, auto_mask
    with pytest.raises(InputError, match=r"^us\.png: the CNN found no lesion; give a prompt"):
        auto_mask(_loaded(), segmenter=_StandIn(0))
    with pytest.raises(InputError, match=r"^x: draw it$"):
        auto_mask(_loaded().image, segmenter=_StandIn(0), no_lesion="x: draw it")


def test_report_command_refuses_an_empty_cnn_mask_in_one_line(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from HER2RadiomicsLib.cli import main
    from HER2RadiomicsLib.segmentation import inference
    shipped = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing"
    monkeypatch.setattr(inference, "get_segmenter", lambda *a, **k: _StandIn(0))
    rc = main(["report", "--bundle", str(shipped / "model_bundle.zip"), "--image",
               str(shipped / "case.nrrd"), "--site", "A", "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (f"error: {shipped / 'case.nrrd'}: the CNN found no lesion; draw a mask "
                      "and pass --mask")
    assert not (tmp_path / "r.html").exists()
