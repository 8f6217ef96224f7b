"""Run a published study's protocol (a recipe) on a feature table: ``her2radiomics train``.

The run (:func:`run`) returns one result object, :class:`StudyRun`, from which everything
else is made:

1. joins features (``case_id`` + ``<region>__<feature>`` columns) with the labels table
   (``case_id``, label, site, clinical columns; the synthetic ``cohort.csv`` is one), aggregating
   per patient when the recipe says so (:mod:`.tables`);
2. holds out the external site entirely (external validation), then splits the rest 70/30 by
   patient, stratified by label (:mod:`.splits`);
3. fits each classifier's full pipeline (:mod:`.pipelines`) on the training part only; the
   decision threshold is the Youden optimum of the training part's out-of-fold predictions,
   applied unchanged to test and external data;
4. evaluates (AUC with DeLong and bootstrap CIs, threshold metrics with CIs, calibration,
   decision curves), compares models with DeLong's test, repeats random 70/30 splits;
5. fits the Rad-score + clinical nomogram (binary tasks) and writes ``metrics.json``,
   ``predictions.csv`` and the model bundle of the primary classifier (:mod:`.study_outputs`).

The figures and ``report.html`` are drawn from the :class:`StudyRun` by
:func:`HER2RadiomicsLib.reports.study.render_study` (the ``train`` command calls both).
Recipes are read and checked in :mod:`.recipes`.

>>> from HER2RadiomicsLib.modelling.study import StudyOptions, run  # doctest: +SKIP
>>> sr = run("peritumoral2025", "features.csv", "cohort.csv", "out",
...          StudyOptions(repeats=0, progress=False))                 # doctest: +SKIP
>>> sr.summary["models"][sr.primary]["test"]["auc"]                    # doctest: +SKIP
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .pipelines import _proba, build_pipeline, fit_grouped
from .recipes import (UNITS, _has_step, _multiclass_notes, class_names, load_recipe,
                      validate_recipe)
from .splits import (Design, ExternalSite, StudyData, Target, _assign_test_set,
                     _check_class_sizes, _hold_out_external, oof_predictions, repeated_splits)
from .nomogram import _fit_logistic, _fit_nomogram, _univariate_clinical  # noqa: F401
from .study_outputs import write_outputs
from .tables import (_check_patient_labels, _check_sites, _check_varying_features, load_table,
                     make_target, prepare)

# names that moved to the modules above when this file was split, imported from here by
# other code, scripts and tests; bundles saved before the split name the hierarchical
# classifier by this module's path (bundle.LEGACY_TYPES)
from .pipelines import HierarchicalClassifier  # noqa: F401
from .recipes import (RECIPES_DIR, STEP_NAMES, SUPERVISED_STEPS, TASKS,  # noqa: F401
                      list_recipes, required_rings, task_spec)
from .splits import MIN_PATIENTS_PER_CLASS, patient_split, unit_level  # noqa: F401
from .study_outputs import training_engine, training_ranges, training_spacing  # noqa: F401
from .tables import id_problems  # noqa: F401


@dataclass
class StudyOptions:
    """The settings of one run that are not in the recipe (the ``train`` command's flags).

    Attributes
    ----------
    icc : path, optional
        Reader-study ``icc.csv`` for the stable-feature filter (``--icc``).
    functions : path, optional
        ``feature,function`` table for cui2023's URF module (``--functions``).
    repeats : int, optional
        Repeated random splits; None: the recipe's (default 20), 0: none.
    external_site : str or None
        ``"recipe"``: the recipe's own external site; None: no external validation; a site
        name: that site, refused when it cannot be used.
    n_boot : int, optional
        Bootstrap resamples of the confidence intervals; None: the recipe's (default 2000).
    jobs : int
        Parallel processes for the repeated splits.
    seed : int, optional
        Seed of every split, fold and model; None: the recipe's (default 42).
    make_bundle : bool
        Write ``model_bundle.zip`` of the primary model.
    progress : bool
        Print each model's test AUC as it is fitted.
    synthetic : bool, optional
        The labels are synthetic (not real patients'); None: recognise the built-in synthetic
        cohort by itself. Stated in the model card and the report.
    """
    icc: object = None
    functions: object = None
    repeats: int | None = None
    external_site: str | None = "recipe"
    n_boot: int | None = None
    jobs: int = 1
    seed: int | None = None
    make_bundle: bool = True
    progress: bool = True
    synthetic: bool | None = None


@dataclass
class StudyRun:
    """The result of one run (in the spirit of scikit-learn's ``Bunch``): what was fitted,
    on which cases, how it scored, and the summary written to ``metrics.json``.

    Attributes
    ----------
    recipe : dict
        The validated recipe as run (with its ``_path`` and ``_text``).
    out : Path
        The output folder.
    features_csv, labels_csv : path
        The input tables, as given (they start every message and name the provenance file).
    features : DataFrame
        The feature table as read.
    table : DataFrame
        Features joined with labels (per patient when the recipe aggregates), the task's rows.
    target : Target
        The task's classes and positive class (None: several classes).
    data : StudyData
        Development, training, test and external cases with their labels, and the
        evaluation unit.
    design : Design
        Seed, bootstrap resamples, repeats, test fraction, unit and jobs as used.
    external_site : str or None
        The site held out, or None.
    results : dict
        Per model (``scenario/classifier``, or the classifier alone): fitted pipeline,
        threshold, train out-of-fold / test / external metrics, scores.
    predictions : dict
        Per model ``(out-of-fold, test, external)`` scores per evaluation unit; the nomogram's
        ``nomogram:test`` / ``nomogram:external`` / ``radscore:test`` as ``(y, score)``.
    primary : str
        Key of the primary model (the recipe's classifier in the best scenario).
    comparisons : list
        DeLong tests of the primary model's test AUC against every other model's.
    repeated_aucs, repeated_choice : list
        Test AUC of each repeated random split, and the scenario each split chose.
    nomogram : NomogramModel or None
        The Rad-score + clinical nomogram (binary tasks with a LASSO step).
    nomogram_results : dict
        Its predictors, threshold, odds ratios and test / external metrics.
    notes : list of str
        What the run changed or left out, for the user.
    summary : dict
        The content of ``metrics.json``; the paths of the written files are added to it
        (``bundle``, then ``figures`` and ``report`` when the report is drawn).
    icc_values : dict or None
        The reader-study ICCs given (``--icc``), for the report's table of selected features.
    options : StudyOptions or None
        The run's options as given.
    """
    recipe: dict
    out: Path
    features_csv: object
    labels_csv: object
    features: pd.DataFrame
    table: pd.DataFrame
    target: Target
    data: StudyData
    design: Design
    external_site: str | None = None
    results: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    primary: str = ""
    comparisons: list = field(default_factory=list)
    repeated_aucs: list = field(default_factory=list)
    repeated_choice: list = field(default_factory=list)
    nomogram: object = None
    nomogram_results: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    icc_values: dict | None = None
    options: StudyOptions | None = None

    @property
    def primary_result(self) -> dict:
        """The primary model's entry of :attr:`results`."""
        return self.results[self.primary]

    @property
    def binary(self) -> bool:
        return self.target.positive is not None


def run(recipe, features_csv, labels_csv, out_dir, options: StudyOptions | None = None
        ) -> StudyRun:
    """Run a recipe end to end; returns the :class:`StudyRun`.

    The steps: read and join the tables, hold out the external site, split the development
    cases by patient, fit and evaluate every scenario x classifier, pick the primary model,
    compare models (DeLong), repeated splits, Rad-score nomogram, then write predictions,
    the bundle and ``metrics.json`` (:func:`~.study_outputs.write_outputs`). The figures and
    the report are drawn from the result by :func:`HER2RadiomicsLib.reports.study.
    render_study`.

    Parameters
    ----------
    recipe : str, path or dict
        A shipped recipe's name, a recipe YAML, or a loaded (possibly changed) recipe.
    features_csv, labels_csv : path
        The feature table (``extract``) and the labels table (case_id, label, site, clinical).
    out_dir : path
        Output folder (created).
    options : StudyOptions, optional
        The run's settings beyond the recipe (defaults: :class:`StudyOptions`).
    """
    from .transformers import function_sets_from_table, icc_values_from_table
    opt = options or StudyOptions()
    t0 = time.time()
    if isinstance(recipe, dict):
        validate_recipe(recipe)         # a changed copy of a loaded recipe is checked again
    else:
        recipe = load_recipe(recipe)
    ev = dict(recipe.get("evaluation") or {})
    design = Design(seed=int(ev.get("seed", 42) if opt.seed is None else opt.seed),
                    n_boot=int(ev.get("bootstrap", 2000) if opt.n_boot is None else opt.n_boot),
                    repeats=int(ev.get("repeats", 20) if opt.repeats is None else opt.repeats),
                    jobs=opt.jobs, progress=opt.progress)
    ext = ev.get("external_site") if opt.external_site == "recipe" else opt.external_site
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    feats = load_table(features_csv, "feature")
    labels = load_table(labels_csv, "label")
    df = prepare(feats, labels, recipe, notes=notes, features_name=features_csv,
                 labels_name=labels_csv)
    df, y, classes, positive = make_target(df, recipe, notes=notes, labels_name=labels_csv)
    target = Target(classes, positive)
    if str(ev.get("unit", "patients")) == "patients":
        # found now, not after every model was fitted (and then naming no file)
        _check_patient_labels(df, y, labels_csv, "every patient is one observation (recipe "
                              "evaluation unit: patients)", "evaluate per image (recipe "
                              "evaluation: {unit: images})")
    binary = target.binary
    icc_values = icc_values_from_table(opt.icc) if opt.icc is not None else None
    fsets = function_sets_from_table(opt.functions) if opt.functions is not None else None
    batch = recipe["batch_col"]
    _check_sites(df, recipe, labels_csv)
    _check_varying_features(df, recipe, features_csv)
    if icc_values is None and _has_step(recipe, "stable"):
        notes.append("no ICC table given (--icc): the stable-feature filter kept every feature")
    if not binary:
        notes += _multiclass_notes(recipe, len(classes))
    data, ext = _hold_out_external(df, y, binary, notes,
                                   ExternalSite(ext, batch, opt.external_site != "recipe"),
                                   labels=labels, labels_name=labels_csv)
    data.unit = design.unit = str(ev.get("unit", "patients"))
    if data.unit not in UNITS:
        raise InputError(f"recipe {recipe['name']}: evaluation unit {data.unit!r} (choose "
                         f"from {', '.join(UNITS)})")
    _check_class_sizes(data, classes, positive, recipe, labels_csv, ext)
    design.test_size, design.repeats = _assign_test_set(
        data, recipe, ext, float(ev.get("test_size", 0.3)), 2 if binary else len(classes),
        design.repeats, design.seed, notes)
    use_combat = batch in data.dev.columns and data.Xtr[batch].nunique() >= 2
    if _has_step(recipe, "combat") and not use_combat:
        notes.append("ComBat skipped: the training data has fewer than two sites")

    def maker(regions, clf):
        return lambda yt=None: build_pipeline(recipe, regions, clf, icc_values=icc_values,
                                              functions=fsets, use_combat=use_combat,
                                              y_train=yt, seed=design.seed)

    from sklearn.utils._param_validation import InvalidParameterError
    try:
        results, preds = _fit_and_evaluate(recipe, maker, data, target, design)
    except InvalidParameterError as exc:     # a step setting of the recipe out of range
        raise InputError(f"{recipe.get('_path') or recipe['name']}: {exc}") from None
    for key, r in results.items():
        # fallbacks not in the papers (minimum feature counts, LASSO keeping nothing) that
        # fired when the model was fitted on the training patients
        for step in r["model"].named_steps.values():
            if getattr(step, "fallback_", None):
                notes.append(f"{key}: {step.fallback_}")
        notes += [f"{key}: {n}" for n in r["fit_notes"]]
    sr = StudyRun(recipe=recipe, out=out, features_csv=features_csv, labels_csv=labels_csv,
                  features=feats, table=df, target=target, data=data, design=design,
                  external_site=ext, results=results, predictions=preds, notes=notes,
                  icc_values=icc_values, options=opt)
    sr.primary = best = _choose_primary(results, recipe["primary"], binary)
    primary = results[best]
    sr.comparisons = _compare_with_primary(results, preds, best, data.y_unit("test")) \
        if binary else []
    # repeated random splits of the development data (cui2023's perturbations); with
    # several scenarios each split chooses its own again
    makers = {r["scenario"]: r["make"] for r in results.values()
              if r["classifier"] == primary["classifier"]}
    if design.repeats > 0:
        sr.repeated_aucs, sr.repeated_choice = repeated_splits(
            makers if len(makers) > 1 else primary["make"], data.dev, data.ydev, target,
            design)
    if binary and "lasso" in primary["model"].named_steps:
        sr.nomogram, sr.nomogram_results = _fit_nomogram(recipe, primary, data, preds, best,
                                                         design.n_boot, design.seed, notes)
    elif binary:
        notes.append("the primary pipeline has no LASSO step: no Rad-score / nomogram")
    sr.summary = _summary(sr, t0)
    write_outputs(sr, make_bundle=opt.make_bundle)
    return sr


def _fit_and_evaluate(recipe, maker, d: StudyData, target: Target, design: Design):
    """Fit every scenario x classifier on the training patients; out-of-fold, test and
    external metrics. Returns ``(results, preds)`` keyed ``scenario/classifier``.

    The models are independent (each seeded by ``design.seed``), so with ``design.jobs > 1``
    they are fitted in parallel processes; the results do not depend on the number of
    processes (Testing/test_study_parallel.py).
    """
    from joblib import Parallel, delayed
    scenarios = recipe.get("scenarios") or {"main": recipe.get("regions", ["tumor"])}
    todo = [(f"{scen}/{clf}" if len(scenarios) > 1 else clf, scen, regions, clf,
             maker(regions, clf))
            for scen, regions in scenarios.items() for clf in recipe["classifiers"]]
    jobs = max(1, min(int(design.jobs or 1), len(todo)))
    done = Parallel(n_jobs=jobs)(delayed(_fit_one)(scen, regions, clf, mk, d, target, design)
                                 for _, scen, regions, clf, mk in todo)
    results, preds = {}, {}
    for (key, *_, mk), r in zip(todo, done):
        preds[key] = r.pop("_unit_scores")
        # the factory stays in this process (the repeated splits use it); keys in the order
        # they always had
        head = ("scenario", "classifier", "regions", "model")
        results[key] = r = {**{k: r[k] for k in head}, "make": mk,
                            **{k: v for k, v in r.items() if k not in head}}
        if design.progress:
            auc = r["test"].get("auc", r["test"].get("auc_macro"))
            print(f"  {key:28s} test AUC {auc:.3f}", flush=True)
    return results, preds


def _fit_one(scen, regions, clf, mk, d: StudyData, target: Target, design: Design) -> dict:
    """One scenario x classifier: the model fitted on the training part, its out-of-fold
    predictions, threshold and metrics (``_unit_scores``: its scores per evaluation unit)."""
    from . import evaluation as E
    classes, positive, binary = target.classes, target.positive, target.binary
    n_boot, seed = design.n_boot, design.seed
    groups_tr = d.Xtr["patient_id"].astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_grouped(mk(d.ytr), d.Xtr, d.ytr, groups_tr, seed)
        folds = []
        oof, oof_rs = oof_predictions(mk, d.Xtr, d.ytr, groups_tr, target, seed,
                                      with_radscore=binary and "lasso" in model.named_steps,
                                      fitted=folds)
    p_te = _proba(model, d.Xte, classes, positive)
    p_ext = _proba(model, d.dext, classes, positive) if len(d.dext) else None
    image_scores = (oof, p_te, p_ext)
    # metrics per evaluation unit (a patient's images averaged by default)
    _, y_o, oof = d.per_unit("train", oof)
    _, y_te, p_te = d.per_unit("test", p_te)
    _, y_ext, p_ext = d.per_unit("external", p_ext) if p_ext is not None else \
        (None, d.yext, None)
    r = {"scenario": scen, "classifier": clf, "regions": list(regions), "model": model,
         "oof_radscore": oof_rs, "image_scores": image_scores,
         "fit_notes": _fit_notes(model, folds), "_unit_scores": (oof, p_te, p_ext)}
    if binary:
        thr = E.youden_threshold(y_o, oof)
        r["threshold"] = thr
        r["train_oof"] = E.evaluate_binary(y_o, oof, thr, n_boot, seed)
        r["test"] = E.evaluate_binary(y_te, p_te, thr, n_boot, seed)
        if p_ext is not None and len(np.unique(y_ext)) == 2:
            r["external"] = E.evaluate_binary(y_ext, p_ext, thr, n_boot, seed)
    else:
        r["train_oof"] = E.evaluate_multiclass(y_o, oof, classes, n_boot, seed)
        r["test"] = E.evaluate_multiclass(y_te, p_te, classes, n_boot, seed)
        if p_ext is not None and len(np.unique(y_ext)) == len(classes):
            r["external"] = E.evaluate_multiclass(y_ext, p_ext, classes, n_boot, seed)
    for part in ("train_oof", "test", "external"):
        if part in r:
            r[part]["unit"] = d.unit
    r["n_selected"] = _n_selected(model)
    return r


def _fit_notes(model, folds) -> list:
    """What small data changed in the model and its out-of-fold fits, for the notes: k-NN
    neighbour caps, ComBat fits with a single-case site (the model's own fallbacks are
    reported from its steps)."""
    caps = [getattr(m.steps[-1][1], "neighbors_cap_", None) for m in [model] + folds]
    caps = [c for c in caps if c]
    out = []
    if caps:
        out.append(f"k-NN: n_neighbors {caps[0][0]} is more than the training rows of "
                   f"{len(caps)} of {len(folds) + 1} fits: capped to them (as few as "
                   f"{min(c[1] for c in caps)})")
    combat = [m.named_steps["combat"] for m in folds if "combat" in m.named_steps]
    n_fb = sum(bool(getattr(c, "fallback_", None)) for c in combat)
    if n_fb:
        out.append(f"ComBat: {n_fb} of {len(folds)} out-of-fold fits had a site with a single "
                   "training case or a single site (average site effect, or not harmonised)")
    return out


def _choose_primary(results: dict, classifier: str, binary: bool) -> str:
    """The recipe's classifier in the scenario with the best training out-of-fold AUC."""
    prim = [k for k, r in results.items() if r["classifier"] == classifier]
    aucname = "auc" if binary else "auc_macro"
    return max(prim, key=lambda k: results[k]["train_oof"][aucname])


def _compare_with_primary(results, preds, best, yte) -> list:
    """DeLong test of the primary model's test AUC against every other model's."""
    from . import evaluation as E
    return [{"model_a": best, "model_b": k, **E.delong_test(yte, preds[best][1], preds[k][1])}
            for k in results if k != best]


def _n_selected(model):
    for name in ("lasso", "urf", "correlation", "univariate"):
        if name in model.named_steps:
            return len(model.named_steps[name].selected_features_)
    return None


def _summary(sr: StudyRun, t0: float) -> dict:
    """The run's summary (``metrics.json``); ``t0``: the run's start (``time.time()``)."""
    recipe, results, best, d = sr.recipe, sr.results, sr.primary, sr.data
    classes, positive, df, ext = sr.target.classes, sr.target.positive, sr.table, sr.external_site
    comparisons, nomo_res, notes = sr.comparisons, sr.nomogram_results, sr.notes
    rep, rep_choice = sr.repeated_aucs, sr.repeated_choice
    ytr, yte, yext = d.y_unit("train"), d.y_unit("test"), d.y_unit("external")

    def counts(v):
        return {str(k): int(c) for k, c in zip(*np.unique(v, return_counts=True))}
    models = {}
    for k, r in results.items():
        models[k] = {kk: r[kk] for kk in ("scenario", "classifier", "regions", "threshold",
                                          "train_oof", "test", "external", "n_selected")
                     if kk in r}
    primary = results[best]
    sel = {}
    if "lasso" in primary["model"].named_steps:
        ls = primary["model"].named_steps["lasso"]
        sel = {"features": list(ls.coef_features_), "coef": [float(c) for c in ls.coef_],
               "intercept": float(ls.intercept_)}
        if getattr(ls, "class_coef_", None) is not None:
            # one-vs-rest: each class's own signed coefficients and intercept (its Rad-score);
            # "coef" above is then the largest |coef| over the classes, a ranking only
            sel["coef_meaning"] = "largest absolute one-vs-rest coefficient (ranking)"
            sel["per_class"] = {str(c): {"coef": [float(v) for v in row],
                                         "intercept": float(b)}
                                for c, row, b in zip(ls.classes_, ls.class_coef_,
                                                     ls.class_intercept_)}
    elif "urf" in primary["model"].named_steps:
        u = primary["model"].named_steps["urf"]
        sel = {"features": list(u.selected_features_),
               "differential": list(u.differential_features_),
               "auxiliary": list(u.auxiliary_features_)}
    from .study_report_items import model_card, report_items
    opt = sr.options or StudyOptions()
    items = report_items(sr, sr.icc_values, opt.synthetic)
    synth = items.pop("_synthetic")
    base = {"unit": d.unit, "external_site": ext,
            "n": {"all": int(len(ytr) + len(yte) + len(yext)), "train": int(len(ytr)),
                  "test": int(len(yte)), "external": int(len(yext))},
            "n_images": {"all": int(len(df)), "train": int(len(d.Xtr)),
                         "test": int(len(d.Xte)), "external": int(len(d.dext))},
            "class_counts": {"train": counts(ytr), "test": counts(yte),
                             "external": counts(yext) if len(yext) else {}}}
    return {
        "recipe": recipe["name"], "title": recipe.get("title", recipe["name"]),
        "params": recipe.get("params", "default"),
        **({"features_note": recipe["features_note"]} if recipe.get("features_note") else {}),
        "task": recipe["task"], "label_col": recipe["label_col"],
        "classes": [str(c) for c in classes], "positive": positive,
        "class_names": class_names(recipe["task"]),
        # every count, metric and plot is per evaluation unit (patients by default)
        "unit": d.unit, "n": base["n"], "n_images": base["n_images"],
        "class_counts": base["class_counts"],
        "external_site": ext, "primary": best, "models": models,
        "comparisons": comparisons,
        "repeated_splits": {"n": len(rep), "aucs": rep, "unit": d.unit,
                            # how often each scenario won a split (several scenarios only)
                            "scenario_chosen": {str(k): int(v) for k, v in pd.Series(
                                list(rep_choice), dtype=object).value_counts().items()
                                if k != "main"},
                            **({"median": float(np.median(rep)),
                                "p2.5": float(np.percentile(rep, 2.5)),
                                "p97.5": float(np.percentile(rep, 97.5)),
                                "iqr": [float(np.percentile(rep, 25)),
                                        float(np.percentile(rep, 75))]} if rep else {})},
        "selected_features": sel, "nomogram": nomo_res, "notes": notes,
        **items, "model_card": model_card(sr, base, synth, items["protocol"]),
        "seconds": round(time.time() - t0, 1)}
