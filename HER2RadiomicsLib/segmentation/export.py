"""Deployable CNN weights and their model card: export from a training checkpoint, card
updates, and the latency figures a card records (``train-segmenter`` and ``export-segmenter``
write them; inference only reads them, :mod:`.inference`)."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from ..errors import ModelError
from ..imaging.io import atomic_write_text
from .inference import Segmenter, card_path, sha256_of
from .networks import load_weights, state_dict_from

# torch is imported inside the functions that save and time the network: it is the optional
# [torch] extra


def export_model(best_ckpt, out_weights, card_extra: dict) -> Path:
    """Write deployable weights (state_dict only) + model card with sha256 from a checkpoint.

    The checkpoint is read as pure data (:func:`.networks.load_weights`); the weights and the
    card are each replaced atomically, weights first, so an interrupted export leaves either
    the previous pair or a card whose sha256 refuses the new weights, never a silent mismatch.

    Raises
    ------
    ModelError
        The checkpoint is not pure data, is corrupt, or has no ``model`` weights or ``arch``.
    """
    import torch
    ck = load_weights(best_ckpt)
    state = state_dict_from(ck, best_ckpt)
    arch = ck.get("arch") if isinstance(ck, dict) else None
    if not isinstance(arch, dict):
        raise ModelError(f"{best_ckpt}: training checkpoint without an 'arch' entry (export "
                         "needs a best.pt written by train-segmenter)")
    size = ck.get("size", 160)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ModelError(f"{best_ckpt}: checkpoint input size {size!r} is not a positive "
                         "whole number of pixels")
    out_weights = Path(out_weights)
    out_weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_weights.with_name(out_weights.name + ".tmp")
    try:
        torch.save({k: v.detach().clone() for k, v in state.items()}, tmp)
        os.replace(tmp, out_weights)
    finally:                    # Ctrl-C or a full disk mid-save leaves no half file behind
        if tmp.exists():
            tmp.unlink()
    card = {"name": card_extra.pop("name", out_weights.stem),
            "architecture": arch, "input_size": size,
            "normalisation": "per image: 0.5th-99.5th percentile -> [0, 1], clipped",
            "letterbox": "aspect-preserving resize into a square canvas, black padding",
            "threshold": 0.5, "test_time_augmentation": "horizontal flip (mean of 2 passes)",
            **card_extra, "sha256": sha256_of(out_weights)}
    atomic_write_text(card_path(out_weights), json.dumps(card, indent=2))
    return out_weights


BUSBRA_CITATION = ("W. Gómez-Flores, M. J. Gregorio-Calas, W. C. de Albuquerque Pereira, "
                   "\"BUS-BRA: A breast ultrasound dataset for assessing computer-aided diagnosis "
                   "systems\", Medical Physics 51(4):3110-3123, 2024, doi:10.1002/mp.16812")


def update_model_card(weights, **fields) -> dict:
    """Add/replace model-card fields (the sha256 of the weights is re-checked, not changed)."""
    cp = card_path(weights)
    card = json.loads(cp.read_text())
    if card.get("sha256") != sha256_of(weights):
        raise ModelError(f"{weights}: sha256 does not match its card; re-export the model")
    card.update(fields)
    atomic_write_text(cp, json.dumps(card, indent=2, ensure_ascii=False))
    return card


def _median_predict_s(seg, images, repeats, sync=None) -> float:
    seg.predict(images[0])                      # warm-up
    ts = []
    for i in range(repeats):
        t = time.perf_counter()
        seg.predict(images[i % len(images)])
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return round(statistics.median(ts), 4)


def measure_latency(weights, images, repeats: int = 20, threads: int = 2) -> dict:
    """Median seconds of ``Segmenter.predict`` (pre/post-processing included), CPU and CUDA."""
    import torch
    torch.set_num_threads(threads)
    out = {"cpu_threads": threads,
           "cpu_predict_s_median": _median_predict_s(Segmenter.load(weights, device="cpu"),
                                                     images, repeats),
           "image_sizes": sorted({tuple(i.GetSize()) for i in images})[:3]}
    if torch.cuda.is_available():
        out["cuda_predict_s_median"] = _median_predict_s(
            Segmenter.load(weights, device="cuda"), images, repeats, torch.cuda.synchronize)
    else:
        out["cuda_predict_s_median"] = None
        out["cuda_note"] = "not measured: no GPU was available where the model was trained"
    return out
