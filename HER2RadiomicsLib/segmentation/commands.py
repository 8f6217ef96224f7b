"""CLI commands of the segmentation CNN: ``segment``, ``eval-segmenter``, ``train-segmenter``."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

from ..errors import HER2Error, InputError

# Command functions import the library modules and numpy, pandas, SimpleITK and tqdm when
# they run: the parser imports this module, and `her2radiomics --help` must stay instant
# (Testing/test_outputs_atomic.py checks what building the parser loads).

log = logging.getLogger(__name__)


def get_segmenter(model=None, device="cpu", threads=None):
    """:func:`.inference.get_segmenter`, looked up here by the commands (and replaced here by
    tests that give them a stand-in network); imported when called, since the CLI's start-up
    must not import numpy and SimpleITK for every command."""
    from .inference import get_segmenter as loaded_once
    return loaded_once(model, device, threads)


#: train-segmenter's network has 4 poolings: its input size must divide by 2 ** 4
NET_STRIDE = 16
#: largest --size: the training set is held in memory at 2 bytes per pixel per image
#: (3.4 GB for BUS-BRA's 1,635 images at 1024 px); the shipped model uses 160
MAX_SIZE = 1024
#: largest --base-channels: 64 is already a 31 M-parameter network (the shipped one is 12,
#: 1.1 M); more is a typo, not a model a few thousand images can train
MAX_BASE_CHANNELS = 64


def _whole(lo, hi=None):
    """An argparse type: a whole number from ``lo`` (to ``hi``); a bad value is one line."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            rng = f"from {lo} to {hi}" if hi is not None else f"of {lo} or more"
            raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number {rng}")
        return v
    return parse


def _number(ok, wanted):
    """An argparse type: a float for which ``ok`` holds (NaN never does); else one line."""

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {wanted}")
        return v
    return parse


_positive = _number(lambda v: v > 0, "a number greater than 0")
_fraction = _number(lambda v: 0 < v < 1, "a fraction between 0 and 1 (both excluded)")


def _net_size(text):
    v = _whole(NET_STRIDE, MAX_SIZE)(text)
    if v % NET_STRIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a multiple of {NET_STRIDE} (the "
                                         "network halves it 4 times)")
    return v


def _device(text):
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: choose cpu, cuda or cuda:N")
    return text


