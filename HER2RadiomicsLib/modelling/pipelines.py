"""A recipe's scikit-learn / imbalanced-learn pipeline for one classifier, and its fit with
every inner cross-validation grouped by patient.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler

from ..errors import InputError
from .harmonization import ComBat
from .recipes import SUPERVISED_STEPS, task_spec
from .transformers import (TUNING_GRIDS, ColumnSelector, CorrelationFilter, LassoSelector,
                           MedianImputer, StableFeatureFilter, UnivariateFilter, URFModule,
                           VarianceFilter, cap_neighbors, make_classifier)


def build_pipeline(recipe: dict, regions, classifier: str, *, icc_values=None, functions=None,
                   use_combat=True, y_train=None, seed: int = 0):
    """The recipe's pipeline for one classifier (an imbalanced-learn Pipeline)."""
    batch = recipe["batch_col"]
    steps_cfg = [(s, {}) if isinstance(s, str) else next(iter(s.items())) for s in
                 recipe["pipeline"]]
    combat = use_combat and any(n == "combat" for n, _ in steps_cfg)
    steps = [("select", ColumnSelector(regions=list(regions),
                                       columns=[batch] if combat else []))]
    names = [n for n, _ in steps_cfg]
    for i, (name, kw) in enumerate(steps_cfg):
        fc = (kw or {}).get("fold_change", 1.0 if name == "urf" else None)  # urf's default
        if name in ("urf", "univariate") and fc is not None and "scale" in names[:i]:
            # a ratio of class means means nothing on z-scores (the means straddle 0)
            raise InputError(f"recipe {recipe.get('name')}: step '{name}' uses a fold change, "
                             "which needs unscaled features; put it before 'scale'")
    # Supervised screening (univariate tests, the relevance-ranked correlation filter) and
    # SMOTE between the first of them and the LASSO go *inside* the LASSO's inner CV: fitted
    # on each inner fold's training rows only. SMOTE is then applied again, after the
    # selection, to the rows the classifier learns from (the papers balance that set).
    inner, smote_after = set(), False
    if "lasso" in names:
        first = min((i for i, n in enumerate(names) if n in SUPERVISED_STEPS),
                    default=names.index("lasso"))
        inner = set(range(first, names.index("lasso")))
        smote_after = any(names[i] == "smote" for i in inner)
    screen, resample = [], None

    def smote():
        k = 5
        if y_train is not None:
            k = int(max(1, min(5, pd.Series(y_train).value_counts().min() - 1)))
        return SMOTE(k_neighbors=k, random_state=seed)

    for i, (name, kw) in enumerate(steps_cfg):
        kw = dict(kw or {})
        target = screen if i in inner else steps
        if name == "impute":
            steps.append(("impute", MedianImputer()))
        elif name == "variance":
            steps.append(("variance", VarianceFilter()))
        elif name == "stable":
            steps.append(("stable", StableFeatureFilter(icc_values=icc_values,
                                                        threshold=kw.get("threshold", 0.75))))
        elif name == "combat":
            if combat:
                # external centres: their site effects are estimated from their own features
                kw.setdefault("unknown_site", "estimate")
                # a small cross-validation fold may hold one case of a site, or one site
                kw.setdefault("small_sites", "tolerate")
                steps.append(("combat", ComBat(batch_col=batch, forbidden_covariates=(
                    recipe["label_col"],), **kw)))
        elif name == "scale":
            steps.append(("scale", StandardScaler().set_output(transform="pandas")))
        elif name == "smote":
            if i in inner:
                resample = smote()
            else:
                steps.append(("smote", smote()))
        elif name == "univariate":
            target.append(("univariate", UnivariateFilter(**kw)))
        elif name == "urf":
            sel = UnivariateFilter(test=kw.pop("test", "mannwhitney"),
                                   p_threshold=kw.pop("p_threshold", 0.05),
                                   fold_change=kw.pop("fold_change", 1.0),
                                   # cui2023: higher in the positive class
                                   fold_change_direction=kw.pop("fold_change_direction", "up"),
                                   min_features=kw.pop("min_features", 3))
            target.append(("urf", URFModule(selector=sel, functions=functions, **kw)))
        elif name == "correlation":
            target.append(("correlation", CorrelationFilter(**kw)))
        elif name == "lasso":
            kw.setdefault("random_state", seed)
            if screen:
                kw["screen"] = screen[0][1] if len(screen) == 1 else SkPipeline(screen)
            if resample is not None:
                kw["resample"] = resample
            steps.append(("lasso", LassoSelector(**kw)))
            if smote_after:
                steps.append(("smote", smote()))
    task = task_spec(recipe["task"])
    clf = make_classifier(classifier, random_state=seed)
    if recipe.get("tune"):
        # nested CV: the inner grid search runs inside every outer training fit
        clf = GridSearchCV(clf, TUNING_GRIDS[classifier],
                           cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                           scoring="roc_auc" if "classes" not in task else "roc_auc_ovr")
    if task.get("hierarchical"):
        # defined in .study, which imports this module: bundles record its path there
        clf = HierarchicalClassifier(clf)
    steps.append(("classifier", clf))
    return Pipeline(steps)


