"""The reader study's pages: plots (ICC by feature class and region, Dice per reader pair,
Bland-Altman) and ``summary.html``, drawn from a
:class:`~HER2RadiomicsLib.readers.study.ReaderStudyRun` (the readers layer computes; this
layer only draws).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..readers.study import _feature_class
from . import html as H


def render_reader_study(rs, folder: Path) -> Path:
    """Draw the plots of a :class:`~HER2RadiomicsLib.readers.study.ReaderStudyRun` under
    ``folder / "plots"`` and write ``folder / "summary.html"``; returns the page's path."""
    cfg = rs.config
    plots = make_plots(rs.icc, rs.agreement, rs.long, Path(folder) / "plots", cfg.form,
                       rs.bland_altman)
    return write_summary_html(Path(folder), rs.doc, rs.icc, rs.agreement,
                              rs.agreement_summary, plots, rs.robustness, rs.stable)


def make_plots(icc, agree, long, pdir: Path, form: str, bland_altman: str) -> dict:
    """ICC distribution per class and region, Dice per reader pair, and the Bland-Altman plot
    of feature ``bland_altman`` (a column of ``long``). PNG files; ``{name: path}``."""
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

    feat = bland_altman
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