def register(sub):
    p = sub.add_parser("segment", help="CNN auto-mask of the lesion (one image or a manifest)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--manifest", help="CSV with case_id,image")
    pr = p.add_mutually_exclusive_group()
    pr.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                    help="pixel box around the lesion (column, row)")
    pr.add_argument("--click", nargs=2, type=float, metavar=("X", "Y"),
                    help="pixel inside the lesion (column, row)")
    p.add_argument("--out", help="output mask (NRRD) for --image")
    p.add_argument("--prob-out", help="probability map output for --image")
    p.add_argument("--out-dir", help="output folder for --manifest (<case_id>.nrrd, "
                                     "manifest.csv, errors.csv; replaced as one set)")
    p.add_argument("--model", help="weights file (default: the shipped BUS-BRA model)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--frame", type=int)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--resume", action="store_true",
                   help="reuse the masks an earlier run made from the same image, frame and "
                        "model, and keep masks edited by hand (a run without it refuses to "
                        "redraw an edited mask)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("eval-segmenter", help="Dice/IoU/HD95 of CNN masks against reference masks")
    p.add_argument("--manifest", required=True, help="CSV with case_id,image,mask (reference)")
    p.add_argument("--pred-dir", help="folder of predicted <case_id>.nrrd (default: run the model)")
    p.add_argument("--model")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--out", required=True, help="per-case metrics CSV (summary JSON beside it)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train-segmenter", help="train the lesion segmentation U-Net")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--busbra", help="BUS-BRA folder (bus_data.csv, images/, masks/)")
    src.add_argument("--manifest", help="CSV with case_id,image,mask[,patient_id]")
    src.add_argument("--images", help="image folder (with --masks)")
    p.add_argument("--masks")
    p.add_argument("--extra-manifest", action="append", default=[],
                   help="additional training-only manifest(s), e.g. synthetic cases")
    p.add_argument("--out", required=True, help="run folder (checkpoints, history)")
    p.add_argument("--export", help="deployable weights path (default: OUT/model.pt)")
    p.add_argument("--epochs", type=_whole(1), default=45)
    p.add_argument("--batch-size", type=_whole(1), default=16)
    p.add_argument("--lr", type=_positive, default=2e-3)
    p.add_argument("--size", type=_net_size, default=160,
                   help=f"network input size (px; a multiple of {NET_STRIDE} up to {MAX_SIZE})")
    p.add_argument("--base-channels", type=_whole(1, MAX_BASE_CHANNELS), default=12)
    p.add_argument("--val-fraction", type=_fraction, default=0.2,
                   help="share of patients held out for validation (between 0 and 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_whole(1))
    p.add_argument("--max-minutes", type=_positive)
    p.add_argument("--patience", type=_whole(1), default=12)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init-from", help="start from these weights (fine-tuning)")
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    p.set_defaults(func=cmd_train)


def cmd_segment(a) -> int:
    from ..imaging.io import read_image, write_image
    from .inference import auto_mask
    from .modality import check_ultrasound
    if a.image:
        if not a.out:
            raise InputError("--image needs --out MASK.nrrd")
        loaded = read_image(a.image, frame=a.frame)
        flags = check_ultrasound(loaded)
        t = time.perf_counter()
        res = auto_mask(loaded.image, segmenter=get_segmenter(a.model, a.device), box=a.box,
                        click=a.click, no_lesion=f"{a.image}: the model found no lesion "
                                                 "(give a --box or --click)")
        dt = time.perf_counter() - t
        write_image(res.mask, a.out)
        if a.prob_out:
            write_image(res.probability, a.prob_out)
        print(f"mask written to {a.out} ({res.info['lesion_px']} lesion pixels, "
              f"confidence {res.info['confidence']:.2f}, prompt {res.info['prompt']}, "
              f"{dt:.2f} s)")
        for f in flags + res.info["flags"]:
            print(f"  flag: {f}")
        return 0
    if not a.out_dir:
        raise InputError("--manifest needs --out-dir DIR")
    if a.box or a.click:
        raise InputError("--box/--click apply to a single --image, not a manifest")
    from .cohort import segment_manifest
    return segment_manifest(a)


def evaluate(rows, segmenter=None, pred_dir=None, progress=True):
    """Per-case Dice, IoU, HD95/HD/MSD (mm when spacing known, else px) against reference masks."""
    import numpy as np
    import SimpleITK as sitk
    from tqdm.auto import tqdm
    from ..imaging.io import load_case
    from ..readers.metrics import compare_masks
    out = []
    for r in tqdm(rows, desc="evaluate", disable=not progress, file=sys.stderr):
        rec = {"case_id": r["case_id"]}
        if r.get("_error"):
            rec["error"] = r["_error"]
            out.append(rec)
            continue
        try:
            loaded, ref = load_case(r["image"], r["mask"], min_pixels=1)
            if pred_dir:
                pp = Path(pred_dir) / f"{r['case_id']}.nrrd"
                t = float("nan")
                if pp.exists():
                    from ..imaging.io import _read_sitk
                    pred = sitk.GetArrayFromImage(_read_sitk(pp)).squeeze() > 0
                    if pred.shape != sitk.GetArrayViewFromImage(ref).shape:
                        raise InputError(f"{pp}: predicted mask of {pred.shape[1]} x "
                                         f"{pred.shape[0]} px does not match its image "
                                         f"{r['image']}")
                else:
                    # 'segment' writes no mask where the model found no lesion: that image is
                    # a miss (Dice 0), not a case to leave out of the statistics
                    pred = np.zeros(sitk.GetArrayViewFromImage(ref).shape, bool)
                    rec["note"] = f"no predicted mask {pp.name}: counted as a miss"
            else:
                t0 = time.perf_counter()
                pred = sitk.GetArrayFromImage(segmenter.predict(loaded.image).mask) > 0
                t = time.perf_counter() - t0
            unit = "mm" if loaded.spacing_known else "px"
            sp = loaded.spacing_mm if loaded.spacing_known else (1.0, 1.0)
            m = compare_masks(sitk.GetArrayFromImage(ref) > 0, pred, sp)
            rec.update(dice=m["dice"], iou=m["jaccard"], hd95=m["hd95"], hd=m["hd"],
                       msd=m["msd"], distance_unit=unit, seconds=t,
                       lesion_found=bool(pred.any()))
        except HER2Error as exc:
            rec["error"] = str(exc)
        out.append(rec)
    return out


def summarize_metrics(recs) -> dict:
    import numpy as np
    ok = [r for r in recs if "dice" in r]
    d = np.array([r["dice"] for r in ok])
    hd = np.array([r["hd95"] for r in ok], dtype=float)
    s = {"n": len(ok), "n_failed": len(recs) - len(ok),
         # images where the model drew nothing: in Dice and the miss rate (as Dice 0); HD95
         # is undefined for them and is summarised over the others
         "n_no_lesion_found": sum(1 for r in ok if not r.get("lesion_found", True))}
    if ok:
        with warnings.catch_warnings():     # no HD95 at all (every image a miss): NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            hd_median, hd_mean = float(np.nanmedian(hd)), float(np.nanmean(hd))
        s.update(mean_dice=float(d.mean()), median_dice=float(np.median(d)),
                 mean_iou=float(np.mean([r["iou"] for r in ok])),
                 median_hd95=hd_median, mean_hd95=hd_mean,
                 miss_rate_dice_lt_0_1=float((d < 0.1).mean()),
                 distance_unit=ok[0]["distance_unit"])
    return s


def cmd_eval(a) -> int:
    import pandas as pd
    from ..extraction.batch import read_manifest
    from ..imaging.io import atomic_write_text
    rows = read_manifest(a.manifest, per_row=True)
    seg = None if a.pred_dir else get_segmenter(a.model, a.device)
    recs = evaluate(rows, seg, a.pred_dir, progress=not a.no_progress)
    from ..outputs import write_csv
    write_csv(a.out, pd.DataFrame(recs))
    summ = summarize_metrics(recs)
    sp = Path(a.out).with_suffix(".summary.json")
    atomic_write_text(sp, json.dumps(summ, indent=2))
    print(json.dumps(summ, indent=2))
    print(f"per-case metrics: {a.out}; summary: {sp}")
    return 1 if summ["n_failed"] else 0


def _training_pairs(a) -> tuple:
    """The (image, mask, case_id, patient_id) pairs a train-segmenter run names, with every
    image and mask checked (found, within the pixel cap) from its header, before any is read."""
    from . import training as T
    if a.masks and not a.images:
        raise InputError("--masks goes with --images (an image folder)")
    if a.busbra:
        pairs = list(T.busbra_pairs(a.busbra))
    elif a.manifest:
        pairs = T.manifest_pairs(a.manifest)
    else:
        if not a.masks:
            raise InputError("--images needs --masks")
        pairs = T.folder_pairs(a.images, a.masks)
    extra = [p for m in a.extra_manifest for p in T.manifest_pairs(m)]
    T.check_pairs(pairs + extra)
    return pairs, extra


def _pending(export: Path) -> Path:
    """Where a run writes its model before it has succeeded (beside the final name, so the
    rename at the end stays on one file system); the card goes to its ``.json``."""
    return export.with_name(f".{export.stem}.pending-{os.getpid()}.pt")


def _swap_in_model(pending: Path, export: Path) -> None:
    """Replace the model and its card together, with Ctrl-C held back for the two renames: a
    reader then finds the previous pair or the new one (a crash in between leaves a card whose
    sha256 refuses the weights, never a silent mismatch)."""
    from ..outputs import interrupts_held
    from .inference import card_path
    with interrupts_held():
        os.replace(pending, export)
        os.replace(card_path(pending), card_path(export))


def cmd_train(a) -> int:
    """``train-segmenter``: options are checked by the parser; here the start files, then every
    image's header, then the images; the exported model replaces an earlier one only once the
    whole command has succeeded (weights and card together)."""
    from . import training as T
    from ..imaging.io import atomic_write_text
    from ..outputs import resolved
    from .inference import _check_device
    _check_device(a.device)
    arch = {"name": "unet2d", "version": 1, "base_channels": a.base_channels, "depth": 4}
    # a hostile or corrupt --init-from / last.pt is refused before any image is read
    T.read_start_files(a.out, arch, a.init_from, resume=not a.no_resume, device=a.device)
    pairs, extra_pairs = _training_pairs(a)
    print(f"loading {len(pairs)} images at {a.size} px ...", flush=True)
    ds = T.load_pairs(pairs, size=a.size)
    tr, va = T.patient_split(ds.patients, a.val_fraction, T.SPLIT_SEED)
    source = ("BUS-BRA (1,635 B-mode images, 927 patients, 4 scanners; expert masks)"
              if a.busbra else str(a.manifest or a.images))
    if not len(tr) or not len(va):
        n = len(set(ds.patients))
        raise InputError(f"{a.busbra or a.manifest or a.images}: {n} patient(s) leave "
                         f"{'no training' if not len(tr) else 'no validation'} patient with "
                         f"--val-fraction {a.val_fraction:g}; give more patients or another "
                         "--val-fraction")
    train_ds = ds.subset(tr)
    if extra_pairs:
        import numpy as _np
        extra = T.load_pairs(extra_pairs, size=a.size)
        train_ds = T.SegDataset(_np.concatenate([train_ds.images, extra.images]),
                                _np.concatenate([train_ds.masks, extra.masks]),
                                train_ds.ids + extra.ids, train_ds.patients + extra.patients,
                                a.size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "split.json", json.dumps({
        "seed": T.SPLIT_SEED, "val_fraction": a.val_fraction,
        "val_ids": [ds.ids[i] for i in va], "train_ids": train_ds.ids}, indent=0))
    print(f"train {len(train_ds)} images, validation {len(va)} images "
          f"({len(set(ds.patients[i] for i in va))} patients)", flush=True)
    res = T.train(train_ds, ds.subset(va), out, T.TrainConfig(
        arch=arch, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience,
        seed=a.seed, device=a.device, threads=a.threads, max_minutes=a.max_minutes,
        resume=not a.no_resume, init_from=a.init_from, schedule=a.schedule))
    print(json.dumps(res))
    export = resolved(a.export) if a.export else resolved(out) / "model.pt"
    pending = _pending(export)
    try:
        summ = _export_and_validate(a, out, export, pending, res, [pairs[i] for i in va],
                                    train_ds, source)
        _swap_in_model(pending, export)
    finally:
        from .inference import card_path
        for p in (pending, card_path(pending)):
            if p.exists():
                p.unlink()
    print(json.dumps(summ, indent=2))
    shown = Path(a.export) if a.export else out / "model.pt"
    print(f"model: {shown} (+ model card {shown.with_suffix('.json').name})")
    return 0


def _export_and_validate(a, out, export, pending, res, val_pairs, train_ds, source) -> dict:
    """Export ``best.pt`` to the pending name, validate it on the held-out patients and
    complete its card; returns the validation summary."""
    from . import training as T
    from ..imaging.io import read_image
    from .export import BUSBRA_CITATION, export_model, measure_latency, update_model_card
    from .inference import Segmenter
    export_model(out / "best.pt", pending, {"name": export.stem, "training": res})
    seg = Segmenter.load(pending, device=a.device)
    recs = evaluate([{"case_id": p[2], "image": str(p[0]), "mask": str(p[1])} for p in val_pairs],
                    seg)
    summ = summarize_metrics(recs)
    update_model_card(
        pending,
        validation={**summ, "images": len(val_pairs),
                    "patients": len({p[3] for p in val_pairs}),
                    "resolution": "original pixel grid (predictions mapped back)"},
        training_data={"source": source, "train_images": len(train_ds),
                       "split": f"by patient; sorted IDs shuffled with seed {T.SPLIT_SEED}, "
                                f"last {a.val_fraction:.0%} of patients = validation",
                       "extra_training_manifests": a.extra_manifest,
                       "augmentation": "h-flip, rotation 12 deg, scale 0.8-1.2, shift 10%, gain, "
                                       "gamma, speckle, blur"},
        citation=BUSBRA_CITATION if a.busbra else "",
        latency=measure_latency(pending, [read_image(p[0]).image for p in val_pairs[:10]]),
        intended_use="lesion auto-mask proposal for human editing; research use only")
    return summ
