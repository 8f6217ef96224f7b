"""Run a published study's protocol (a recipe) on a feature table: ``her2radiomics train``.

A recipe (YAML in ``HER2RadiomicsLib/recipes``) names the params preset, regions (or several
region *scenarios*), the task, the pipeline steps, the classifiers, the clinical nomogram
predictors and the evaluation design.  The run:

1. joins features (``case_id`` + ``<region>__<feature>`` columns) with the labels table
   (``case_id``, label, site, clinical columns; the synthetic ``cohort.csv`` is one), aggregating
   per patient when the recipe says so;
2. holds out the external site entirely (external validation), then splits the rest 70/30 by
   patient, stratified by label;
3. fits each classifier's full pipeline on the training part only; the decision threshold is the
   Youden optimum of the training part's out-of-fold predictions, applied unchanged to test and
   external data;
4. evaluates (AUC with DeLong and bootstrap CIs, threshold metrics with CIs, calibration,
   decision curves), compares models with DeLong's test, repeats random 70/30 splits;
5. fits the Rad-score + clinical nomogram (binary tasks), writes plots, ``metrics.json``,
   ``predictions.csv``, ``report.html`` and the model bundle of the primary classifier.
"""
from __future__ import annotations

import json
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"   # package data, at the top
TASKS = {
    "pos_vs_neg": {"positive": ["positive"], "negative": ["low", "zero"]},
    "low_vs_zero": {"positive": ["low"], "negative": ["zero"]},
    "lowpos_vs_zero": {"positive": ["low", "positive"], "negative": ["zero"]},
    "three_class": {"classes": ["zero", "low", "positive"]},
    "hierarchical": {"classes": ["zero", "low", "positive"], "hierarchical": True},
}
STEP_NAMES = ("impute", "variance", "stable", "combat", "scale", "smote", "univariate", "urf",
              "correlation", "lasso")
#: steps that learn from the labels (or change the rows) before a LASSO: they run inside its
#: inner cross-validation folds
SUPERVISED_STEPS = ("smote", "univariate", "urf", "correlation")


# -- recipes and data -----------------------------------------------------------------------------

def list_recipes() -> list:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path, _chain=()) -> dict:
    """Load and validate a recipe (name of a shipped one, or a YAML path)."""
    import yaml
    p = Path(str(name_or_path))
    if not (p.suffix in (".yaml", ".yml") and p.exists()):
        p = RECIPES_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        raise InputError(f"{name_or_path}: no such recipe (shipped: {', '.join(list_recipes())})")
    try:
        text = p.read_text(encoding="utf-8")
        r = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the recipe ({exc})") from None
    if not isinstance(r, dict):
        raise InputError(f"{p}: a recipe is a mapping of settings (task, pipeline, "
                         f"classifiers, ...), not a {type(r).__name__}")
    if r.get("extends"):
        # a variant of another recipe (yin2024's binary subtasks): its keys replace the base's
        if Path(str(r["extends"])).stem in (p.stem,) + tuple(_chain):
            raise InputError(f"{p}: recipes extend each other in a circle ("
                             + " -> ".join(_chain + (p.stem, Path(str(r["extends"])).stem))
                             + ")")
        base = load_recipe(r["extends"], _chain + (p.stem,))
        base = {k: v for k, v in base.items() if not k.startswith("_") and k != "name"}
        r = {**base, **{k: v for k, v in r.items() if k != "extends"}}
    for key in ("task", "pipeline", "classifiers"):
        if key not in r:
            raise InputError(f"{p}: recipe needs '{key}'")
    r.setdefault("name", p.stem)
    r.setdefault("label_col", "her2")
    r.setdefault("batch_col", "site")
    r.setdefault("clinical", [])
    if isinstance(r["classifiers"], list) and r["classifiers"]:
        r.setdefault("primary", r["classifiers"][0])
    r.setdefault("evaluation", {})
    validate_recipe(r, p)
    r["_path"] = str(p)
    r["_text"] = text
    return r


def _step_settings() -> dict:
    """The settings each pipeline step accepts in a recipe (the others are set by the run)."""
    import inspect

    from .harmonization import ComBat
    from .transformers import CorrelationFilter, LassoSelector, UnivariateFilter, URFModule

    def params(cls, *not_these):
        return set(inspect.signature(cls).parameters) - set(not_these)
    return {"impute": set(), "variance": set(), "scale": set(), "smote": set(),
            "stable": {"threshold"},
            "combat": params(ComBat, "batch_col", "forbidden_covariates"),
            "univariate": params(UnivariateFilter),
            "urf": params(URFModule, "selector", "functions") | {
                "test", "p_threshold", "fold_change", "min_features"},
            "correlation": params(CorrelationFilter),
            "lasso": params(LassoSelector, "screen", "resample")}


