"""scikit-learn building blocks for the studies' modelling pipelines.

Every data-dependent step is a transformer inside one (imbalanced-learn) Pipeline, so
cross-validation refits it per fold and nothing leaks from test to training data:

``ColumnSelector`` (regions / explicit columns) -> ``StableFeatureFilter`` (reader-study ICC) ->
``MedianImputer`` -> ``ComBat`` (harmonisation) -> ``StandardScaler`` (z-score, training only) ->
``SMOTE`` (training folds only) -> ``UnivariateFilter`` / ``URFModule`` ->
``CorrelationFilter`` -> ``LassoSelector`` -> classifier.

``LassoSelector`` is in :mod:`.lasso`, the selectors' shared base in :mod:`.selector_base`.

All transformers take and return pandas DataFrames (feature names travel with the data) and follow
scikit-learn's conventions: ``__init__`` stores parameters, ``fit`` learns attributes ending in
``_`` and returns ``self``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
# LassoSelector lives in .lasso; it is imported here for the Rad-score and so that bundles
# naming its old path (transformers.LassoSelector) still find it
from .lasso import LassoSelector
from .selector_base import _as_frame, _binary, _check_input, _relevance, _Selector

log = logging.getLogger(__name__)


class ColumnSelector(_Selector):
    """Keep feature columns of some regions (prefix ``<region>__``) and/or named columns.

    Parameters
    ----------
    regions : sequence of str, optional
        Region names, e.g. ``("tumor", "peri_0-5mm")``; None keeps every ``*__*`` column.
    columns : sequence of str
        Extra columns kept as they are (clinical variables, the site column for ComBat).
    """

    def __init__(self, regions=None, columns=()):
        self.regions = regions
        self.columns = columns

    _allow_nan = True      # selection by name only; imputation comes later

    def fit(self, X, y=None):
        X = self._validated(X)
        extra = [c for c in (self.columns or ()) if c in X.columns]
        missing = [c for c in (self.columns or ()) if c not in X.columns]
        if missing:
            raise InputError(f"columns {missing} are not in the data")
        if self.regions is None:
            feats = [c for c in X.columns if "__" in c]
            if not feats:   # no region-named columns (e.g. a plain array): keep them all
                feats = [c for c in X.columns if c not in extra]
        else:
            prefixes = tuple(f"{r}__" for r in self.regions)
            feats = [c for c in X.columns if c.startswith(prefixes)]
            found = {c.split("__", 1)[0] for c in feats}
            absent = [r for r in self.regions if r not in found]
            if absent:
                raise InputError(f"region(s) {absent} have no feature columns (extract them with "
                                 "--rings)")
        self.selected_features_ = feats + [c for c in extra if c not in feats]
        return self


class StableFeatureFilter(_Selector):
    """Keep features whose reader-study ICC exceeds a threshold.

    Parameters
    ----------
    icc_values : dict or None
        ``{feature: ICC}`` from a reader study (see :func:`icc_values_from_table`; pass the
        lower CI bounds to threshold those). None: keep everything.
    threshold : float
    keep_unlisted : bool
        Keep columns the ICC table does not mention (clinical variables, site).

    Notes
    -----
    Parameters and learned attributes are plain dicts/lists so that model bundles can be saved
    in skops' allow-listed format.
    """

    def __init__(self, icc_values=None, threshold=0.75, keep_unlisted=True):
        self.icc_values = icc_values
        self.threshold = threshold
        self.keep_unlisted = keep_unlisted

    _allow_nan = True

    def fit(self, X, y=None):
        X = self._validated(X)
        if not self.icc_values:
            self.selected_features_ = list(X.columns)
            self.dropped_ = []
            return self
        iv = self.icc_values
        self.selected_features_ = [
            c for c in X.columns
            if (c in iv and iv[c] is not None and iv[c] == iv[c] and iv[c] > self.threshold)
            or (self.keep_unlisted and c not in iv)]
        self.dropped_ = [c for c in X.columns if c not in self.selected_features_]
        return self


def _read_table(table, what: str) -> tuple:
    """``(DataFrame, name for messages)`` of a CSV path or a DataFrame; an unreadable file is
    one line naming it."""
    if isinstance(table, pd.DataFrame):
        return table, what
    try:
        return pd.read_csv(table), str(table)
    except FileNotFoundError:
        raise InputError(f"{table}: {what} not found") from None
    except (OSError, ValueError) as exc:     # pandas' parser and decoding errors included
        raise InputError(f"{table}: cannot read the {what} ({str(exc).splitlines()[0]})") \
            from None


def icc_values_from_table(icc, form: str = "ICC2", use_lower_ci: bool = False) -> dict:
    """``{feature: value}`` from an ``icc.csv`` table (path or DataFrame) for
    StableFeatureFilter."""
    t, name = _read_table(icc, "ICC table")
    col = f"{form}_ci_low" if use_lower_ci else form
    if col not in t.columns or "feature" not in t.columns:
        raise InputError(f"{name}: ICC table lacks columns feature and {col} (the icc.csv of "
                         "'her2radiomics icc' or 'reader-study')")
    return {str(f): (None if pd.isna(v) else float(v)) for f, v in zip(t["feature"], t[col])}


class MedianImputer(_Selector):
    """Median imputation of numeric columns (non-numeric columns pass through); drops columns
    that are entirely missing in training data."""

    _allow_nan = True

    def fit(self, X, y=None):
        X = self._validated(X)
        num = X.select_dtypes(include=[np.number])
        med = num.median()
        self.medians_ = {str(c): float(v) for c, v in med.items() if v == v}
        self.dropped_ = [str(c) for c, v in med.items() if v != v]
        self.selected_features_ = [c for c in X.columns if c not in self.dropped_]
        return self

    def transform(self, X):
        check_is_fitted(self, "medians_")
        X, was_frame = _check_input(self, X, reset=False, allow_nan=True)
        X = X[self.selected_features_].copy()
        # only the columns with a gap: fillna with a value for each of ~1,000 columns took
        # ~60 ms a call even when nothing was missing (the same frame comes out)
        gaps = X.columns[X.isna().to_numpy().any(axis=0)]
        fill = {c: self.medians_[c] for c in gaps if c in self.medians_}
        if fill:
            X = X.fillna(value=fill)
        return X if was_frame else X.to_numpy()


class VarianceFilter(_Selector):
    """Drop numeric features with (near-)zero variance in training data; keep other columns."""

    def __init__(self, min_variance=1e-12, keep=()):
        self.min_variance = min_variance
        self.keep = keep

    def fit(self, X, y=None):
        X = self._validated(X)
        var = X.select_dtypes(include=[np.number]).var()
        low = set(var.index[var <= self.min_variance]) - set(self.keep or ())
        self.selected_features_ = [c for c in X.columns if c not in low]
        return self


class UnivariateFilter(_Selector):
    """Univariate test per feature with a p-value threshold (optionally FDR) and fold change.

    Parameters
    ----------
    test : {"ttest", "welch", "mannwhitney", "anova", "kruskal"}
        Two-class tests (``mannwhitney`` is the Wilcoxon rank-sum test of cui2023) or, for
        more classes, ANOVA / Kruskal-Wallis.
    p_threshold : float
    fdr : bool
        Benjamini-Hochberg adjusted p-values instead of raw ones.
    fold_change : float, optional
        Two classes only: also require a fold change of the class means above this value
        (cui2023 uses 1), in the direction ``fold_change_direction`` says.
    fold_change_direction : {"either", "up"}
        ``"either"``: max(m1/m0, m0/m1) > fold_change, so a feature lower in the positive class
        passes too (features whose class means differ in sign or are 0 pass this rule).
        ``"up"``: m1/m0 > fold_change, with m1 the mean of the positive class (label 1, the
        larger label) and m0 that of the negative one: the feature is higher in the positive
        class (cui2023's rule). Where a class mean is 0 or negative the ratio is no fold
        change; such a feature passes when m1 > m0 (the direction alone).
    min_features : int
        If fewer pass, keep the ``min_features`` smallest p-values (a warning says so), so that
        a pipeline never ends up with no feature.
    passthrough : sequence of str
        Columns kept without testing (clinical variables).
    """

    def __init__(self, test="ttest", p_threshold=0.05, fdr=False, fold_change=None,
                 fold_change_direction="either", min_features=1, passthrough=()):
        self.test = test
        self.p_threshold = p_threshold
        self.fdr = fdr
        self.fold_change = fold_change
        self.fold_change_direction = fold_change_direction
        self.min_features = min_features
        self.passthrough = passthrough

    def fit(self, X, y):
        X = self._validated(X, y, two=True)
        y, classes = _binary(y)
        cols = [c for c in X.columns if c not in (self.passthrough or ())]
        A = X[cols].to_numpy(dtype=float)
        groups = [A[y == c] for c in classes]
        if len(classes) < 2:
            raise InputError("UnivariateFilter needs at least two classes in the training data")
        with np.errstate(all="ignore"):
            if self.test in ("ttest", "welch") and len(classes) == 2:
                p = stats.ttest_ind(groups[1], groups[0], equal_var=self.test == "ttest").pvalue
            elif self.test == "mannwhitney" and len(classes) == 2:
                p = stats.mannwhitneyu(groups[1], groups[0], alternative="two-sided").pvalue
            elif self.test in ("anova", "ttest", "welch"):
                p = stats.f_oneway(*groups).pvalue
            elif self.test in ("kruskal", "mannwhitney"):
                p = np.array([stats.kruskal(*[g[:, j] for g in groups]).pvalue
                              for j in range(A.shape[1])])
            else:
                raise InputError(f"UnivariateFilter: unknown test {self.test!r}")
        p = np.where(np.isfinite(p), p, 1.0)
        if self.fdr:
            p = stats.false_discovery_control(p, method="bh")
        keep = p < self.p_threshold
        if self.fold_change is not None and len(classes) == 2:
            m0, m1 = groups[0].mean(axis=0), groups[1].mean(axis=0)
            # a model unpickled from before the setting existed used the symmetric rule
            direction = getattr(self, "fold_change_direction", "either")
            with np.errstate(all="ignore"):
                ratio = m1 / m0
                if direction == "up":
                    fc_ok = np.where((m0 > 0) & (m1 > 0), ratio > self.fold_change, m1 > m0)
                elif direction == "either":
                    fc = np.where(ratio > 0, np.maximum(ratio, 1 / ratio), np.inf)
                    fc_ok = fc > self.fold_change
                else:
                    raise InputError("UnivariateFilter: fold_change_direction must be 'up' or "
                                     f"'either', not {direction!r}")
            keep &= fc_ok
        self.fallback_ = None
        if keep.sum() < self.min_features:
            order = np.argsort(p)[:self.min_features]
            # not in the papers: reported in the run's notes when it fires on the final fit
            rule = f"p < {self.p_threshold:g}"
            if self.fold_change is not None and len(classes) == 2:
                rule += (f" and fold change > {self.fold_change:g}"
                         + (" (higher in the positive class)"
                            if getattr(self, "fold_change_direction", "either") == "up" else ""))
            self.fallback_ = (f"univariate filter: {int(keep.sum())} feature(s) passed "
                              f"{rule}; kept the {self.min_features} "
                              "smallest p-values (fallback, not in the paper)")
            # expected in small CV folds; INFO, not WARNING (shown with -v)
            log.info("UnivariateFilter: only %d feature(s) pass p < %g; keeping the %d "
                     "smallest p-values", int(keep.sum()), self.p_threshold, self.min_features)
            keep = np.zeros_like(keep)
            keep[order] = True
        self.pvalues_ = np.asarray(p, dtype=float)
        self.tested_features_ = list(cols)
        self.selected_features_ = [c for c, k in zip(cols, keep) if k] + \
            [c for c in (self.passthrough or ()) if c in X.columns]
        return self


class CorrelationFilter(_Selector):
    """Keep one feature per cluster of |Pearson r| > threshold.

    Rule: features are ranked by relevance — the absolute univariate AUC distance from 0.5
    (two classes) or ANOVA F (more classes) on the training labels, or variance when no labels
    are given — and taken greedily: the most relevant feature is kept and every feature
    correlated with it above the threshold is dropped, then the next remaining one, and so on.
    """

    def __init__(self, threshold=0.8, passthrough=()):
        self.threshold = threshold
        self.passthrough = passthrough

    def fit(self, X, y=None):
        X = self._validated(X)
        cols = [c for c in X.columns if c not in (self.passthrough or ())]
        A = X[cols].to_numpy(dtype=float)
        if y is not None and len(np.unique(np.asarray(y))) > 1:
            score = _relevance(A, np.asarray(y))
        else:
            score = A.var(axis=0)
        order = np.argsort(-score, kind="stable")
        with np.errstate(all="ignore"):
            r = np.corrcoef(A, rowvar=False) if A.shape[1] > 1 else np.ones((1, 1))
        r = np.nan_to_num(np.abs(np.atleast_2d(r)))
        alive = np.ones(len(cols), bool)
        kept = []
        for j in order:
            if not alive[j]:
                continue
            kept.append(j)
            alive &= r[j] <= self.threshold
            alive[j] = False
        kept.sort()
        self.selected_features_ = [cols[j] for j in kept] + \
            [c for c in (self.passthrough or ()) if c in X.columns]
        return self


class URFModule(_Selector):
    """cui2023's URF-module: differential features plus their 'auxiliary' features.

    A feature j is auxiliary to a differential feature i when their sets of associated
    biological functions overlap with Simpson index |Fi ∩ Fj| / min(|Fi|, |Fj|) > threshold.
    The function sets come from a user table (the genomics is out of scope): a DataFrame or CSV
    with columns ``feature, function`` (one row per association).

    Parameters
    ----------
    selector : estimator
        Finds the differential features (default: Mann-Whitney p < 0.05 and fold change > 1
        of the positive over the negative class mean: higher in HER2-positive, cui2023's rule).
    functions : dict or None
        ``{feature: [function, ...]}`` (see :func:`function_sets_from_table`). None: no
        auxiliaries (plain differential features).
    threshold : float
        Simpson-index threshold (0.6 in cui2023).
    """

    def __init__(self, selector=None, functions=None, threshold=0.6):
        self.selector = selector
        self.functions = functions
        self.threshold = threshold

    def fit(self, X, y):
        X = self._validated(X, y, two=True)
        sel = clone(self.selector) if self.selector is not None else UnivariateFilter(
            test="mannwhitney", p_threshold=0.05, fold_change=1.0, fold_change_direction="up")
        sel.fit(X, y)
        diff = list(sel.selected_features_)
        self.fallback_ = getattr(sel, "fallback_", None)
        aux = []
        if self.functions:
            sets = {k: set(map(str, v)) for k, v in self.functions.items()}
            for j in X.columns:
                if j in diff or j not in sets:
                    continue
                fj = sets[j]
                for i in diff:
                    fi = sets.get(i)
                    if fi and len(fi & fj) / min(len(fi), len(fj)) > self.threshold:
                        aux.append(j)
                        break
        self.differential_features_ = diff
        self.auxiliary_features_ = aux
        self.selected_features_ = [c for c in X.columns if c in set(diff) | set(aux)]
        return self


def function_sets_from_table(table) -> dict:
    """``{feature: [functions]}`` from a CSV/DataFrame with columns ``feature,function``."""
    t, name = _read_table(table, "function table")
    if not {"feature", "function"} <= set(t.columns):
        raise InputError(f"{name}: the function table needs columns feature,function")
    return {str(k): sorted(map(str, v)) for k, v in t.groupby("feature")["function"]}


CLASSIFIERS = ("svm", "random_forest", "decision_tree", "logistic", "naive_bayes", "mlp", "knn")


def make_classifier(name: str, random_state: int = 0, **params):
    """The seven classifiers of cui2023 with sensible defaults (params override them)."""
    defaults = {
        "svm": (_calibrated_svc, dict(kernel="rbf", gamma="scale", C=1.0,
                                      random_state=random_state)),
        "random_forest": (RandomForestClassifier, dict(n_estimators=300, min_samples_leaf=2,
                                                       random_state=random_state, n_jobs=1)),
        "decision_tree": (DecisionTreeClassifier, dict(max_depth=4, min_samples_leaf=5,
                                                       random_state=random_state)),
        "logistic": (LogisticRegression, dict(C=1.0, max_iter=5000)),
        "naive_bayes": (GaussianNB, {}),
        "mlp": (MLPClassifier, dict(hidden_layer_sizes=(32,), alpha=1e-2, max_iter=2000,
                                    early_stopping=False, random_state=random_state)),
        "knn": (KNeighborsClassifier, dict(n_neighbors=15, weights="distance")),
    }
    if name not in defaults:
        raise InputError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    cls, kw = defaults[name]
    kw = {**kw, **params}
    return cls(**kw)


def _calibrated_svc(**kw):
    """RBF SVM with Platt-scaled probabilities (scikit-learn >= 1.9 deprecates
    ``SVC(probability=True)`` in favour of this equivalent)."""
    return CalibratedClassifierCV(SVC(**kw), ensemble=False, cv=5)


TUNING_GRIDS = {
    "svm": {"estimator__C": [0.1, 1, 10]},
    "random_forest": {"min_samples_leaf": [1, 3, 8]},
    "decision_tree": {"max_depth": [2, 4, 6]},
    "logistic": {"C": [0.01, 0.1, 1, 10]},
    "naive_bayes": {"var_smoothing": [1e-9, 1e-6, 1e-3]},
    "mlp": {"alpha": [1e-3, 1e-2, 1e-1]},
    "knn": {"n_neighbors": [5, 15, 31]},
}


def rad_score(pipeline, X) -> np.ndarray:
    """The Rad-score: the linear predictor of the pipeline's LASSO step on its selected features.

    It is the intercept plus the sum of coefficient x (transformed) feature value, i.e. the
    log-odds of the L1 logistic model (or the LASSO's fitted value).  Raises InputError when
    the pipeline has no LassoSelector.
    """
    contrib, icpt = rad_score_contributions(pipeline, X)
    return contrib.sum(axis=1).to_numpy() + icpt


def transform_until(pipeline, X, stop: str | None = None):
    """``X`` passed through the pipeline's steps before ``stop`` (default: the last step),
    as at prediction time (samplers such as SMOTE do nothing there)."""
    steps = list(pipeline.named_steps.items())
    Xt = X
    for name, step in steps[:-1]:
        if name == stop:
            break
        if hasattr(step, "fit_resample") and not hasattr(step, "transform"):
            continue
        Xt = step.transform(Xt)
    return _as_frame(Xt)


def model_feature_names(pipeline, X) -> list:
    """The features that reach the classifier (after every selection step)."""
    return [str(c) for c in transform_until(pipeline, X).columns]


def _lasso_input(pipeline, X):
    """(LassoSelector, the values of its selected features) for rows ``X``."""
    steps = list(pipeline.named_steps.items()) if hasattr(pipeline, "named_steps") else []
    for i, (_name, step) in enumerate(steps):
        if isinstance(step, LassoSelector):
            Xt = X
            for _, prev in steps[:i]:
                if hasattr(prev, "fit_resample") and not hasattr(prev, "transform"):
                    continue           # samplers do nothing at prediction time
                Xt = prev.transform(Xt)
            Xt = _as_frame(Xt)
            return step, Xt[list(step.coef_features_)].astype(float)
    raise InputError("this model has no LASSO step, so it has no Rad-score")


def rad_score_contributions(pipeline, X):
    """Per-feature contributions ``coef * value`` to the Rad-score, and the intercept.

    Binary models only: a model of more than two classes has one Rad-score per class
    (:func:`rad_score_per_class`) and raises InputError here (older bundles stored unsigned
    largest-|coef| values for them, which are no linear predictor of anything).
    """
    step, vals = _lasso_input(pipeline, X)
    n_classes = len(getattr(pipeline, "classes_", getattr(step, "classes_", [0, 1])))
    if getattr(step, "class_coef_", None) is not None or n_classes > 2:
        raise InputError(f"a {n_classes}-class model has one Rad-score per class "
                         "(one-vs-rest), not a single one")
    return vals * step.coef_, step.intercept_


def rad_score_per_class(pipeline, X) -> pd.DataFrame:
    """One-vs-rest Rad-scores of a model with more than two classes: for each class, the
    intercept plus the sum of its signed LASSO coefficients x feature values (the log-odds of
    that class against the rest). Columns are the classes. Raises InputError for binary
    models (use :func:`rad_score`) and for bundles saved before per-class coefficients were
    kept."""
    step, vals = _lasso_input(pipeline, X)
    if getattr(step, "class_coef_", None) is None:
        raise InputError("this model has no per-class Rad-scores (binary, or saved before "
                         "they were recorded)")
    scores = vals.to_numpy() @ np.asarray(step.class_coef_).T + step.class_intercept_
    return pd.DataFrame(scores, columns=[str(c) for c in step.classes_], index=vals.index)


def cap_neighbors(estimator, n_rows: int):
    """Cap a k-NN's neighbour count to the rows it is about to learn from (in place).

    scikit-learn's k-NN cannot predict when ``n_neighbors`` exceeds its training rows (a small
    site, a cross-validation fold of ten patients with cui2023's 15 neighbours). Capped, it
    votes with every training row, distance-weighted: the nearest neighbours there are. A grid
    search over ``n_neighbors`` gets its candidates capped to the training rows of its own
    inner folds. Other estimators are left alone.

    Returns
    -------
    tuple or None
        ``(configured, capped)`` when a cap applied (the largest configured count and the cap).
    """
    if isinstance(estimator, KNeighborsClassifier):
        k = int(estimator.n_neighbors)
        if k <= n_rows:
            return None
        estimator.set_params(n_neighbors=max(1, int(n_rows)))
        return k, max(1, int(n_rows))
    if not (isinstance(estimator, GridSearchCV)
            and isinstance(estimator.estimator, KNeighborsClassifier)):
        return None
    cv = estimator.cv
    if isinstance(cv, (list, tuple)):
        n_fit = min(len(tr) for tr, _ in cv)
    else:
        k = cv if isinstance(cv, int) else (5 if cv is None else cv.get_n_splits())
        n_fit = n_rows - -(-n_rows // k)          # the rows left when the largest fold is out
    n_fit = max(1, int(n_fit))
    grids = estimator.param_grid if isinstance(estimator.param_grid, list) \
        else [estimator.param_grid]
    largest = max((int(v) for g in grids for v in g.get("n_neighbors", [])), default=0)
    if largest <= n_fit:
        return None
    capped = [{**g, "n_neighbors": sorted({min(int(v), n_fit) for v in g["n_neighbors"]})}
              if "n_neighbors" in g else g for g in grids]
    estimator.param_grid = capped if isinstance(estimator.param_grid, list) else capped[0]
    return largest, n_fit
