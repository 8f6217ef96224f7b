"""Clinical-radiomic nomogram: logistic regression on the Rad-score plus clinical variables.

Odds ratios with 95 % Wald CIs come from the maximum-likelihood fit (statsmodels); the drawn
nomogram gives each predictor a points scale (the predictor with the widest effect over its
training range spans 0-100 points), sums them to total points and maps those to probability.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError


class NomogramModel(ClassifierMixin, BaseEstimator):
    """Logistic model on named predictors (a DataFrame with exactly those columns).

    Parameters
    ----------
    predictors : sequence of str
        Column names, e.g. ``("rad_score", "age", "ki67")``.

    Attributes
    ----------
    coef_ : ndarray
    intercept_ : float
    bse_ : ndarray
        Standard errors (intercept first).
    pvalues_ : ndarray
    ranges_ : ndarray, shape (n_predictors, 2)
        Training min/max of each predictor (nomogram axes).
    classes_ : ndarray
    """

    def __init__(self, predictors=("rad_score",)):
        self.predictors = predictors

    def fit(self, X, y):
        import statsmodels.api as sm
        X = self._frame(X)
        y = np.asarray(y).astype(int)
        self.classes_ = np.array([0, 1])
        import warnings
        A = sm.add_constant(X.to_numpy(dtype=float), has_constant="add")
        # small training sets can be (quasi-)separable: statsmodels then warns at length;
        # the fit below falls back to a lightly penalised one and the report shows the ORs
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                res = sm.Logit(y, A).fit(disp=0, maxiter=200)
            except Exception:  # perfect separation
                try:
                    res = sm.Logit(y, A).fit_regularized(alpha=1e-3, disp=0)
                except np.linalg.LinAlgError:      # collinear predictors: no fit exists
                    from ..errors import InputError
                    raise InputError("nomogram: the logistic fit is singular (separated or "
                                     "collinear predictors)") from None
        params = np.asarray(res.params, dtype=float)
        self.intercept_ = float(params[0])
        self.coef_ = params[1:]
        self.bse_ = np.asarray(getattr(res, "bse", np.full(len(params), np.nan)), dtype=float)
        self.pvalues_ = np.asarray(getattr(res, "pvalues", np.full(len(params), np.nan)),
                                   dtype=float)
        self.ranges_ = np.stack([X.min().to_numpy(float), X.max().to_numpy(float)], axis=1)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        return self

    def _frame(self, X):
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(np.asarray(X), columns=list(self.predictors))
        missing = [c for c in self.predictors if c not in X.columns]
        if missing:
            raise InputError(f"nomogram needs {missing} (clinical values for this patient)")
        X = X[list(self.predictors)].astype(float)
        if X.isna().any().any():
            bad = X.columns[X.isna().any()].tolist()
            raise InputError(f"nomogram: missing values in {bad}")
        return X

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        return self.intercept_ + self._frame(X).to_numpy() @ self.coef_

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def odds_ratios(self) -> pd.DataFrame:
        """OR, 95 % CI and p per predictor."""
        check_is_fitted(self, "coef_")
        se = self.bse_[1:]
        with np.errstate(over="ignore", invalid="ignore"):
            return self._or_table(se)

    def _or_table(self, se):
        return pd.DataFrame({"predictor": list(self.predictors), "coef": self.coef_,
                             "odds_ratio": np.exp(self.coef_),
                             "ci_low": np.exp(self.coef_ - 1.959964 * se),
                             "ci_high": np.exp(self.coef_ + 1.959964 * se),
                             "p": self.pvalues_[1:]})

    def points(self, X) -> pd.DataFrame:
        """Nomogram points of each predictor and the total, per row."""
        X = self._frame(X)
        scale, lows = self._scale()
        pts = (X.to_numpy() * self.coef_ - lows) * scale
        out = pd.DataFrame(pts, columns=list(self.predictors), index=X.index)
        out["total"] = out.sum(axis=1)
        return out

    def _scale(self):
        eff = self.coef_[:, None] * self.ranges_                     # (p, 2)
        lows = eff.min(axis=1)
        span = (eff.max(axis=1) - lows)
        return 100.0 / max(span.max(), 1e-12), lows


def plot_nomogram(model: NomogramModel, path, labels: dict | None = None,
                  title: str = "Nomogram") -> "Path":
    """Draw the points scales, total points and probability axis (PNG + SVG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .evaluation import _save
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
