"""Evaluation statistics against independent references (brute force, sklearn, statsmodels)."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from HER2RadiomicsLib.modelling import evaluation as E


def brute_delong(y, a, b):
    """DeLong 1988 from its definition: structural components by pairwise comparison."""
    y = np.asarray(y).astype(bool)

    def comps(s):
        X, Y = s[y], s[~y]
        psi = (X[:, None] > Y[None]).astype(float) + 0.5 * (X[:, None] == Y[None])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)
    (A1, V10a, V01a), (A2, V10b, V01b) = comps(a), comps(b)
    m, n = y.sum(), (~y).sum()
    S10 = np.cov(np.vstack([V10a, V10b]))
    S01 = np.cov(np.vstack([V01a, V01b]))
    S = S10 / m + S01 / n
    return np.array([A1, A2]), S


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_definition(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    a = np.round(y + rng.normal(size=80), 1)          # ties on purpose
    b = np.round(0.5 * y + rng.normal(size=80), 1)
    aucs, cov = E.delong(y, np.vstack([a, b]))
    ref_aucs, ref_cov = brute_delong(y, a, b)
    assert np.allclose(aucs, ref_aucs, atol=1e-12)
    assert np.allclose(cov, ref_cov, atol=1e-12)
    assert aucs[0] == pytest.approx(roc_auc_score(y, a))
    t = E.delong_test(y, a, b)
    z = (ref_aucs[0] - ref_aucs[1]) / np.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    assert t["z"] == pytest.approx(z) and t["p"] == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_bootstrap_vectorised_equals_sklearn_per_resample():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    s = np.round(y + rng.normal(size=60), 1)
    res = E.auc_bootstrap_ci(y, s, n_boot=50, seed=3)
    pi, ni = E._bootstrap_matrix(y, 50, 3)
    for r in (0, 17, 49):
        idx = np.concatenate([pi[r], ni[r]])
        assert res["boot"][r] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    assert res["ci_low"] < res["auc"] < res["ci_high"]
    # stratified: every resample keeps the class sizes
    assert pi.shape[1] == (y == 1).sum() and ni.shape[1] == (y == 0).sum()


def test_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint
    for k, n in ((0, 10), (3, 10), (45, 50), (7, 7)):
        lo, hi = E.wilson_ci(k, n)
        rlo, rhi = proportion_confint(k, n, method="wilson")
        assert (lo, hi) == pytest.approx((rlo, rhi), abs=1e-12)


def test_youden_and_threshold_metrics():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    t = E.youden_threshold(y, s)
    assert t == pytest.approx(0.7)          # sens 0.75, spec 1.0 -> J = 0.75 (max)
    m = E.threshold_metrics(y, s, t, n_boot=100)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 0, 4, 1)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 1.0 and m["ppv"] == 1.0
    assert m["npv"] == pytest.approx(0.8) and m["f1"] == pytest.approx(6 / 7)


def test_calibration_slope_of_a_perfect_model_is_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    c = E.calibration(y, p)
    assert c["slope"] == pytest.approx(1.0, abs=0.06)
    assert c["intercept"] == pytest.approx(0.0, abs=0.05)
    assert c["brier"] == pytest.approx(np.mean(p * (1 - p)), abs=0.005)
    # an over-confident model (logits doubled) has slope ~ 0.5
    lg = np.log(p / (1 - p)) * 2
    c2 = E.calibration(y, 1 / (1 + np.exp(-lg)))
    assert c2["slope"] == pytest.approx(0.5, abs=0.05)


def test_decision_curve_formula():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    d = E.decision_curve(y, p, thresholds=[0.5]).iloc[0]
    # at 0.5: TP = 1, FP = 1 of n = 5; weight 1
    assert d["model"] == pytest.approx(1 / 5 - 1 / 5)
    assert d["treat_all"] == pytest.approx(0.4 - 0.6)
    assert d["treat_none"] == 0


def test_multiclass_macro_auc():
    rng = np.random.default_rng(1)
    y = np.array(["zero", "low", "positive"] * 30)
    P = rng.dirichlet([1, 1, 1], size=90)
    r = E.evaluate_multiclass(y, P, ["zero", "low", "positive"], n_boot=100)
    ref = np.mean([roc_auc_score(y == c, P[:, j]) for j, c in enumerate(["zero", "low",
                                                                         "positive"])])
    assert r["auc_macro"] == pytest.approx(ref)
    assert r["auc_low_vs_rest"] == pytest.approx(roc_auc_score(y == "low", P[:, 1]))


def test_reported_delong_ci_is_auc_plus_minus_z_times_sqrt_variance():
    """The interval the reports print: se is the square root of the brute-force DeLong
    variance (not the variance), and the bounds are AUC -/+ 1.959964 se (issue 14, item 12).
    A 'se = var' bug makes the interval ~20x too narrow at these sizes."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 120)
    s = np.round(0.8 * y + rng.normal(size=120), 2)
    _, ref_cov = brute_delong(y, s, s)
    var = ref_cov[0, 0]
    res = E.auc_delong_ci(y, s)
    assert res["se"] == pytest.approx(np.sqrt(var), rel=1e-12)
    assert res["se"] > 5 * var                                  # sqrt, not the variance
    auc = roc_auc_score(y, s)
    assert res["ci_low"] == pytest.approx(auc - 1.959963984540054 * np.sqrt(var), rel=1e-12)
    assert res["ci_high"] == pytest.approx(auc + 1.959963984540054 * np.sqrt(var), rel=1e-12)