#: allowed values of step settings; a name means the same in every step that takes it
_SETTING_RULES = {
    "threshold": (float, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
    "p_threshold": (float, lambda v: 0 < v <= 1, "a p-value above 0 and at most 1"),
    "fold_change": (float, lambda v: v > 0, "a ratio above 0"),
    "min_features": (int, lambda v: v >= 0, "a whole number, 0 or more"),
    "max_features": (int, lambda v: v >= 1, "a whole number, 1 or more"),
    "cv": (int, lambda v: v >= 2, "a whole number of folds, 2 or more"),
    "n_alphas": (int, lambda v: v >= 1, "a whole number, 1 or more"),
    "decades": (float, lambda v: v > 0, "a number above 0"),
    "max_iter": (int, lambda v: v >= 1, "a whole number, 1 or more"),
    "tol": (float, lambda v: v > 0, "a number above 0"),
    "random_state": (int, lambda v: 0 <= v < 2 ** 32, "a whole number from 0 to 2**32 - 1"),
    "min_variance": (float, lambda v: v >= 0, "a number, 0 or more"),
    "test": (str, lambda v: v in ("ttest", "welch", "mannwhitney", "anova", "kruskal"),
             "ttest, welch, mannwhitney, anova or kruskal"),
    "estimator": (str, lambda v: v in ("logistic", "lasso"), "logistic or lasso"),
    "unknown_site": (str, lambda v: v in ("error", "estimate", "average"),
                     "error, estimate or average"),
    "small_sites": (str, lambda v: v in ("error", "tolerate"), "error or tolerate"),
}
_BOOL_SETTINGS = ("one_se", "fdr", "parametric", "eb", "mean_only")


def _setting_problem(key, v):
    """Why a step setting's value is refused, or None."""
    if key in _BOOL_SETTINGS:
        return None if isinstance(v, bool) else "true or false"
    if key not in _SETTING_RULES or (v is None and key in ("fold_change", "max_features")):
        return None
    kind, ok, what = _SETTING_RULES[key]
    if kind is str:
        return None if isinstance(v, str) and ok(v) else what
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
            (kind is int and float(v) != int(v)) or not ok(kind(v)):
        return what
    return None


def validate_recipe(r: dict, where=None) -> None:
    """Refuse a recipe whose settings cannot run, in one line naming the recipe file (a
    typo'd step setting or a test fraction of 1.5 would otherwise fail deep in a fit, or be
    ignored)."""
    from .transformers import CLASSIFIERS
    where = where or r.get("_path") or f"recipe {r.get('name')}"

    def bad(msg):
        raise InputError(f"{where}: {msg}")
    clfs = r.get("classifiers")
    if not isinstance(clfs, list) or not clfs:
        bad("classifiers must be a list of one or more of " + ", ".join(CLASSIFIERS))
    for c in clfs:
        if c not in CLASSIFIERS:
            bad(f"unknown classifier {c!r} (choose from {', '.join(CLASSIFIERS)})")
    if r.get("primary", clfs[0]) not in clfs:
        bad(f"primary {r.get('primary')!r} is not one of its classifiers {clfs}")
    if not isinstance(r.get("pipeline"), list):
        bad("pipeline must be a list of steps, e.g. [impute, variance, scale]")
    allowed = _step_settings()
    for st in r["pipeline"]:
        if isinstance(st, dict) and len(st) == 1:
            name, kw = next(iter(st.items()))
        elif isinstance(st, str):
            name, kw = st, None
        else:
            bad(f"pipeline step {st!r}: a name, or one name with its settings")
        if name not in STEP_NAMES:
            bad(f"unknown pipeline step {name!r} (steps: {', '.join(STEP_NAMES)})")
        if kw is not None and not isinstance(kw, dict):
            bad(f"step {name}: settings must be a mapping, e.g. {{threshold: 0.8}}")
        unknown = sorted(set(kw or {}) - allowed[name])
        if unknown:
            bad(f"step {name} has no setting {', '.join(unknown)} (it takes "
                + (", ".join(sorted(allowed[name])) or "none") + ")")
        for key, v in (kw or {}).items():
            why = _setting_problem(key, v)
            if why:
                bad(f"step {name}: {key} {v!r} must be {why}")
    task = r.get("task")
    if isinstance(task, dict):
        if "classes" in task:
            ok = isinstance(task["classes"], list) and len(task["classes"]) >= 2
        else:
            pos, neg = task.get("positive"), task.get("negative")
            ok = isinstance(pos, list) and isinstance(neg, list) and pos and neg and \
                not {str(x) for x in pos} & {str(x) for x in neg}
        if not ok:
            bad("task must be a named task or {positive: [...], negative: [...]} (two "
                "non-empty, disjoint lists) or {classes: [...]}")
    elif not isinstance(task, str) or task not in TASKS:
        bad(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    for key in ("label_col", "batch_col"):
        if not isinstance(r.get(key), str):
            bad(f"{key} must be a column name")
    if not isinstance(r.get("clinical") or [], list):
        bad("clinical must be a list of column names, e.g. [age, ki67]")
    scen = r.get("scenarios") or {"main": r.get("regions", ["tumor"])}
    if not isinstance(scen, dict):
        bad("scenarios must map a name to a list of regions")
    for name, regions in scen.items():
        if not isinstance(regions, list) or not regions:
            bad(f"regions of {name}: a non-empty list, e.g. [tumor, peri_0-5mm]")
        try:
            required_rings(regions)
        except InputError as exc:
            bad(f"{exc} (regions: tumor, peri_A-Bmm, tumor+peri_Bmm)")
    if r.get("aggregate") not in (None, "mean", "median", "first"):
        bad(f"aggregate {r['aggregate']!r}: choose mean, median or first")
    ev = r.get("evaluation") or {}
    if not isinstance(ev, dict):
        bad("evaluation must be a mapping (test_size, repeats, bootstrap, seed, ...)")
    # the threshold and every selection step learn from the training part: a test part
    # larger than it leaves too little to learn from (0: the external site is the test set)
    checks = (("test_size", float, lambda v: 0 <= v <= 0.5, "a fraction from 0 to 0.5"),
              ("repeats", int, lambda v: v >= 0, "a whole number, 0 or more"),
              ("bootstrap", int, lambda v: v >= 1, "a whole number, 1 or more"),
              ("seed", int, lambda v: 0 <= v < 2 ** 32, "a whole number from 0 to 2**32 - 1"))
    for key, kind, ok, what in checks:
        if ev.get(key) is None:
            continue
        v = ev[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                (kind is int and float(v) != int(v)) or not ok(kind(v)):
            bad(f"evaluation {key} {v!r}: must be {what}")
    if ev.get("unit", "patients") not in UNITS:
        bad(f"evaluation unit {ev['unit']!r} (choose from {', '.join(UNITS)})")


def task_spec(task) -> dict:
    if isinstance(task, dict):
        return task
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    return TASKS[task]


def class_names(task) -> list:
    """Human-readable class names: ``[negative, positive]`` of a binary task (e.g.
    ``["zero", "low+positive"]``), or the classes of a multi-class task."""
    spec = task_spec(task)
    if "classes" in spec:
        return list(spec["classes"])
    return ["+".join(map(str, spec.get("negative", ["negative"]))),
            "+".join(map(str, spec.get("positive", ["positive"])))]


def load_table(path, what: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} table not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read {what} table ({exc})") from None
    if "case_id" not in df.columns:
        raise InputError(f"{path}: {what} table needs a case_id column")
    ids = df["case_id"]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise InputError(f"{path}: {int(empty.sum())} row(s) have no case_id (the first on "
                         f"line {int(np.flatnonzero(empty.to_numpy())[0]) + 2})")
    if ids.dtype.kind == "f" and (ids == ids.round()).all():
        ids = ids.astype("int64")          # numeric ids read as floats: 7.0 is case 7
    df["case_id"] = ids.astype(str)
    return df


def _check_feature_cells(feats: pd.DataFrame, name, notes) -> pd.DataFrame:
    """Feature columns as floats: a non-numeric cell is refused (it would otherwise be dropped
    by the per-patient mean or break a fit deep inside the pipeline); an infinite value is
    treated as missing (imputed like an empty cell) and said in ``notes``."""
    cols = [c for c in feats.columns if "__" in c]
    out = feats.copy()
    n_inf, inf_cols = 0, []
    for c in cols:
        v = feats[c]
        if v.dtype == bool:
            out[c] = v.astype(float)
            continue
        num = pd.to_numeric(v, errors="coerce")
        bad = num.isna() & v.notna() & (v.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            more = f", and {int(bad.sum()) - 1} more" if bad.sum() > 1 else ""
            raise InputError(f"{name}: column {c} has a non-numeric value {str(v.iloc[i])!r} "
                             f"(case {feats['case_id'].iloc[i]}{more})")
        num = num.astype(float)
        inf = np.isinf(num.to_numpy())
        if inf.any():
            n_inf += int(inf.sum())
            inf_cols.append(c)
            num = num.mask(inf)
        out[c] = num
    if n_inf:
        notes.append(f"{name}: {n_inf} infinite value(s) in {len(inf_cols)} column(s) (e.g. "
                     f"{', '.join(inf_cols[:3])}) treated as missing (imputed)")
    return out


def _check_label_cells(labels: pd.DataFrame, recipe: dict, name):
    """Patient ids present where given (an empty one would join unrelated images into one
    patient "nan"); clinical values numeric (the nomogram is a logistic regression on them;
    an empty cell is a missing value). Returns the labels with clinical columns as numbers."""
    labels = labels.copy()
    if "patient_id" in labels.columns:
        pid = labels["patient_id"]
        empty = pid.isna() | (pid.astype(str).str.strip() == "")
        if empty.any():
            raise InputError(f"{name}: {int(empty.sum())} row(s) have no patient_id (e.g. case "
                             f"{labels['case_id'][empty].iloc[0]}); give every image its "
                             "patient, or leave the column out when each case is a patient")
    for c in recipe.get("clinical") or []:
        if c not in labels.columns:
            continue
        v = labels[c]
        num = pd.to_numeric(v, errors="coerce")
        bad = num.isna() & v.notna() & (v.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{name}: clinical column {c} has a non-numeric value "
                             f"{str(v.iloc[i])!r} (case {labels['case_id'].iloc[i]}); code it "
                             "as a number (e.g. 0/1) or leave the cell empty")
        if np.isinf(num.to_numpy(dtype=float)).any():
            raise InputError(f"{name}: clinical column {c} has an infinite value")
        labels[c] = num
    return labels


def id_problems(value, column: str = "case_id") -> list:
    """What keeps ``value`` from being a ``case_id`` (or ``patient_id``) of our tables.

    A case id follows extract's rules (:func:`~HER2RadiomicsLib.extraction.batch.
    case_id_problems`: no path, control characters or spreadsheet formula, at most 200
    characters), so a table extract would refuse is refused here too; a patient id names no
    file, so only a formula or control characters are refused.
    """
    from ..extraction.batch import case_id_problems, text_cell_problems
    text = str(value)
    if column == "case_id":
        return case_id_problems(text)
    return text_cell_problems(text, column, "patient")


def _check_ids(table: pd.DataFrame, name) -> None:
    """Refuse a case or patient id extract would refuse (one line naming the row)."""
    for col in ("case_id", "patient_id"):
        if col not in table.columns:
            continue
        for i, v in enumerate(table[col]):
            if v is None or (isinstance(v, float) and v != v):
                continue                     # an empty id is refused with its own message
            problems = id_problems(v, col)
            if problems:
                raise InputError(f"{name}: row {i + 2}: {'; '.join(problems)}")


def _check_unique_ids(df: pd.DataFrame, name):
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise InputError(f"{name}: case_id {dup.iloc[0]!r} appears more than once "
                         f"({dup.nunique()} duplicated case_id(s)); one row per case")


def prepare(features: pd.DataFrame, labels: pd.DataFrame, recipe: dict, *, notes=None,
            features_name="feature table", labels_name="labels table") -> pd.DataFrame:
    """Join features and labels (aggregating per patient when the recipe says so).

    ``features_name`` / ``labels_name`` (the files' paths) start every error message; rows
    left out (a feature row without a label row, or the reverse) and infinite values are
    said in ``notes``.
    """
    notes = [] if notes is None else notes
    label_col = recipe["label_col"]
    if label_col not in labels.columns:
        raise InputError(f"{labels_name}: no column {label_col!r} (the label of recipe "
                         f"{recipe.get('name')})")
    _check_ids(features, features_name)
    _check_ids(labels, labels_name)
    _check_unique_ids(features, features_name)
    _check_unique_ids(labels, labels_name)
    labels = _check_label_cells(labels, recipe, labels_name)
    feats = _check_feature_cells(features, features_name, notes)
    agg = recipe.get("aggregate")
    if agg:
        from ..extraction.features import aggregate_patients
        if "patient_id" not in labels.columns:
            raise InputError(f"{labels_name}: recipe {recipe.get('name')} aggregates per "
                             "patient but the labels have no patient_id column")
        _check_patient_labels(labels, labels[label_col], labels_name,
                              f"recipe {recipe.get('name')} averages a patient's images",
                              "remove 'aggregate' from the recipe")
        pid = labels.set_index("case_id")["patient_id"].astype(str)
        missing = set(feats["case_id"]) - set(pid.index)
        if missing:
            raise InputError(f"{labels_name}: {len(missing)} feature rows have no label row, "
                             f"e.g. {sorted(missing)[:3]}")
        already = feats["case_id"].isin(set(pid.values)).all()
        if not already:
            feats = aggregate_patients(feats.drop(columns=["n_images"], errors="ignore"),
                                       pid.loc[feats["case_id"]].to_numpy(), agg)
        labels = labels.drop_duplicates("patient_id").assign(
            case_id=lambda d: d["patient_id"].astype(str))
    feature_cols = [c for c in feats.columns if "__" in c]
    if not feature_cols:
        raise InputError(f"{features_name}: no '<region>__<feature>' columns")
    meta_cols = [c for c in labels.columns if c not in feats.columns or c == "case_id"]
    df = feats[["case_id"] + feature_cols].merge(labels[meta_cols], on="case_id", how="inner")
    if df.empty:
        raise InputError(f"{labels_name}: no case_id in common with {features_name}")
    for n_out, what, src in ((len(feats) - len(df), "feature row(s) have no label row",
                              labels_name),
                             (len(labels) - len(df), "labelled case(s) have no feature row",
                              features_name)):
        if n_out:
            notes.append(f"{n_out} {what} in {src}: left out")
    if "patient_id" not in df.columns:
        df["patient_id"] = df["case_id"]
    return df


def _check_patient_labels(table: pd.DataFrame, y, name, why: str, fix: str) -> None:
    """Refuse a patient whose images carry different labels where the patient is one
    observation (``why``; ``fix`` says what else the user can do), naming the labels file;
    missing labels are not compared."""
    if "patient_id" not in table.columns:
        return
    lab = pd.Series(np.asarray(y, dtype=object), index=table.index).map(
        lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    per = lab.groupby(table["patient_id"].astype(str)).nunique(dropna=True)
    if (per > 1).any():
        bad = list(per.index[per > 1])
        raise InputError(f"{name}: patient(s) {', '.join(map(str, bad[:3]))} have images with "
                         f"different labels, but {why}; correct the labels, or {fix}")


def _label_text(v: pd.Series) -> pd.Series:
    """Labels as text, None where missing. A numeric label column with an empty cell is read
    as floats (1.0): written back as "1" so it still matches the task's classes."""
    def one(x):
        if x is None or (isinstance(x, float) and x != x):
            return None
        if isinstance(x, (float, np.floating)) and float(x).is_integer():
            return str(int(x))
        t = str(x).strip()
        return t or None
    return v.astype(object).map(one)


def make_target(df: pd.DataFrame, recipe: dict, *, notes=None, labels_name="labels table"):
    """Filter rows for the task and return (df, y, classes, positive_class).

    Rows without a label are left out (said in ``notes``). A label that a named task does not
    know (``Low`` for ``low``, a typo) is refused rather than silently dropped; a task given
    as ``{positive: [...], negative: [...]}`` leaves other values out, as its definition says,
    and ``notes`` lists them.
    """
    notes = [] if notes is None else notes
    task, col = recipe["task"], recipe["label_col"]
    spec = task_spec(task)
    lab = _label_text(df[col])
    missing = lab.isna()
    if missing.any():
        notes.append(f"{labels_name}: {int(missing.sum())} case(s) without a {col} label "
                     "left out")
    if "classes" in spec:
        classes = [str(c) for c in spec["classes"]]
        groups = {c: [c] for c in classes}
    else:
        groups = {"+".join(map(str, spec[k])): [str(c) for c in spec[k]]
                  for k in ("negative", "positive")}
    wanted = [c for g in groups.values() for c in g]
    named = isinstance(task, str)          # a named task knows every HER2 class
    known = set(wanted) | set(TASKS["three_class"]["classes"])
    other = lab[~missing & ~lab.isin(wanted)]
    unknown = other[~other.isin(known)] if named else other.iloc[:0]
    if len(unknown):
        vals = ", ".join(f"{k!r} ({n})" for k, n in unknown.value_counts().head(5).items())
        raise InputError(f"{labels_name}: column {col} has value(s) task {task} does not know: "
                         f"{vals}; expected {', '.join(sorted(known))} (leave the cell empty "
                         "when the label is unknown)")
    if len(other) and not named:
        vals = ", ".join(f"{k!r} ({n})" for k, n in other.value_counts().head(5).items())
        notes.append(f"{labels_name}: {col} values outside the task left out: {vals}")
    keep = lab.isin(wanted).to_numpy()
    counts = {g: int(lab[keep].isin(members).sum()) for g, members in groups.items()}
    absent = [g for g, n in counts.items() if n == 0]
    if absent:
        raise InputError(f"{labels_name}: task {task} needs every class in column {col}; "
                         f"none labelled {', '.join(absent)} (found "
                         + ", ".join(f"{g} {n}" for g, n in counts.items()) + ")")
    d = df[keep].reset_index(drop=True)
    if "classes" in spec:
        return d, lab[keep].to_numpy(), classes, None
    pos = groups["+".join(map(str, spec["positive"]))]
    return d, lab[keep].isin(pos).astype(int).to_numpy(), [0, 1], "+".join(pos)


def required_rings(regions) -> dict:
    """Ring distances/annuli/combined needed to extract the given region names."""
    dist, annuli, combined = set(), False, set()
    for r in regions:
        m = re.fullmatch(r"peri_([\d.]+)-([\d.]+)mm", r)
        c = re.fullmatch(r"tumor\+peri_([\d.]+)mm", r)
        if m:
            a, b = float(m.group(1)), float(m.group(2))
            dist.add(b)
            if a > 0:
                dist.add(a)
                annuli = True
        elif c:
            dist.add(float(c.group(1)))
            combined.add(float(c.group(1)))
        elif r != "tumor":
            raise InputError(f"unknown region {r!r}")
    return {"rings_mm": sorted(dist), "annuli": annuli, "combined": sorted(combined)}


# -- pipelines ------------------------------------------------------------------------------------

def build_pipeline(recipe: dict, regions, classifier: str, *, icc_values=None, functions=None,
                   use_combat=True, y_train=None, seed: int = 0):
    """The recipe's pipeline for one classifier (an imbalanced-learn Pipeline)."""
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from .harmonization import ComBat
    from .transformers import (ColumnSelector, CorrelationFilter, LassoSelector, MedianImputer,
                           StableFeatureFilter, UnivariateFilter, URFModule, VarianceFilter,
                           make_classifier)
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
        from imblearn.over_sampling import SMOTE
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
                                   min_features=kw.pop("min_features", 3))
            target.append(("urf", URFModule(selector=sel, functions=functions, **kw)))
        elif name == "correlation":
            target.append(("correlation", CorrelationFilter(**kw)))
        elif name == "lasso":
            kw.setdefault("random_state", seed)
            if screen:
                from sklearn.pipeline import Pipeline as SkPipeline
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
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from .transformers import TUNING_GRIDS
        clf = GridSearchCV(clf, TUNING_GRIDS[classifier],
                           cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                           scoring="roc_auc" if "classes" not in task else "roc_auc_ovr")
    if task.get("hierarchical"):
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
    import inspect

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
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
    from .transformers import cap_neighbors
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


from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402  (estimator below)


class HierarchicalClassifier(ClassifierMixin, BaseEstimator):
    """Two binary stages: HER2-positive vs not, then HER2-low vs zero among the rest.

    P(positive) = p1; P(low) = (1 - p1) p2; P(zero) = (1 - p1)(1 - p2).
    """

    def __init__(self, estimator=None, classes=("zero", "low", "positive")):
        self.estimator = estimator
        self.classes = classes

    def fit(self, X, y):
        from sklearn.base import clone
        y = np.asarray(y).astype(str)
        zero, low, pos = self.classes
        from .transformers import cap_neighbors
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


def _proba(model, X, classes, positive):
    P = model.predict_proba(X)
    if positive is not None:
        return P[:, list(model.classes_).index(1)]
    order = [list(model.classes_).index(c) for c in classes]
    return P[:, order]


def patient_split(df, y, test_size, seed):
    """Stratified train/test split of patients (all images of a patient on one side)."""
    from sklearn.model_selection import train_test_split
    pats = pd.DataFrame({"p": df["patient_id"].astype(str).to_numpy(), "y": y}).groupby(
        "p", sort=True)["y"].first()
    tr, te = train_test_split(pats.index.to_numpy(), test_size=test_size, stratify=pats.to_numpy(),
                              random_state=seed)
    trs = set(tr)
    mask = df["patient_id"].astype(str).isin(trs).to_numpy()
    return np.flatnonzero(mask), np.flatnonzero(~mask)


UNITS = ("patients", "images")


def unit_level(X: pd.DataFrame, y, score, unit: str = "patients"):
    """Scores per evaluation unit: ``(ids, y, score)``.

    ``patients`` (the default of every recipe): a patient's images are one observation, scored
    by the mean of their image scores (probabilities, or Rad-scores), so that DeLong and
    bootstrap intervals assume independent patients, not independent images. ``images``
    keeps one row per image. Patients are returned in sorted id order.
    """
    if score is None:
        return None, None, None
    score = np.asarray(score, dtype=float)
    y = np.asarray(y)
    if unit == "images":
        ids = X["case_id"].astype(str).to_numpy() if "case_id" in X else np.arange(len(y))
        return ids, y, score
    if unit not in UNITS:
        raise InputError(f"evaluation unit {unit!r}: choose from {', '.join(UNITS)}")
    pid = X["patient_id"].astype(str).to_numpy()
    ids, first, inv = np.unique(pid, return_index=True, return_inverse=True)
    yu = y[first]
    if (y != yu[inv]).any():
        bad = ids[np.unique(inv[y != yu[inv]])][:3]
        raise InputError(f"patient(s) {', '.join(bad)} have images with different labels: "
                         "evaluate per image (evaluation: {unit: images})")
    counts = np.bincount(inv)
    if score.ndim == 1:
        su = np.bincount(inv, weights=score) / counts
    else:
        su = np.column_stack([np.bincount(inv, weights=score[:, j]) / counts
                              for j in range(score.shape[1])])
    return ids, yu, su


def oof_predictions(make_model, X, y, groups, classes, positive, seed, folds=5,
                    with_radscore=False, fitted=None):
    """Out-of-fold predictions on the training part (grouped by patient, stratified).

    With ``with_radscore`` the same fold models also give out-of-fold Rad-scores (for the
    nomogram), so no pipeline is fitted twice. A list ``fitted`` receives the fold models (their
    fallbacks go into the run's notes). Returns (predictions, radscores or None).
    """
    from sklearn.model_selection import StratifiedGroupKFold
    from .transformers import rad_score
    k = int(max(2, min(folds, pd.Series(y).value_counts().min())))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = np.zeros(len(y)) if positive is not None else np.zeros((len(y), len(classes)))
    rs = np.zeros(len(y)) if with_radscore else None
    for tr, va in cv.split(X, y, groups):
        m = fit_grouped(make_model(y[tr]), X.iloc[tr], y[tr], groups[tr], seed)
        if fitted is not None:
            fitted.append(m)
        out[va] = _proba(m, X.iloc[va], classes, positive)
        if with_radscore:
            rs[va] = rad_score(m, X.iloc[va])
    return out, rs


# -- the run --------------------------------------------------------------------------------------

@dataclass
class _Data:
    """The cases of one run: development (train + internal test) and the external site."""
    dev: pd.DataFrame
    ydev: np.ndarray
    dext: pd.DataFrame
    yext: np.ndarray
    Xtr: pd.DataFrame = None
    ytr: np.ndarray = None
    Xte: pd.DataFrame = None
    yte: np.ndarray = None
    unit: str = "patients"

    def per_unit(self, split: str, score):
        """``(ids, y, score)`` of a split (``train``, ``test``, ``external``) per unit."""
        X, y = {"train": (self.Xtr, self.ytr), "test": (self.Xte, self.yte),
                "external": (self.dext, self.yext)}[split]
        return unit_level(X, y, score, self.unit)

    def y_unit(self, split: str):
        """The labels of a split per evaluation unit."""
        X = {"train": self.Xtr, "test": self.Xte, "external": self.dext}[split]
        if X is None or not len(X):
            return np.array([])
        return self.per_unit(split, np.zeros(len(X)))[1]


def run(recipe, features_csv, labels_csv, out_dir, *, icc=None, functions=None, repeats=None,
        external_site="recipe", n_boot=None, jobs=1, seed=None, make_bundle=True,
        progress=True) -> dict:
    """Run a recipe end to end; returns the summary written to ``metrics.json``.

    The steps: read and join the tables, hold out the external site, split the development
    cases by patient, fit and evaluate every scenario x classifier, pick the primary model,
    compare models (DeLong), repeated splits, Rad-score nomogram, then write predictions,
    plots, the bundle, ``metrics.json`` and the report.
    """
    from .transformers import function_sets_from_table, icc_values_from_table
    t0 = time.time()
    if isinstance(recipe, dict):
        validate_recipe(recipe)         # a changed copy of a loaded recipe is checked again
    else:
        recipe = load_recipe(recipe)
    ev = dict(recipe.get("evaluation") or {})
    seed = int(ev.get("seed", 42) if seed is None else seed)
    n_boot = int(ev.get("bootstrap", 2000) if n_boot is None else n_boot)
    repeats = int(ev.get("repeats", 20) if repeats is None else repeats)
    ext = ev.get("external_site") if external_site == "recipe" else external_site
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    notes = []
    feats = load_table(features_csv, "feature")
    labels = load_table(labels_csv, "label")
    df = prepare(feats, labels, recipe, notes=notes, features_name=features_csv,
                 labels_name=labels_csv)
    df, y, classes, positive = make_target(df, recipe, notes=notes, labels_name=labels_csv)
    if str(ev.get("unit", "patients")) == "patients":
        # found now, not after every model was fitted (and then naming no file)
        _check_patient_labels(df, y, labels_csv, "every patient is one observation (recipe "
                              "evaluation unit: patients)", "evaluate per image (recipe "
                              "evaluation: {unit: images})")
    binary = positive is not None
    icc_values = icc_values_from_table(icc) if icc is not None else None
    fsets = function_sets_from_table(functions) if functions is not None else None
    batch = recipe["batch_col"]
    _check_sites(df, recipe, labels_csv)
    _check_varying_features(df, recipe, features_csv)
    if icc_values is None and _has_step(recipe, "stable"):
        notes.append("no ICC table given (--icc): the stable-feature filter kept every feature")
    if not binary:
        notes += _multiclass_notes(recipe, len(classes))
    data, ext = _hold_out_external(df, y, batch, ext, binary, notes, labels=labels,
                                   labels_name=labels_csv, explicit=external_site != "recipe")
    data.unit = str(ev.get("unit", "patients"))
    if data.unit not in UNITS:
        raise InputError(f"recipe {recipe['name']}: evaluation unit {data.unit!r} (choose "
                         f"from {', '.join(UNITS)})")
    _check_class_sizes(data, classes, positive, recipe, labels_csv, ext)
    test_size, repeats = _assign_test_set(data, recipe, ext, float(ev.get("test_size", 0.3)),
                                          2 if binary else len(classes), repeats, seed, notes)
    use_combat = batch in data.dev.columns and data.Xtr[batch].nunique() >= 2
    if _has_step(recipe, "combat") and not use_combat:
        notes.append("ComBat skipped: the training data has fewer than two sites")

    def maker(regions, clf):
        return lambda yt=None: build_pipeline(recipe, regions, clf, icc_values=icc_values,
                                              functions=fsets, use_combat=use_combat,
                                              y_train=yt, seed=seed)

    from sklearn.utils._param_validation import InvalidParameterError
    try:
        results, preds = _fit_and_evaluate(recipe, maker, data, classes, positive, n_boot,
                                           seed, progress)
    except InvalidParameterError as exc:     # a step setting of the recipe out of range
        raise InputError(f"{recipe.get('_path') or recipe['name']}: {exc}") from None
    for key, r in results.items():
        # fallbacks not in the papers (minimum feature counts, LASSO keeping nothing) that
        # fired when the model was fitted on the training patients
        for step_name, step in r["model"].named_steps.items():
            if getattr(step, "fallback_", None):
                notes.append(f"{key}: {step.fallback_}")
        notes += [f"{key}: {n}" for n in r["fit_notes"]]
    best = _choose_primary(results, recipe["primary"], binary)
    primary = results[best]
    comparisons = _compare_with_primary(results, preds, best, data.y_unit("test")) \
        if binary else []
    # repeated random splits of the development data (cui2023's perturbations)
    # repeated random splits; with several scenarios each split chooses its own again
    makers = {r["scenario"]: r["make"] for r in results.values()
              if r["classifier"] == primary["classifier"]}
    rep_aucs, rep_choice = repeated_splits(makers if len(makers) > 1 else primary["make"],
                                           data.dev, data.ydev, classes, positive, repeats,
                                           seed, test_size, jobs, unit=data.unit) \
        if repeats > 0 else ([], [])
    nomo, nomo_res = None, {}
    if binary and "lasso" in primary["model"].named_steps:
        nomo, nomo_res = _fit_nomogram(recipe, primary, data, preds, best, n_boot, seed, notes)
    elif binary:
        notes.append("the primary pipeline has no LASSO step: no Rad-score / nomogram")
    summary = _summary(recipe, results, best, comparisons, rep_aucs, nomo_res, notes, classes,
                       positive, df, data, ext, t0, rep_choice)
    _write_outputs(out, summary, recipe, results, preds, best, nomo, nomo_res, data, feats,
                   features_csv, df, classes, positive, batch, rep_aucs, make_bundle)
    return summary


def _multiclass_notes(recipe: dict, n_classes: int) -> list:
    """Notes for a recipe run on more than two classes: its two-class tests run in their
    several-class form (t-test as one-way ANOVA, Mann-Whitney as Kruskal-Wallis)."""
    notes = []
    for st in recipe["pipeline"]:
        name, kw = (st, {}) if isinstance(st, str) else next(iter(st.items()))
        test = (kw or {}).get("test", "ttest" if name == "univariate" else "mannwhitney")
        if name in ("univariate", "urf"):
            multi = {"ttest": "one-way ANOVA", "welch": "one-way ANOVA",
                     "mannwhitney": "Kruskal-Wallis"}.get(test)
            if multi:
                notes.append(f"{name}: the two-class {test} runs as {multi}, its form "
                             f"for {n_classes} classes")
    return notes


def _assign_test_set(data, recipe: dict, ext, test_size: float, n_classes: int,
                     repeats: int, seed: int, notes: list) -> tuple:
    """Set ``data``'s training and test sets; return the test fraction and the number of
    repeated splits that follow from them.

    With ``test_size > 0`` the development patients are split (by patient); with 0, as in
    yin2024, every development patient trains and the external site is the test set (then
    there is nothing to repeat). Without a usable external site, or with one that lacks a
    class, there is no such test set: the development data is split 70/30 instead.
    """
    if test_size <= 0 and not ext:
        notes.append(f"recipe {recipe['name']} tests on an external site, but none is usable: "
                     "tested on a 70/30 split of the development patients instead")
        test_size = 0.3
    elif test_size <= 0 and len(np.unique(data.yext)) < n_classes:
        notes.append(f"external site {ext} lacks a class, so it cannot be the test set: "
                     "tested on a 70/30 split of the other sites instead")
        test_size = 0.3
    if test_size > 0:
        tr_idx, te_idx = patient_split(data.dev, data.ydev, test_size, seed)
        data.Xtr, data.ytr = data.dev.iloc[tr_idx], data.ydev[tr_idx]
        data.Xte, data.yte = data.dev.iloc[te_idx], data.ydev[te_idx]
        return test_size, repeats
    data.Xtr, data.ytr = data.dev, data.ydev
    data.Xte, data.yte = data.dext, data.yext
    data.dext, data.yext = data.dext.iloc[:0], data.yext[:0]
    notes.append(f"test set = external site {ext} (trained on every other site's "
                 "patients, as the paper's centre 1 / centre 2 design)")
    if repeats > 0:
        notes.append("no repeated random splits: the test set is the external site")
    return test_size, 0


def _has_step(recipe: dict, name: str) -> bool:
    return any((s if isinstance(s, str) else next(iter(s))) == name for s in recipe["pipeline"])


def _recipe_regions(recipe: dict) -> list:
    scen = recipe.get("scenarios") or {"main": recipe.get("regions", ["tumor"])}
    return sorted({r for regions in scen.values() for r in regions})


def _check_sites(df, recipe: dict, labels_name):
    """ComBat harmonises each case with its site's effects: a case without a site cannot be
    harmonised (an empty cell would silently become a site of its own)."""
    batch = recipe["batch_col"]
    if not _has_step(recipe, "combat") or batch not in df.columns:
        return
    site = df[batch]
    empty = site.isna() | (site.astype(str).str.strip() == "")
    if empty.any():
        raise InputError(f"{labels_name}: {int(empty.sum())} case(s) have no {batch} (e.g. "
                         f"{df['case_id'][empty].iloc[0]}); recipe {recipe['name']} harmonises "
                         "by site (ComBat) and needs every case's site")


def _check_varying_features(df, recipe: dict, features_name):
    """Every region of the recipe has feature columns, and at least one of them varies
    (a table of empty or constant columns leaves nothing to model)."""
    for region in _recipe_regions(recipe):
        cols = [c for c in df.columns if c.startswith(f"{region}__")]
        if not cols:
            raise InputError(f"{features_name}: recipe {recipe['name']} needs region {region}, "
                             "which has no feature columns (extract it with --rings)")
        if not (df[cols].nunique() >= 2).any():
            raise InputError(f"{features_name}: no {region} feature varies across the "
                             f"{len(df)} labelled cases (all empty or constant): nothing to "
                             "model")


#: patients of each class the development sites need. The run splits them 70/30, takes the
#: threshold from out-of-fold predictions of the training part (two or more folds, each with
#: every class) and its LASSO, SMOTE and calibration steps cross-validate again inside each
#: fold. Measured on the shipped recipes (16 seeds each): 5 runs; with 4, peritumoral2025's
#: inner folds lose a class; with 3, cui2023's do
MIN_PATIENTS_PER_CLASS = 5


def _check_class_sizes(data, classes, positive, recipe, labels_name, ext):
    pid = data.dev["patient_id"].astype(str).to_numpy()
    per = pd.Series(data.ydev).groupby(pid).first().value_counts()
    names = class_names(recipe["task"]) if positive is not None else classes
    counts = {str(names[i] if positive is not None else c): int(per.get(c, 0))
              for i, c in enumerate(classes)}
    few = {c: n for c, n in counts.items() if n < MIN_PATIENTS_PER_CLASS}
    if few:
        where = f" (external site {ext} held out)" if ext else ""
        raise InputError(
            f"{labels_name}: too few patients for recipe {recipe['name']}: "
            + ", ".join(f"{c} {n}" for c, n in counts.items())
            + f" in the development data{where}; each class needs at least "
            f"{MIN_PATIENTS_PER_CLASS} (train/test split, then cross-validation inside the "
            "training part)")


def _hold_out_external(df, y, batch, ext, binary, notes, *, labels=None,
                       labels_name="labels table", explicit=False):
    """Split off the external site (held out of every fit); ``(data, ext)``, ``ext`` None
    when the site is not usable.

    A site asked for on the command line (``explicit``) is used or refused: one the labels
    lack, one without a usable case (no label of the task, no feature row) or one holding
    every case is an error. The recipe's own default adapts instead: the run goes on
    without external validation and says so in ``notes``.
    """
    ext_mask = np.zeros(len(df), bool)
    if ext:
        if batch not in df.columns:
            raise InputError(f"{labels_name}: external site {ext!r} requested but the labels "
                             f"have no {batch!r} column")
        # a writable copy: under pandas' copy-on-write a comparison's array is read-only
        ext_mask = np.array(df[batch].astype(str) == str(ext), dtype=bool)
        problem = None
        if not ext_mask.any():
            n_rows = int((labels[batch].astype(str) == str(ext)).sum()) \
                if labels is not None and batch in labels.columns else 0
            problem = (f"has no usable case (its {n_rows} row(s) have no label of the task or "
                       "no feature row)") if n_rows else "does not occur in the labels"
        elif ext_mask.all():
            problem = "holds every usable case (nothing would be left to train on)"
        if problem:
            if explicit:
                sites = df[batch].astype(str).value_counts().sort_index()
                raise InputError(f"{labels_name}: external site {ext!r} {problem}; usable "
                                 "cases per site: "
                                 + ", ".join(f"{k} {v}" for k, v in sites.items()))
            notes.append(f"external site {ext!r} {problem}: no external validation")
            ext_mask[:] = False
            ext = None
    data = _Data(dev=df[~ext_mask].reset_index(drop=True), ydev=y[~ext_mask],
                 dext=df[ext_mask].reset_index(drop=True), yext=y[ext_mask])
    if ext and binary and len(np.unique(data.yext)) < 2:
        notes.append(f"external site {ext!r} has a single class: AUC not computable there")
    return data, ext


def _fit_and_evaluate(recipe, maker, d: _Data, classes, positive, n_boot, seed, progress):
    """Fit every scenario x classifier on the training patients; out-of-fold, test and
    external metrics. Returns ``(results, preds)`` keyed ``scenario/classifier``."""
    from . import evaluation as E
    binary = positive is not None
    scenarios = recipe.get("scenarios") or {"main": recipe.get("regions", ["tumor"])}
    groups_tr = d.Xtr["patient_id"].astype(str).to_numpy()
    results, preds = {}, {}
    for scen, regions in scenarios.items():
        for clf in recipe["classifiers"]:
            key = f"{scen}/{clf}" if len(scenarios) > 1 else clf
            mk = maker(regions, clf)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = fit_grouped(mk(d.ytr), d.Xtr, d.ytr, groups_tr, seed)
                folds = []
                oof, oof_rs = oof_predictions(mk, d.Xtr, d.ytr, groups_tr, classes, positive,
                                              seed, with_radscore=binary and "lasso" in
                                              model.named_steps, fitted=folds)
            p_te = _proba(model, d.Xte, classes, positive)
            p_ext = _proba(model, d.dext, classes, positive) if len(d.dext) else None
            image_scores = (oof, p_te, p_ext)
            # metrics per evaluation unit (a patient's images averaged by default)
            _, y_o, oof = d.per_unit("train", oof)
            _, y_te, p_te = d.per_unit("test", p_te)
            _, y_ext, p_ext = d.per_unit("external", p_ext) if p_ext is not None else \
                (None, d.yext, None)
            r = {"scenario": scen, "classifier": clf, "regions": list(regions), "model": model,
                 "make": mk, "oof_radscore": oof_rs, "image_scores": image_scores,
                 "fit_notes": _fit_notes(model, folds)}
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
                    r["external"] = E.evaluate_multiclass(y_ext, p_ext, classes, n_boot,
                                                          seed)
            for part in ("train_oof", "test", "external"):
                if part in r:
                    r[part]["unit"] = d.unit
            r["n_selected"] = _n_selected(model)
            results[key] = r
            preds[key] = (oof, p_te, p_ext)
            if progress:
                auc = r["test"].get("auc", r["test"].get("auc_macro"))
                print(f"  {key:28s} test AUC {auc:.3f}", flush=True)
    return results, preds


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


def _fit_nomogram(recipe, primary, d: _Data, preds, best, n_boot, seed, notes):
    """Rad-score + clinical nomogram fitted on the training patients' out-of-fold Rad-scores;
    evaluated on the test and external cases. Returns ``(model, results)``."""
    from . import evaluation as E
    from .nomogram import NomogramModel
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


def _univariate_clinical(d: _Data, candidates, p_max):
    """``(kept, {variable: p})``: univariate logistic regression of the label on each
    clinical variable over the training units (a patient's value is the mean of its rows)."""
    from .nomogram import NomogramModel
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


def _write_outputs(out, summary, recipe, results, preds, best, nomo, nomo_res, d: _Data,
                   feats, features_csv, df, classes, positive, batch, rep_aucs, make_bundle):
    """Predictions, plots, the bundle, ``metrics.json`` and the HTML report."""
    from ..imaging.io import atomic_write_text
    from ..reports.study import write_report
    _write_predictions(out, preds, d, classes, positive, best, results[best]["image_scores"])
    figs = _plots(out / "plots", results, preds, best, d.y_unit("test"), d.y_unit("external"),
                  d.y_unit("train"), rep_aucs, nomo, positive is not None, classes, recipe,
                  d.unit)
    # paths inside metrics.json are relative to the output folder, so the folder can be moved
    # (the CLI builds it aside and swaps it into place when the run succeeds)
    summary["figures"] = {k: Path(v).relative_to(out).as_posix() for k, v in figs.items()}
    if make_bundle:
        summary["bundle"] = _bundle(out, recipe, results[best], nomo, nomo_res, summary, feats,
                                    features_csv, df, classes, positive, batch, d.Xtr) \
            .relative_to(out).as_posix()
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=_json))
    summary["report"] = write_report(out, summary, results, figs).relative_to(out).as_posix()
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=_json))


