"""The fast evaluation paths give the numbers of the slow ones they replaced.

References: scikit-learn's ``roc_curve`` / ``roc_auc_score`` called per resample, and the
one-resample-at-a-time loops the study used before (written out here from their
definitions), on the same seeded resamples.
"""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from HER2RadiomicsLib.modelling import evaluation as E


def _cases(seed, n, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]                                   # both classes
    s = y + rng.normal(size=n)
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_points_and_auc_bit_for_bit_as_sklearn_on_many_resamples(ties):
    checked = 0
    for seed in range(20):
        y, s = _cases(seed, 7 + 3 * seed, ties)
        for idx in E.stratified_bootstrap_indices(y, 25, seed):
            f, t, _ = roc_curve(y[idx], s[idx])
            f2, t2 = E.roc_points(y[idx] == 1, s[idx])
            assert np.array_equal(f, f2) and np.array_equal(t, t2)
            assert E.roc_auc(y[idx], s[idx]) == roc_auc_score(y[idx], s[idx])
            checked += 1
    assert checked == 500


def test_roc_auc_string_labels_one_class_and_non_finite():
    y = np.array(["low", "zero", "low", "zero", "zero"])
    s = np.array([0.9, 0.1, 0.4, 0.5, 0.2])
    assert E.roc_auc(y, s) == roc_auc_score(y, s)     # the larger label is positive
    assert np.isnan(E.roc_auc(np.zeros(4), [0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(E.roc_auc([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4]))


def _f1_loop(y, pred, n_boot, seed):
    """The study's F1 bootstrap before: one resample at a time."""
    def f1(yy, pp):
        t = ((pp == 1) & (yy == 1)).sum()
        d = (pp == 1).sum() + (yy == 1).sum()
        return 2 * t / d if d else 0.0
    return [f1(y[i], pred[i]) for i in E.stratified_bootstrap_indices(y, n_boot, seed)]


@pytest.mark.parametrize("seed", [0, 3])
def test_f1_bootstrap_interval_equals_the_loop(seed):
    y, s = _cases(seed, 90, ties=True)
    thr = 0.4
    m = E.threshold_metrics(y, s, thr, n_boot=700, seed=seed)      # 3 blocks, the last short
    boots = _f1_loop(y, (s >= thr).astype(int), 700, seed)
    assert m["f1_ci_low"] == float(np.percentile(boots, 2.5))
    assert m["f1_ci_high"] == float(np.percentile(boots, 97.5))
    # a threshold above every score: no predicted positive, F1 0 in every resample
    assert E.threshold_metrics(y, s, 99.0, n_boot=50)["f1_ci_high"] == 0.0


def test_blocks_are_the_generator_resamples_in_order():
    """The vectorised draws equal ``choice`` per class and resample: many seeds, sizes from 2
    to 400 cases, 2 or 3 classes (string labels too), more resamples than one block."""
    y = np.r_[np.zeros(13, int), np.ones(8, int)]
    rows = np.vstack(list(E.stratified_bootstrap_blocks(y, 600, 9)))
    assert rows.shape == (600, 21)
    assert np.array_equal(rows, np.vstack(list(E.stratified_bootstrap_indices(y, 600, 9))))
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        n, k = int(rng.integers(2, 400)), int(rng.integers(2, 4))
        y = np.array(["zero", "low", "positive"])[rng.integers(0, k, n)]
        fast = np.vstack(list(E.stratified_bootstrap_blocks(y, 300, seed)))
        assert np.array_equal(fast, np.vstack(list(E.stratified_bootstrap_indices(y, 300, seed))))
    assert not list(E.stratified_bootstrap_blocks([0, 1], 0, 1))


def test_multiclass_macro_bootstrap_matches_sklearn_per_resample():
    rng = np.random.default_rng(2)
    classes = ["zero", "low", "positive"]
    y = np.array(classes * 20)[rng.permutation(60)]
    logits = rng.normal(size=(60, 3)) + 1.5 * (y[:, None] == np.array(classes))
    proba = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)   # ties
    res = E.evaluate_multiclass(y, proba, classes, n_boot=300, seed=4)
    loop = [np.mean([roc_auc_score((y[i] == c).astype(int), proba[i, j])
                     for j, c in enumerate(classes)])
            for i in E.stratified_bootstrap_indices(y, 300, 4)]
    assert res["auc_macro_ci_low"] == pytest.approx(np.percentile(loop, 2.5), abs=1e-12)
    assert res["auc_macro_ci_high"] == pytest.approx(np.percentile(loop, 97.5), abs=1e-12)
    rows = np.vstack(list(E.stratified_bootstrap_indices(y, 300, 4)))
    fast = E._macro_auc_rows(y, proba, classes, rows)
    assert np.max(np.abs(fast - np.asarray(loop))) < 1e-12
    assert res["auc_macro"] == np.mean([roc_auc_score((y == c).astype(int), proba[:, j])
                                        for j, c in enumerate(classes)])


def test_median_imputer_fills_only_gaps_as_fillna_did():
    from HER2RadiomicsLib.modelling.transformers import MedianImputer
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(12, 6)), columns=[f"tumor__f{i}" for i in range(6)])
    X["site"] = list("AB") * 6
    X.iloc[3, 1] = np.nan
    imp = MedianImputer().fit(X)
    Xt = X.copy()
    Xt.iloc[[0, 5], 4] = np.nan
    out = imp.transform(Xt)
    ref = Xt.fillna(value={c: v for c, v in imp.medians_.items()})
    pd.testing.assert_frame_equal(out, ref)
    assert out is not Xt and Xt.isna().sum().sum() == 3      # the input is left alone
    pd.testing.assert_frame_equal(imp.transform(X.iloc[[0, 2]]), X.iloc[[0, 2]])


def test_lasso_path_still_refuses_out_of_range_settings():
    """The penalty path skips scikit-learn's per-fit checks after checking the settings once:
    an out-of-range value is still the same InvalidParameterError (train: one line)."""
    from sklearn.utils._param_validation import InvalidParameterError

    from HER2RadiomicsLib.modelling.transformers import LassoSelector
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 15)
    X = pd.DataFrame(rng.normal(size=(30, 4)) + y[:, None],
                     columns=[f"tumor__f{i}" for i in range(4)])
    for bad in ({"tol": -1.0}, {"max_iter": -1}):
        with pytest.raises(InvalidParameterError):
            LassoSelector(cv=3, n_alphas=4, **bad).fit(X, y)
    with pytest.raises(InvalidParameterError):
        LassoSelector(cv=3, n_alphas=4, estimator="lasso", tol=-1.0).fit(X, y)
    assert LassoSelector(cv=3, n_alphas=4).fit(X, y).coef_.size >= 1
