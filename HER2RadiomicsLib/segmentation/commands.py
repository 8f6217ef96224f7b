"""CLI commands of the segmentation CNN: ``segment``, ``eval-segmenter``, ``train-segmenter``."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from ..errors import HER2Error, InputError

log = logging.getLogger(__name__)

_SEGMENTERS = {}


def get_segmenter(model=None, device="cpu", threads=None):
    """Cached per process (batch workers load the model once)."""
    from .inference import DEFAULT_MODEL, Segmenter
    key = (str(model or DEFAULT_MODEL), device)
    if key not in _SEGMENTERS:
        if threads:
            import torch
            torch.set_num_threads(int(threads))
        _SEGMENTERS[key] = Segmenter.load(model or DEFAULT_MODEL, device=device)
    return _SEGMENTERS[key]


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
    p.add_argument("--out-dir", help="output folder for --manifest (<case_id>.nrrd)")
    p.add_argument("--model", help="weights file (default: the shipped BUS-BRA model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--frame", type=int)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("eval-segmenter", help="Dice/IoU/HD95 of CNN masks against reference masks")
    p.add_argument("--manifest", required=True, help="CSV with case_id,image,mask (reference)")
    p.add_argument("--pred-dir", help="folder of predicted <case_id>.nrrd (default: run the model)")
    p.add_argument("--model")
    p.add_argument("--device", default="cpu")
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
    p.add_argument("--epochs", type=int, default=45)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--size", type=int, default=160, help="network input size (px)")
    p.add_argument("--base-channels", type=int, default=12)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--patience", type=int, default=12)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init-from", help="start from these weights (fine-tuning)")
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    p.set_defaults(func=cmd_train)


def _segment_one(row, model, device, box, click, threads=None):
    from ..imaging.io import read_image, write_image
    from .inference import check_ultrasound
    try:
        loaded = read_image(row["image"], frame=int(row["frame"]) if row.get("frame") else None)
        flags = check_ultrasound(loaded)
        seg = get_segmenter(model, device, threads)
        res = seg.predict(loaded.image, box=box, click=click)
        if not res.info["lesion_px"]:
            raise InputError(f"{row['image']}: the model found no lesion (give a --box or "
                             "--click prompt)")
        write_image(res.mask, row["_out"])
        return {"case_id": row["case_id"], "lesion_px": res.info["lesion_px"],
                "cnn_confidence": round(res.info["confidence"], 4),
                "cnn_flags": "; ".join(flags + res.info["flags"])}
    except HER2Error as exc:
        return {"case_id": row["case_id"], "error": str(exc)}
    except Exception as exc:  # keep the cohort going; the error table names the case
        return {"case_id": row["case_id"], "error": f"{row['image']}: {type(exc).__name__}: {exc}"}


def cmd_segment(a) -> int:
    from ..imaging.io import read_image, write_image
    from .inference import check_ultrasound
    if a.image:
        if not a.out:
            raise InputError("--image needs --out MASK.nrrd")
        loaded = read_image(a.image, frame=a.frame)
        flags = check_ultrasound(loaded)
        t = time.perf_counter()
        res = get_segmenter(a.model, a.device).predict(loaded.image, box=a.box, click=a.click)
        dt = time.perf_counter() - t
        if not res.info["lesion_px"]:
            raise InputError(f"{a.image}: the model found no lesion (give a --box or --click)")
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
    get_segmenter(a.model, a.device)     # a bad --model is one error, not one per case
    from ..extraction.batch import read_manifest
    from ..imaging.io import atomic_write_text
    import pandas as pd
    from tqdm.auto import tqdm
    rows = read_manifest(a.manifest, require_mask=False, per_row=True)
    refused = [{"case_id": r["case_id"], "error": r["_error"]} for r in rows if r.get("_error")]
    rows = [r for r in rows if not r.get("_error")]
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_id = _model_id(a.model)
    todo = []
    for r in rows:
        r["_out"] = str(out / f"{r['case_id']}.nrrd")
        r["_key"] = _mask_key(r, model_id)
        # a mask is reused only if it was made from this very image (content), frame and model
        if not (a.resume and _reusable(out, r)):
            todo.append(r)
    bar = tqdm(total=len(todo), desc="segment", unit="case", disable=a.no_progress,
               file=sys.stderr)
    results = []
    keys = {r["case_id"]: r["_key"] for r in todo}
    threads = 1 if a.jobs > 1 else None
    try:
        if a.jobs > 1 and len(todo) > 1:
            from joblib import Parallel, delayed
            gen = Parallel(n_jobs=a.jobs, return_as="generator_unordered")(
                delayed(_segment_one)(r, a.model, a.device, None, None, threads) for r in todo)
        else:
            gen = (_segment_one(r, a.model, a.device, None, None) for r in todo)
        for res in gen:
            results.append(res)
            if "error" not in res:
                _record_mask(out, keys[res["case_id"]], res["case_id"])
            bar.update()
    except KeyboardInterrupt:
        print("interrupted: finished masks are kept; rerun with --resume", file=sys.stderr)
        return 130
    finally:
        bar.close()
    errors = refused + [r for r in results if "error" in r]
    err_ids = {e["case_id"] for e in errors}
    done = {r["case_id"]: r for r in results if "error" not in r}
    man = []
    for r in rows:
        if r["case_id"] in err_ids or not Path(r["_out"]).exists():
            continue
        row = {k: v for k, v in r.items() if not k.startswith("_")}
        # relative to the manifest's own folder, which is how manifests are read; images keep
        # the absolute paths read_manifest resolved, so the manifest works from any folder
        row["mask"] = Path(r["_out"]).name
        info = done.get(r["case_id"], {})
        row["cnn_confidence"] = info.get("cnn_confidence", "")
        row["cnn_flags"] = info.get("cnn_flags", "")
        man.append(row)
    from ..outputs import write_csv
    # the manifest is the next command's input: its cells are the user's own, kept verbatim
    atomic_write_text(out / "manifest.csv", pd.DataFrame(man).to_csv(index=False))
    write_csv(out / "errors.csv", pd.DataFrame(errors, columns=["case_id", "error"]))
    print(f"{len(man)}/{len(rows) + len(refused)} masks in {out} (manifest for extraction: "
          f"{out / 'manifest.csv'})")
    for e in errors[:20]:
        print(f"  {e['case_id']}: {e['error']}")
    return 1 if errors else 0


#: per-case records of batch segmentation (what each mask was made from), for --resume
MASK_RECORDS = ".segment-parts"


def _model_id(model) -> str:
    """The weights' sha256 (from the file itself, so a replaced file is a different model)."""
    from .inference import DEFAULT_MODEL, sha256_of
    path = Path(model or DEFAULT_MODEL)
    try:
        return sha256_of(path)
    except OSError:
        return str(path)      # Segmenter.load will say what is wrong with it