def fit_grouped(pipeline, X, y, groups=None, seed: int = 0):
    """Fit a recipe pipeline with every inner cross-validation grouped by patient.

    Steps whose ``fit`` takes ``groups`` (the LASSO's inner CV) get the patient ids; the
    classifier's own inner CVs (Platt calibration of the SVM, the nested grid search) get
    stratified patient-grouped folds for this fit. Rows a sampler adds (SMOTE) get groups of
    their own. Without ``groups`` this is ``pipeline.fit(X, y)``.
    """

    if groups is None:
        return pipeline.fit(X, y)
    Xt, yt, g = X, np.asarray(y), np.asarray(groups).astype(str)
    for _name, step in pipeline.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if hasattr(step, "fit_resample"):
            n0 = len(yt)
            Xt, yt = step.fit_resample(Xt, yt)
            yt = np.asarray(yt)
            g = np.concatenate([g, np.array([f"_synthetic{i}" for i in range(len(yt) - n0)])])
            continue
        kw = {"groups": g} if "groups" in inspect.signature(step.fit).parameters else {}
        Xt = step.fit(Xt, yt, **kw).transform(Xt)
    clf = pipeline.steps[-1][1]
    if isinstance(clf, (CalibratedClassifierCV, GridSearchCV)):
        old = clf.cv
        n = old if isinstance(old, int) else old.get_n_splits()
        n = int(max(2, min(n, len(np.unique(g)), np.bincount(
            np.unique(yt, return_inverse=True)[1]).min())))
        clf.cv = list(StratifiedGroupKFold(n, shuffle=True, random_state=seed)
                      .split(np.zeros(len(yt)), yt, g))
        try:
            _note_cap(clf, cap_neighbors(clf, len(yt)))
            clf.fit(Xt, yt)
        finally:
            clf.cv = old            # the fitted model keeps its plain settings (bundles)
            if hasattr(clf, "_checked_cv_orig"):
                # scikit-learn keeps the folds it was given, wrapped in a private class that
                # a bundle may not contain (it would be refused on loading)
                clf._checked_cv_orig = old
    else:
        _note_cap(clf, cap_neighbors(clf, len(yt)))
        clf.fit(Xt, yt)
    return pipeline


def _note_cap(clf, cap):
    """Record a k-NN neighbour cap on the classifier (``neighbors_cap_``: configured, capped)
    for the run's notes."""
    if cap is not None:
        clf.neighbors_cap_ = [int(cap[0]), int(cap[1])]


def _proba(model, X, classes, positive):
    P = model.predict_proba(X)
    if positive is not None:
        return P[:, list(model.classes_).index(1)]
    order = [list(model.classes_).index(c) for c in classes]
    return P[:, order]


class HierarchicalClassifier(ClassifierMixin, BaseEstimator):
    """Two binary stages: HER2-positive vs not, then HER2-low vs zero among the rest.

    P(positive) = p1; P(low) = (1 - p1) p2; P(zero) = (1 - p1)(1 - p2).
    """

    def __init__(self, estimator=None, classes=("zero", "low", "positive")):
        self.estimator = estimator
        self.classes = classes

    def fit(self, X, y):
        y = np.asarray(y).astype(str)
        zero, low, pos = self.classes
        neg = y != pos
        Xn = X[neg] if hasattr(X, "iloc") else np.asarray(X)[neg]
        stages, caps = [], []
        for Xs, ys in ((X, (y == pos).astype(int)), (Xn, (y[neg] == low).astype(int))):
            est = clone(self.estimator)
            caps.append(cap_neighbors(est, len(ys)))     # stage 2 learns from fewer rows
            stages.append(est.fit(Xs, ys))
        self.stage1_, self.stage2_ = stages
        caps = [c for c in caps if c]
        if caps:
            _note_cap(self, (caps[0][0], min(c[1] for c in caps)))
        self.classes_ = np.array(self.classes)
        return self

    def predict_proba(self, X):
        p1 = self.stage1_.predict_proba(X)[:, 1]
        p2 = self.stage2_.predict_proba(X)[:, 1]
        return np.column_stack([(1 - p1) * (1 - p2), (1 - p1) * p2, p1])

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
