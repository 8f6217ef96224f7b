"""``segment --manifest ... --out-dir DIR``: a cohort's CNN masks, written as one set.

What ``DIR`` holds, and who may change it:

* the result, swapped in as one set at the end of a run (:func:`..outputs.staged_dir`):
  ``<case_id>.nrrd`` per case, ``manifest.csv`` (the cohort with its masks, for ``extract``)
  and ``errors.csv``; a failed or interrupted run leaves the previous set complete, never a mix
  of two runs;
* the cache ``DIR/.segment-parts/``: each mask as the CNN made it (``<part>.nrrd``) and its
  record (``<part>.json``: what it was made from, the sha256 of every mask segment made for the
  case, confidence and flags). It outlives an interrupted run, so ``--resume`` computes only
  what is missing; the final masks are hard links to (or copies of) these files.

A mask in ``DIR`` whose content is none that segment made for its case was edited by hand (or
its origin cannot be told: the cache is gone). It is the user's and is never replaced or
removed: ``--resume`` keeps it (stdout and the manifest's ``cnn_flags`` say so); a run without
``--resume``, which would redraw it, is refused up front in one line naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..errors import HER2Error, InputError
from ..extraction.batch import file_digest, part_name, read_manifest
from ..imaging.io import _umask, atomic_write_text, read_image, write_image
from ..outputs import _write_marker, read_marker, spreadsheet_safe, staged_dir
from .inference import DEFAULT_MODEL, auto_mask, sha256_of
from .modality import check_ultrasound

#: the manifest's cnn_flags of a case whose mask the user edited (the CNN's numbers no longer
#: describe it, so its cnn_confidence is left empty)
EDITED_NOTE = "edited by hand since it was made: kept"
#: sha256s of masks segment made per case that are remembered: an interrupted run that redrew
#: a mask must not make the previous run's mask, still in DIR, look edited; 16 covers any
#: realistic run history (a changed image or model each time)
MADE_REMEMBERED = 16

#: per-case cache of batch segmentation: each mask as made and its record (what it was made
#: from), for --resume and for telling a hand-edited mask from one segment made (this module)
MASK_RECORDS = ".segment-parts"


def _model_id(model) -> str:
    """The weights' sha256 (from the file itself, so a replaced file is a different model)."""
    path = Path(model or DEFAULT_MODEL)
    try:
        return sha256_of(path)
    except OSError:
        return str(path)      # Segmenter.load will say what is wrong with it