def _mask_key(row, model_id) -> str:
    import hashlib
    from ..extraction.batch import file_digest
    blob = json.dumps({"image": file_digest(row["image"]), "frame": row.get("frame", ""),
                       "model": model_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _record_path(out: Path, case_id) -> Path:
    from ..extraction.batch import part_name
    return out / MASK_RECORDS / part_name(case_id)


def _record_mask(out: Path, key: str, case_id) -> None:
    from ..extraction.batch import file_digest
    from ..imaging.io import atomic_write_text
    atomic_write_text(_record_path(out, case_id), json.dumps({
        "case_id": case_id, "key": key,
        "mask_sha256": file_digest(out / f"{case_id}.nrrd")}))


def _reusable(out: Path, row) -> bool:
    """A mask from an earlier run may stand in for this row: same image content, frame and
    model, and the mask file is the one that run wrote (not edited or replaced since)."""
    from ..extraction.batch import file_digest
    try:
        rec = json.loads(_record_path(out, row["case_id"]).read_text())
    except (OSError, ValueError):
        return False
    return (rec.get("key") == row["_key"] and rec.get("case_id") == row["case_id"]
            and Path(row["_out"]).is_file() and rec.get("mask_sha256") == file_digest(row["_out"]))


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
        import warnings
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


def cmd_train(a) -> int:
    from . import training as T
    arch = {"name": "unet2d", "version": 1, "base_channels": a.base_channels, "depth": 4}
    # a hostile or corrupt --init-from / last.pt is refused before any image is read
    T.read_start_files(a.out, arch, a.init_from, resume=not a.no_resume, device=a.device)
    if a.busbra:
        pairs = list(T.busbra_pairs(a.busbra))
    elif a.manifest:
        pairs = list(T.manifest_pairs(a.manifest))
    else:
        if not a.masks:
            raise InputError("--images needs --masks")
        pairs = list(T.folder_pairs(a.images, a.masks))
    print(f"loading {len(pairs)} images at {a.size} px ...", flush=True)
    ds = T.load_pairs(pairs, size=a.size)
    tr, va = T.patient_split(ds.patients, a.val_fraction, T.SPLIT_SEED)
    train_ds = ds.subset(tr)
    if a.extra_manifest:
        import numpy as _np
        extra = T.load_pairs([p for m in a.extra_manifest for p in T.manifest_pairs(m)],
                             size=a.size)
        train_ds = T.SegDataset(_np.concatenate([train_ds.images, extra.images]),
                                _np.concatenate([train_ds.masks, extra.masks]),
                                train_ds.ids + extra.ids, train_ds.patients + extra.patients,
                                a.size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps({
        "seed": T.SPLIT_SEED, "val_fraction": a.val_fraction,
        "val_ids": [ds.ids[i] for i in va], "train_ids": train_ds.ids}, indent=0))
    print(f"train {len(train_ds)} images, validation {len(va)} images "
          f"({len(set(ds.patients[i] for i in va))} patients)", flush=True)
    res = T.train(train_ds, ds.subset(va), out, arch=arch, epochs=a.epochs,
                  batch_size=a.batch_size, lr=a.lr, patience=a.patience, seed=a.seed,
                  device=a.device, threads=a.threads, max_minutes=a.max_minutes,
                  resume=not a.no_resume, init_from=a.init_from, schedule=a.schedule)
    print(json.dumps(res))
    export = Path(a.export) if a.export else out / "model.pt"
    from .inference import Segmenter, export_model
    export_model(out / "best.pt", export, {"name": export.stem, "training": res})
    seg = Segmenter.load(export, device=a.device)
    val_pairs = [pairs[i] for i in va]
    recs = evaluate([{"case_id": p[2], "image": str(p[0]), "mask": str(p[1])} for p in val_pairs],
                    seg)
    summ = summarize_metrics(recs)
    from .inference import BUSBRA_CITATION, measure_latency, update_model_card
    from ..imaging.io import read_image
    source = ("BUS-BRA (1,635 B-mode images, 927 patients, 4 scanners; expert masks)"
              if a.busbra else str(a.manifest or a.images))
    update_model_card(
        export,
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
        latency=measure_latency(export, [read_image(p[0]).image for p in val_pairs[:10]]),
        intended_use="lesion auto-mask proposal for human editing; research use only")
    print(json.dumps(summ, indent=2))
    print(f"model: {export} (+ model card {export.with_suffix('.json').name})")
    return 0
