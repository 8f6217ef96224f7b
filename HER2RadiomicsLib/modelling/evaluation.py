"""Honest evaluation of binary and multiclass HER2 models.

* ROC AUC with 95 % CI by DeLong (fast midrank algorithm, Sun & Xu 2014) and by stratified
  bootstrap (>= 2,000 resamples, seeded); DeLong's test for two models on the same cases.
* Youden-optimal threshold chosen on *training* predictions and applied unchanged to
  test/external data; sensitivity, specificity, PPV, NPV, accuracy (Wilson 95 % CIs) and F1
  (bootstrap CI) at that threshold.
* Calibration: binned and LOWESS-smoothed curves, Brier score, calibration slope and
  intercept (logistic recalibration; intercept with the model's logit as offset).
* Decision-curve analysis: net benefit of the model vs treat-all / treat-none.

The plots of all of the above are drawn by :mod:`HER2RadiomicsLib.reports.study_plots`.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

Z95 = stats.norm.ppf(0.975)


# -- AUC ----------------------------------------------------------------------------------------

def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based; ties share the average rank)."""
    return stats.rankdata(x, method="average")


def delong(y, scores) -> tuple:
    """AUCs and their DeLong covariance matrix.

    Parameters
    ----------
    y : array of {0, 1}
    scores : array (n,) or (k, n)
        Scores of k models on the same cases (higher = more positive).

    Returns
    -------
    (ndarray (k,), ndarray (k, k))
    """
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes")
    tx = np.vstack([_midrank(r) for r in pos])
    ty = np.vstack([_midrank(r) for r in neg])
    tz = np.vstack([_midrank(r) for r in np.hstack([pos, neg])])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((len(s), len(s)))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((len(s), len(s)))
    return aucs, sx / m + sy / n


def auc_delong_ci(y, score, alpha: float = 0.05) -> dict:
    """AUC with DeLong standard error and normal-approximation CI (clipped to [0, 1])."""
    aucs, cov = delong(y, score)
    se = math.sqrt(max(cov[0, 0], 0.0))
    z = stats.norm.ppf(1 - alpha / 2)
    return {"auc": float(aucs[0]), "se": se, "ci_low": max(0.0, aucs[0] - z * se),
            "ci_high": min(1.0, aucs[0] + z * se)}


def delong_test(y, score_a, score_b) -> dict:
    """DeLong's test of two correlated AUCs (same cases): z and two-sided p."""
    aucs, cov = delong(y, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    z = diff / math.sqrt(var) if var > 0 else (0.0 if diff == 0 else math.copysign(np.inf, diff))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(diff),
            "z": float(z), "p": float(2 * stats.norm.sf(abs(z)))}