def _n_selected(model):
    for name in ("lasso", "urf", "correlation", "univariate"):
        if name in model.named_steps:
            return len(model.named_steps[name].selected_features_)
    return None


def repeated_splits(make, dev, ydev, classes, positive, repeats, seed, test_size, jobs=1,
                    unit="patients"):
    """Test AUCs over ``repeats`` random patient-level 70/30 splits (scored per ``unit``, as
    the main split); returns ``(aucs, chosen scenarios)``.

    ``make`` is the primary classifier's pipeline factory, or ``{scenario: factory}`` when
    the recipe compares region scenarios: each split then chooses its scenario again, as the
    main run does (best training out-of-fold AUC), so the spread includes that choice.
    """
    from joblib import Parallel, delayed
    makers = make if isinstance(make, dict) else {"main": make}

    def auc(yu, p):
        from sklearn.metrics import roc_auc_score
        if positive is not None:
            return float(roc_auc_score(yu, p))
        return float(np.mean([roc_auc_score((yu == c).astype(int), p[:, j])
                              for j, c in enumerate(classes)]))

    def one(r):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr, te = patient_split(dev, ydev, test_size, seed + 1000 + r)
            groups = dev["patient_id"].astype(str).to_numpy()
            chosen = next(iter(makers))
            if len(makers) > 1:
                scores = {}
                for scen, mk in makers.items():
                    oof, _ = oof_predictions(mk, dev.iloc[tr], ydev[tr], groups[tr], classes,
                                             positive, seed + r)
                    _, yo, po = unit_level(dev.iloc[tr], ydev[tr], oof, unit)
                    scores[scen] = auc(yo, po)
                chosen = max(scores, key=scores.get)
            m = fit_grouped(makers[chosen](ydev[tr]), dev.iloc[tr], ydev[tr], groups[tr],
                            seed + r)
            _, yu, p = unit_level(dev.iloc[te], ydev[te],
                                  _proba(m, dev.iloc[te], classes, positive), unit)
            return auc(yu, p), chosen
    out = list(Parallel(n_jobs=jobs)(delayed(one)(r) for r in range(repeats)))
    return [a for a, _ in out], [c for _, c in out]


