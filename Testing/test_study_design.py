"""Scientific fidelity (issue 14): per-class Rad-scores, fold change on unscaled features,
repeated splits that choose their scenario again, patient-level evaluation units."""
import numpy as np
import pandas as pd
import pytest

from HER2RadiomicsLib.errors import InputError


def _three_class(n=240, p=30, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, p))
    X[:, 0] += 1.5 * (y == 0)
    X[:, 1] -= 1.5 * (y == 1)
    X[:, 2] += 1.5 * (y == 2)
    classes = np.array(["zero", "low", "positive"])
    return pd.DataFrame(X, columns=[f"tumor__f{j}" for j in range(p)]), classes[y]


def test_three_class_rad_scores_are_the_one_vs_rest_linear_predictors():
    """Each class's Rad-score equals the decision function of an independently fitted
    one-vs-rest L1 logistic model at the chosen penalty (sklearn's own); a single Rad-score is
    refused (it used to mix unsigned max-|coef| values with the last class's intercept)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    from HER2RadiomicsLib.modelling.transformers import (LassoSelector, rad_score,
                                                         rad_score_per_class)
    X, y = _three_class()
    pipe = Pipeline([("lasso", LassoSelector(cv=5, n_alphas=10, decades=3)),
                     ("classifier", LogisticRegression(max_iter=2000))]).fit(X, y)
    ls = pipe.named_steps["lasso"]
    ref = OneVsRestClassifier(LogisticRegression(
        l1_ratio=1.0, C=1.0 / ls.alpha_, solver="liblinear", max_iter=10000, tol=1e-4,
        random_state=15)).fit(X.to_numpy(), y)
    per = rad_score_per_class(pipe, X)
    assert list(per.columns) == list(ref.classes_)
    # every feature with a non-zero coefficient was kept (no max_features), so the kept
    # columns reproduce the full decision function
    np.testing.assert_allclose(per.to_numpy(), ref.decision_function(X.to_numpy()),
                               rtol=1e-6, atol=1e-8)
    # signs differ between classes for f1 (low is lower): unsigned values could not do that
    j = ls.coef_features_.index("tumor__f1")
    by_class = dict(zip(ls.classes_, ls.class_coef_[:, j]))
    assert by_class["low"] < 0 < by_class["zero"] or by_class["low"] < 0 < by_class["positive"]
    with pytest.raises(InputError, match="per class"):
        rad_score(pipe, X)


def test_prediction_card_shows_per_class_rad_scores(tmp_path):
    from HER2RadiomicsLib.modelling.bundle import load_bundle, save_bundle
    from HER2RadiomicsLib.modelling.predict import predict_rows
    from HER2RadiomicsLib.modelling.transformers import (ColumnSelector, LassoSelector,
                                                         rad_score_per_class)
    from imblearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression
    X, y = _three_class()
    pipe = Pipeline([("select", ColumnSelector(regions=["tumor"])),
                     ("lasso", LassoSelector(cv=5, n_alphas=10, decades=3)),
                     ("classifier", LogisticRegression(max_iter=2000))]).fit(X, y)
    meta = {"name": "t", "recipe": "t", "task": "three_class", "label_col": "her2",
            "classes": ["zero", "low", "positive"], "positive_class": None,
            "input_columns": list(X.columns), "regions": ["tumor"], "params_name": "cui2023",
            "params_yaml": "", "params_hash": "", "batch_col": "site", "sites": [],
            "clinical": []}
    save_bundle(tmp_path / "b.zip", {"pipeline": pipe, "nomogram": None}, meta)
    b = load_bundle(tmp_path / "b.zip")
    preds = predict_rows(b, X.iloc[:3].assign(case_id=["a", "b", "c"]))
    ref = rad_score_per_class(pipe, X.iloc[:3])
    for i, pr in enumerate(preds):
        assert pr.rad_score is None
        assert pr.class_rad_scores == pytest.approx(ref.iloc[i].to_dict())
        assert f"rad_score_{pr.predicted_class}_vs_rest" in pr.as_row()


def test_fold_change_is_computed_on_unscaled_features(tmp_path):
    """cui2023's rule 'fold change > t' compares the features' own class means: a feature
    whose raw means differ by 20% fails t = 1.5 and is dropped. Computed after z-scoring (the
    old step order) the means straddle 0 and every feature passed."""
    from HER2RadiomicsLib.modelling.study import build_pipeline, load_recipe
    rng = np.random.default_rng(2)
    n = 200
    y = rng.integers(0, 2, n)
    small = 100 * (1 + 0.2 * y) + rng.normal(0, 5, n)     # p << 0.05, ratio 1.2
    big = 100 * (1 + 1.0 * y) + rng.normal(0, 5, n)       # p << 0.05, ratio 2.0
    X = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "tumor__small": small,
                      "tumor__big": big, "tumor__noise": rng.normal(50, 5, n)})
    r = load_recipe("cui2023")
    r["pipeline"] = [{"urf": {**s["urf"], "fold_change": 1.5, "min_features": 1}}
                     if isinstance(s, dict) and "urf" in s else s for s in r["pipeline"]]
    names = [s if isinstance(s, str) else next(iter(s)) for s in r["pipeline"]]
    assert names.index("urf") < names.index("scale")
    pipe = build_pipeline(r, ["tumor"], "logistic").fit(X, y)
    assert pipe.named_steps["urf"].selected_features_ == ["tumor__big"]
    # a recipe that scales first is refused, not silently wrong
    r["pipeline"] = ["scale"] + [s for s in r["pipeline"] if s != "scale"]
    with pytest.raises(InputError, match="before 'scale'"):
        build_pipeline(r, ["tumor"], "logistic")


def test_repeated_splits_choose_the_scenario_again_in_every_split():
    """With several scenarios, each repeated split picks its own by training out-of-fold AUC:
    a scenario fixed in advance (here the useless one) would give chance AUCs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from HER2RadiomicsLib.modelling.splits import Design, Target, repeated_splits
    from HER2RadiomicsLib.modelling.transformers import ColumnSelector
    rng = np.random.default_rng(4)
    n = 160
    y = rng.integers(0, 2, n)
    dev = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)],
                        "patient_id": [f"p{i}" for i in range(n)],
                        "tumor__a": y * 2.0 + rng.normal(size=n),
                        "noise__a": rng.normal(size=n)})

    def maker(region):
        return lambda yt=None: make_pipeline(ColumnSelector(regions=[region]),
                                             LogisticRegression())
    design = Design(repeats=4, seed=1, test_size=0.3)
    aucs, chosen = repeated_splits({"useless": maker("noise"), "useful": maker("tumor")},
                                   dev, y, Target([0, 1], "1"), design)
    assert chosen == ["useful"] * 4
    assert min(aucs) > 0.8
    fixed, _ = repeated_splits(maker("noise"), dev, y, Target([0, 1], "1"), design)
    assert max(abs(a - 0.5) for a in fixed) < 0.25


