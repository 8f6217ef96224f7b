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
* ``plots/*.png`` and ``summary.html`` — a page a coordinator can send around.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger(__name__)
SEP = "@"     # joins case and reader into the batch engine's case_id


def read_reader_manifest(path, readers=None):
    path = Path(path)
    # case_id repeats per reader: validate our own way, then reuse path resolution
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read manifest ({exc})") from None
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
    from ..extraction.batch import case_id_problems
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


def run_reader_study(manifest, out_dir, params="default", rings="", readers=None,
                     form="ICC2", threshold=0.75, use_lower_ci=False, bland_altman=None,
                     robustness=False, spacing_mm=None, jobs=1, resume=False,
                     progress=True) -> dict:
    """Run the whole reader study; see the module docstring for the outputs.

    The outputs are written as one set: built in a staging folder and swapped in only when
    the study finished, so an interrupted or failed run leaves the previous set complete
    (never a new ``icc.csv`` beside an old summary). The per-case feature parts stay in
    ``out_dir`` so that ``resume`` finds them.
    """
    from ..outputs import staged_dir
    out = Path(out_dir)
    df, problems = read_reader_manifest(manifest, readers)
    with staged_dir(out, "reader-study") as stage:
        doc = _study_into(stage, out, manifest, df, problems, params, rings, form, threshold,
                          use_lower_ci, bland_altman, robustness, spacing_mm, jobs, resume,
                          progress)
    return doc


def _study_into(stage: Path, out: Path, manifest, df, problems, params, rings, form,
                threshold, use_lower_ci, bland_altman, robustness, spacing_mm, jobs, resume,
                progress) -> dict:
    """The study's steps, writing into ``stage``; feature parts are cached in ``out``."""
    from ..extraction.batch import BatchOptions, ExtractConfig, run_batch
    from ..imaging.io import atomic_write_text
    from ..outputs import write_csv
    from .reproducibility import icc_table, stable_features
    from ..imaging.rings import parse_rings
    rows = [{"case_id": f"{r.case_id}{SEP}{r.reader}", "image": r.image, "mask": r.mask}
            for r in df.itertuples()]
    cfg = ExtractConfig(params=params, rings_mm=tuple(parse_rings(rings)))
    res = run_batch(rows, stage / "features_by_reader.csv", cfg, jobs=jobs, resume=resume,
                    progress=progress, global_spacing=spacing_mm,
                    options=BatchOptions(parts_dir=out / "features_by_reader.csv.parts"))
    if res.interrupted:
        raise KeyboardInterrupt
    for e in res.errors:
        problems.append(f"{e['case_id'].replace(SEP, ' reader ')}: {e['error']}")
    feats = pd.read_csv(res.features_csv) if res.n_ok else pd.DataFrame()
    if feats.empty:
        raise InputError(f"{manifest}: no case could be extracted; see {res.errors_csv}")
    long = _split_ids(feats, "reader")
    write_csv(stage / "features_long.csv", long, float_format="%.10g")
    icc = icc_table(long, "case_id", "reader", band_form=form)
    write_csv(stage / "icc.csv", icc, float_format="%.10g")
    stable = stable_features(icc, threshold, form, use_lower_ci)
    atomic_write_text(stage / "stable_features.txt", "\n".join(stable) + "\n")

    agree = contour_agreement(df, stage, spacing_mm, problems)
    write_csv(stage / "agreement.csv", agree, float_format="%.6g")
    summary = agreement_summary(agree)
    write_csv(stage / "agreement_summary.csv", summary, float_format="%.6g")
    rob = None
    if robustness:
        rob = robustness_icc(df, stage, cfg, spacing_mm, jobs, progress, problems)
        write_csv(stage / "icc_robustness.csv", rob, float_format="%.10g")
    plots = make_plots(icc, agree, long, stage / "plots", form, bland_altman)
    doc = {"n_cases": int(long["case_id"].nunique()), "n_readers": int(long["reader"].nunique()),
           "n_features": int(len(icc)), "n_stable": len(stable),
           "mean_dice": float(agree["dice"].mean()) if len(agree) else float("nan"),
           "problems": problems, "form": form, "threshold": threshold,
           "lower_ci": use_lower_ci, "params": params, "rings": rings}
    write_summary_html(stage, doc, icc, agree, summary, plots, rob, stable)
    doc["html"] = str(out / "summary.html")          # where it lands after the swap
    atomic_write_text(stage / "summary.json", json.dumps(doc, indent=2))
    return doc


def _split_ids(feats: pd.DataFrame, second: str) -> pd.DataFrame:
    """'case@reader' ids -> separate case_id and ``second`` columns in front."""
    split = feats["case_id"].str.rsplit(SEP, n=1, expand=True)
    ids = pd.DataFrame({"case_id": split[0], second: split[1]})
    return pd.concat([ids, feats.drop(columns=["case_id"])], axis=1)


def contour_agreement(df, out: Path, spacing_mm, problems) -> pd.DataFrame:
    """Pairwise agreement per case; writes consensus masks. Bad reader masks are reported."""
    import SimpleITK as sitk
    from ..errors import HER2Error
    from ..imaging.io import load_case, write_image
    from .reproducibility import consensus_masks, pairwise_agreement
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
    import SimpleITK as sitk
    from ..extraction.batch import run_batch
    from ..errors import HER2Error
    from ..imaging.io import load_case, write_image
    from .reproducibility import icc_table, perturb_contour
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


def make_plots(icc, agree, long, pdir: Path, form: str, bland_altman=None) -> dict:
    """ICC distribution per class and region, Dice per reader pair, Bland-Altman. PNG files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    t = icc.copy()
    t[["region", "fclass"]] = [list(_feature_class(f)) for f in t["feature"]]
    classes = sorted(t["fclass"].unique())
    regions = list(dict.fromkeys(t["region"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(classes)), 3.8))
    width = 0.8 / max(1, len(regions))
    cmap = plt.get_cmap("tab10")
    for j, reg in enumerate(regions):
        data = [t[(t.fclass == c) & (t.region == reg)][form].dropna().to_numpy() for c in classes]
        pos = np.arange(len(classes)) + (j - (len(regions) - 1) / 2) * width
        ok = [i for i, d in enumerate(data) if len(d)]
        if ok:
            bp = ax.boxplot([data[i] for i in ok], positions=pos[ok], widths=width * 0.9,
                            patch_artist=True, showfliers=False)
            for b in bp["boxes"]:
                b.set_facecolor(cmap(j % 10))
                b.set_alpha(0.7)
        ax.plot([], [], "s", color=cmap(j % 10), label=reg or "all")
    for y, c in ((0.5, "#c0392b"), (0.75, "#e0a100"), (0.9, "#27ae60")):
        ax.axhline(y, color=c, lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(classes)), classes, rotation=20)
    ax.set_ylabel(f"{form}")
    ax.set_ylim(min(-0.05, float(np.nanmin(t[form])) if t[form].notna().any() else 0), 1.02)
    ax.set_title("Feature reproducibility by class and region (dashed: 0.5 / 0.75 / 0.9)")
    ax.legend(fontsize=8, ncol=min(4, len(regions)), loc="lower left")
    paths["icc_by_class"] = pdir / "icc_by_class.png"
    fig.savefig(paths["icc_by_class"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    if len(agree):
        pairs = agree.groupby(["reader_a", "reader_b"])
        fig, ax = plt.subplots(figsize=(max(4, 1.4 * pairs.ngroups), 3.4))
        labels, data = [], []
        for (a, b), g in pairs:
            labels.append(f"{a}–{b}")
            data.append(g["dice"].to_numpy())
        ax.boxplot(data, showfliers=False)
        for i, d in enumerate(data):
            ax.scatter(np.full(len(d), i + 1) + np.linspace(-0.12, 0.12, len(d)), d, s=12,
                       color="#16324f", zorder=3)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_ylabel("Dice")
        ax.set_title("Contour agreement per reader pair")
        paths["dice_pairs"] = pdir / "dice_per_pair.png"
        fig.savefig(paths["dice_pairs"], dpi=110, bbox_inches="tight")
        plt.close(fig)

    feat = bland_altman or ("tumor__original_firstorder_Mean"
                            if "tumor__original_firstorder_Mean" in long.columns
                            else [c for c in long.columns if c not in ("case_id", "reader")][0])
    if feat not in long.columns:
        raise InputError(f"--bland-altman {feat}: no such feature column")
    readers = sorted(long["reader"].unique())
    if len(readers) >= 2:
        w = long.pivot_table(index="case_id", columns="reader", values=feat)
        a, b = w[readers[0]], w[readers[1]]
        ok = a.notna() & b.notna()
        mean, diff = (a[ok] + b[ok]) / 2, a[ok] - b[ok]
        md, sd = diff.mean(), diff.std(ddof=1)
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        ax.scatter(mean, diff, s=16, color="#16324f")
        for y, ls in ((md, "-"), (md + 1.96 * sd, "--"), (md - 1.96 * sd, "--")):
            ax.axhline(y, color="#c0392b", ls=ls, lw=1)
        ax.set_xlabel(f"mean of {readers[0]} and {readers[1]}")
        ax.set_ylabel(f"{readers[0]} − {readers[1]}")
        ax.set_title(f"Bland–Altman: {feat}\nbias {md:.3g}, limits ±{1.96 * sd:.3g}", fontsize=9)
        paths["bland_altman"] = pdir / "bland_altman.png"
        fig.savefig(paths["bland_altman"], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return paths


def write_summary_html(out: Path, doc, icc, agree, summary, plots, rob, stable) -> Path:
    """``summary.html``: every case id, reader, feature name and problem is escaped as text."""
    from ..reports import html as H
    from ..imaging.io import atomic_write_text
    figs = H.cat(*(H.figure(H.png_file_uri(p), cap) for cap, p in (
        ("ICC by feature class and region", plots.get("icc_by_class")),
        ("Dice per reader pair", plots.get("dice_pairs")),
        ("Bland–Altman", plots.get("bland_altman"))) if p))
    bands = icc["band"].replace("", "undefined").value_counts().reindex(
        ["excellent", "good", "moderate", "poor", "undefined"]).fillna(0).astype(int)
    t = icc.copy()
    t["region"] = [_feature_class(f)[0] for f in t["feature"]]
    per_region = t.groupby("region").apply(
        lambda g: pd.Series({"features": len(g), "stable": int((g["feature"].isin(stable)).sum()),
                             f"median {doc['form']}": g[doc["form"]].median()}),
        include_groups=False).reset_index()
    worst = icc.sort_values(doc["form"]).head(15)[
        ["feature", "n_cases", doc["form"], f"{doc['form']}_ci_low", f"{doc['form']}_ci_high",
         "band", "note"]]
    overall = summary[summary.level != "reader"] if len(summary) else summary
    sections = [
        ("Study", H.kpis([("cases", doc["n_cases"]), ("readers", doc["n_readers"]),
                          ("features", doc["n_features"]),
                          ("stable features", doc["n_stable"]),
                          ("mean Dice", H.num(doc["mean_dice"]))])
         + H.fmt("<p class='muted'>Params {params}; rings {rings}; stable = {form} {ci}&gt; "
                 "{threshold}. ICC(2,1) = two-way, absolute agreement, single rater (the "
                 "studies' 'two-way mixed, absolute agreement' has the same estimate).</p>",
                 params=doc["params"], rings=str(doc["rings"]) or "none", form=doc["form"],
                 ci="lower 95% CI " if doc["lower_ci"] else "", threshold=doc["threshold"])),
        ("ICC bands (Koo & Li)", H.table(bands.rename_axis("band").reset_index(name="features"))
         + H.table(per_region)),
        ("Figures", H.el("div", figs, class_="figs")),
        ("Contour agreement", H.table(overall.drop(columns=[c for c in overall.columns
                                                           if c.endswith("_median")]))),
        (f"Least reproducible features ({doc['form']})", H.table(worst)),
    ]
    if rob is not None:
        sections.append(("Single-reader robustness (proxy)",
                         H.el("p", rob["proxy"].iloc[0], class_="muted")
                         + H.table(rob["band"].replace("", "undefined").value_counts()
                                   .rename_axis("band").reset_index(name="features"))))
    if doc["problems"]:
        sections.append(("Problems", H.el("ul", *(H.el("li", p) for p in doc["problems"]))))
    page = H.page("Reader study — inter-observer reproducibility",
                  f"{doc['n_cases']} cases, {doc['n_readers']} readers", sections)
    path = out / "summary.html"
    atomic_write_text(path, page)
    return path