def _summary(recipe, results, best, comparisons, rep, nomo_res, notes, classes, positive, df,
             d: _Data, ext, t0, rep_choice=()):
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
    return {
        "recipe": recipe["name"], "title": recipe.get("title", recipe["name"]),
        "params": recipe.get("params", "default"),
        **({"features_note": recipe["features_note"]} if recipe.get("features_note") else {}),
        "task": recipe["task"], "label_col": recipe["label_col"],
        "classes": [str(c) for c in classes], "positive": positive,
        "class_names": class_names(recipe["task"]),
        # every count, metric and plot is per evaluation unit (patients by default)
        "unit": d.unit,
        "n": {"all": int(len(ytr) + len(yte) + len(yext)), "train": int(len(ytr)),
              "test": int(len(yte)), "external": int(len(yext))},
        "n_images": {"all": int(len(df)), "train": int(len(d.Xtr)), "test": int(len(d.Xte)),
                     "external": int(len(d.dext))},
        "class_counts": {"train": counts(ytr), "test": counts(yte),
                         "external": counts(yext) if len(yext) else {}},
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
        "seconds": round(time.time() - t0, 1)}


def _write_predictions(out, preds, d: _Data, classes, positive, best, image_scores):
    """``predictions.csv``: the primary model's scores per evaluation unit (``id`` is the
    patient id, or the case id when the unit is images), with the unit's image count;
    ``predictions_images.csv``: the same model's score of every image. Ids and labels are the
    input tables' text: a cell a spreadsheet would run as a formula is quoted."""
    from ..outputs import write_csv

    def scores(frame, p):
        if positive is not None:
            frame["probability"] = p
        else:
            for j, c in enumerate(classes):
                frame[f"p_{c}"] = p[:, j]
        return frame
    images = []
    for split, X, y, p in zip(("train_oof", "test", "external"), (d.Xtr, d.Xte, d.dext),
                              (d.ytr, d.yte, d.yext), image_scores):
        if p is not None and len(X):
            images.append(scores(pd.DataFrame({
                "case_id": X["case_id"].astype(str).to_numpy(),
                "patient_id": X["patient_id"].astype(str).to_numpy(), "split": split,
                "label": y}), p))
    write_csv(out / "predictions_images.csv", pd.concat(images), float_format="%.10g")
    rows = []
    oof, pte, pext = preds[best]
    for split, X, p in (("train_oof", d.Xtr, oof), ("test", d.Xte, pte),
                        ("external", d.dext, pext)):
        if p is None or not len(X):
            continue
        part = "train" if split == "train_oof" else split
        ids, yy, _ = d.per_unit(part, np.zeros(len(X)))
        key = X["patient_id" if d.unit == "patients" else "case_id"].astype(str)
        n_img = key.value_counts().reindex(ids).to_numpy()
        rows.append(scores(pd.DataFrame({"id": ids, "unit": d.unit[:-1], "n_images": n_img,
                                         "split": split, "label": yy}), p))
    write_csv(out / "predictions.csv", pd.concat(rows), float_format="%.10g")


