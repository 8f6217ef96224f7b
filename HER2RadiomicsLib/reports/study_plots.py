"""The figures of a study run (PNG + SVG under ``plots/``): ROC curves with bootstrap bands,
calibration, decision curves, confusion matrices, the repeated splits' AUCs and the nomogram.

Drawn from a :class:`~HER2RadiomicsLib.modelling.study.StudyRun` by :func:`study_figures`
(the modelling layer computes; this layer only draws).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..modelling import evaluation as E


def _save(fig, path: Path):
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return path.with_suffix(".png")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_roc(curves: dict, path, n_boot: int = 500, seed: int = 0, title: str = "ROC"):
    """ROC curves with bootstrap 95 % bands; ``curves`` = {label: (y, score)}."""
    from sklearn.metrics import roc_curve
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    grid = np.linspace(0, 1, 101)
    for i, (label, (y, s)) in enumerate(curves.items()):
        y, s = np.asarray(y), np.asarray(s)
        fpr, tpr, _ = roc_curve(y, s)
        # the same resamples and ROC points as roc_curve per resample, without its input
        # checks (E.roc_points; the band of 500 resamples took ~5 s a figure)
        pos = y == np.unique(y)[-1]
        tprs = [np.interp(grid, *E.roc_points(pos[idx], s[idx]))
                for block in E.stratified_bootstrap_blocks(y, n_boot, seed) for idx in block]
        lo, hi = np.percentile(tprs, [2.5, 97.5], axis=0)
        color = plt.get_cmap("tab10")(i)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0)
        d = E.auc_delong_ci(y, s)
        ax.plot(fpr, tpr, color=color, lw=1.8,
                label=f"{label}: AUC {d['auc']:.2f} ({d['ci_low']:.2f}–{d['ci_high']:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right")
    return _save(fig, path)


def plot_calibration(curves: dict, path, title="Calibration"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for i, (label, (y, p)) in enumerate(curves.items()):
        c = E.calibration(y, p)
        color = plt.get_cmap("tab10")(i)
        ax.plot(c["binned"]["mean_predicted"], c["binned"]["observed"], "o", color=color, ms=4)
        ax.plot(c["smoothed"]["predicted"], c["smoothed"]["observed"], color=color,
                label=f"{label}: slope {c['slope']:.2f}, Brier {c['brier']:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left")
    return _save(fig, path)


def plot_decision_curve(curves: dict, path, title="Decision curve", xlim=(0.05, 0.8)):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    ymax = 0
    for i, (label, (y, p)) in enumerate(curves.items()):
        d = E.decision_curve(y, p)
        ax.plot(d.threshold, d.model, color=plt.get_cmap("tab10")(i), label=label)
        ymax = max(ymax, d.treat_all.max(), d.model.max())
    ax.plot(d.threshold, d.treat_all, color="grey", ls="--", label="treat all")
    ax.axhline(0, color="black", lw=0.8, label="treat none")
    ax.set_xlim(*xlim)
    ax.set_ylim(-0.05, max(0.05, ymax) * 1.1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5)
    return _save(fig, path)


def plot_confusion(metrics: dict, path, labels=("negative", "positive"), title="Confusion"):
    plt = _plt()
    m = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    fig, ax = plt.subplots(figsize=(3.4, 3.0))
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=12)
    ax.set_xticks([0, 1], [f"pred {labels[0]}", f"pred {labels[1]}"], fontsize=8)
    ax.set_yticks([0, 1], [f"true {labels[0]}", f"true {labels[1]}"], fontsize=8)
    ax.set_title(f"{title}\nthreshold {metrics['threshold']:.3f} (Youden, training)", fontsize=9)
    return _save(fig, path)


def plot_auc_distribution(aucs, path, title="Repeated 70/30 splits"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    aucs = np.asarray(aucs)
    lo, hi = float(aucs.min()), float(aucs.max())
    if hi - lo < 1e-3:
        # (nearly) equal AUCs, e.g. 1.0 and 1.0 - 1e-16 on a tiny test set: numpy cannot cut
        # a range that small into bins, so the bins span +-0.01 around them
        lo, hi = lo - 0.01, hi + 0.01
    ax.hist(aucs, bins=np.linspace(lo, hi, min(30, max(5, len(aucs) // 4)) + 1),
            color="#16324f", alpha=0.8)
    ax.axvline(np.median(aucs), color="#c0392b", label=f"median {np.median(aucs):.3f}")
    ax.axvline(0.5, color="grey", ls=":")
    ax.set_xlabel("test AUC")
    ax.set_ylabel("splits")
    ax.set_title(f"{title} (n = {len(aucs)})", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_nomogram(model, path, labels: dict | None = None,
                  title: str = "Nomogram") -> Path:
    """Draw the points scales, total points and probability axis (PNG + SVG)."""
    plt = _plt()
    labels = labels or {}
    scale, lows = model._scale()
    preds = list(model.predictors)
    rows = ["Points"] + [labels.get(p, p) for p in preds] + ["Total points", "Probability"]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 0.8))
    ax.set_xlim(-5, 105)
    ax.set_ylim(-len(rows) + 0.5, 0.8)
    ax.axis("off")

    def axis_line(y, ticks, texts, x_of):
        xs = [x_of(t) for t in ticks]
        ax.plot([min(xs), max(xs)], [y, y], color="black", lw=1)
        for x, txt in zip(xs, texts):
            ax.plot([x, x], [y, y + 0.12], color="black", lw=1)
            ax.text(x, y + 0.18, txt, ha="center", va="bottom", fontsize=7)

    for i, name in enumerate(rows):
        ax.text(-7, -i, name, ha="right", va="center", fontsize=8.5, fontweight="bold")
    axis_line(0, np.linspace(0, 100, 11), [f"{v:.0f}" for v in np.linspace(0, 100, 11)],
              lambda t: t)
    spans = []
    for i, (p, (lo, hi), c, low) in enumerate(zip(preds, model.ranges_, model.coef_, lows)):
        binary = p in getattr(model, "binary_", ()) or (lo == 0 and hi == 1)
        pts_span = abs(c) * (hi - lo) * scale
        spans.append(pts_span)
        # binary predictors: 0/1 only; short scales: ends only, so labels never collide
        n_ticks = 2 if binary or pts_span < 25 else (3 if pts_span < 50 else 5)
        vals = np.linspace(lo, hi, n_ticks)
        axis_line(-(i + 1), vals, [f"{v:.3g}" for v in vals],
                  lambda v, c=c, low=low: (c * v - low) * scale)
    # the total-points axis spans what can actually be reached (sum of each maximum)
    total_max = float(sum(spans)) or 100.0
    tp = np.linspace(0, total_max, 6)
    axis_line(-(len(preds) + 1), tp, [f"{v:.0f}" for v in tp], lambda t: t / total_max * 100)
    # total points T -> linear predictor lp = T / scale + sum(lows) + intercept
    base = model.intercept_ + lows.sum()
    probs = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    xs = [(np.log(p / (1 - p)) - base) * scale / total_max * 100 for p in probs]
    keep, last = [], -1e9
    for p, x in zip(probs, xs):
        if -2 <= x <= 102 and x - last >= 6:      # at least 6 % of the width apart
            keep.append((p, x))
            last = x
    if keep:
        y = -(len(preds) + 2)
        ax.plot([min(x for _, x in keep), max(x for _, x in keep)], [y, y], color="black", lw=1)
        for p, x in keep:
            ax.plot([x, x], [y, y + 0.12], color="black", lw=1)
            ax.text(x, y + 0.18, f"{p:g}", ha="center", va="bottom", fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def study_figures(sr) -> dict:
    """Draw the figures of a :class:`~HER2RadiomicsLib.modelling.study.StudyRun` under
    ``sr.out / "plots"``; returns ``{name: PNG path}``.

    Binary tasks: ROC on the test set (and the external site), calibration and decision curves
    of the primary model (and the nomogram), its confusion matrix and the nomogram; several
    classes: one-vs-rest ROC, calibration of the last class, the arg-max confusion matrix;
    both: the repeated splits' AUCs.
    """
    pdir, results, preds, best = sr.out / "plots", sr.results, sr.predictions, sr.primary
    d, classes, unit, nomo = sr.data, sr.target.classes, sr.data.unit, sr.nomogram
    yte, yext, rep, binary = d.y_unit("test"), d.y_unit("external"), sr.repeated_aucs, sr.binary
    figs = {}
    if binary:
        test_curves = {k: (yte, preds[k][1]) for k in results}
        if "nomogram:test" in preds:
            test_curves["nomogram (Rad-score + clinical)"] = preds["nomogram:test"]
        figs["roc_test"] = plot_roc(test_curves, pdir / "roc_test",
                                    title=f"ROC — test set ({len(yte)} {unit})")
        if "external" in results[best]:
            ext_curves = {k: (yext, preds[k][2]) for k in results if preds[k][2] is not None}
            if "nomogram:external" in preds:
                ext_curves["nomogram"] = preds["nomogram:external"]
            figs["roc_external"] = plot_roc(ext_curves, pdir / "roc_external",
                                            title=f"ROC — external site ({len(yext)} {unit})")
        cal = {f"{best} (test)": (yte, preds[best][1])}
        if "nomogram:test" in preds:
            cal["nomogram (test)"] = preds["nomogram:test"]
        figs["calibration"] = plot_calibration(cal, pdir / "calibration",
                                               title=f"Calibration ({unit})")
        figs["decision_curve"] = plot_decision_curve(
            cal, pdir / "decision_curve", title=f"Decision curve ({unit})")
        figs["confusion"] = plot_confusion(results[best]["test"], pdir / "confusion",
                                           title=f"{best}, test set ({unit})")
        if nomo is not None:
            figs["nomogram"] = plot_nomogram(nomo, pdir / "nomogram",
                                             labels={"rad_score": "Rad-score"},
                                             title="Nomogram: Rad-score + clinical")
    else:
        curves = {f"{c} vs rest": ((yte == c).astype(int), preds[best][1][:, j])
                  for j, c in enumerate(classes)}
        figs["roc_test"] = plot_roc(curves, pdir / "roc_test",
                                    title=f"One-vs-rest ROC — {best}, test set "
                                    f"({len(yte)} {unit})")
        pos_j = len(classes) - 1
        cal = {f"{classes[pos_j]} vs rest": ((yte == classes[pos_j]).astype(int),
                                             preds[best][1][:, pos_j])}
        figs["calibration"] = plot_calibration(cal, pdir / "calibration",
                                               title=f"Calibration ({unit})")
        figs["decision_curve"] = plot_decision_curve(
            cal, pdir / "decision_curve", title=f"Decision curve ({unit})")
        figs["confusion"] = _plot_confusion_multi(yte, preds[best][1], classes,
                                                  pdir / "confusion", unit)
    if rep:
        figs["repeated_splits"] = plot_auc_distribution(
            rep, pdir / "repeated_splits", title=f"Repeated 70/30 splits (AUC per {unit[:-1]})")
    return figs


def _plot_confusion_multi(y, P, classes, path, unit="patients"):
    plt = _plt()
    pred = np.asarray(classes)[P.argmax(axis=1)]
    m = np.array([[int(((y == a) & (pred == b)).sum()) for b in classes] for a in classes])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(m, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=11,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), [f"pred {c}" for c in classes], fontsize=8)
    ax.set_yticks(range(len(classes)), [f"true {c}" for c in classes], fontsize=8)
    ax.set_title(f"Confusion matrix (arg-max), test set ({unit})", fontsize=9)
    return _save(fig, path)