def test_unit_level_means_per_patient_and_refuses_mixed_labels():
    from HER2RadiomicsLib.modelling.study import unit_level
    X = pd.DataFrame({"case_id": ["a1", "a2", "b1", "c1", "c2", "c3"],
                      "patient_id": ["A", "A", "B", "C", "C", "C"]})
    y = np.array([1, 1, 0, 1, 1, 1])
    ids, yu, su = unit_level(X, y, np.array([0.2, 0.4, 0.9, 0.1, 0.2, 0.6]))
    assert list(ids) == ["A", "B", "C"] and list(yu) == [1, 0, 1]
    np.testing.assert_allclose(su, [0.3, 0.9, 0.3])
    P = np.array([[0.2, 0.8], [0.4, 0.6], [1, 0], [0, 1], [0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(unit_level(X, y, P)[2], [[0.3, 0.7], [1, 0], [0.2, 0.8]])
    ids, yu, su = unit_level(X, y, np.arange(6.0), "images")
    assert list(ids) == list(X.case_id) and list(su) == list(range(6))
    with pytest.raises(InputError, match="different labels"):
        unit_level(X, np.array([1, 0, 0, 1, 1, 1]), np.zeros(6))


def test_fallbacks_not_in_the_papers_are_reported_when_they_fire(tmp_path):
    """A univariate filter that keeps its minimum because (almost) nothing passes is named in
    the run's notes and report; without the fallback firing, no such note."""
    from HER2RadiomicsLib.modelling.study import StudyOptions, load_recipe, run
    rng = np.random.default_rng(5)
    n = 120
    y = rng.integers(0, 2, n)
    feats = pd.DataFrame(rng.normal(size=(n, 40)), columns=[f"tumor__f{j}" for j in range(40)])
    feats.insert(0, "case_id", [f"c{i}" for i in range(n)])
    pd.DataFrame({"case_id": feats.case_id, "patient_id": feats.case_id,
                  "her2": np.where(y == 1, "low", "zero"), "site": "A"}).to_csv(
        tmp_path / "labels.csv", index=False)
    feats.to_csv(tmp_path / "features.csv", index=False)
    r = load_recipe("peritumoral2025")
    r["scenarios"], r["clinical"] = {"intra": ["tumor"]}, []
    r["evaluation"] = {"test_size": 0.3, "external_site": None, "repeats": 0,
                       "bootstrap": 100, "seed": 1}
    r["pipeline"] = ["impute", "scale",
                     {"univariate": {"test": "mannwhitney", "p_threshold": 1e-9,
                                     "min_features": 5}},
                     {"lasso": {"cv": 5, "n_alphas": 8, "decades": 3}}]
    from HER2RadiomicsLib.reports.study import render_study
    s = render_study(run(r, tmp_path / "features.csv", tmp_path / "labels.csv", tmp_path / "a",
                         StudyOptions(progress=False, make_bundle=False)))
    fired = [n for n in s["notes"] if "fallback" in n]
    assert fired and "kept the 5 smallest p-values" in fired[0]
    assert "kept the 5 smallest p-values" in (tmp_path / "a" / "report.html").read_text()
    r["pipeline"][2] = {"univariate": {"test": "mannwhitney", "p_threshold": 1.0,
                                       "min_features": 5}}
    s = run(r, tmp_path / "features.csv", tmp_path / "labels.csv", tmp_path / "b",
            StudyOptions(progress=False, make_bundle=False)).summary
    assert not [n for n in s["notes"] if "univariate filter" in n]


def test_clinical_variables_enter_by_univariate_logistic_p_values():
    """The papers' clinical model: each candidate alone in a logistic regression on the
    training patients; p < 0.05 enters. p-values equal statsmodels' Logit."""
    import statsmodels.api as sm

    from HER2RadiomicsLib.modelling.splits import StudyData
    from HER2RadiomicsLib.modelling.study import _univariate_clinical
    rng = np.random.default_rng(8)
    n = 200
    strong = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-1.5 * strong))).astype(int)
    X = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)],
                      "patient_id": [f"p{i}" for i in range(n)],
                      "strong": strong, "noise": rng.normal(size=n)})
    d = StudyData(dev=X, ydev=y, dext=X.iloc[:0], yext=y[:0], Xtr=X, ytr=y, Xte=X.iloc[:0],
                  yte=y[:0])
    kept, p = _univariate_clinical(d, ["strong", "noise"], 0.05)
    for c in ("strong", "noise"):
        ref = sm.Logit(y, sm.add_constant(X[[c]].to_numpy())).fit(disp=0).pvalues[1]
        assert p[c] == pytest.approx(ref, rel=1e-6)
    assert kept == ["strong"] and p["noise"] > 0.05