def _plots(pdir, results, preds, best, yte, yext, ytr, rep, nomo, binary, classes, recipe,
           unit="patients"):
    from . import evaluation as E
    figs = {}
    if binary:
        test_curves = {k: (yte, preds[k][1]) for k in results}
        if "nomogram:test" in preds:
            test_curves["nomogram (Rad-score + clinical)"] = preds["nomogram:test"]
        figs["roc_test"] = E.plot_roc(test_curves, pdir / "roc_test", title=f"ROC — test set ({len(yte)} {unit})")
        if "external" in results[best]:
            ext_curves = {k: (yext, preds[k][2]) for k in results if preds[k][2] is not None}
            if "nomogram:external" in preds:
                ext_curves["nomogram"] = preds["nomogram:external"]
            figs["roc_external"] = E.plot_roc(ext_curves, pdir / "roc_external",
                                              title=f"ROC — external site ({len(yext)} {unit})")
        cal = {f"{best} (test)": (yte, preds[best][1])}
        if "nomogram:test" in preds:
            cal["nomogram (test)"] = preds["nomogram:test"]
        figs["calibration"] = E.plot_calibration(cal, pdir / "calibration",
                                                 title=f"Calibration ({unit})")
        figs["decision_curve"] = E.plot_decision_curve(
            cal, pdir / "decision_curve", title=f"Decision curve ({unit})")
        figs["confusion"] = E.plot_confusion(results[best]["test"], pdir / "confusion",
                                             title=f"{best}, test set ({unit})")
        if nomo is not None:
            from .nomogram import plot_nomogram
            figs["nomogram"] = plot_nomogram(nomo, pdir / "nomogram",
                                             labels={"rad_score": "Rad-score"},
                                             title="Nomogram: Rad-score + clinical")
    else:
        curves = {f"{c} vs rest": ((yte == c).astype(int), preds[best][1][:, j])
                  for j, c in enumerate(classes)}
        figs["roc_test"] = E.plot_roc(curves, pdir / "roc_test",
                                      title=f"One-vs-rest ROC — {best}, test set "
                                      f"({len(yte)} {unit})")
        pos_j = len(classes) - 1
        cal = {f"{classes[pos_j]} vs rest": ((yte == classes[pos_j]).astype(int),
                                             preds[best][1][:, pos_j])}
        figs["calibration"] = E.plot_calibration(cal, pdir / "calibration",
                                                 title=f"Calibration ({unit})")
        figs["decision_curve"] = E.plot_decision_curve(
            cal, pdir / "decision_curve", title=f"Decision curve ({unit})")
        figs["confusion"] = _plot_confusion_multi(yte, preds[best][1], classes,
                                                  pdir / "confusion", unit)
    if rep:
        figs["repeated_splits"] = E.plot_auc_distribution(
            rep, pdir / "repeated_splits", title=f"Repeated 70/30 splits (AUC per {unit[:-1]})")
    return figs


