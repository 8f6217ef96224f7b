"""The ``her2radiomics`` command line (also ``python -m HER2RadiomicsLib``).

Exit codes: 0 all good; 1 some cases failed (they are listed, the others were processed);
2 bad invocation or unreadable input (a one-line ``error:`` message names the file and the
problem); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Interrupted or terminated runs
clean their staging folders and locks and replace nothing.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from .errors import HER2Error, InputError
from .extraction.options import add_extract_options, extract_config

# Command functions import the library modules (and numpy, pandas, SimpleITK, matplotlib,
# and standard modules the parser does not load, such as csv) when they run: the parser
# imports this module, and `her2radiomics --help` must stay instant
# (Testing/test_outputs_atomic.py checks what building the parser loads).

log = logging.getLogger("HER2RadiomicsLib")

EXIT_OK, EXIT_CASES_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143          # 128 + SIGTERM, what a shell reports for a killed process


class _Terminated(BaseException):
    """SIGTERM, raised so that ``finally`` blocks (staging folders, locks) run."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is also 2; one line, as every error
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _add_spacing(p):
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("X", "Y"),
                   help="pixel spacing in mm (column, row); overrides DICOM/header/sidecar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    ap = _Parser(prog="her2radiomics", description=(
        "Breast-ultrasound radiomics for HER2 status (research use only, not a diagnostic "
        "device)."))
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    ap.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("synth", help="generate the built-in synthetic cohort")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=120, help="number of patients (default 120)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--reader-fraction", type=float, default=0.25,
                   help="share of patients contoured by three readers (default 0.25)")
    p.add_argument("--jobs", type=int, default=1)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("presets", help="list the params presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("rings", help="build peritumoral rings for one image")
    p.add_argument("--image", required=True)
    p.add_argument("--mask", required=True)
    p.add_argument("--rings", default="3,5,8", help="distances in mm (default 3,5,8)")
    p.add_argument("--no-annuli", action="store_true")
    p.add_argument("--combined", default="")
    p.add_argument("--fov", default="auto",
                   help="'auto' (detect), 'none' (image border only) or a valid-area mask file")
    p.add_argument("--max-clip-fraction", type=float, default=0.5)
    p.add_argument("--label", type=int)
    p.add_argument("--min-mask-pixels", type=int, default=16)
    p.add_argument("--frame", type=int)
    _add_spacing(p)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_rings)

    p = sub.add_parser("extract", help="radiomics features for one case or a manifest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="cohort CSV (case_id,image,mask[,patient_id,...])")
    src.add_argument("--image", help="single image (with --mask)")
    p.add_argument("--mask", help="lesion mask for --image")
    p.add_argument("--case-id", help="case_id for --image (default: image file name)")
    _add_spacing(p)
    add_extract_options(p)
    p.add_argument("--aggregate", choices=("mean", "median", "first"),
                   help="also write one row per patient_id (<out>_patients.csv)")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers (default 1)")
    p.add_argument("--backend", choices=("loky", "dask"), default="loky")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786) or 'local'")
    p.add_argument("--resume", action="store_true", help="skip cases finished by an earlier run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="feature CSV")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("demo", help="run the main job on the built-in synthetic cohort")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--n", type=int, default=120,
                   help="patients in the synthetic cohort (40 or more; default 120)")
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-pdf", action="store_true", help="skip report.pdf (needs Chromium)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeated train/test splits of peritumoral2025 (default 3, reduced "
                   "from the recipe's 10 for time; 0 = none)")
    p.set_defaults(func=cmd_demo)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return ap


def _register_segmentation(sub):
    from .segmentation import commands
    commands.register(sub)


# Each feature area registers its own subcommands (kept beside its code).
def _register_readerstudy(sub):
    from .readers import commands as readercommands
    readercommands.register(sub)


def _register_modelling(sub):
    from .modelling import commands as modelcommands
    modelcommands.register(sub)


def _register_reports(sub):
    from .reports import commands as reportcommands
    reportcommands.register(sub)


def _register_station(sub):
    # the web front end (trame-slicer, Slicer's core) is imported only when a station runs
    from .station import commands as stationcommands
    stationcommands.register(sub)


# --- pacs (the hospital's archive, DICOMweb): registration only, the code is in pacs/ ---
def _register_pacs(sub):
    from .pacs import commands as pacscommands
    pacscommands.register(sub)