def roc_points(pos, score) -> tuple:
    """``(fpr, tpr)`` exactly as ``sklearn.metrics.roc_curve(pos, score)`` computes them
    (``drop_intermediate=True``), bit for bit, without its input checks.

    The checks cost ~1 ms a call, 50 times the arithmetic on the few dozen cases of an inner
    cross-validation fold or a bootstrap resample, and the LASSO's penalty search and the ROC
    bands call this thousands of times per run. ``pos``: boolean array (True = positive);
    ``score``: finite scores (checked by the callers' first, full evaluation).
    Testing/test_evaluation_fast.py compares it with scikit-learn's on many resamples.
    """
    score = np.asarray(score)
    order = np.argsort(score, kind="stable")[::-1]     # within ties the order is irrelevant
    s = score[order]
    idx = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(np.asarray(pos, dtype=np.float64)[order])[idx]
    fps = 1 + idx.astype(np.float64) - tps
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)),
                                    True])
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def roc_auc(y, score) -> float:
    """``sklearn.metrics.roc_auc_score(y, score)`` of two classes (the larger label positive),
    bit for bit (same ROC points, same trapezoid sums), without its input checks; NaN when
    ``y`` has one class or ``score`` is not finite (where scikit-learn warns or raises)."""
    y, score = np.asarray(y), np.asarray(score)
    labels = np.unique(y)
    if len(labels) != 2 or not np.isfinite(score).all():
        return math.nan
    fpr, tpr = roc_points(y == labels[1], score)
    return float((np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum())


def stratified_bootstrap_indices(y, n_boot: int = 2000, seed: int = 0):
    """Yield index arrays resampling positives and negatives separately (class sizes kept)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(n_boot):
        yield np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])


#: resamples per block of the index matrix: bounds its memory (rows x cases x 8 bytes) on
#: image-level sets of thousands of cases while keeping numpy's per-call overhead negligible
BOOT_BLOCK = 256


def stratified_bootstrap_blocks(y, n_boot: int = 2000, seed: int = 0):
    """The resamples of :func:`stratified_bootstrap_indices` (same seed, same draws, same
    order) as ``(rows, n)`` index matrices of at most :data:`BOOT_BLOCK` rows, so that a
    metric is computed for a block in one vectorised step instead of once per resample.

    The draws are made in one call per block: ``Generator.integers`` with a per-column upper
    bound (each class's size) takes the same values from the stream, in the same order, as
    ``choice(group, len(group))`` per class and resample (Testing/test_evaluation_fast.py
    compares the two on many seeds and sizes).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    sizes = np.array([len(g) for g in groups])
    highs = np.repeat(sizes, sizes)                         # each column's class size
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)      # each column's class offset
    members = np.concatenate(groups) if groups else np.array([], dtype=np.intp)
    for first in range(0, n_boot, BOOT_BLOCK):
        rows = min(BOOT_BLOCK, n_boot - first)
        yield members[start + rng.integers(0, np.broadcast_to(highs, (rows, len(highs))))]


def _bootstrap_matrix(y, n_boot: int, seed: int):
    """(n_boot, n) index matrix; positives first then negatives in each row (stratified)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    return (pos[rng.integers(0, len(pos), (n_boot, len(pos)))],
            neg[rng.integers(0, len(neg), (n_boot, len(neg)))])


def auc_bootstrap_ci(y, score, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """AUC with a stratified-bootstrap percentile CI (vectorised: AUC from row-wise midranks)."""
    from sklearn.metrics import roc_auc_score
    y, score = (np.asarray(y) == 1).astype(int), np.asarray(score, float)
    pi, ni = _bootstrap_matrix(y, n_boot, seed)
    m, n = pi.shape[1], ni.shape[1]
    ranks = stats.rankdata(np.hstack([score[pi], score[ni]]), axis=1)
    boots = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return {"auc": float(roc_auc_score(y, score)),
            "ci_low": float(np.percentile(boots, 100 * alpha / 2)),
            "ci_high": float(np.percentile(boots, 100 * (1 - alpha / 2))),
            "n_boot": n_boot, "boot": boots}


# -- threshold metrics --------------------------------------------------------------------------

def youden_threshold(y, score) -> float:
    """Threshold maximising sensitivity + specificity - 1 (positive when score >= t)."""
    from sklearn.metrics import roc_curve
    fpr, tpr, thr = roc_curve(y, score)
    j = np.argmax(tpr - fpr)
    t = thr[j]
    # thresholds are the scores themselves, on whatever scale (a Rad-score is not a
    # probability: no clipping to 1); roc_curve's first one (inf) means "nobody positive",
    # i.e. just above the largest score
    return float(t) if np.isfinite(t) else float(np.nextafter(np.max(score), np.inf))


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    z = stats.norm.ppf(1 - alpha / 2)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def threshold_metrics(y, score, threshold: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Confusion-matrix metrics at a fixed threshold with 95 % CIs.

    Sensitivity, specificity, PPV, NPV and accuracy use Wilson intervals; F1 a stratified
    bootstrap percentile interval.
    """
    y = np.asarray(y).astype(int)
    pred = (np.asarray(score) >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    out = {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn),
                       ("accuracy", tp + tn, len(y))):
        out[name] = k / n if n else math.nan
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson_ci(k, n)

    out["f1"] = float(_f1_rows(y[None], pred[None])[0])
    boots = np.concatenate([_f1_rows(y[i], pred[i])
                            for i in stratified_bootstrap_blocks(y, n_boot, seed)] or [[]])
    out["f1_ci_low"], out["f1_ci_high"] = (float(np.percentile(boots, 2.5)),
                                           float(np.percentile(boots, 97.5)))
    return out


def _f1_rows(yy, pp) -> np.ndarray:
    """F1 of each row of labels ``yy`` and predictions ``pp`` (0 where nothing is positive):
    the same integer counts and the same division as one resample at a time."""
    t = ((pp == 1) & (yy == 1)).sum(axis=1)
    d = (pp == 1).sum(axis=1) + (yy == 1).sum(axis=1)
    return np.where(d > 0, 2 * t / np.maximum(d, 1), 0.0)


# -- calibration and decision curves ------------------------------------------------------------

def calibration(y, prob, n_bins: int = 10) -> dict:
    """Brier score, calibration slope/intercept, binned and LOWESS curves."""
    import statsmodels.api as sm
    y = np.asarray(y).astype(float)
    p = np.clip(np.asarray(prob, float), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    out = {"brier": float(np.mean((p - y) ** 2))}
    try:
        # near-separable small test sets overflow exp() inside the IRLS steps and trigger
        # statsmodels' separation warning; the slope is still what it is (or the fit raises,
        # handled below), so the warnings are noise for the user
        with warnings.catch_warnings(), np.errstate(over="ignore"):
            warnings.simplefilter("ignore")
            fit = sm.GLM(y, sm.add_constant(logit), family=sm.families.Binomial()).fit()
            out["slope"] = float(fit.params[1])
            fit0 = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(),
                          offset=logit).fit()
        out["intercept"] = float(fit0.params[0])
    except Exception:  # noqa: BLE001 -- perfect separation etc.: report as undefined rather than fail
        out["slope"] = out["intercept"] = math.nan
    bins = max(2, min(n_bins, int(len(y) // 10)))
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    out["binned"] = pd.DataFrame({
        "mean_predicted": [p[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()],
        "observed": [y[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()],
        "n": [int((idx == b).sum()) for b in range(len(edges) - 1) if (idx == b).any()]})
    # delta: interpolate between points closer than 1 % of the range (exact enough for a
    # plotted curve, and O(n) instead of O(n^2) on large sets)
    with np.errstate(all="ignore"):   # tied predictions give 0/0 in local weights; handled
        low = sm.nonparametric.lowess(y, p, frac=2 / 3, return_sorted=True,
                                      delta=0.01 * float(np.ptp(p)))
    out["smoothed"] = pd.DataFrame({"predicted": low[:, 0], "observed": low[:, 1]})
    return out


def decision_curve(y, prob, thresholds=None) -> pd.DataFrame:
    """Net benefit of the model, treat-all and treat-none over threshold probabilities."""
    y = np.asarray(y).astype(int)
    p = np.asarray(prob, float)
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.96, 0.01), 2)
    n = len(y)
    prev = y.mean()
    rows = []
    for t in thresholds:
        pred = p >= t
        tp = (pred & (y == 1)).sum() / n
        fp = (pred & (y == 0)).sum() / n
        w = t / (1 - t)
        rows.append({"threshold": float(t), "model": tp - fp * w,
                     "treat_all": prev - (1 - prev) * w, "treat_none": 0.0})
    return pd.DataFrame(rows)


def evaluate_binary(y, prob, threshold: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Everything for one binary prediction set at a given (training-chosen) threshold."""
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("evaluation needs both classes in the data")
    d = auc_delong_ci(y, prob)
    b = auc_bootstrap_ci(y, prob, n_boot, seed)
    out = {"n": int(len(y)), "n_pos": int(y.sum()), "auc": d["auc"],
           "auc_delong_ci_low": d["ci_low"], "auc_delong_ci_high": d["ci_high"],
           "auc_se": d["se"], "auc_boot_ci_low": b["ci_low"], "auc_boot_ci_high": b["ci_high"]}
    out.update(threshold_metrics(y, prob, threshold, n_boot, seed))
    cal = calibration(y, prob)
    out.update(brier=cal["brier"], calibration_slope=cal["slope"],
               calibration_intercept=cal["intercept"])
    # the resamples actually drawn, beside each bootstrap interval (metrics.json, report)
    out["auc_boot_n"] = out["f1_boot_n"] = int(n_boot)
    out["caveats"] = ci_caveats(out)
    return out


def evaluate_multiclass(y, proba, classes, n_boot: int = 2000, seed: int = 0) -> dict:
    """One-vs-rest AUC per class (DeLong CI) and macro AUC (bootstrap CI)."""
    from sklearn.metrics import roc_auc_score
    y = np.asarray(y)
    proba = np.asarray(proba)
    out = {"n": int(len(y))}
    for j, c in enumerate(classes):
        d = auc_delong_ci((y == c).astype(int), proba[:, j])
        out[f"auc_{c}_vs_rest"] = d["auc"]
        out[f"auc_{c}_vs_rest_ci_low"], out[f"auc_{c}_vs_rest_ci_high"] = d["ci_low"], d["ci_high"]

    out["auc_macro"] = float(np.mean([roc_auc_score((y == c).astype(int), proba[:, j])
                                      for j, c in enumerate(classes)]))
    boots = np.concatenate([_macro_auc_rows(y, proba, classes, i)
                            for i in stratified_bootstrap_blocks(y, n_boot, seed)] or [[]])
    out["auc_macro_ci_low"], out["auc_macro_ci_high"] = (float(np.percentile(boots, 2.5)),
                                                         float(np.percentile(boots, 97.5)))
    out["auc_macro_boot_n"] = int(n_boot)
    out["class_counts"] = {str(c): int((y == c).sum()) for c in classes}
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    out["accuracy"] = float((pred == y).mean())
    out["caveats"] = ci_caveats(out)
    return out


def _macro_auc_rows(y, proba, classes, idx) -> np.ndarray:
    """One-vs-rest macro AUC of each resample (row of ``idx``), from row-wise midranks: the
    Mann-Whitney form of the AUC, equal to scikit-learn's trapezoid to ~1e-15 (NaN for a
    class absent from the set, as scikit-learn's)."""
    yy = y[idx]
    per_class = []
    for j, c in enumerate(classes):
        pos = yy == c
        m = pos.sum(axis=1)
        n = pos.shape[1] - m
        ranks = stats.rankdata(proba[idx, j], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(((ranks * pos).sum(axis=1) - m * (m + 1) / 2) / (m * n))
    return np.mean(per_class, axis=0)


# -- when an interval says little ---------------------------------------------------------------

#: fewer cases than this in a set's smaller class: its AUC interval and calibration rest on a
#: handful of events (the usual ~10-events rule of thumb, Peduzzi et al. 1996)
MIN_EVENTS = 10
#: a calibration slope outside this range comes from (near-)separated data, not from a
#: miscalibration that a recalibration could fix
SLOPE_RANGE = (0.1, 10.0)


def ci_caveats(d: dict) -> list:
    """Plain sentences on when the intervals of one evaluated set say little: a perfect (or
    null-width) AUC, fewer than :data:`MIN_EVENTS` events, a calibration slope that is not
    estimable or outside :data:`SLOPE_RANGE`."""
    out = []
    n = d.get("n")
    auc = d.get("auc", d.get("auc_macro"))
    lo = d.get("auc_boot_ci_low", d.get("auc_macro_ci_low"))
    hi = d.get("auc_boot_ci_high", d.get("auc_macro_ci_high"))
    width = hi - lo if lo is not None and hi is not None else None
    if auc is not None and (auc in (0.0, 1.0) or width == 0):
        out.append(f"AUC {auc:.3f} with a {width or 0:.3f}-wide bootstrap interval on {n} cases: "
                   "the classes are separated in this small set, so the interval does not "
                   "describe the real uncertainty")
    if "n_pos" in d:
        counts = {"positive": d["n_pos"], "negative": n - d["n_pos"]}
    else:
        counts = dict(d.get("class_counts") or {})
    if counts and min(counts.values()) < MIN_EVENTS:
        txt = ", ".join(f"{v} {k}" for k, v in counts.items())
        out.append(f"only {min(counts.values())} cases of the smallest class ({txt}; fewer "
                   f"than {MIN_EVENTS} events): the intervals are unreliable")
    slope = d.get("calibration_slope")
    if slope is not None:
        if not math.isfinite(slope):
            out.append("calibration slope not estimable (separated classes)")
        elif not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
            out.append(f"calibration slope {slope:.2f} is outside [{SLOPE_RANGE[0]:g}, "
                       f"{SLOPE_RANGE[1]:g}]: the fit is (near-)separated and the slope is "
                       "not interpretable")
    return out
