"""CLI commands of the reader-study side: ``reader-study`` and ``icc``.

Kept apart from :mod:`readerstudy` so that building the command line imports no pandas.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

# Command functions import the library modules (and numpy, pandas, SimpleITK, matplotlib)
# when they run: the parser imports this module, and `her2radiomics --help` must stay instant
# (Testing/test_outputs_atomic.py checks what building the parser loads).

#: reproducibility.FORMS, spelled out so that building the parser imports no numpy
ICC_FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")


def register(sub):
    p = sub.add_parser("reader-study", help="inter-observer ICC, contour agreement, "
                                            "stable features")
    p.add_argument("--manifest", required=True,
                   help="CSV: case_id,image,reader,mask (or seg: a DICOM SEG of the image)")
    p.add_argument("--seg-dir", help="folder of DICOM SEGs: matched to the manifest's images by "
                                     "the image each references, to readers by its content "
                                     "creator (then the manifest needs only case_id,image)")
    p.add_argument("--params", default="default", help="params preset or YAML")
    p.add_argument("--rings", default="", help="peritumoral distances in mm, e.g. 3,5,8")
    p.add_argument("--readers", help="comma-separated readers to use (default: all)")
    p.add_argument("--icc-form", default="ICC2", choices=ICC_FORMS,
                   help="form for the stable list (default ICC2)")
    p.add_argument("--threshold", type=float, default=0.75)
    p.add_argument("--lower-ci", action="store_true",
                   help="apply the threshold to the lower 95%% CI bound instead of the estimate")
    p.add_argument("--bland-altman", help="feature for the Bland-Altman plot")
    p.add_argument("--robustness", action="store_true",
                   help="also compute the single-reader robustness ICC (perturbed contours)")
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("X", "Y"))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_reader_study)

    p = sub.add_parser("icc", help="ICC of every feature of a long table (case, reader, ...)")
    p.add_argument("--table", required=True)
    p.add_argument("--case-col", default="case_id")
    p.add_argument("--reader-col", default="reader")
    p.add_argument("--icc-form", default="ICC2", choices=ICC_FORMS)
    p.add_argument("--threshold", type=float, default=0.75)
    p.add_argument("--lower-ci", action="store_true")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_icc)


def cmd_icc(a) -> int:
    # A plain numeric table (what reader-study writes) is read, computed and written without
    # pandas or scipy.stats: their imports cost a user more than the work (bench_icc.py).
    # Any other table goes through pandas as it always has, errors included.
    from ..imaging.files import atomic_write_text
    from .icc import band, check_form, icc_columns, ratings_array, stable_names
    from .plaincsv import counts_text, icc_csv_text, read_long_table
    table = read_long_table(a.table, a.case_col, a.reader_col)
    if table is None:
        return _cmd_icc_pandas(a)
    values, feats, case_keys, reader_keys = table
    form = check_form(a.icc_form)
    try:
        arr, _, _ = ratings_array(case_keys, reader_keys, values)
        cols, n_used, notes = icc_columns(arr, feats)
    except InputError as exc:               # name the table the problem is in
        raise InputError(f"{a.table}: {exc}") from None
    bands = [band(v) for v in cols[form]]
    atomic_write_text(a.out, icc_csv_text(feats, n_used, arr.shape[2], cols, bands, notes))
    col = form + ("_ci_low" if a.lower_ci else "")
    stable = stable_names(feats, cols[col].tolist(), a.threshold)
    sp = _write_stable(a, stable, atomic_write_text)
    _report(a, len(feats), int(n_used.max()), arr.shape[2], stable, sp,
            counts_text("band", bands))
    return 0


def _cmd_icc_pandas(a) -> int:
    import pandas as pd
    from ..imaging.files import atomic_write_text
    from .reproducibility import icc_table, stable_features
    try:
        df = pd.read_csv(a.table)
    except (OSError, ValueError) as exc:    # pandas' messages may end in a line break
        detail = " ".join(str(exc).split())
        raise InputError(f"{a.table}: cannot read table ({detail})") from None
    try:
        t = icc_table(df, a.case_col, a.reader_col, band_form=a.icc_form)
    except InputError as exc:               # name the table the problem is in
        raise InputError(f"{a.table}: {exc}") from None
    from ..outputs import write_csv
    write_csv(a.out, t, float_format="%.10g")
    stable = stable_features(t, a.threshold, a.icc_form, a.lower_ci)
    sp = _write_stable(a, stable, atomic_write_text)
    _report(a, len(t), int(t["n_cases"].max()), int(t["n_readers"].max()), stable, sp,
            t["band"].value_counts().to_string())
    return 0


def _write_stable(a, stable, atomic_write_text) -> Path:
    sp = Path(a.out).with_name(Path(a.out).stem + "_stable_features.txt")
    atomic_write_text(sp, "\n".join(stable) + "\n")
    return sp


def _report(a, n_features, n_cases, n_readers, stable, sp, band_counts) -> None:
    print(f"ICC for {n_features} features ({n_cases} cases x {n_readers} readers) -> {a.out}")
    print(f"{len(stable)} stable features ({a.icc_form} {'lower CI ' if a.lower_ci else ''}> "
          f"{a.threshold}) -> {sp}")
    print(band_counts)


def _uses_segs(a) -> bool:
    """Whether the readers' contours come (partly) from DICOM SEGs: --seg-dir, or a manifest
    with a ``seg`` column (its header is read, nothing else)."""
    if a.seg_dir:
        return True
    try:
        with open(a.manifest, encoding="utf-8-sig") as fh:
            header = fh.readline()
    except OSError:
        return False                      # the study's own reading names the problem
    return "seg" in [c.strip().strip('"') for c in header.split(",")]


def cmd_reader_study(a) -> int:
    from ..reports.reader_study import render_reader_study
    from .study import ReaderStudyConfig, run_reader_study
    manifest = a.manifest
    if _uses_segs(a):
        # SEG contours become label maps under the study's folder, listed in a manifest
        from ..pacs.reader_segs import seg_manifest
        manifest = seg_manifest(a.manifest, a.out, seg_dir=a.seg_dir, spacing_mm=a.spacing_mm)
    cfg = ReaderStudyConfig(params=a.params, rings=a.rings,
                            readers=a.readers.split(",") if a.readers else None,
                            form=a.icc_form, threshold=a.threshold, use_lower_ci=a.lower_ci,
                            bland_altman=a.bland_altman, robustness=a.robustness,
                            spacing_mm=a.spacing_mm)
    # the study computes; the report layer draws its plots and page (before the swap)
    res = run_reader_study(manifest, a.out, cfg, jobs=a.jobs, resume=a.resume,
                           progress=not a.no_progress, render=render_reader_study)
    print(f"{res['n_cases']} cases x {res['n_readers']} readers; {res['n_features']} features; "
          f"{res['n_stable']} stable ({a.icc_form} > {a.threshold}); mean Dice "
          f"{res['mean_dice']:.3f}")
    for p in res["problems"][:30]:
        print(f"  problem: {p}")
    print(f"summary: {res['html']}")
    return 1 if res["problems"] else 0