_EXTRA_COMMANDS = [_register_segmentation, _register_readerstudy, _register_modelling,
                   _register_reports, _register_station, _register_pacs]


def cmd_synth(a) -> int:
    from .imaging.synth import generate_cohort
    from .outputs import staged_dir
    t = time.time()
    # generated aside and swapped in whole: a rerun never leaves new images beside old labels
    with staged_dir(a.out, "synth") as stage:
        generate_cohort(stage, n_cases=a.n, seed=a.seed, reader_fraction=a.reader_fraction,
                        jobs=a.jobs)
    path = Path(a.out) / "cohort.csv"
    print(f"synthetic cohort ({a.n} patients) written in {time.time() - t:.1f} s: {path}")
    return EXIT_OK


def cmd_presets(a) -> int:
    from .extraction.features import PARAMS_DIR, list_presets
    for name in list_presets():
        first = (PARAMS_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:10s} {first}")
    return EXIT_OK


def cmd_rings(a) -> int:
    from .imaging.io import load_case, read_mask
    from .imaging.rings import build_regions, write_regions
    loaded, mask = load_case(a.image, a.mask, spacing_mm=a.spacing_mm, frame=a.frame,
                             label=a.label, min_pixels=a.min_mask_pixels)
    fov = a.fov
    if fov not in ("auto", "none"):
        fov = read_mask(fov, loaded, min_pixels=1)
    elif fov == "none":
        fov = None
    regions = build_regions(loaded, mask, a.rings, annuli=not a.no_annuli,
                            combined=a.combined, fov=fov, max_clip_fraction=a.max_clip_fraction)
    from .outputs import staged_dir
    # written as a set: a rerun with other rings leaves no stale ring file beside new ones
    with staged_dir(a.out_dir, "rings") as stage:
        write_regions(regions, stage, extra={
            "image": loaded.path, "spacing_mm": list(loaded.spacing_mm),
            "spacing_source": loaded.spacing_source})
    path = Path(a.out_dir) / "rings.json"
    for name, q in regions.qc.items():
        flag = "  FLAGGED" if q["flagged"] else ""
        print(f"{name:22s} {q['area_mm2']:9.1f} mm2  clipped {100 * q['clipped_fraction']:5.1f}%"
              f"{flag}")
    print(f"regions written to {a.out_dir} ({path.name}, labels.nrrd)")
    return EXIT_OK


def cmd_extract(a) -> int:
    from .extraction.batch import (BatchOptions, case_id_problems, read_manifest, run_batch,
                                   summarize)
    cfg = extract_config(a)
    if a.manifest:
        # a bad row is that case's error; the other cases are extracted
        rows = read_manifest(a.manifest, per_row=True)
    else:
        if not a.mask:
            raise InputError("--image needs --mask (the lesion mask)")
        cid = a.case_id or Path(a.image).name.split(".")[0]
        bad = case_id_problems(cid)
        if bad:
            raise InputError(f"--case-id: {bad[0]}")
        rows = [{"case_id": cid,
                 "image": str(Path(a.image).resolve()), "mask": str(Path(a.mask).resolve())}]
        if a.frame is not None:
            rows[0]["frame"] = a.frame
    res = run_batch(rows, a.out, cfg, jobs=a.jobs, resume=a.resume, progress=not a.no_progress,
                    global_spacing=a.spacing_mm,
                    options=BatchOptions(backend=a.backend, scheduler=a.scheduler,
                                         aggregate=a.aggregate))
    if not a.manifest and res.errors and not res.interrupted:
        # single case: the failure is the command's failure (bad input), not a partial cohort:
        # one line on stderr (the previous result, if any, is kept: res.kept_previous)
        raise InputError(res.errors[0]["error"])
    print(summarize(res))
    if res.interrupted:
        return EXIT_INTERRUPTED
    return res.exit_code


def cmd_demo(a) -> int:
    from .demo import run_demo
    return run_demo(a)


# Commands whose --out is a folder (every other --out is a file; --out-dir is always a folder).
_DIR_OUT = {"synth", "demo", "train", "train-segmenter", "reader-study"}


