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
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import HER2Error, InputError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("case_id", "image")


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

    def digest(self, params_hash: str) -> str:
        blob = json.dumps({**asdict(self), "params_hash": params_hash}, sort_keys=True,
                          default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

    @property
    def exit_code(self) -> int:
        return 1 if (self.errors or self.interrupted) else 0


def read_manifest(path, require_mask: bool = True) -> list:
    """Read and validate a manifest; returns rows with paths resolved to absolute.

    Raises
    ------
    InputError
        Unreadable file, missing columns, empty, duplicate case IDs.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: manifest not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            cols = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read manifest CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: manifest has no rows")
    need = list(REQUIRED_COLUMNS) + (["mask"] if require_mask else [])
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {missing} (has {list(cols)})")
    seen = set()
    for i, r in enumerate(rows):
        cid = (r.get("case_id") or "").strip()
        if not cid:
            raise InputError(f"{path}: row {i + 2} has an empty case_id")
        if cid in seen:
            raise InputError(f"{path}: duplicate case_id {cid!r} (row {i + 2})")
        if any(c in cid for c in "/\\") or cid in (".", ".."):
            raise InputError(f"{path}: case_id {cid!r} must not contain path separators")
        seen.add(cid)
        r["case_id"] = cid
        for col in ("image", "mask", "fov"):
            if r.get(col):
                p = Path(r[col])
                r[col] = str(p if p.is_absolute() else (path.parent / p))
    return rows


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
    from .features import versions
    from .io import load_case, read_mask
    from .rings import build_regions

    fx = _extractor_cache(cfg.params, cfg.pixel_units)
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
    regions = build_regions(loaded.image, mask, cfg.rings_mm, annuli=cfg.annuli,
                            combined=cfg.combined, fov=fov,
                            max_clip_fraction=cfg.max_clip_fraction,
                            spacing_known=loaded.spacing_known, path=loaded.path)
    feats, diags = fx.extract(loaded.image, regions.masks, spacing_known=loaded.spacing_known,
                              path=loaded.path)
    prov = {"case_id": row["case_id"], "image": loaded.path,
            "spacing_source": loaded.spacing_source,
            "spacing_x_mm": loaded.spacing_mm[0], "spacing_y_mm": loaded.spacing_mm[1],
            "grey_conversion": loaded.provenance.get("grey_conversion"),
            "params": fx.name, "params_hash": fx.params_hash, "fov_source": regions.fov_source,
            "flagged_regions": ";".join(regions.flagged)}
    for reg, q in regions.qc.items():
        prov[f"{reg}__area_mm2"] = q["area_mm2"]
        prov[f"{reg}__clipped_fraction"] = q["clipped_fraction"]
    prov.update({f"version_{k}": v for k, v in versions().items()})
    prov.update(diags)
    return {"case_id": row["case_id"], "features": feats, "provenance": prov}


_FX = {}


def _extractor_cache(params, pixel_units):
    from .features import FeatureExtractor
    key = (str(params), pixel_units)
    if key not in _FX:
        _FX[key] = FeatureExtractor(params, pixel_units=pixel_units)
    return _FX[key]


def _safe_case(row, cfg, global_spacing=None):
    """Worker entry point: never raises for bad input, returns the error as data instead."""
    try:
        return process_case(row, cfg, global_spacing)
    except HER2Error as exc:
        return {"case_id": row["case_id"], "error": str(exc), "image": row.get("image", "")}
    except Exception as exc:  # a bug or an unforeseen file problem must not stop the cohort
        log.exception("case %s failed", row["case_id"])
        return {"case_id": row["case_id"], "image": row.get("image", ""),
                "error": f"{row.get('image', '')}: unexpected {type(exc).__name__}: {exc}"}


def run_batch(rows, out_csv, cfg: ExtractConfig, *, jobs: int = 1, backend: str = "loky",
              scheduler: str | None = None, resume: bool = False, progress: bool = True,
              global_spacing=None, aggregate: str | None = None) -> BatchResult:
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
        Parallel workers for the joblib backend.
    backend : {"loky", "dask"}
    scheduler : str, optional
        Dask scheduler address, or ``"local"`` to start a LocalCluster with ``jobs`` workers.
    resume : bool
        Keep parts of finished cases whose settings digest matches, and skip those cases.
    aggregate : {"mean", "median", "first"}, optional
        Also write ``<stem>_patients.csv``, one row per ``patient_id``.

    Returns
    -------
    BatchResult
    """
    from tqdm.auto import tqdm
    from .features import load_params, params_hash
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    parts = Path(str(out_csv) + ".parts")
    _, ptext, _ = load_params(cfg.params)  # fail fast on bad params (exit 2), before any work
    digest = cfg.digest(params_hash(ptext))
    if parts.exists() and not resume:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    res = BatchResult(out_csv, out_csv.with_name(out_csv.stem + "_provenance.csv"),
                      out_csv.with_name(out_csv.stem + "_errors.csv"), n_cases=len(rows))
    todo = []
    for r in rows:
        part = parts / f"{r['case_id']}.json"
        if resume and part.exists():
            try:
                doc = json.loads(part.read_text())
                if doc.get("digest") == digest and "error" not in doc:
                    res.n_skipped += 1
                    continue
            except ValueError:
                pass  # a torn part from a killed run: recompute it
        todo.append(r)

    def store(result):
        result["digest"] = digest
        _atomic_json(parts / f"{result['case_id']}.json", result)

    bar = tqdm(total=len(todo), desc="extract", unit="case", disable=not progress,
               file=sys.stderr)
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
                from joblib import Parallel, delayed
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
    _assemble(rows, parts, res, aggregate)
    return res


def _run_dask(todo, cfg, global_spacing, scheduler, jobs, store, bar):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
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
    from .io import atomic_write_text
    atomic_write_text(path, json.dumps(obj, default=_json_default))


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _assemble(rows, parts: Path, res: BatchResult, aggregate):
    import pandas as pd
    from .io import atomic_write_text
    feats, provs, errs = [], [], []
    for r in rows:
        part = parts / f"{r['case_id']}.json"
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
    fdf = pd.DataFrame(feats)
    if not fdf.empty:
        fdf = fdf[["case_id"] + [c for c in fdf.columns if c != "case_id"]]
    atomic_write_text(res.features_csv, fdf.to_csv(index=False, float_format="%.10g"))
    atomic_write_text(res.provenance_csv, pd.DataFrame(provs).to_csv(index=False))
    atomic_write_text(res.errors_csv, pd.DataFrame(errs, columns=["case_id", "image", "error"])
                      .to_csv(index=False))
    if aggregate and not fdf.empty:
        from .features import aggregate_patients
        pid = {r["case_id"]: (r.get("patient_id") or r["case_id"]) for r in rows}
        agg = aggregate_patients(fdf, [pid[c] for c in fdf["case_id"]], aggregate)
        path = res.features_csv.with_name(res.features_csv.stem + "_patients.csv")
        atomic_write_text(path, agg.to_csv(index=False, float_format="%.10g"))
        res.patients_csv = path


def summarize(res: BatchResult) -> str:
    """Human summary line(s) for the CLI."""
    lines = [f"{res.n_ok}/{res.n_cases} cases extracted"
             + (f" ({res.n_skipped} resumed from earlier parts)" if res.n_skipped else "")
             + f" -> {res.features_csv}"]
    if res.errors:
        lines.append(f"{len(res.errors)} case(s) failed (details in {res.errors_csv}):")
        lines += [f"  {e['case_id']}: {e['error']}" for e in res.errors[:20]]
        if len(res.errors) > 20:
            lines.append(f"  ... and {len(res.errors) - 20} more")
    if res.interrupted:
        lines.append("interrupted: rerun the same command with --resume to finish")
    return "\n".join(lines)

