"""Clinical-radiomic nomogram: logistic regression on the Rad-score plus clinical variables.

Odds ratios with 95 % Wald CIs come from the maximum-likelihood fit (statsmodels); the drawn
nomogram gives each predictor a points scale (the predictor with the widest effect over its
training range spans 0-100 points), sums them to total points and maps those to probability;
it is drawn by :func:`HER2RadiomicsLib.reports.study_plots.plot_nomogram`.
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
            except Exception:  # noqa: BLE001 -- perfect separation
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