def _plot_confusion_multi(y, P, classes, path, unit="patients"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .evaluation import _save
    pred = np.asarray(classes)[P.argmax(axis=1)]
    m = np.array([[int(((y == a) & (pred == b)).sum()) for b in classes] for a in classes])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(m, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=11,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), [f"pred {c}" for c in classes], fontsize=8)
    ax.set_yticks(range(len(classes)), [f"true {c}" for c in classes], fontsize=8)
    ax.set_title(f"Confusion matrix (arg-max), test set ({unit})", fontsize=9)
    return _save(fig, path)


def training_engine(prov: pd.DataFrame | None) -> dict:
    """The engine (name, version) the training features came from, as their provenance says.

    Tables written before engines were recorded came from pyradiomics 3.0.1, the only engine
    then.
    """
    if prov is None or "engine" not in prov or prov["engine"].nunique() != 1:
        return {"name": "pyradiomics", "version": "3.0.1"}
    name = str(prov["engine"].iloc[0])
    if "engine_version" in prov and prov["engine_version"].nunique() == 1:
        return {"name": name, "version": str(prov["engine_version"].iloc[0])}
    from ..extraction.features import engine_info
    return engine_info(name)


def training_spacing(prov: pd.DataFrame | None, case_ids) -> dict:
    """Units and pixel-spacing range of the training images (from the features' provenance).

    ``units`` is ``"pixel"`` when the spacing of the training images was unknown (features in
    pixel units), ``"mm"`` when it was known for all of them, ``"mixed"`` otherwise, and
    ``"unrecorded"`` without provenance.
    """
    if prov is None or "spacing_source" not in prov or "case_id" not in prov:
        return {"units": "unrecorded"}
    p = prov[prov["case_id"].astype(str).isin(set(map(str, case_ids)))]
    if p.empty:
        return {"units": "unrecorded"}
    unknown = (p["spacing_source"].astype(str) == "unknown").to_numpy()
    units = "pixel" if unknown.all() else ("mm" if not unknown.any() else "mixed")
    out = {"units": units, "sources": {str(k): int(v) for k, v in
                                       p["spacing_source"].value_counts().items()}}
    known = p[~unknown]
    for ax in ("x", "y"):
        col = f"spacing_{ax}_mm"
        if col in known and len(known):
            v = known[col].astype(float)
            out[f"{col}_range"] = [float(v.min()), float(v.max())]
    return out