def test_synthetic_cohort_carries_ihc_fish_groups_and_sln(cohort):
    c = pd.read_csv(cohort / "cohort.csv")
    assert set(c.her2_ihc_fish) <= {"0", "1+", "2+/FISH-", "2+/FISH+", "3+"}
    two = c[c.her2_ihc == "2+"]
    assert ((two.her2 == "low") == (two.her2_ihc_fish == "2+/FISH-")).all()
    assert set(c.sln) <= {0, 1}
    assert (c.groupby("patient_id").sln.nunique() == 1).all()       # one node status each


@pytest.mark.parametrize("preset, images, count", [("yin2024", 14, 1311), ("zhao2025", 10, 939)])
def test_preset_feature_counts_are_those_the_deviations_table_states(preset, images, count):
    """The Deviations table (docs/presets.md): 93 first-order and texture features per image plus
    9 2D shape features; neither paper's count (1,561, 1,409) minus 9 is a multiple of 93."""
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    rng = np.random.default_rng(0)
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(rng.rayleigh(40, (64, 64)).astype(np.float32))
    img.SetSpacing((0.25, 0.25))
    m = np.zeros((64, 64), np.uint8)
    m[20:44, 18:46] = 1
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    feats, _ = FeatureExtractor(preset).extract(img, {"tumor": msk})
    assert len(feats) == count == images * 93 + 9
    shape = [k for k in feats if "_shape2D_" in k]
    assert len(shape) == 9
    for paper in (1561, 1409):
        assert (paper - 9) % 93 != 0


