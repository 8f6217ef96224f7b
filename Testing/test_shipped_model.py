"""The shipped BUS-BRA model: loads, matches its card, and segments synthetic lesions."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.segmentation.inference import DEFAULT_MODEL, Segmenter, card_path, sha256_of


def test_weights_and_card_ship_together():
    assert DEFAULT_MODEL.exists(), "the default model must ship with the library"
    card = json.loads(card_path(DEFAULT_MODEL).read_text())
    assert card["sha256"] == sha256_of(DEFAULT_MODEL)
    assert DEFAULT_MODEL.stat().st_size < 10 * 1024 * 1024
    for key in ("architecture", "input_size", "normalisation", "training_data", "citation",
                "validation", "latency"):
        assert key in card, key
    assert "Gómez-Flores" in card["citation"]
    v = card["validation"]
    assert v["n"] >= 300 and 0 <= v["mean_dice"] <= 1


def test_segments_synthetic_lesions(cohort):
    """Dice against the generator's ground truth on the fixture cohort's images."""
    import csv
    from HER2RadiomicsLib.io import load_case
    from HER2RadiomicsLib.metrics import dice
    seg = Segmenter.from_default()
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    scores = []
    for r in rows:
        li, truth = load_case(cohort / r["image"], cohort / r["mask"])
        res = seg.predict(li.image)
        m = sitk.GetArrayFromImage(res.mask) > 0
        assert m.any(), r["case_id"]
        assert res.mask.GetSpacing() == li.image.GetSpacing()
        scores.append(dice(sitk.GetArrayFromImage(truth) > 0, m))
    assert np.median(scores) > 0.7, scores