def training_ranges(pipeline, Xtr: pd.DataFrame) -> dict:
    """Training ranges of the model's inputs (raw values) and of its Rad-score.

    Recorded in the bundle for the out-of-distribution check at prediction time.
    """
    from .transformers import model_feature_names, rad_score
    try:
        used = model_feature_names(pipeline, Xtr)
    except Exception:  # an exotic pipeline: fall back to every input column
        used = []
    used = [c for c in used if c in Xtr.columns] or [
        c for c in pipeline.named_steps["select"].selected_features_ if c in Xtr.columns]
    out = {"features": {}}
    for c in used:
        v = pd.to_numeric(Xtr[c], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v):
            out["features"][c] = [float(v.min()), float(v.max())]
    try:
        rs = rad_score(pipeline, Xtr)
        out["rad_score"] = [float(np.nanmin(rs)), float(np.nanmax(rs))]
    except InputError:
        pass
    return out


def _bundle(out, recipe, primary, nomo, nomo_res, summary, feats, features_csv, df, classes,
            positive, batch, Xtr):
    from .bundle import save_bundle
    from ..extraction.features import load_params, params_hash
    params_name = recipe.get("params", "default")
    prov = Path(features_csv).with_name(Path(features_csv).stem + "_provenance.csv")
    text = load_params(params_name)[1]
    prov_df = None
    if prov.exists():
        prov_df = pd.read_csv(prov, usecols=lambda c: c in (
            "case_id", "params", "params_hash", "spacing_source", "spacing_x_mm",
            "spacing_y_mm", "engine", "engine_version"))
        p = prov_df
        if len(p) and "params_hash" in p and p["params_hash"].nunique() == 1:
            if p["params_hash"].iloc[0] != params_hash(text):
                try:
                    t2 = load_params(p["params"].iloc[0])[1]
                    if params_hash(t2) == p["params_hash"].iloc[0]:
                        text, params_name = t2, p["params"].iloc[0]
                except InputError:
                    pass
                if params_hash(text) != p["params_hash"].iloc[0]:
                    raise InputError(f"{features_csv}: features were extracted with params "
                                     f"{p['params'].iloc[0]!r} (hash differs from recipe "
                                     f"params {params_name!r}); cannot record them in the "
                                     "bundle")
    sel = primary["model"].named_steps["select"]
    input_cols = list(sel.selected_features_)
    regions = list(primary["regions"])
    sites = list(map(str, primary["model"].named_steps["combat"].sites_)) \
        if "combat" in primary["model"].named_steps else []
    binary_names = class_names(recipe["task"])
    meta = {
        "name": f"{recipe['name']}", "recipe": recipe["name"], "recipe_yaml": recipe["_text"],
        "task": recipe["task"], "label_col": recipe["label_col"],
        # binary bundles name their classes after the task (e.g. zero / low), not 0 / 1
        "classes": [str(c) for c in classes] if positive is None else binary_names,
        "positive_class": positive,
        "threshold": primary.get("threshold"), "input_columns": input_cols,
        "regions": regions, "rings": required_rings(regions),
        "aggregate": recipe.get("aggregate"), "params_name": str(params_name),
        "params_yaml": text, "params_hash": params_hash(text), "batch_col": batch,
        "sites": sites, "clinical": list(nomo.predictors[1:]) if nomo is not None else [],
        "nomogram_threshold": nomo_res.get("threshold"),
        "engine": training_engine(prov_df),
        "training_spacing": training_spacing(prov_df, Xtr["case_id"] if "case_id" in Xtr
                                             else []),
        "training_ranges": training_ranges(primary["model"], Xtr),
        "metrics": {"test": primary["test"], "external": primary.get("external"),
                    "train_oof": primary["train_oof"]},
        "training": {"n": summary["n"], "unit": summary["unit"],
                     "n_images": summary["n_images"], "class_counts": summary["class_counts"],
                     "primary": summary["primary"], "external_site": summary["external_site"]},
        "research_use_only": True}
    return save_bundle(out / "model_bundle.zip", {"pipeline": primary["model"], "nomogram": nomo},
                       meta)


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="records")
    return str(o)
