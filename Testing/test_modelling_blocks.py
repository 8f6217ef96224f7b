"""Modelling building blocks: sklearn conventions, ComBat vs neuroCombat, selectors, bundles."""
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from HER2RadiomicsLib.errors import InputError, ModelError
from HER2RadiomicsLib.modelling.harmonization import ComBat
from HER2RadiomicsLib.modelling.transformers import (ColumnSelector, CorrelationFilter,
                                                     LassoSelector, MedianImputer,
                                                     StableFeatureFilter, UnivariateFilter,
                                                     URFModule, VarianceFilter, make_classifier,
                                                     rad_score)
from HER2RadiomicsLib.modelling.nomogram import NomogramModel

# ComBat needs a DataFrame with a site column and NomogramModel named predictors, so
# scikit-learn's generic array-based checks do not apply to them; they are tested below.
@parametrize_with_checks([MedianImputer(), VarianceFilter(), CorrelationFilter(),
                          UnivariateFilter(), LassoSelector(cv=3, n_alphas=5),
                          StableFeatureFilter(), URFModule(), ColumnSelector()])
def test_sklearn_compatible(estimator, check):
    import logging
    logging.disable(logging.WARNING)      # "keeping the smallest p-values" on random data
    try:
        check(estimator)
    finally:
        logging.disable(logging.NOTSET)


def _frame(seed=0, n=120, p=12):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"tumor__f{i}" for i in range(p)])
    y = (X["tumor__f0"] + 0.7 * X["tumor__f1"] + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    return X, y


def test_combat_matches_neurocombat_every_mode():
    neuro = pytest.importorskip("neuroCombat")
    rng = np.random.default_rng(0)
    n, p = 90, 25
    site = np.array(["A"] * 30 + ["B"] * 35 + ["C"] * 25)
    age = rng.normal(55, 10, n)
    X = rng.normal(size=(n, p)) + 0.03 * age[:, None]
    X[site == "B"] += 1.0
    X[site == "C"] *= 2.0
    cols = [f"f{i}" for i in range(p)]
    for kw in (dict(parametric=True, eb=True, mean_only=False),
               dict(parametric=False, eb=True, mean_only=False),
               dict(parametric=True, eb=True, mean_only=True),
               dict(parametric=True, eb=False, mean_only=False)):
        for covs in ((), ("age",)):
            df = pd.DataFrame(X.copy(), columns=cols).assign(site=site)
            if covs:
                df["age"] = age
            ours = ComBat(covariate_cols=covs, **kw).fit_transform(df)[cols].to_numpy()
            ref = neuro.neuroCombat(dat=X.T.copy(), covars=pd.DataFrame({"site": site,
                                                                          "age": age}),
                                    batch_col="site", continuous_cols=list(covs) or None,
                                    **kw)["data"].T
            assert np.abs(ours - ref).max() < 1e-4, (kw, covs)


def test_combat_train_apply_and_errors():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(60, 4)), columns=list("abcd"))
    df["site"] = np.repeat(["A", "B", "C"], 20)
    df.loc[df.site == "B", "a"] += 3
    cb = ComBat().fit(df.iloc[:40])                           # sites A, B
    out = cb.transform(df.iloc[:40])
    assert "site" not in out.columns
    assert abs(out[df.site[:40] == "A"].a.mean() - out[df.site[:40] == "B"].a.mean()) < 0.5
    with pytest.raises(InputError, match="site 'C' was not in the training data"):
        cb.transform(df.iloc[40:])
    cb_avg = ComBat(unknown_site="average").fit(df.iloc[5:40])     # A: 15 cases, B: 20
    avg = cb_avg.transform(df.iloc[40:])
    # the documented rule, worked here: standardise with the pooled mean and variance, remove
    # the sample-size-weighted average of the training sites' shrunken effects, scale back
    w = np.array([15, 20]) / 35
    g = w @ cb_avg.gamma_star_
    d = w @ cb_avg.delta_star_
    Y = df.iloc[40:][list("abcd")].to_numpy()
    s = (Y - cb_avg.grand_mean_) / np.sqrt(cb_avg.var_pooled_)
    expected = (s - g) / np.sqrt(d) * np.sqrt(cb_avg.var_pooled_) + cb_avg.grand_mean_
    np.testing.assert_allclose(avg.to_numpy(), expected, rtol=1e-12, atol=1e-12)
    # and it is neither site's own correction (the average of A's and B's effects)
    for site in "AB":
        own = cb_avg.transform(df.iloc[40:].assign(site=site)).to_numpy()
        assert np.abs(own - expected).max() > 0.1
    with pytest.raises(InputError, match="outcome"):
        ComBat(covariate_cols=("label",), forbidden_covariates=("label",)).fit(
            df.assign(label=0))
    with pytest.raises(InputError, match="at least 2 sites"):
        ComBat().fit(df.iloc[:20])


