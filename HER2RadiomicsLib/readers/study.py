"""The reader-study workflow (``her2radiomics reader-study`` and ``her2radiomics icc``).

Input: a manifest with one row per case and reader (``case_id, image, reader, mask``).
Output folder:

* ``features_by_reader.csv`` (+ provenance/errors) — features per case and reader, extracted by
  the batch engine (parallel, resumable);
* ``icc.csv`` — one row per feature and region, all six ICC forms with 95 % CI, F and p;
* ``stable_features.txt`` — features above the threshold (default ICC2 > 0.75);
* ``agreement.csv`` / ``agreement_summary.csv`` — Dice, Jaccard, HD95, mean surface distance
  (mm, or px when the spacing is unknown), area difference %, centroid shift per reader pair
  and case, and summaries per pair, per reader and overall;
* ``consensus/<case>_staple.nrrd`` and ``_majority.nrrd``;
* optional ``icc_robustness.csv`` — single-reader robustness proxy (perturbed contours);
* ``plots/*.png`` and ``summary.html`` — a page a coordinator can send around, drawn by
  :func:`HER2RadiomicsLib.reports.reader_study.render_reader_study` from the study's
  :class:`ReaderStudyRun` (passed as ``render`` by the commands that run a study).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..errors import HER2Error, InputError, one_line
from ..extraction.batch import BatchOptions, ExtractConfig, case_id_problems, run_batch
from ..imaging.io import atomic_write_text, load_case, write_image
from ..imaging.rings import parse_rings
from ..outputs import staged_dir, write_csv
from .reproducibility import (consensus_masks, icc_table, pairwise_agreement, perturb_contour,
                              stable_features)

log = logging.getLogger(__name__)
SEP = "@"     # joins case and reader into the batch engine's case_id


def read_reader_manifest(path, readers=None):
    path = Path(path)
    # case_id repeats per reader: validate our own way, then reuse path resolution
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read manifest ({one_line(exc)})") from None
    missing = [c for c in ("case_id", "image", "reader", "mask") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: reader-study manifest lacks column(s) {missing}")
    df = df.fillna("")
    problems = []
    if readers:
        unknown = sorted(set(df["reader"]) - set(readers))
        if unknown:
            problems.append(f"reader(s) {unknown} in {path.name} are not in --readers "
                            f"{readers}: their rows are ignored")
            df = df[df["reader"].isin(readers)]
        absent = sorted(set(readers) - set(df["reader"]))
        if absent:
            raise InputError(f"{path}: --readers {absent} have no rows in the manifest")
    bad = []
    for i, r in df.iterrows():
        why = case_id_problems(r.case_id) + [
            m.replace("case_id", "reader").replace("rename the case", "rename the reader")
            for m in case_id_problems(r.reader, names_files=False)]
        if not r.case_id or not r.reader:
            why.append("empty case_id or reader")
        if why:
            # the name becomes file names (consensus masks, parts): that row is left out
            problems.append(f"{path.name} row {i + 2}: {'; '.join(why)}: row ignored")
            bad.append(i)
    df = df.drop(index=bad)
    dup = df.duplicated(["case_id", "reader"])
    if dup.any():
        r = df[dup].iloc[0]
        raise InputError(f"{path}: case {r.case_id!r} has two masks for reader {r.reader!r}")
    for c in ("image", "mask"):
        df[c] = [str(p if Path(p).is_absolute() else path.parent / p) for p in df[c]]
    counts = df.groupby("case_id")["reader"].nunique()
    for cid in counts[counts < 2].index:
        problems.append(f"case {cid} has a single reader: excluded from contour agreement and "
                        "ICC")
    if df.empty:
        raise InputError(f"{path}: no rows left")
    return df, problems


@dataclass
class ReaderStudyConfig:
    """The settings of a reader study (the ``reader-study`` command's flags).

    Attributes
    ----------
    params : str
        Params preset or YAML the features are extracted with.
    rings : str
        Peritumoral ring distances in mm, e.g. ``"3,5,8"`` (empty: the tumour only).
    readers : list of str, optional
        The readers to use (default: every reader of the manifest).
    form : str
        ICC form of the stable list and the bands (``ICC2``: two-way, absolute agreement).
    threshold : float
        A feature is stable above this ICC (Koo & Li's "good": 0.75).
    use_lower_ci : bool
        Apply the threshold to the lower 95 % CI bound instead of the estimate.
    bland_altman : str, optional
        Feature of the Bland-Altman plot (default: the tumour's mean intensity).
    robustness : bool
        Also compute the single-reader robustness proxy (perturbed contours).
    spacing_mm : (float, float), optional
        Pixel spacing (x, y) in mm for images that do not record it.
    """
    params: str = "default"
    rings: str = ""
    readers: list | None = None
    form: str = "ICC2"
    threshold: float = 0.75
    use_lower_ci: bool = False
    bland_altman: str | None = None
    robustness: bool = False
    spacing_mm: tuple | None = None


@dataclass
class ReaderStudyRun:
    """The result of a reader study: the tables it wrote and ``summary.json``'s content.

    Attributes
    ----------
    config : ReaderStudyConfig
    long : DataFrame
        Features per case and reader (``case_id``, ``reader``, feature columns).
    icc : DataFrame
        One row per feature: the six ICC forms with 95 % CI, F and p, and the band.
    stable : list of str
        Features above the threshold.
    agreement, agreement_summary : DataFrame
        Contour agreement per reader pair and case, and its summaries.
    robustness : DataFrame or None
        The single-reader robustness ICCs (when asked for).
    bland_altman : str
        The feature of the Bland-Altman plot.
    doc : dict
        ``summary.json``: counts, settings and the problems met.
    """
    config: ReaderStudyConfig
    long: pd.DataFrame
    icc: pd.DataFrame
    stable: list
    agreement: pd.DataFrame
    agreement_summary: pd.DataFrame
    robustness: pd.DataFrame | None
    bland_altman: str
    doc: dict = field(default_factory=dict)


@dataclass
class _Job:
    """One study being run: the manifest, its rows and problems so far, and how to run."""
    manifest: object
    rows: pd.DataFrame
    problems: list
    config: ReaderStudyConfig
    jobs: int = 1
    resume: bool = False
    progress: bool = True


def run_reader_study(manifest, out_dir, config: ReaderStudyConfig | None = None, *,
                     jobs=1, resume=False, progress=True, render=None) -> dict:
    """Run the whole reader study; see the module docstring for the outputs.

    The outputs are written as one set: built in a staging folder and swapped in only when
    the study finished, so an interrupted or failed run leaves the previous set complete
    (never a new ``icc.csv`` beside an old summary). The per-case feature parts stay in
    ``out_dir`` so that ``resume`` finds them.

    Parameters
    ----------
    manifest : path
        CSV with ``case_id, image, reader, mask`` (paths relative to the CSV's folder).
    out_dir : path
        Output folder.
    config : ReaderStudyConfig, optional
        The study's settings (defaults: :class:`ReaderStudyConfig`).
    jobs, resume, progress
        Parallel extraction processes; reuse the per-case parts of an earlier run; show a
        progress bar.
    render : callable, optional
        ``render(study_run, folder) -> path of summary.html``, called in the staging folder
        before the swap (:func:`HER2RadiomicsLib.reports.reader_study.render_reader_study`);
        without it no plots or page are drawn.

    Returns
    -------
    dict
        ``summary.json``'s content (with ``html``, the page's final path, when rendered).
    """
    cfg = config or ReaderStudyConfig()
    out = Path(out_dir)
    df, problems = read_reader_manifest(manifest, cfg.readers)
    job = _Job(manifest, df, problems, cfg, jobs, resume, progress)
    with staged_dir(out, "reader-study") as stage:
        doc = _study_into(stage, out, job, render)
    return doc


def _study_into(stage: Path, out: Path, job: _Job, render=None) -> dict:
    """The study's steps, writing into ``stage``; feature parts are cached in ``out``."""
    c, df, problems = job.config, job.rows, job.problems
    rows = [{"case_id": f"{r.case_id}{SEP}{r.reader}", "image": r.image, "mask": r.mask}
            for r in df.itertuples()]
    cfg = ExtractConfig(params=c.params, rings_mm=tuple(parse_rings(c.rings)))
    res = run_batch(rows, stage / "features_by_reader.csv", cfg, jobs=job.jobs,
                    resume=job.resume, progress=job.progress, global_spacing=c.spacing_mm,
                    options=BatchOptions(parts_dir=out / "features_by_reader.csv.parts"))
    if res.interrupted:
        raise KeyboardInterrupt
    for e in res.errors:
        problems.append(f"{e['case_id'].replace(SEP, ' reader ')}: {e['error']}")
    feats = pd.read_csv(res.features_csv) if res.n_ok else pd.DataFrame()
    if feats.empty:
        raise InputError(f"{job.manifest}: no case could be extracted; see {res.errors_csv}")
    long = _split_ids(feats, "reader")
    write_csv(stage / "features_long.csv", long, float_format="%.10g")
    icc = icc_table(long, "case_id", "reader", band_form=c.form)
    write_csv(stage / "icc.csv", icc, float_format="%.10g")
    stable = stable_features(icc, c.threshold, c.form, c.use_lower_ci)
    atomic_write_text(stage / "stable_features.txt", "\n".join(stable) + "\n")

    agree = contour_agreement(df, stage, c.spacing_mm, problems)
    write_csv(stage / "agreement.csv", agree, float_format="%.6g")
    summary = agreement_summary(agree)
    write_csv(stage / "agreement_summary.csv", summary, float_format="%.6g")
    rob = None
    if c.robustness:
        rob = robustness_icc(df, stage, cfg, c.spacing_mm, job.jobs, job.progress, problems)
        write_csv(stage / "icc_robustness.csv", rob, float_format="%.10g")
    result = ReaderStudyRun(config=c, long=long, icc=icc, stable=stable, agreement=agree,
                            agreement_summary=summary, robustness=rob,
                            bland_altman=_bland_altman_feature(long, c.bland_altman))
    result.doc = doc = {
        "n_cases": int(long["case_id"].nunique()), "n_readers": int(long["reader"].nunique()),
        "n_features": int(len(icc)), "n_stable": len(stable),
        "mean_dice": float(agree["dice"].mean()) if len(agree) else float("nan"),
        "problems": problems, "form": c.form, "threshold": c.threshold,
        "lower_ci": c.use_lower_ci, "params": c.params, "rings": c.rings}
    if render is not None:
        render(result, stage)
        doc["html"] = str(out / "summary.html")          # where it lands after the swap
    atomic_write_text(stage / "summary.json", json.dumps(doc, indent=2))
    return doc


def _bland_altman_feature(long: pd.DataFrame, asked=None) -> str:
    """The feature of the Bland-Altman plot: the one asked for (refused when the table has no
    such column), else the tumour's mean intensity, else the first feature."""
    feat = asked or ("tumor__original_firstorder_Mean"
                     if "tumor__original_firstorder_Mean" in long.columns
                     else [c for c in long.columns if c not in ("case_id", "reader")][0])
    if feat not in long.columns:
        raise InputError(f"--bland-altman {feat}: no such feature column")
    return feat


def _split_ids(feats: pd.DataFrame, second: str) -> pd.DataFrame:
    """'case@reader' ids -> separate case_id and ``second`` columns in front."""
    split = feats["case_id"].str.rsplit(SEP, n=1, expand=True)
    ids = pd.DataFrame({"case_id": split[0], second: split[1]})
    return pd.concat([ids, feats.drop(columns=["case_id"])], axis=1)


def contour_agreement(df, out: Path, spacing_mm, problems) -> pd.DataFrame:
    """Pairwise agreement per case; writes consensus masks. Bad reader masks are reported."""
    recs = []
    (out / "consensus").mkdir(exist_ok=True)
    for cid, g in df.groupby("case_id", sort=False):
        masks, ref = {}, None
        for r in g.itertuples():
            try:
                li, m = load_case(r.image, r.mask, spacing_mm=spacing_mm, min_pixels=1)
            except HER2Error as exc:
                msg = f"case {cid} reader {r.reader}: {exc}"
                if not any(msg.split(": ", 1)[1] in p for p in problems):
                    problems.append(msg)
                continue
            masks[r.reader] = sitk.GetArrayFromImage(m) > 0
            ref = (li, m)
        if len(masks) < 2:
            continue
        li, m = ref
        unit = "mm" if li.spacing_known else "px"
        sp = li.spacing_mm if li.spacing_known else (1.0, 1.0)
        for rec in pairwise_agreement(masks, sp, unit):
            recs.append({"case_id": cid, **rec})
        cons = consensus_masks(list(masks.values()))
        for name in ("staple", "majority"):
            img = sitk.GetImageFromArray(cons[name].astype(np.uint8))
            img.CopyInformation(m)
            write_image(img, out / "consensus" / f"{cid}_{name}.nrrd")
    cols = ["case_id", "reader_a", "reader_b", "dice", "jaccard", "hd95", "hd", "msd",
            "area_a", "area_b", "area_diff_pct", "centroid_shift", "distance_unit"]
    return pd.DataFrame(recs, columns=cols)


def agreement_summary(agree: pd.DataFrame) -> pd.DataFrame:
    """Mean/median of each metric per reader pair, per reader (vs all others) and overall."""
    metrics = ["dice", "jaccard", "hd95", "msd", "area_diff_pct", "centroid_shift"]
    rows = []
    if agree.empty:
        return pd.DataFrame(columns=["level", "group", "n"])
    for (a, b), g in agree.groupby(["reader_a", "reader_b"]):
        rows.append({"level": "pair", "group": f"{a} vs {b}", "n": len(g),
                     **{f"{m}_mean": g[m].mean() for m in metrics},
                     **{f"{m}_median": g[m].median() for m in metrics}})
    readers = sorted(set(agree.reader_a) | set(agree.reader_b))
    for r in readers:
        g = agree[(agree.reader_a == r) | (agree.reader_b == r)]
        rows.append({"level": "reader", "group": r, "n": len(g),
                     **{f"{m}_mean": g[m].mean() for m in metrics},
                     **{f"{m}_median": g[m].median() for m in metrics}})
    rows.append({"level": "overall", "group": "all pairs", "n": len(agree),
                 **{f"{m}_mean": agree[m].mean() for m in metrics},
                 **{f"{m}_median": agree[m].median() for m in metrics}})
    return pd.DataFrame(rows)


def robustness_icc(df, out: Path, cfg, spacing_mm, jobs, progress, problems) -> pd.DataFrame:
    """Single-reader robustness proxy: perturb the first reader's contour, ICC over perturbations.

    Clearly a proxy (MIRP's idea): it measures sensitivity to contour changes of about 1 mm,
    not the variability of real readers.
    """
    first = sorted(df["reader"].unique())[0]
    rows = []
    mdir = out / "robustness" / "masks"
    mdir.mkdir(parents=True, exist_ok=True)
    for r in df[df["reader"] == first].itertuples():
        try:
            li, m = load_case(r.image, r.mask, spacing_mm=spacing_mm, min_pixels=1)
        except HER2Error:
            continue
        sp = li.spacing_mm if li.spacing_known else (1.0, 1.0)
        seed = sum(map(ord, r.case_id))          # deterministic across processes
        for name, pm in perturb_contour(sitk.GetArrayFromImage(m) > 0, sp, seed=seed).items():
            img = sitk.GetImageFromArray(pm.astype(np.uint8))
            img.CopyInformation(m)
            p = mdir / f"{r.case_id}{SEP}{name}.nrrd"
            write_image(img, p)
            rows.append({"case_id": f"{r.case_id}{SEP}{name}", "image": r.image, "mask": str(p)})
    res = run_batch(rows, out / "robustness" / "features.csv", cfg, jobs=jobs, progress=progress,
                    global_spacing=spacing_mm)
    for e in res.errors:
        problems.append(f"robustness {e['case_id']}: {e['error']}")
    f = _split_ids(pd.read_csv(res.features_csv), "perturbation")
    t = icc_table(f, "case_id", "perturbation")
    t.insert(1, "proxy", f"robustness to ~1 mm contour perturbation of reader {first}")
    return t


def _feature_class(name: str) -> tuple:
    region, key = name.split("__", 1) if "__" in name else ("", name)
    parts = key.split("_")
    return region, parts[1] if len(parts) >= 3 else "other"