def test_bootstrap_bounds_are_the_percentiles_of_the_stored_resamples():
    """The CI bounds are the 2.5th and 97.5th percentiles (numpy's linear rule, worked by
    sorting) of the resample AUCs the function returns, each recomputed with scikit-learn."""
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 50)
    s = np.round(y + rng.normal(size=50), 1)
    res = E.auc_bootstrap_ci(y, s, n_boot=201, seed=5)
    pi, ni = E._bootstrap_matrix(y, 201, 5)
    boots = np.array([roc_auc_score(y[np.r_[pi[r], ni[r]]], s[np.r_[pi[r], ni[r]]])
                      for r in range(201)])
    ordered = np.sort(boots)
    # 201 resamples: the 2.5th percentile sits at index 0.025 * 200 = 5, the 97.5th at 195
    assert res["ci_low"] == pytest.approx(ordered[5], abs=1e-12)
    assert res["ci_high"] == pytest.approx(ordered[195], abs=1e-12)


def test_net_benefit_where_the_weight_is_not_one():
    """Worked by hand at threshold 0.2 (weight 0.2 / 0.8 = 0.25): 10 cases, 4 positive;
    predicted positive (p >= 0.2): 3 true, 3 false positives."""
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.2, 0.1, 0.7, 0.3, 0.25, 0.15, 0.1, 0.05])
    d = E.decision_curve(y, p, thresholds=[0.2]).iloc[0]
    assert d["model"] == pytest.approx(3 / 10 - 3 / 10 * 0.25)          # 0.225
    assert d["treat_all"] == pytest.approx(4 / 10 - 6 / 10 * 0.25)      # 0.25
    d = E.decision_curve(y, p, thresholds=[0.6]).iloc[0]                 # weight 1.5
    assert d["model"] == pytest.approx(1 / 10 - 1 / 10 * 1.5)


def test_youden_threshold_keeps_the_scores_scale():
    """On Rad-score-like values (not probabilities) the threshold is the score that
    maximises sensitivity + specificity - 1, found by trying every score: it was clipped
    to 1.0 (issue 14, item 4)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(5 + 1.5 * y + rng.normal(size=200), 2)             # values ~3 to ~9
    best, best_j = None, -1.0
    for t in np.unique(s)[::-1]:          # highest first: ties go to the higher threshold
        pred = s >= t
        j = (pred & (y == 1)).sum() / (y == 1).sum() - (pred & (y == 0)).sum() / (y == 0).sum()
        if j > best_j + 1e-12:
            best, best_j = t, j
    assert E.youden_threshold(y, s) == pytest.approx(best)
    assert E.youden_threshold(y, s) > 1.0
    # nobody can be separated (one class only scores): just above the largest score
    flat = np.full(10, 7.5)
    assert E.youden_threshold(np.r_[np.zeros(5), np.ones(5)].astype(int), flat) > 7.5