def test_combat_tolerates_single_case_sites_only_when_asked():
    """The training pipeline's ComBat (small_sites="tolerate") fits cross-validation folds
    that hold one case of a site, or a single site; the default keeps the published method's
    requirements (two sites of two cases)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(21, 4)), columns=list("abcd"))
    df["site"] = ["A"] * 10 + ["B"] * 10 + ["C"]
    df.loc[df.site == "B", list("abcd")] += 2.0
    with pytest.raises(InputError, match="single case"):
        ComBat().fit(df)
    cb = ComBat(small_sites="tolerate").fit(df)
    assert cb.sites_ == ["A", "B"] and cb.pooled_sites_ == ["C"] and "C" in cb.fallback_
    # C's case gets the average of A's and B's effects, as an unseen scanner would
    avg = ComBat(small_sites="tolerate", unknown_site="average").fit(df.iloc[:20])
    np.testing.assert_allclose(cb.transform(df.iloc[20:]).to_numpy(),
                               avg.transform(df.iloc[20:]).to_numpy(), rtol=1e-12)
    # two sites, one of them a single case: nothing to compare, features pass unchanged
    two = df.iloc[:11]
    pt = ComBat(small_sites="tolerate").fit(two)
    assert pt.passthrough_ and pt.fallback_
    np.testing.assert_array_equal(pt.transform(two).to_numpy(), two[list("abcd")].to_numpy())
    with pytest.raises(InputError, match="small_sites"):
        ComBat(small_sites="maybe").fit(df)


def test_correlation_filter_keeps_most_relevant_of_cluster():
    X, y = _frame()
    X["tumor__twin"] = X["tumor__f0"] * 0.99 + 0.01
    kept = CorrelationFilter(threshold=0.8).fit(X, y).selected_features_
    assert "tumor__f0" in kept and "tumor__twin" not in kept
    r = np.abs(np.corrcoef(X[kept].to_numpy(), rowvar=False))
    assert (r[np.triu_indices(len(kept), 1)] <= 0.8).all()


def test_univariate_filter_against_scipy():
    from scipy import stats
    X, y = _frame(2)
    f = UnivariateFilter(test="mannwhitney", p_threshold=0.05).fit(X, y)
    p = [stats.mannwhitneyu(X.loc[y == 1, c], X.loc[y == 0, c]).pvalue for c in X.columns]
    assert np.allclose(f.pvalues_, p)
    assert f.selected_features_ == [c for c, q in zip(X.columns, p) if q < 0.05]
    g = UnivariateFilter(test="ttest", fdr=True).fit(X, y)
    pt = stats.false_discovery_control([stats.ttest_ind(X.loc[y == 1, c], X.loc[y == 0, c])
                                        .pvalue for c in X.columns])
    assert np.allclose(g.pvalues_, pt)


def test_lasso_selects_signal_and_radscore_is_linear_predictor():
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _frame(3, n=200)
    pl = Pipeline([("scale", StandardScaler().set_output(transform="pandas")),
                   ("lasso", LassoSelector(cv=5, n_alphas=15)),
                   ("classifier", make_classifier("logistic"))]).fit(X, y)
    ls = pl.named_steps["lasso"]
    assert {"tumor__f0", "tumor__f1"} <= set(ls.selected_features_)
    z = pl.named_steps["scale"].transform(X)[ls.coef_features_]
    assert np.allclose(rad_score(pl, X), z.to_numpy() @ ls.coef_ + ls.intercept_)
    one = LassoSelector(cv=5, n_alphas=15, one_se=True).fit(X, y)
    assert len(one.selected_features_) <= len(ls.selected_features_)
    top = LassoSelector(cv=5, n_alphas=15, max_features=1).fit(X, y)
    assert top.selected_features_ == ["tumor__f0"]


def test_urf_module_simpson_index():
    X, y = _frame(4)
    funcs = {"tumor__f0": ["a", "b", "c"], "tumor__f5": ["a", "b", "x", "y"],   # 2/3 > 0.6
             "tumor__f6": ["a", "z", "w"]}                                     # 1/3
    u = URFModule(selector=UnivariateFilter(p_threshold=0.001), functions=funcs).fit(X, y)
    assert "tumor__f0" in u.differential_features_
    assert u.auxiliary_features_ == ["tumor__f5"]
    assert set(u.selected_features_) == set(u.differential_features_) | {"tumor__f5"}


def test_stable_filter_and_column_selector():
    X, _ = _frame()
    X["peri_0-3mm__f0"] = 1.0
    X["site"] = "A"
    s = StableFeatureFilter({"tumor__f0": 0.9, "tumor__f1": 0.5}, threshold=0.75).fit(X)
    assert "tumor__f1" not in s.selected_features_ and "tumor__f0" in s.selected_features_
    assert "site" in s.selected_features_                       # unlisted columns kept
    c = ColumnSelector(regions=["peri_0-3mm"], columns=["site"]).fit(X)
    assert c.selected_features_ == ["peri_0-3mm__f0", "site"]
    with pytest.raises(InputError, match="peri_0-5mm"):
        ColumnSelector(regions=["peri_0-5mm"]).fit(X)


@pytest.mark.parametrize("name", ["svm", "random_forest", "decision_tree", "logistic",
                                  "naive_bayes", "mlp", "knn"])
def test_seven_classifiers(name):
    """Each classifier learns the planted rule and generalises: AUC on a held-out set of new
    cases drawn from the same rule (the Bayes AUC here is about 0.85)."""
    from sklearn.metrics import roc_auc_score
    X, y = _frame(5, n=300)
    Xn, yn = _frame(6, n=300)
    m = make_classifier(name).fit(X, y)
    assert roc_auc_score(yn, m.predict_proba(Xn)[:, 1]) > 0.72
    # and on labels with no relation to the features it learns nothing that carries over
    shuffled = np.random.default_rng(1).permutation(y)
    m0 = make_classifier(name).fit(X, shuffled)
    assert abs(roc_auc_score(yn, m0.predict_proba(Xn)[:, 1]) - 0.5) < 0.12


def test_nomogram_odds_ratios_match_statsmodels_and_points():
    import statsmodels.api as sm
    rng = np.random.default_rng(6)
    Z = pd.DataFrame({"rad_score": rng.normal(size=300), "age": rng.normal(55, 10, 300)})
    lp = -0.5 + 1.2 * Z.rad_score + 0.03 * (Z.age - 55)
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-lp.to_numpy()))).astype(int)
    m = NomogramModel(("rad_score", "age")).fit(Z, y)
    ref = sm.Logit(y, sm.add_constant(Z.to_numpy())).fit(disp=0)
    orr = m.odds_ratios()
    assert np.allclose(orr.odds_ratio, np.exp(np.asarray(ref.params)[1:]))
    assert np.allclose(orr.ci_low, np.exp(np.asarray(ref.conf_int())[1:, 0]), rtol=1e-4)
    pts = m.points(Z)
    # total points map monotonically to the linear predictor
    assert np.corrcoef(pts.total, m.decision_function(Z))[0, 1] == pytest.approx(1.0)
    assert pts[["rad_score", "age"]].max().max() <= 100 + 1e-9


# -- bundles -----------------------------------------------------------------------------------

def _tiny_bundle(tmp_path, fmt="skops"):
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    X, y = _frame(7)
    pl = Pipeline([("select", ColumnSelector()), ("scale", StandardScaler().set_output(
        transform="pandas")), ("lasso", LassoSelector(cv=3, n_alphas=5)),
        ("classifier", make_classifier("logistic"))]).fit(X, y)
    meta = {"name": "t", "classes": ["negative", "positive"], "positive_class": "1",
            "input_columns": list(X.columns), "threshold": 0.5, "regions": ["tumor"],
            "params_name": "cui2023", "params_yaml": "", "batch_col": "site"}
    p = save_bundle(tmp_path / f"b_{fmt}.zip", {"pipeline": pl, "nomogram": None}, meta, fmt)
    return p, pl, X


def test_bundle_round_trip_and_integrity(tmp_path):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    p, pl, X = _tiny_bundle(tmp_path)
    b = load_bundle(p)
    assert np.array_equal(b.pipeline.predict_proba(X), pl.predict_proba(X))
    assert b.meta["versions"]["scikit-learn"]
    # tamper with the model bytes: sha256 mismatch
    with zipfile.ZipFile(p) as z:
        meta, blob = z.read("bundle.json"), bytearray(z.read("model.skops"))
    blob[-20] ^= 1
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bundle.json", meta)
        z.writestr("model.skops", bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(bad)


def test_untrusted_type_in_skops_is_refused(tmp_path):
    import skops.io as sio
    from HER2RadiomicsLib.modelling.bundle import load_bundle, save_bundle
    from sklearn.preprocessing import FunctionTransformer
    # a FunctionTransformer holding an arbitrary function: its type is outside the allow-list
    import os
    model = {"pipeline": FunctionTransformer(os.getcwd), "nomogram": None}
    p = save_bundle(tmp_path / "ft.zip", model, {"classes": []})
    with zipfile.ZipFile(p) as z:
        assert any("posix" in t or "os" in t
                   for t in sio.get_untrusted_types(data=z.read("model.skops")))
    with pytest.raises(ModelError, match="allow-list"):
        load_bundle(p)
    # trusted: the very function comes back (not a stand-in)
    assert load_bundle(p, trust=True).pipeline.func is os.getcwd


def test_joblib_bundle_needs_trust(tmp_path):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    p, pl, X = _tiny_bundle(tmp_path, fmt="joblib")
    with pytest.raises(ModelError, match="--trust"):
        load_bundle(p)
    assert np.array_equal(load_bundle(p, trust=True).pipeline.predict_proba(X),
                          pl.predict_proba(X))


def test_version_mismatch_warns(tmp_path):
    from HER2RadiomicsLib.modelling.bundle import version_warnings
    w = version_warnings({"scikit-learn": "0.1", "numpy": np.__version__})
    assert len(w) == 1 and "scikit-learn" in w[0]


def test_combat_estimates_an_external_site_from_its_own_features():
    rng = np.random.default_rng(8)
    df = pd.DataFrame(rng.normal(size=(90, 6)), columns=list("abcdef"))
    df["site"] = np.repeat(["A", "B", "C"], 30)
    df.loc[df.site == "C", "a"] = df.loc[df.site == "C", "a"] * 3 + 5     # strong new-site shift
    cb = ComBat(unknown_site="estimate").fit(df.iloc[:60])
    out = cb.transform(df)
    c = out[df.site == "C"]["a"]
    a = out[df.site == "A"]["a"]
    assert abs(c.mean() - a.mean()) < 0.5 and abs(c.std() / a.std() - 1) < 0.35
    # the transform of the known sites is unchanged by the presence of the new one
    pd.testing.assert_frame_equal(out.iloc[:60], cb.transform(df.iloc[:60]))


def test_hierarchical_classifier_probabilities():
    from HER2RadiomicsLib.modelling.study import HierarchicalClassifier
    rng = np.random.default_rng(9)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = np.where(X.a > 0.6, "positive", np.where(X.b > 0, "low", "zero"))
    h = HierarchicalClassifier(make_classifier("logistic")).fit(X, y)
    P = h.predict_proba(X)
    assert np.allclose(P.sum(axis=1), 1)
    p1 = h.stage1_.predict_proba(X)[:, 1]
    p2 = h.stage2_.predict_proba(X)[:, 1]
    assert np.allclose(P[:, 2], p1) and np.allclose(P[:, 1], (1 - p1) * p2)
    assert (h.predict(X) == y).mean() > 0.85


def test_nested_tuning_wraps_classifier():
    from HER2RadiomicsLib.modelling.study import build_pipeline, load_recipe
    r = load_recipe("yin2024")
    r["tune"] = True
    X, y = _frame(10, n=90)
    pl = build_pipeline(r, ["tumor"], "logistic", use_combat=False).fit(X, y)
    gs = pl.named_steps["classifier"]
    # an independent grid search on the same transformed training data and the same folds
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from HER2RadiomicsLib.modelling.transformers import transform_until
    Xt = transform_until(pl, X)
    ref = GridSearchCV(LogisticRegression(C=1.0, max_iter=5000), {"C": [0.01, 0.1, 1, 10]},
                       cv=StratifiedKFold(3, shuffle=True, random_state=0),
                       scoring="roc_auc").fit(Xt, y)
    assert gs.best_params_ == ref.best_params_
    assert gs.best_score_ == pytest.approx(ref.best_score_, abs=1e-12)
    np.testing.assert_allclose(pl.predict_proba(X), ref.predict_proba(Xt), atol=1e-10)
