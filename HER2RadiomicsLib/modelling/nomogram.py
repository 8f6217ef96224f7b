"""Clinical-radiomic nomogram: logistic regression on the Rad-score plus clinical variables.

Odds ratios with 95 % Wald CIs come from the maximum-likelihood fit (statsmodels); the drawn
nomogram gives each predictor a points scale (the predictor with the widest effect over its
training range spans 0-100 points), sums them to total points and maps those to probability;
it is drawn by :func:`HER2RadiomicsLib.reports.study_plots.plot_nomogram`.

:func:`_fit_nomogram` fits a study run's nomogram (and its clinical-only comparator) on the
training patients' out-of-fold Rad-scores (called by :func:`HER2RadiomicsLib.modelling.study.
run`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError

if TYPE_CHECKING:                      # annotations only: splits imports nothing from here
    from .splits import StudyData


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


# -- the study's nomogram (fitted by modelling.study.run) ---------------------------------------

def _fit_nomogram(recipe, primary, d: StudyData, preds, best, n_boot, seed, notes):
    """Rad-score + clinical nomogram fitted on the training patients' out-of-fold Rad-scores;
    evaluated on the test and external cases. Returns ``(model, results)``."""
    from . import evaluation as E
    from .transformers import rad_score
    clinical = list(recipe.get("clinical") or [])
    missing = [c for c in clinical if c not in d.dev.columns]
    if missing:
        notes.append(f"clinical column(s) {missing} missing: nomogram without them")
        clinical = [c for c in clinical if c in d.dev.columns]
    screening = {}
    p_max = (recipe.get("clinical_selection") or {}).get("univariate_p")
    if p_max is not None and clinical:
        # the papers' clinical model: each candidate in a univariate logistic regression on
        # the training patients; those with p < p_max enter the multivariate model
        clinical, screening = _univariate_clinical(d, clinical, float(p_max))
        notes.append("clinical variables by univariate logistic regression (p < "
                     f"{float(p_max):g}): kept {clinical or 'none'} of {list(screening)}")
    preds_cols = ["rad_score"] + clinical

    def per_unit(split, X, radscore):
        """Rad-score and clinical values per evaluation unit (clinical values are the
        patient's, equal on every image); rows with a missing value are left out."""
        ids, y, rs = d.per_unit(split, radscore)
        Z = pd.DataFrame({"rad_score": rs}, index=ids)
        if clinical:
            key = X["patient_id" if d.unit == "patients" else "case_id"].astype(str)
            vals = X[clinical].astype(float).groupby(key.to_numpy()).mean()
            Z = Z.join(vals)
        Z = Z[preds_cols]
        ok = ~Z.isna().any(axis=1).to_numpy()
        return Z[ok], y[ok], ok

    # out-of-fold image Rad-scores (training), averaged per unit like the probabilities
    Ztr, ytr_ok, _ = per_unit("train", d.Xtr, primary["oof_radscore"])
    const = [c for c in clinical if Ztr[c].nunique() < 2]
    if const:
        # e.g. every training patient postmenopausal in a small cohort: the variable is
        # collinear with the intercept and the logistic fit has no unique solution
        notes.append(f"nomogram: clinical variable(s) {', '.join(const)} take a single value "
                     f"in the {len(ytr_ok)} training {d.unit}: left out")
        clinical = [c for c in clinical if c not in const]
        preds_cols = ["rad_score"] + clinical
        Ztr, ytr_ok, _ = per_unit("train", d.Xtr, primary["oof_radscore"])
    nomo = _fit_logistic(NomogramModel, preds_cols, Ztr, ytr_ok)
    if nomo is None and clinical:
        # few patients for many predictors (or a predictor that separates the classes):
        # the information matrix is singular and the odds ratios have no standard error
        notes.append(f"nomogram: Rad-score + {len(clinical)} clinical variable(s) cannot be "
                     f"fitted on {len(ytr_ok)} training {d.unit} (separation or collinearity); "
                     "fitted on the Rad-score alone")
        clinical, preds_cols = [], ["rad_score"]
        Ztr, ytr_ok, _ = per_unit("train", d.Xtr, primary["oof_radscore"])
        nomo = _fit_logistic(NomogramModel, preds_cols, Ztr, ytr_ok)
    if nomo is None:
        notes.append(f"nomogram: not fitted; the Rad-score separates the {len(ytr_ok)} "
                     f"training {d.unit} perfectly or is constant there")
        return None, {}
    thr_n = E.youden_threshold(ytr_ok, nomo.predict_proba(Ztr)[:, 1])
    res = {"predictors": preds_cols, "threshold": thr_n, "unit": d.unit,
           **({"clinical_univariate_p": screening} if screening else {}),
           "odds_ratios": nomo.odds_ratios().to_dict(orient="records")}
    # the comparator a nomogram must beat (CLEAR 42, TRIPOD+AI): the same logistic model on
    # the clinical predictors alone, fitted on the same training units
    clin = _fit_logistic(NomogramModel, clinical, Ztr[clinical], ytr_ok) if clinical else None
    res["clinical_only"] = {"predictors": list(clinical)} if clin is not None else {
        "predictors": list(clinical), "status": "not fitted: " + (
            "no clinical predictor entered the nomogram" if not clinical else
            "the clinical predictors alone cannot be fitted (separation or collinearity)")}
    thr_c = E.youden_threshold(ytr_ok, clin.predict_proba(Ztr[clinical])[:, 1]) \
        if clin is not None else None
    for name, Xs in (("test", d.Xte), ("external", d.dext)):
        if not len(Xs) or len(np.unique(d.y_unit(name))) != 2:
            continue
        Z, yz, ok = per_unit(name, Xs, rad_score(primary["model"], Xs))
        pz = nomo.predict_proba(Z)[:, 1]
        res[name] = E.evaluate_binary(yz, pz, thr_n, n_boot, seed)
        res[name]["unit"] = d.unit
        preds[f"nomogram:{name}"] = (yz, pz)
        if name == "test":
            preds["radscore:test"] = (yz, Z["rad_score"].to_numpy())
            # the radiomics model's test scores on the same units (complete clinical data)
            res["delong_vs_radiomics"] = E.delong_test(yz, preds[best][1][ok], pz)
        # the radiomics model and the clinical-only model on the same units, side by side
        res.setdefault("radiomics_same_units", {})[name] = E.evaluate_binary(
            yz, preds[best][1 if name == "test" else 2][ok], primary["threshold"], n_boot, seed)
        if clin is not None:
            pc = clin.predict_proba(Z[clinical])[:, 1]
            res["clinical_only"][name] = {**E.evaluate_binary(yz, pc, thr_c, n_boot, seed),
                                          "unit": d.unit}
            if name == "test":
                res["clinical_only"]["delong_vs_nomogram"] = E.delong_test(yz, pc, pz)
    return nomo, res


def _fit_logistic(model_cls, predictors, Z, y):
    """A fitted nomogram-type logistic model, or None where the maximum-likelihood fit has no
    finite solution or covariance (perfect separation, collinear or constant predictors, a
    single class: small training sets)."""
    if len(np.unique(y)) < 2 or len(y) <= len(predictors) + 1:
        return None
    try:
        m = model_cls(predictors=tuple(predictors)).fit(Z, y)
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):
        return None
    if not np.isfinite(np.r_[m.intercept_, m.coef_]).all():
        return None
    return m


def _univariate_clinical(d: StudyData, candidates, p_max):
    """``(kept, {variable: p})``: univariate logistic regression of the label on each
    clinical variable over the training units (a patient's value is the mean of its rows)."""
    key = d.Xtr["patient_id" if d.unit == "patients" else "case_id"].astype(str).to_numpy()
    ids, y, _ = d.per_unit("train", np.zeros(len(d.Xtr)))
    vals = d.Xtr[candidates].astype(float).groupby(key).mean().loc[ids]
    pvals = {}
    for c in candidates:
        ok = vals[c].notna().to_numpy()
        if ok.sum() < 10 or vals[c][ok].nunique() < 2:
            pvals[c] = float("nan")
            continue
        m = _fit_logistic(NomogramModel, [c], vals.loc[ok, [c]], y[ok])
        pvals[c] = float(m.pvalues_[1]) if m is not None else float("nan")
    kept = [c for c in candidates if pvals[c] == pvals[c] and pvals[c] < p_max]
    return kept, pvals