def validate_args(a) -> None:
    """Check option values before any work (one line each, exit 2), not deep inside a run."""
    checks = [
        ("jobs", lambda v: v >= 1, "must be at least 1"),
        ("n", lambda v: v >= 1, "must be at least 1"),
        ("seed", lambda v: 0 <= v < 2 ** 32, "must be a whole number from 0 to 4294967295"),
        ("min_mask_pixels", lambda v: v >= 1, "must be at least 1 pixel"),
        ("max_clip_fraction", lambda v: 0 <= v <= 1, "must be a fraction between 0 and 1"),
        ("frame", lambda v: v >= 0, "must be 0 or more (frames count from 0)"),
        ("label", lambda v: v >= 1, "must be a positive label value"),
        ("reader_fraction", lambda v: 0 <= v <= 1, "must be a fraction between 0 and 1"),
        ("threshold", lambda v: math.isfinite(v), "must be a number"),
        ("bootstrap", lambda v: v >= 1, "must be at least 1"),
        ("repeats", lambda v: v >= 0, "must be 0 or more"),
    ]
    for name, ok, why in checks:
        v = getattr(a, name, None)
        if v is not None and not ok(v):
            raise InputError(f"--{name.replace('_', '-')} {v}: {why}")
    sp = getattr(a, "spacing_mm", None)
    if sp is not None and not all(math.isfinite(x) and x > 0 for x in sp):
        raise InputError(f"--spacing-mm {sp[0]:g} {sp[1]:g}: spacing must be positive mm")
    parsed = {}
    for opt in ("rings", "combined"):
        v = getattr(a, opt, None)
        if isinstance(v, str) and v not in ("", "all"):
            from .imaging.rings import parse_rings
            parsed[opt] = parse_rings(v)
    missing = [d for d in parsed.get("combined", []) if d not in parsed.get("rings", [])]
    if missing:
        raise InputError(f"--combined {a.combined}: tumour+ring regions need their distances "
                         f"in --rings ({', '.join(f'{d:g}' for d in missing)} mm missing)")
    pred_dir = getattr(a, "pred_dir", None)
    if pred_dir is not None and not Path(pred_dir).is_dir():
        # a missing folder would count every case as a miss (Dice 0) instead of an error
        raise InputError(f"{pred_dir}: --pred-dir folder not found")


def command_name(a) -> str:
    sub = getattr(a, "station_cmd", None) or getattr(a, "pacs_cmd", None)
    return f"{a.command} {sub}" if sub else a.command


def output_targets(a) -> list:
    """``(path, kind)`` of the outputs the command is asked for, for checks and locking."""
    out = []
    if getattr(a, "out", None):
        out.append((a.out, "dir" if a.command in _DIR_OUT else "file"))
    if getattr(a, "out_dir", None):
        out.append((a.out_dir, "dir"))
    if a.command == "station" and getattr(a, "station_cmd", None) == "create":
        out.append((a.study, "dir"))
    return out


def _manifest_files(path) -> list:
    """Image, mask and valid-area files a manifest names (unreadable manifests name none:
    reading them properly is the command's job, with its own one-line errors)."""
    import csv  # when run, as the module comment says
    base = Path(path).resolve().parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    files = []
    for r in rows:
        for col in ("image", "mask", "fov"):
            v = (r.get(col) or "").strip()
            if v:
                files.append(Path(v) if Path(v).is_absolute() else base / v)
    return files


