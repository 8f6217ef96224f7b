"""What every selector of the modelling pipelines shares: scikit-learn-style input checks that
keep DataFrame column names, the base class whose ``transform`` keeps the selected columns, and
the class-relevance score the correlation filter and the LASSO's fallback rank features by.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import InputError


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


def _binary(y):
    y = np.asarray(y)
    classes = np.unique(y)
    return y, classes


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
