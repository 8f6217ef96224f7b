"""scikit-learn building blocks for the studies' modelling pipelines.

Every data-dependent step is a transformer inside one (imbalanced-learn) Pipeline, so
cross-validation refits it per fold and nothing leaks from test to training data:

``ColumnSelector`` (regions / explicit columns) -> ``StableFeatureFilter`` (reader-study ICC) ->
``MedianImputer`` -> ``ComBat`` (harmonisation) -> ``StandardScaler`` (z-score, training only) ->
``SMOTE`` (training folds only) -> ``UnivariateFilter`` / ``URFModule`` ->
``CorrelationFilter`` -> ``LassoSelector`` -> classifier.

All transformers take and return pandas DataFrames (feature names travel with the data) and follow
scikit-learn's conventions: ``__init__`` stores parameters, ``fit`` learns attributes ending in
``_`` and returns ``self``.
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats
import scipy.sparse as sp
from sklearn import config_context
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC, l1_min_c
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import InputError
from .evaluation import roc_auc

log = logging.getLogger(__name__)


def _as_frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    X = np.asarray(X)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


def _check_input(est, X, reset: bool, allow_nan: bool = False, y=None):
    """Validate X the scikit-learn way; returns (DataFrame, input_was_frame).

    Arrays go through ``validate_data`` (dense, 2D, numeric, finite unless ``allow_nan``, and
    the feature count of ``fit``); DataFrames keep their column names and non-numeric columns
    (the site column passes through the selectors) but get the same checks on their numeric
    part.
    """
    name = type(est).__name__
    if sp.issparse(X):
        raise TypeError(f"{name}: sparse input is not supported; pass a dense array or a "
                        "DataFrame")
    if isinstance(X, pd.DataFrame):
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{name}: Found array with {X.shape[0]} sample(s) and "
                             f"{X.shape[1]} feature(s) while a minimum of 1 is required.")
        num = X.select_dtypes(include=[np.number])
        if not allow_nan and num.shape[1] and not np.isfinite(num.to_numpy(dtype=float)).all():
            raise ValueError(f"{name}: Input X contains NaN or infinity; impute first")
        if reset:
            est.n_features_in_ = X.shape[1]
            est.feature_names_in_ = np.array(list(X.columns), dtype=object)
        # not reset: columns are selected by name, so a frame may hold extra columns or
        # lack unused ones; each transform checks the columns it needs and names the missing
        return X, True
    arr = validate_data(est, X, reset=reset,
                        ensure_all_finite="allow-nan" if allow_nan else True,
                        dtype=[np.float64, np.float32])
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])]), False


def _need_two_samples(est, X, y=None):
    if X.shape[0] < 2:
        raise ValueError(f"{type(est).__name__}: n_samples = {X.shape[0]}; at least 2 samples "
                         "are needed")
    if y is not None and len(np.unique(np.asarray(y))) < 2:
        raise ValueError(f"{type(est).__name__}: y has only 1 class; at least 2 are needed")


class _Selector(TransformerMixin, BaseEstimator):
    """Base: subclasses set ``selected_features_`` in ``fit``; transform keeps those columns.

    DataFrame in, DataFrame out (names travel with the data); array in, array out (columns
    are then named x0, x1, ... internally).
    """

    _allow_nan = False

    def transform(self, X):
        check_is_fitted(self, "selected_features_")
        X, was_frame = _check_input(self, X, reset=False, allow_nan=self._allow_nan)
        missing = [c for c in self.selected_features_ if c not in X.columns]
        if missing:
            raise InputError(f"{type(self).__name__}: {len(missing)} feature(s) missing, e.g. "
                             f"{missing[:3]}")
        out = X[list(self.selected_features_)]
        return out if was_frame else out.to_numpy()

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "selected_features_")
        return np.array(self.selected_features_, dtype=object)

    def _validated(self, X, y=None, two=False):
        X, _ = _check_input(self, X, reset=True, allow_nan=self._allow_nan)
        if two:
            _need_two_samples(self, X, y)
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._allow_nan
        return tags


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


def _binary(y):
    y = np.asarray(y)
    classes = np.unique(y)
    return y, classes


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


def _relevance(A, y):
    classes = np.unique(y)
    if len(classes) == 2:
        ranks = stats.rankdata(A, axis=0)
        pos = y == classes[1]
        n1, n0 = pos.sum(), (~pos).sum()
        auc = (ranks[pos].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
        return np.abs(auc - 0.5)
    with np.errstate(all="ignore"):
        f = stats.f_oneway(*[A[y == c] for c in classes]).statistic
    return np.nan_to_num(f)


# CV path settings. Weak penalties on nearly separable folds make liblinear iterate to its
# limit (seconds per fit) while their CV score has long stopped improving, so the path uses at
# most CV_MAX_ITER iterations per fit and stops after PATH_PATIENCE consecutive grid points
# without a better CV score (glmnet-style path truncation). The final fit is unaffected.
CV_MAX_ITER = 200
PATH_PATIENCE = 5


class LassoSelector(_Selector):
    """L1-penalised selection with k-fold CV over a log grid (the studies' LASSO step).

    Parameters
    ----------
    cv : int
        Folds (10 in zhao2025 / yin2024).
    n_alphas : int
        Grid points over ``decades`` decades of the penalty.
    decades : float
        Width of the log grid (zhao2025: 4).
    one_se : bool
        Choose the strongest penalty whose CV score is within one standard error of the best.
    max_features : int, optional
        Keep at most this many features (largest |coefficient|), e.g. yin2024's top 7.
    estimator : {"logistic", "lasso"}
        L1 logistic regression (classification, default) or LASSO regression on the 0/1 label
        (zhao2025's wording); multiclass labels use the logistic form.
    max_iter, tol, random_state :
        Solver settings (zhao2025's recipe: 100000, 1e-4, 15). The default max_iter is
        10000: on nearly separable training data liblinear otherwise spends tens of seconds
        per fit at weak penalties without changing which features are selected.
    passthrough : sequence of str
        Columns kept without penalisation (clinical variables).
    screen : estimator, optional
        Supervised filters that precede the LASSO in the protocol (univariate tests, the
        relevance-ranked correlation filter). They are fitted inside every inner CV fold on
        that fold's training rows only, then once on all rows for the final fit: screening
        all rows first would let the inner CV score features already chosen with its own
        validation rows (on pure noise that inner CV reached AUC 0.89-0.97).
    resample : sampler, optional
        An oversampler (SMOTE) applied to the inner training rows of every fold and to all
        rows for the final fit, never to validation rows.

    ``fit(X, y, groups=None)``: with ``groups`` (patient ids) the inner folds are
    stratified *and* grouped, so a patient's images never sit on both sides of a fold.

    Attributes
    ----------
    coef_ : ndarray
        Coefficients of the selected features (``coef_features_``) at the chosen penalty;
        for more than two classes, the largest absolute one-vs-rest coefficient (a ranking,
        not a Rad-score: see ``class_coef_``).
    class_coef_, class_intercept_ : ndarray or None
        More than two classes: the signed one-vs-rest coefficients (classes x features) and
        intercepts, one Rad-score per class (:func:`rad_score_per_class`).
    intercept_ : float
    alpha_ : float
        Chosen penalty (``C = 1 / alpha`` for the logistic form).
    """

    # Documented exception to the library's "at most 8 parameters": a scikit-learn estimator
    # lists every hyper-parameter in __init__ (get_params / set_params / clone, grid search
    # and the recipes' step settings read them from this signature), so they cannot be
    # grouped into a config object without breaking cloning and the recipe validation.
    def __init__(self, cv=10, n_alphas=30, decades=4.0, one_se=False, max_features=None,
                 estimator="logistic", max_iter=10000, tol=1e-4, random_state=15,
                 passthrough=(), min_features=1, screen=None, resample=None):
        self.cv = cv
        self.n_alphas = n_alphas
        self.decades = decades
        self.one_se = one_se
        self.max_features = max_features
        self.estimator = estimator
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.passthrough = passthrough
        self.min_features = min_features
        self.screen = screen
        self.resample = resample

    def _prepare(self, A, y, cols):
        """Resample then screen rows ``A`` (the fold's training part); returns the prepared
        matrix, its labels, the kept column indices and the fitted screen."""
        if self.resample is not None:
            sampler = clone(self.resample)
            if "k_neighbors" in sampler.get_params():
                # SMOTE needs k neighbours inside the minority class of this fold
                minority = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
                k = sampler.get_params()["k_neighbors"]
                if isinstance(k, int):
                    sampler.set_params(k_neighbors=max(1, min(k, minority - 1)))
            A, y = sampler.fit_resample(A, y)
        keep = np.arange(A.shape[1])
        screen = None
        if self.screen is not None:
            screen = clone(self.screen).fit(pd.DataFrame(A, columns=cols), y)
            names = list(screen.get_feature_names_out(cols)) if hasattr(
                screen, "get_feature_names_out") else list(screen.selected_features_)
            pos = {c: j for j, c in enumerate(cols)}
            keep = np.array(sorted(pos[c] for c in names), dtype=int)
        return A[:, keep], np.asarray(y), keep, screen

    def fit(self, X, y, groups=None):
        type_of_target(y, input_name="y", raise_unknown=True)
        X = self._validated(X, y, two=True)
        cols = [c for c in X.columns if c not in (self.passthrough or ())]
        A_all = X[cols].to_numpy(dtype=float)
        y_all = np.asarray(y)
        classes = np.unique(y_all)
        counts = np.array([(y_all == c).sum() for c in classes])
        folds = int(max(2, min(self.cv, counts.min())))
        if groups is not None:
            groups = np.asarray(groups)
            folds = int(max(2, min(folds, len(np.unique(groups)))))
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=self.random_state)
            splits = list(splitter.split(A_all, y_all, groups))
        else:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            splits = list(splitter.split(A_all, y_all))
        # every fold's training rows resampled and screened on their own; validation rows
        # untouched (only transformed by the fold's screen)
        prepared = []
        for tr, va in splits:
            Atr, ytr, keep, _ = self._prepare(A_all[tr], y_all[tr], cols)
            prepared.append((Atr, ytr, A_all[va][:, keep], y_all[va]))
        # the final fit's data, also the penalty grid's reference
        A, y, keep_final, self.screen_ = self._prepare(A_all, y_all, cols)
        cols = [cols[j] for j in keep_final]
        self.screened_features_ = list(cols)
        use_lasso = self.estimator == "lasso" and len(classes) == 2
        if use_lasso:
            yy = (y == classes[1]).astype(float)
            amax = np.abs(A.T @ (yy - yy.mean())).max() / len(yy)
            alphas = amax * np.logspace(0, -self.decades, self.n_alphas)

            def model(a, max_iter=None):
                return Lasso(alpha=a, max_iter=max_iter or self.max_iter, tol=self.tol,
                             random_state=self.random_state)
            target = yy
        else:
            # C grid from the smallest C at which any feature enters, over `decades` decades
            c0 = min(l1_min_c(A, (y == c).astype(int), loss="log") for c in classes[1:])
            alphas = 1.0 / (c0 * np.logspace(0.05, self.decades, self.n_alphas))

            def model(a, max_iter=None):
                # l1_ratio=1 is the L1 penalty (scikit-learn >= 1.8 deprecates penalty="l1")
                lr = LogisticRegression(l1_ratio=1.0, C=1.0 / a, solver="liblinear",
                                        max_iter=max_iter or self.max_iter, tol=self.tol,
                                        random_state=self.random_state)
                if len(classes) == 2:
                    return lr
                # one L1 model per class (liblinear is far faster than multinomial saga)
                return OneVsRestClassifier(lr)
            target = y

        def score(m, Ava, yva):
            """AUC of one fold: the LASSO's fitted values (a regressor) or the logistic
            decision function; one-vs-rest macro AUC for more classes."""
            # two classes: evaluation.roc_auc, scikit-learn's value bit for bit without its
            # input checks (they were a third of a study run's time: ~10 folds x 20
            # penalties per LASSO fit); NaN for a fold without both classes, as before
            if use_lasso:
                return roc_auc(yva == classes[1], m.predict(Ava))
            if len(classes) == 2:
                return roc_auc(yva, m.decision_function(Ava))
            try:
                return roc_auc_score(yva, m.predict_proba(Ava), multi_class="ovr",
                                     labels=classes)
            except ValueError:          # a fold without every class
                return np.nan
        means, ses = [], []
        best_so_far, since_best = -np.inf, 0
        # the path's hundreds of small fits all take finite, validated arrays and one set of
        # settings: those are checked once here (a recipe's out-of-range value is the same
        # InvalidParameterError as before), then scikit-learn's per-call checks are skipped
        # (~30 % of a LASSO fit; the same numbers)
        first = model(alphas[0], min(self.max_iter, CV_MAX_ITER))
        getattr(first, "estimator", first)._validate_params()
        with warnings.catch_warnings(), config_context(assume_finite=True,
                                                       skip_parameter_validation=True):
            warnings.simplefilter("ignore")
            for a in alphas:
                sc = []
                for Atr, ytr, Ava, yva in prepared:
                    if Atr.shape[1] == 0:
                        sc.append(np.nan)
                        continue
                    t = (ytr == classes[1]).astype(float) if use_lasso else ytr
                    m = model(a, min(self.max_iter, CV_MAX_ITER)).fit(Atr, t)
                    sc.append(score(m, Ava, yva))
                sc = np.asarray(sc, dtype=float)
                means.append(np.nanmean(sc) if np.isfinite(sc).any() else np.nan)
                ses.append(np.nanstd(sc, ddof=1) / math.sqrt(max(1, np.isfinite(sc).sum()))
                           if np.isfinite(sc).sum() > 1 else 0.0)
                if means[-1] > best_so_far + 1e-4:
                    best_so_far, since_best = means[-1], 0
                else:
                    since_best += 1
                    if since_best >= PATH_PATIENCE:
                        break
        alphas = alphas[:len(means)]
        means, ses = np.array(means), np.array(ses)
        best = int(np.nanargmax(means))
        if self.one_se:
            ok = np.where(means >= means[best] - ses[best])[0]
            best = int(ok.min())        # alphas descend: smallest index = strongest penalty
        self.alpha_ = float(alphas[best])
        self.cv_alphas_, self.cv_mean_, self.cv_se_ = np.asarray(alphas), means, ses
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            final = model(self.alpha_).fit(A, target)
        self.n_iter_ = int(np.max(np.concatenate([np.atleast_1d(e.n_iter_) for e in (
            final.estimators_ if hasattr(final, "estimators_") else [final])])))
        if hasattr(final, "estimators_"):
            coef = np.vstack([e.coef_ for e in final.estimators_])
            final_icpt = np.concatenate([e.intercept_ for e in final.estimators_])
        else:
            coef = np.atleast_2d(final.coef_)
            final_icpt = np.atleast_1d(final.intercept_)
        mag = np.abs(coef).max(axis=0)
        order = np.argsort(-mag, kind="stable")
        nz = [j for j in order if mag[j] > 0]
        if self.max_features:
            nz = nz[:self.max_features]
        self.fallback_ = None
        screen_fb = [getattr(st, "fallback_", None) for st in (
            [st for _, st in self.screen_.steps] if hasattr(self.screen_, "steps")
            else [self.screen_])]
        if len(nz) < self.min_features:
            # the CV optimum kept nothing: take the strongest univariate features instead
            nz = list(np.argsort(-_relevance(A, y), kind="stable")[:self.min_features])
            screen_fb.append(f"LASSO: no feature survived the chosen penalty; kept the "
                             f"{self.min_features} most relevant (fallback, not in the paper)")
            log.warning("LassoSelector: no feature survived the penalty; keeping the %d most "
                        "relevant", self.min_features)
        self.fallback_ = "; ".join(f for f in screen_fb if f) or None
        nz = sorted(nz)
        vals = coef[-1] if coef.shape[0] == 1 else mag
        self.coef_ = np.asarray([vals[j] for j in nz], dtype=float)
        self.coef_features_ = [cols[j] for j in nz]
        self.intercept_ = float(final_icpt[-1])
        self.classes_ = classes
        # more than two classes: one one-vs-rest linear predictor per class (its own signed
        # coefficients and intercept); coef_ then only ranks the features (largest |coef|)
        self.class_coef_ = coef[:, nz] if coef.shape[0] > 1 else None
        self.class_intercept_ = np.asarray(final_icpt, float) if coef.shape[0] > 1 else None
        self.selected_features_ = [cols[j] for j in nz] + \
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
