"""Cohort feature extraction: parallel, resumable, atomic, error-tolerant.

A manifest CSV lists one image per row (columns below).  Each case is processed independently
(read -> validate -> rings -> pyradiomics); its result is written at once to
``<out>.parts/<case_id>.json`` (atomically), so an interrupted run (Ctrl-C, crash, killed job)
loses nothing already computed and ``resume=True`` skips finished cases.  At the end the parts are
assembled, in manifest order, into the feature table, a provenance table and an error table,
each written atomically.

Manifest columns: ``case_id`` and ``image`` (required), ``mask`` (required for extraction),
optional ``patient_id``, ``spacing_x_mm``/``spacing_y_mm``, ``frame``, ``label`` and ``fov``
(a valid-area mask).  Other columns (site, clinical variables, label) are carried through
untouched by later steps, not here.  Relative paths are resolved against the manifest's folder.

Backends: joblib (``loky`` processes, ``jobs`` workers) or a Dask cluster (``backend="dask"``,
``scheduler`` = address such as ``tcp://host:8786``, or ``"local"`` for a LocalCluster).
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import logging
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HER2Error, InputError
from ..imaging.io import atomic_write_text, companion_files, load_case, read_mask
from ..imaging.rings import build_regions
from ..outputs import interrupts_held, resolved, spreadsheet_safe, write_csv
from .features import (FeatureExtractor, aggregate_patients, engine_info, load_params,
                       params_hash, versions)
# moved to .manifest when this file was split by job; imported from here by others
from .manifest import (  # noqa: F401
    FORMULA_CHARS, MAX_CASE_ID, REQUIRED_COLUMNS, _is_number, _row_value_problems,
    case_id_problems, read_manifest, text_cell_problems)

log = logging.getLogger(__name__)



@dataclass
class ExtractConfig:
    """Everything that determines a case's features (hashed to validate resumed parts)."""

    params: str = "default"
    rings_mm: tuple = ()
    annuli: bool = True
    combined: tuple = ()
    fov: str = "auto"                 # "auto" | "none"
    max_clip_fraction: float = 0.5
    pixel_units: bool = False
    min_mask_pixels: int = 16
    label: int | None = None
    engine: str = "native"            # or "pyradiomics" (the optional reference, same values)

    def digest(self, params_hash: str) -> str:
        blob = json.dumps({**asdict(self), "params_hash": params_hash}, sort_keys=True,
                          default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs and what it writes besides the feature table (none of it changes a
    case's features, so none of it is in the resume digest).

    Attributes
    ----------
    backend : {"loky", "dask"}
        joblib's process workers on this machine, or a Dask cluster.
    scheduler : str, optional
        Dask scheduler address, or ``"local"`` to start a LocalCluster with ``jobs`` workers.
    aggregate : {"mean", "median", "first"}, optional
        Also write ``<stem>_patients.csv``, one row per ``patient_id``.
    parts_dir : path, optional
        Where the per-case parts live (default ``<out_csv>.parts``): a command that stages its
        tables keeps the parts where a resumed run finds them.
    """

    backend: str = "loky"
    scheduler: str | None = None
    aggregate: str | None = None
    parts_dir: object = None


@dataclass
class BatchResult:
    features_csv: Path
    provenance_csv: Path
    errors_csv: Path
    n_cases: int = 0
    n_ok: int = 0
    n_skipped: int = 0
    errors: list = field(default_factory=list)
    interrupted: bool = False
    kept_previous: str = ""          # why the previous tables were kept ('' = replaced)
    staged_dir: Path | None = None   # where this run's tables are when they were not swapped in
    manifest_ids: set = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        return 1 if (self.errors or self.interrupted) else 0



def _spacing_of(row):
    sx, sy = row.get("spacing_x_mm"), row.get("spacing_y_mm")
    if sx and sy:
        return (float(sx), float(sy))
    return None


def process_case(row: dict, cfg: ExtractConfig, global_spacing=None) -> dict:
    """Process one manifest row; returns ``{"case_id", "features", "provenance"}``.

    Raises
    ------
    HER2Error
        For any bad input of this case (the batch loop records it and goes on).
    """

    fx = _extractor_cache(cfg.params, cfg.pixel_units, cfg.engine)
    spacing = global_spacing or _spacing_of(row)
    frame = int(row["frame"]) if row.get("frame") not in (None, "") else None
    label = int(row["label"]) if row.get("label") not in (None, "") else cfg.label
    loaded, mask = load_case(row["image"], row.get("mask"), spacing_mm=spacing, frame=frame,
                             label=label, min_pixels=cfg.min_mask_pixels)
    if mask is None:
        raise InputError(f"{row['image']}: no mask given for case {row['case_id']}")
    # a user-supplied valid-area mask follows the same geometry rules as the lesion mask
    fov = (read_mask(row["fov"], loaded, min_pixels=1) if row.get("fov")
           else ("auto" if cfg.fov == "auto" else None))
    regions = build_regions(loaded, mask, cfg.rings_mm, annuli=cfg.annuli,
                            combined=cfg.combined, fov=fov,
                            max_clip_fraction=cfg.max_clip_fraction)
    feats, diags = fx.extract(loaded.image, regions.masks, spacing_known=loaded.spacing_known,
                              path=loaded.path)
    prov = {"case_id": row["case_id"], "image": loaded.path,
            "spacing_source": loaded.spacing_source,
            "spacing_x_mm": loaded.spacing_mm[0], "spacing_y_mm": loaded.spacing_mm[1],
            "grey_conversion": loaded.provenance.get("grey_conversion"),
            "photometric": loaded.provenance.get("photometric", ""),
            "intensity_min": loaded.provenance.get("intensity_range", [None, None])[0],
            "intensity_max": loaded.provenance.get("intensity_range", [None, None])[1],
            "intensity_note": loaded.provenance.get("intensity_note", ""),
            "params": fx.name, "params_hash": fx.params_hash, "fov_source": regions.fov_source,
            "engine": fx.engine, "engine_version": engine_info(fx.engine)["version"],
            "flagged_regions": ";".join(regions.flagged)}
    # without a known spacing an area is in pixels: name it so, never "mm2"
    area = "area_mm2" if loaded.spacing_known else "area_px2"
    for reg, q in regions.qc.items():
        prov[f"{reg}__{area}"] = q["area_mm2"] if loaded.spacing_known else q["area_px"]
        prov[f"{reg}__clipped_fraction"] = q["clipped_fraction"]
    prov.update({f"version_{k}": v for k, v in _versions(fx.engine).items()})
    prov.update(diags)
    return {"case_id": row["case_id"], "features": feats, "provenance": prov}


_FX = {}
_VERSIONS = {}


def _versions(engine):
    """:func:`versions` once per process: the package metadata look-ups cost ~5 ms a case, and
    the installed versions cannot change while a batch runs."""
    if engine not in _VERSIONS:
        _VERSIONS[engine] = versions(engine)
    return _VERSIONS[engine]


def _extractor_cache(params, pixel_units, engine="native"):
    key = (str(params), pixel_units, engine)
    if key not in _FX:
        _FX[key] = FeatureExtractor(params, pixel_units=pixel_units, engine=engine)
    return _FX[key]


def _safe_case(row, cfg, global_spacing=None):
    """Worker entry point: never raises for bad input, returns the error as data instead."""
    try:
        return process_case(row, cfg, global_spacing)
    except HER2Error as exc:
        return {"case_id": row["case_id"], "error": str(exc), "image": row.get("image", "")}
    except Exception as exc:  # a bug or an unforeseen file problem must not stop the cohort
        # the traceback only with --debug / -vv: the error table and summary name the case
        log.debug("case %s failed", row["case_id"], exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return {"case_id": row["case_id"], "image": row.get("image", ""),
                "error": f"{row.get('image', '')}: unexpected {type(exc).__name__}: {first}"}


def run_batch(rows, out_csv, cfg: ExtractConfig, *, jobs: int = 1, resume: bool = False,
              progress: bool = True, global_spacing=None,
              options: BatchOptions | None = None) -> BatchResult:
    """Extract features for every manifest row.

    Parameters
    ----------
    rows : list of dict
        From :func:`read_manifest`.
    out_csv : path
        Feature table; ``<stem>_provenance.csv`` and ``<stem>_errors.csv`` are written beside
        it, and per-case parts in ``<out_csv>.parts/``.
    cfg : ExtractConfig
    jobs : int
        Parallel workers (joblib processes, or a local Dask cluster's workers).
    resume : bool
        Keep parts of finished cases whose settings digest matches, and skip those cases.
    progress : bool or callable
        A progress bar on stderr, or ``progress(done, total)`` called after every case.
    global_spacing : (float, float), optional
        Pixel spacing in mm for every image (overrides the rows' and the files').
    options : BatchOptions, optional
        Backend (joblib or Dask), a per-patient table, where the parts live.

    Returns
    -------
    BatchResult
    """
    options = options or BatchOptions()
    backend, scheduler = options.backend, options.scheduler
    aggregate, parts_dir = options.aggregate, options.parts_dir
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    parts = Path(parts_dir) if parts_dir else Path(str(out_csv) + ".parts")
    _, ptext, _ = load_params(cfg.params)  # fail fast on bad params (exit 2), before any work
    # and on params the chosen engine cannot do (or an engine that is not installed)
    _extractor_cache(cfg.params, cfg.pixel_units, cfg.engine)
    digest = cfg.digest(params_hash(ptext))
    # Old parts are never deleted up front: a rerun without --resume recomputes every case and
    # overwrites its part, but until it finishes the earlier parts (and tables) stay intact.
    parts.mkdir(parents=True, exist_ok=True)
    res = BatchResult(out_csv, out_csv.with_name(out_csv.stem + "_provenance.csv"),
                      out_csv.with_name(out_csv.stem + "_errors.csv"), n_cases=len(rows),
                      manifest_ids={str(r["case_id"]) for r in rows})
    # rows the manifest check refused are errors of their own; the others go on
    refused = [{"case_id": r.get("case_id", ""), "image": r.get("image", ""),
                "error": r["_error"]} for r in rows if r.get("_error")]
    rows = [r for r in rows if not r.get("_error")]
    todo, this_run = [], set()
    keys = {}
    for r in rows:
        keys[r["case_id"]] = case_key(r, global_spacing)
        part = parts / part_name(r["case_id"])
        if resume and part.exists():
            try:
                doc = json.loads(part.read_text())
                # the same settings and the same files (content), or the case is recomputed
                if (doc.get("digest") == digest and doc.get("case_key") == keys[r["case_id"]]
                        and doc.get("case_id") == r["case_id"] and "error" not in doc):
                    res.n_skipped += 1
                    this_run.add(r["case_id"])
                    continue
            except ValueError:
                pass  # a torn part from a killed run: recompute it
        todo.append(r)

    def store(result):
        result["digest"] = digest
        result["case_key"] = keys[result["case_id"]]
        _atomic_json(parts / part_name(result["case_id"]), result)
        this_run.add(result["case_id"])

    if callable(progress):       # e.g. the Slicer CLI's <filter-progress> lines
        bar = _CallbackBar(len(todo), progress)
    else:
        bar = progress_bar(total=len(todo), desc="extract", unit="case", file=sys.stderr,
                           disable=not progress or len(todo) <= 1)
    try:
        if not todo:
            pass
        elif backend == "dask":
            _run_dask(todo, cfg, global_spacing, scheduler, jobs, store, bar)
        elif backend in ("loky", "joblib", "threading", "sequential"):
            if jobs == 1 or backend == "sequential" or len(todo) == 1:
                for r in todo:
                    store(_safe_case(r, cfg, global_spacing))
                    bar.update()
            else:
                from joblib import Parallel, delayed  # when run: one-case runs skip its import
                gen = Parallel(n_jobs=jobs, backend="loky" if backend == "joblib" else backend,
                               return_as="generator_unordered")(
                    delayed(_safe_case)(r, cfg, global_spacing) for r in todo)
                for result in gen:
                    store(result)
                    bar.update()
        else:
            raise InputError(f"--backend {backend!r}: choose loky or dask")
    except KeyboardInterrupt:
        res.interrupted = True
        log.warning("interrupted: finished cases are kept in %s; rerun with --resume", parts)
    finally:
        bar.close()
    _assemble([r for r in rows if r["case_id"] in this_run], parts, res, aggregate, refused)
    return res


def part_name(case_id: str) -> str:
    """File name of a case's part: the case_id when it is a plain, short name, else a
    readable prefix plus a hash (any case_id gives a valid, distinct file name)."""
    cid = str(case_id)
    safe = re.sub(r"[^A-Za-z0-9._@-]", "_", cid)[:80]
    # Windows reserves device names whatever the extension
    reserved = safe.split(".")[0].upper() in {"CON", "PRN", "AUX", "NUL", *(
        f"{d}{i}" for d in ("COM", "LPT") for i in range(10))}
    if safe == cid and not reserved and not cid.startswith("."):
        return f"{cid}.json"
    return f"{safe}-{hashlib.sha256(cid.encode('utf-8')).hexdigest()[:12]}.json"


def file_digest(path) -> str:
    """sha256 of a file's content ('' when it cannot be read: the case will fail anyway)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def file_digest_all(path) -> str:
    """sha256 of a file and of the files its reading also depends on (a MetaImage's or
    detached NRRD's data file; see :func:`~HER2RadiomicsLib.imaging.io.companion_files`)."""
    parts = [file_digest(path)] + [f"{c.name}:{file_digest(c)}" for c in companion_files(path)
                                   if c.suffix.lower() != ".json"]
    return parts[0] if len(parts) == 1 else hashlib.sha256("|".join(parts).encode()).hexdigest()


def case_key(row: dict, global_spacing=None) -> str:
    """What a case's result depends on besides the settings: its files (resolved path and
    content, the image's spacing sidecar included) and its own manifest values. A resumed
    part is reused only when this is unchanged."""
    files = {}
    for col in ("image", "mask", "fov"):
        if row.get(col):
            files[col] = (os.path.realpath(row[col]), file_digest_all(row[col]))
    if row.get("image"):
        img = Path(row["image"])
        for side in (Path(str(img) + ".json"), img.with_suffix(".json")):
            if side != img and side.is_file():
                files["sidecar"] = (os.path.realpath(side), file_digest(side))
                break
    vals = {k: row.get(k, "") for k in ("spacing_x_mm", "spacing_y_mm", "frame", "label")}
    blob = json.dumps({"files": files, "values": vals,
                       "global_spacing": list(global_spacing) if global_spacing else None},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class _CallbackBar:
    """Calls ``fn(done, total)`` after every case."""

    def __init__(self, total, fn):
        self.total, self.done, self.fn = total, 0, fn

    def update(self, n=1):
        self.done += n
        self.fn(self.done, self.total)

    def close(self):
        pass


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(disable: bool = False, **kw):
    """A tqdm bar, or a stand-in when disabled (tqdm's import alone costs ~45 ms, a tenth of
    a one-case ``extract``)."""
    if disable:
        return _NoBar()
    from tqdm.auto import tqdm  # when run: see the docstring
    return tqdm(**kw)


def _run_dask(todo, cfg, global_spacing, scheduler, jobs, store, bar):
    try:
        from dask.distributed import Client, LocalCluster, as_completed  # optional package
    except ImportError:
        raise InputError("--backend dask needs the 'dask[distributed]' package "
                         "(pip install 'HER2RadiomicsLib[dask]')") from None
    cluster = None
    if scheduler in (None, "", "local"):
        cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler "
                             f"({exc})") from None
    try:
        futures = client.map(_safe_case, todo, cfg=cfg, global_spacing=global_spacing,
                             pure=False)
        for fut in as_completed(futures):
            store(fut.result())
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _atomic_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, default=json_default))


def json_default(o):
    """``json.dumps`` fallback: numpy scalars and arrays as plain values, the rest as str."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _assemble(rows, parts: Path, res: BatchResult, aggregate, refused=()):
    """Build the tables from this run's parts in ``<out>.parts/run/``, then swap them in.

    The finished tables replace the previous ones only when the run was not interrupted and,
    if a previous table exists, extracted at least one case and lost none of the cases the
    previous table held (of those still in the manifest). Otherwise the previous tables stay,
    this run's stay in the staging folder, and ``res.kept_previous`` says why.
    """
    feats, provs, errs = [], [], list(refused)
    for r in rows:
        part = parts / part_name(r["case_id"])
        if not part.exists():
            continue
        try:
            doc = json.loads(part.read_text())
        except ValueError:
            continue
        if "error" in doc:
            errs.append({"case_id": doc["case_id"], "image": doc.get("image", ""),
                         "error": doc["error"]})
            continue
        feats.append({"case_id": doc["case_id"], **doc["features"]})
        provs.append(doc["provenance"])
    res.n_ok = len(feats)
    res.errors = errs
    stage = parts / "run"
    stage.mkdir(exist_ok=True)
    staged = {res.features_csv: stage / res.features_csv.name,
              res.provenance_csv: stage / res.provenance_csv.name,
              res.errors_csv: stage / res.errors_csv.name}
    atomic_write_text(staged[res.errors_csv], csv_text(errs, ["case_id", "image", "error"]))
    atomic_write_text(staged[res.provenance_csv], csv_text(provs))
    if aggregate and feats:
        import pandas as pd  # when run: a one-case extract must not pay for pandas (~0.3 s)
        fdf = pd.DataFrame(feats)
        pid = {r["case_id"]: (r.get("patient_id") or r["case_id"]) for r in rows}
        agg = aggregate_patients(fdf, [pid[c] for c in fdf["case_id"]], aggregate)
        path = res.features_csv.with_name(res.features_csv.stem + "_patients.csv")
        staged[path] = stage / path.name
        write_csv(staged[path], agg, float_format="%.10g")
        res.patients_csv = path
    # the feature table last: it is what a reader checks for, so it lands last
    atomic_write_text(staged[res.features_csv], csv_text(feats, float_format="%.10g"))
    res.kept_previous = _why_keep_previous(res, {str(f["case_id"]) for f in feats})
    if res.kept_previous:
        res.staged_dir = stage
        return
    # a table an earlier run wrote and this one does not (a _patients.csv of an --aggregate
    # run) would sit beside tables it does not belong to: it goes with the swap
    record = parts / "tables.json"
    try:
        before = {Path(t).name for t in json.loads(record.read_text())}
    except (OSError, ValueError, TypeError):
        before = set()
    stale = [res.features_csv.with_name(n) for n in before - {p.name for p in staged}
             if n.startswith(res.features_csv.stem + "_")]
    with interrupts_held():      # the tables land as a set: Ctrl-C waits for the renames
        for final in [p for p in staged if p != res.features_csv] + [res.features_csv]:
            os.replace(staged[final], resolved(final))   # a symlinked output: its target
        for old in stale:
            try:
                resolved(old).unlink()
            except OSError:
                pass
    _atomic_json(record, sorted(p.name for p in staged))


def csv_text(records: list, columns=None, float_format: str | None = None) -> str:
    """CSV of a list of dicts, as ``pandas.DataFrame(records).to_csv(index=False)`` writes it
    (columns in order of first appearance, missing and NaN cells empty), without importing
    pandas: a one-case ``extract`` would spend a third of its time on that import."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in records for k in r))
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([spreadsheet_safe(c) for c in columns])

    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and float_format:
            return float_format % v
        return spreadsheet_safe(v)
    for r in records:
        w.writerow([cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _why_keep_previous(res: BatchResult, new_ids: set) -> str:
    """Why this run's tables must not replace the previous ones ('' when they may)."""
    if res.interrupted:
        return "the run was interrupted"
    prev = res.features_csv
    if not prev.exists():
        return ""          # nothing to protect: the cases that worked and the error table
    if res.n_ok == 0:
        return "no case was extracted"
    try:
        with open(prev, newline="", encoding="utf-8") as fh:
            old = {r.get("case_id", "") for r in csv.DictReader(fh)}
    except (OSError, UnicodeDecodeError, csv.Error):  # an unreadable table protects nothing
        return ""
    lost = sorted(old & res.manifest_ids - new_ids)
    if lost:
        return (f"this run failed for {len(lost)} case(s) the previous table holds "
                f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''})")
    return ""


def summarize(res: BatchResult) -> str:
    """Human summary line(s) for the CLI."""
    dest = res.staged_dir if res.kept_previous else res.features_csv
    lines = [f"{res.n_ok}/{res.n_cases} cases extracted"
             + (f" ({res.n_skipped} resumed from earlier parts)" if res.n_skipped else "")
             + f" -> {dest}"]
    if res.errors:
        lines.append(f"{len(res.errors)} case(s) failed (details in {res.errors_csv}):")
        lines += [f"  {e['case_id']}: {e['error']}" for e in res.errors[:20]]
        if len(res.errors) > 20:
            lines.append(f"  ... and {len(res.errors) - 20} more")
    if res.kept_previous:
        if res.features_csv.exists():
            lines.append(f"kept the previous {res.features_csv.name} and its tables: "
                         f"{res.kept_previous}; this run's tables are in {res.staged_dir}")
        else:
            lines.append(f"no table written: {res.kept_previous}")
    if res.interrupted:
        lines.append("interrupted: rerun the same command with --resume to finish")
    return "\n".join(lines)