def _mask_key(row, model_id) -> str:
    blob = json.dumps({"image": file_digest(row["image"]), "frame": row.get("frame", ""),
                       "model": model_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _record_path(out: Path, case_id) -> Path:
    return out / MASK_RECORDS / part_name(case_id)


def _record_mask(out: Path, key: str, case_id, mask=None, **info) -> None:
    """Record that segment made ``mask`` (default ``out/<case_id>.nrrd``) for ``case_id`` from
    the inputs ``key`` names; ``info`` (confidence, flags) is kept with it. The sha256s of the
    masks made for the case before are remembered too (see cohort.made_by_segment)."""
    digest = file_digest(Path(mask) if mask is not None else out / f"{case_id}.nrrd")
    made = [m for m in made_by_segment(read_record(out, case_id)) if m != digest]
    atomic_write_text(_record_path(out, case_id), json.dumps({
        "case_id": case_id, "key": key, "mask_sha256": digest,
        "made": (made + [digest])[-MADE_REMEMBERED:], **info}))


def _reusable(out: Path, row) -> bool:
    """A mask from an earlier run may stand in for this row: same image content, frame and
    model, and the mask file is the one that run wrote (not edited or replaced since)."""
    try:
        rec = json.loads(_record_path(out, row["case_id"]).read_text())
    except (OSError, ValueError):
        return False
    return (rec.get("key") == row["_key"] and rec.get("case_id") == row["case_id"]
            and Path(row["_out"]).is_file() and rec.get("mask_sha256") == file_digest(row["_out"]))


def cache_dir(out) -> Path:
    return Path(out) / MASK_RECORDS


def cache_mask(out, case_id) -> Path:
    """The CNN's mask of a case in the cache (same stem as its record, any case_id safe)."""
    return cache_dir(out) / (part_name(case_id)[:-len(".json")] + ".nrrd")


def read_record(out, case_id) -> dict | None:
    try:
        rec = json.loads(_record_path(Path(out), case_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("case_id") == case_id else None


def made_by_segment(rec) -> list:
    """sha256s of the masks segment made for a record's case (older records: the one)."""
    if not rec:
        return []
    made = rec.get("made")
    made = [m for m in made if isinstance(m, str)] if isinstance(made, list) else []
    return made + ([rec["mask_sha256"]] if isinstance(rec.get("mask_sha256"), str) else [])


def edit_of(path: Path, rec) -> str | None:
    """Why the mask at ``path`` is the user's (edited by hand, or of unknown origin), or None
    when it is a mask segment made for this case."""
    if rec is None:
        return ("segment has no record of making it (its cache .segment-parts is gone), so it "
                "may hold edits")
    if file_digest(path) not in made_by_segment(rec):
        return "edited by hand since segment wrote it"
    return None


def adopt_earlier_layout(out: Path, mark: dict, write: bool = False) -> set:
    """Our files in DIR: those the ownership record lists, plus those of an earlier version of
    segment, which wrote into DIR directly and listed none (its manifest.csv, errors.csv and
    the masks its records prove it wrote). With ``write``, the record is brought up to date,
    so that the staged swap may replace them."""
    ours = set(mark.get("files", []))
    add = [n for n in ("manifest.csv", "errors.csv") if (out / n).is_file()]
    for rec_path in cache_dir(out).glob("*.json") if cache_dir(out).is_dir() else []:
        try:
            cid = json.loads(rec_path.read_text(encoding="utf-8")).get("case_id")
        except (OSError, ValueError, AttributeError):
            continue
        # a record is a file anyone can edit: only a plain name, recorded where segment
        # records that case, can make a file ours
        if isinstance(cid, str) and cid and cid == Path(cid).name and "\\" not in cid \
                and not cid.startswith(".") and rec_path.name == part_name(cid) \
                and (out / f"{cid}.nrrd").is_file():
            add.append(f"{cid}.nrrd")
    new = [n for n in add if n not in ours]
    if new and mark.get("command") == "segment":
        if write:
            _write_marker(out, "segment", sorted(ours | set(new)))
        ours |= set(new)
    return ours


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content: a hard link (no copy of the pixels), else a copy."""
    try:
        os.link(src, dst)
    except OSError:     # another file system, or one without hard links
        shutil.copy2(src, dst)


def plan(rows, out: Path, model_id: str, resume: bool):
    """Sort the manifest's rows into masks to make, masks to reuse and the user's masks.

    Returns
    -------
    (todo, reuse, kept, extra)
        Rows to segment, rows whose cached mask is reused (``--resume``), rows whose mask in
        DIR is the user's (kept), and names of the user's masks of cases this run does not
        segment (kept too).

    Raises
    ------
    InputError
        A mask file in DIR that segment never wrote (move it away), or, without ``--resume``,
        a mask the user edited that this run would redraw. Nothing was changed.
    """
    ours = adopt_earlier_layout(out, read_marker(out) or {})
    todo, reuse, kept, rest = [], [], [], []
    for r in rows:
        cid = r["case_id"]
        r["_key"] = _mask_key(r, model_id)
        r["_out"] = str(cache_mask(out, cid))
        final = out / f"{cid}.nrrd"
        if final.exists() or final.is_symlink():
            if final.name not in ours:
                raise InputError(f"{final}: exists and was not written by 'her2radiomics "
                                 "segment'; move it away (nothing was changed)")
            why = edit_of(final, read_record(out, cid))
            if why and not resume:
                raise InputError(f"{final}: {why}; rerun with --resume to keep it, or move it "
                                 f"away to have case {cid} segmented again (nothing was "
                                 "changed)")
            if why:
                kept.append(r)
                continue
        rest.append(r)
    for r in rest:      # nothing refused: the cache may be completed now
        final = out / f"{r['case_id']}.nrrd"
        if resume and not _reusable(out, r) and final.is_file():
            _cache_from_final(out, r, final)
        (reuse if resume and _reusable(out, r) else todo).append(r)
    done = {f"{r['case_id']}.nrrd" for r in rows}
    extra = sorted(n for n in ours if n.endswith(".nrrd") and "/" not in n and n not in done
                   and (out / n).is_file() and edit_of(out / n, read_record(out, n[:-5])))
    return todo, reuse, kept, extra


def _cache_from_final(out: Path, row, final: Path) -> None:
    """A mask in DIR that is exactly the one its record describes, made from the same inputs,
    but missing from the cache (an earlier version kept no masks there): put it there, so that
    --resume reuses it instead of redrawing it."""
    rec = read_record(out, row["case_id"])
    if not rec or rec.get("key") != row["_key"] or rec.get("mask_sha256") != file_digest(final):
        return
    dst = Path(row["_out"])
    tmp = dst.with_name(dst.name + f".{os.getpid()}.new")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _place(final, tmp)
        os.replace(tmp, dst)
    except OSError:
        pass                # then it is redrawn: slower, not wrong
    finally:
        if tmp.exists():
            tmp.unlink()


def _segment_one(row, model, device, threads=None):
    """Segment one row into its cache mask; a dict of results or of its error (never raises
    for a bad case, so the cohort goes on)."""
    from .inference import get_segmenter  # when run: tests patch inference.get_segmenter
    try:
        loaded = read_image(row["image"], frame=int(row["frame"]) if row.get("frame") else None)
        flags = check_ultrasound(loaded)
        res = auto_mask(loaded.image, segmenter=get_segmenter(model, device, threads),
                        no_lesion=f"{row['image']}: the model found no lesion (give a --box or "
                                  "--click prompt)")
        write_image(res.mask, row["_out"])      # atomic: a new file, never one in place
        os.chmod(row["_out"], 0o666 & ~_umask())    # as any file the user writes (not 0600)
        return {"case_id": row["case_id"], "lesion_px": res.info["lesion_px"],
                "cnn_confidence": round(res.info["confidence"], 4),
                "cnn_flags": "; ".join(flags + res.info["flags"])}
    except HER2Error as exc:
        return {"case_id": row["case_id"], "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 -- keep the cohort going; the error table names the case
        return {"case_id": row["case_id"], "error": f"{row['image']}: {type(exc).__name__}: {exc}"}


def segment_manifest(a) -> int:
    """Run ``segment --manifest`` (see the module docstring); returns the exit code."""
    # looked up when run: tests patch inference.get_segmenter (a stand-in CNN) and
    # outputs.write_csv (a full disk)
    from ..outputs import write_csv
    from .inference import get_segmenter
    rows = read_manifest(a.manifest, require_mask=False, per_row=True)
    refused = [{"case_id": r["case_id"], "error": r["_error"]} for r in rows if r.get("_error")]
    rows = [r for r in rows if not r.get("_error")]
    out = Path(a.out_dir)
    todo, reuse, kept, extra = plan(rows, out, _model_id(a.model), a.resume)
    if todo:
        get_segmenter(a.model, a.device)   # a bad --model is one error, not one per case
    bar = tqdm(total=len(todo), desc="segment", unit="case", disable=a.no_progress,
               file=sys.stderr)
    results = []
    keys = {r["case_id"]: r["_key"] for r in todo}
    try:
        if a.jobs > 1 and len(todo) > 1:
            gen = Parallel(n_jobs=a.jobs, return_as="generator_unordered")(
                delayed(_segment_one)(r, a.model, a.device, 1) for r in todo)
        else:
            gen = (_segment_one(r, a.model, a.device) for r in todo)
        for res in gen:
            results.append(res)
            if "error" not in res:
                cid = res["case_id"]
                _record_mask(out, keys[cid], cid, mask=cache_mask(out, cid),
                                      **{k: v for k, v in res.items() if k != "case_id"})
            bar.update()
    except KeyboardInterrupt:
        bar.close()
        n = sum("error" not in r for r in results)
        print(f"interrupted: {out} is unchanged; the {n} mask(s) made are kept in "
              f"{cache_dir(out)}: rerun with --resume to finish", file=sys.stderr)
        return 130
    finally:
        bar.close()
    errors = refused + [r for r in results if "error" in r]
    err_ids = {e["case_id"] for e in errors}
    info = {r["case_id"]: r for r in results if "error" not in r}
    for r in reuse:
        rec = read_record(out, r["case_id"]) or {}
        info[r["case_id"]] = {k: rec.get(k, "") for k in ("cnn_confidence", "cnn_flags")}
    kept_ids = {r["case_id"] for r in kept}
    man = []
    adopt_earlier_layout(out, read_marker(out) or {}, write=True)
    with staged_dir(out, "segment") as stage:
        for r in rows:
            cid = r["case_id"]
            if cid in err_ids or (cid not in info and cid not in kept_ids):
                continue
            name = f"{cid}.nrrd"
            _place(out / name if cid in kept_ids else cache_mask(out, cid), stage / name)
            row = {k: v for k, v in r.items() if not k.startswith("_")}
            # relative to the manifest's own folder, which is how manifests are read; images
            # keep the absolute paths read_manifest resolved: it works from any folder
            row["mask"] = name
            # the cnn_* cells are ours (from the cache too): formula-like text is quoted
            row["cnn_confidence"] = "" if cid in kept_ids else spreadsheet_safe(
                info[cid].get("cnn_confidence", ""))
            row["cnn_flags"] = EDITED_NOTE if cid in kept_ids else spreadsheet_safe(
                info[cid].get("cnn_flags", ""))
            man.append(row)
        for name in extra:          # the user's masks are never removed with a stale case
            _place(out / name, stage / name)
        # the manifest is the next command's input: its cells are the user's own, kept verbatim
        atomic_write_text(stage / "manifest.csv", pd.DataFrame(man).to_csv(index=False))
        write_csv(stage / "errors.csv", pd.DataFrame(errors, columns=["case_id", "error"]))
    print(f"{len(man)}/{len(rows) + len(refused)} masks in {out} (manifest for extraction: "
          f"{out / 'manifest.csv'})" + (f"; {len(reuse)} reused from an earlier run"
                                        if reuse else ""))
    for r in kept:
        print(f"  {r['case_id']}: mask {out / (r['case_id'] + '.nrrd')} {EDITED_NOTE}")
    for name in extra:
        print(f"  {out / name}: edited by hand, its case is not segmented by this run: kept")
    for e in errors[:20]:
        print(f"  {e['case_id']}: {e['error']}")
    return 1 if errors else 0


def cnn_masks(rows, folder, *, device="cpu", resume=False, spacing_of=None, progress=None):
    """CNN masks for the manifest rows that have none (the Slicer CLI's cohort), written to
    ``folder``; with ``resume`` a mask of an earlier run is reused only for the same image
    content, frame and model.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (``case_id``, ``image``, optional ``mask``, ``frame``); a row that gets a
        mask has ``mask`` (the file) and ``mask_source`` (``CNN auto-mask``) set.
    folder : str or Path
        Where the masks go (``<case_id>.nrrd``, written atomically).
    device : str
        ``cpu`` or ``cuda``.
    spacing_of : callable, optional
        ``row -> (x, y) mm or None``: the spacing to read a row's image with.
    progress : callable, optional
        Called with the fraction of the rows done.

    Returns
    -------
    list of (dict, str)
        The rows that failed, each with its one-line error.
    """
    from .inference import get_segmenter  # when run: tests patch inference.get_segmenter
    todo = [r for r in rows if not r.get("mask")]
    if not todo:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _model_id(None)
    segmenter, failed = None, []
    for i, r in enumerate(todo):
        path = folder / f"{r['case_id']}.nrrd"
        r["_out"], r["_key"] = str(path), _mask_key(r, model)
        try:
            if not (resume and _reusable(folder, r)):
                segmenter = segmenter or get_segmenter(None, device)
                loaded = read_image(r["image"], spacing_mm=spacing_of(r) if spacing_of else None)
                res = auto_mask(loaded, segmenter=segmenter,
                                no_lesion=f"{r['image']}: the CNN found no lesion; give a mask")
                write_image(res.mask, path)    # atomic: a killed run leaves no half a mask
                _record_mask(folder, r["_key"], r["case_id"])
            r["mask"], r["mask_source"] = str(path), "CNN auto-mask"
        except (HER2Error, ValueError) as exc:
            failed.append((r, str(exc)))
        if progress:
            progress((i + 1) / len(todo))
    return failed