def test_three_class_univariate_tests_are_named_in_the_notes(tmp_path):
    from HER2RadiomicsLib.modelling.study import StudyOptions, load_recipe, run
    X, y = _three_class(n=150, p=12, seed=3)
    X.insert(0, "case_id", [f"c{i}" for i in range(len(X))])
    X.to_csv(tmp_path / "f.csv", index=False)
    pd.DataFrame({"case_id": X.case_id, "patient_id": X.case_id, "her2": y,
                  "site": "A"}).to_csv(tmp_path / "l.csv", index=False)
    r = load_recipe("zhao2025")
    r["pipeline"] = ["scale", "smote", {"univariate": {"test": "ttest", "min_features": 2}},
                     {"lasso": {"cv": 3, "n_alphas": 5, "decades": 2, "max_iter": 2000}}]
    r["evaluation"] = {"test_size": 0.3, "external_site": None, "repeats": 0,
                       "bootstrap": 50, "seed": 0}
    s = run(r, tmp_path / "f.csv", tmp_path / "l.csv", tmp_path / "o",
            StudyOptions(progress=False, make_bundle=False)).summary
    assert any("ttest runs as one-way ANOVA" in n for n in s["notes"])
    per = s["selected_features"]["per_class"]
    assert set(per) == {"zero", "low", "positive"}


def test_yin2024_subtasks_select_their_groups():
    from HER2RadiomicsLib.modelling.study import load_recipe, make_target, prepare
    groups = ["0", "1+", "2+/FISH-", "2+/FISH+", "3+"] * 4
    ids = [f"c{i}" for i in range(len(groups))]
    feats = pd.DataFrame({"case_id": ids, "tumor__x": 0.0})
    labels = pd.DataFrame({"case_id": ids, "her2_ihc_fish": groups})
    for name, pos, neg in (("yin2024_low1_vs_zero", "1+", "0"),
                           ("yin2024_low2_vs_zero", "2+/FISH-", "0"),
                           ("yin2024_1_vs_2", "2+/FISH-", "1+")):
        r = load_recipe(name)
        assert r["pipeline"] == load_recipe("yin2024")["pipeline"]     # only the task differs
        d, yy, _, _ = make_target(prepare(feats, labels, r), r)
        assert set(d[r["label_col"]]) == {pos, neg} and len(d) == 8
        assert list(yy) == list((d[r["label_col"]] == pos).astype(int))


def test_peritumoral2025_marks_every_assumed_step():
    from HER2RadiomicsLib.modelling.study import RECIPES_DIR
    text = (RECIPES_DIR / "peritumoral2025.yaml").read_text()
    body = text[text.index("pipeline:"):text.index("classifiers:")]
    steps = [ln for ln in body.splitlines()[1:] if ln.strip().startswith("- ")]
    unmarked = [ln for ln in steps if "ASSUMED" not in ln
                and ln.strip()[2:].split(":")[0].strip() not in ("impute", "variance", "scale")]
    assert not unmarked, unmarked
    assert "ASSUMED" in text.split("params:")[1].splitlines()[0]