def io_paths(a) -> tuple[list, list]:
    """``(inputs, outputs)``: every file the command reads and every file it writes.

    Outputs include the tables written beside ``--out`` (provenance, errors, summaries) and,
    for ``segment --manifest``, one mask per case in ``--out-dir``.
    """
    inputs = []
    for name in ("image", "mask", "manifest", "table", "features", "labels", "icc",
                 "functions", "bundle", "model", "init_from", "tokens", "recipe", "params"):
        v = getattr(a, name, None)
        if isinstance(v, str) and v and (name not in ("recipe", "params") or Path(v).is_file()):
            inputs.append(Path(v))
    if isinstance(getattr(a, "fov", None), str) and a.fov not in ("auto", "none"):
        inputs.append(Path(a.fov))
    manifests = [getattr(a, "manifest", None)] + list(getattr(a, "extra_manifest", None) or [])
    inputs += [Path(m) for m in manifests[1:] if m]
    for m in manifests:
        if m:
            inputs += _manifest_files(m)
    # what reading an image also reads: spacing sidecars, a MetaImage's/.nhdr's data file
    from .imaging.files import companion_files
    inputs += [c for f in list(inputs) for c in companion_files(f)]
    if getattr(a, "pred_dir", None) and getattr(a, "manifest", None):
        inputs += [Path(a.pred_dir) / f"{(r.get('case_id') or '').strip()}.nrrd"
                   for r in _manifest_rows(a.manifest)]
    outputs = []
    out = getattr(a, "out", None)
    if out and a.command not in _DIR_OUT:
        o = Path(out)
        outputs.append(o)
        if a.command == "extract":
            outputs += [o.with_name(f"{o.stem}_{k}.csv") for k in ("provenance", "errors",
                                                                 "patients")]
        elif a.command == "icc":
            outputs.append(o.with_name(o.stem + "_stable_features.txt"))
        elif a.command == "eval-segmenter":
            outputs.append(o.with_suffix(".summary.json"))
    for name in ("prob_out", "tokens_out"):
        if getattr(a, name, None):
            outputs.append(Path(getattr(a, name)))
    if getattr(a, "export", None):
        outputs += [Path(a.export), Path(a.export).with_suffix(".json")]
    if a.command == "segment" and getattr(a, "out_dir", None) and getattr(a, "manifest", None):
        d = Path(a.out_dir)
        outputs += [d / "manifest.csv", d / "errors.csv"]
        outputs += [d / f"{(r.get('case_id') or '').strip()}.nrrd"
                    for r in _manifest_rows(a.manifest) if (r.get("case_id") or "").strip()]
    if a.command == "rings" and getattr(a, "out_dir", None):
        d = Path(a.out_dir)           # and one <region>.nrrd per region
        outputs += [d / "labels.nrrd", d / "fov.nrrd", d / "rings.json", d / "tumor.nrrd"]
    return inputs, outputs


def _manifest_rows(path) -> list:
    import csv  # when run, as the module comment says
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def check_inputs_and_outputs(a) -> None:
    """Refuse an output that is (symbolic links followed) one of the command's inputs, or
    the same file as another output (:func:`~HER2RadiomicsLib.outputs.refuse_overlaps`)."""
    from .outputs import refuse_overlaps
    refuse_overlaps(*io_paths(a))


def _run(a) -> int:
    from .outputs import check_output, claim_folder, output_lock
    validate_args(a)
    check_inputs_and_outputs(a)
    targets = output_targets(a)
    cmd = command_name(a)
    for path, kind in targets:
        check_output(path, kind, command=cmd)
    from .outputs import resolved
    fresh = [resolved(p) for p, kind in targets if kind == "dir" and not resolved(p).exists()]
    rc = EXIT_BAD_INPUT
    with ExitStack() as stack:
        for path, _ in targets:
            stack.enter_context(output_lock(path))
        try:
            for path, kind in targets:
                if kind == "dir":
                    claim_folder(path, cmd)
            rc = int(a.func(a) or 0)
            return rc
        finally:
            if rc not in (EXIT_OK, EXIT_CASES_FAILED):
                _unclaim(fresh)


def _unclaim(folders) -> None:
    """A folder this run created and left with nothing but our marker goes again: a refused
    or failed run leaves nothing behind."""
    from .outputs import MARKER
    for f in folders:
        try:
            if f.is_dir() and [e.name for e in f.iterdir()] in ([], [MARKER]):
                (f / MARKER).unlink(missing_ok=True)
                f.rmdir()
        except OSError:
            pass


def _primary_output(a):
    for name in ("out", "out_dir", "prob_out", "export", "tokens_out"):
        if getattr(a, name, None):
            return getattr(a, name)
    return None


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(a.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(a, "func", None):
        ap.print_help()
        return EXIT_BAD_INPUT

    def _terminated(signum, frame):      # SIGTERM: clean up as for Ctrl-C, then exit 143
        raise _Terminated
    try:
        signal.signal(signal.SIGTERM, _terminated)
    except (ValueError, OSError):        # not the main thread (tests): keep the default
        pass
    try:
        return _run(a)
    except _Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except HER2Error as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:   # one line per problem
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:   # disk full, permission lost mid-run, a file gone: name the file
        if a.debug:
            raise
        where = exc.filename or _primary_output(a) or "output"
        why = exc.strerror or str(exc) or type(exc).__name__
        print(f"error: {where}: {why} (nothing was replaced)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # last line of defence: one line, not a traceback
        if a.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
