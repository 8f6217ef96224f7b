"""Study recipes: load, validate and read a recipe (the protocol of a published study).

A recipe (YAML in ``HER2RadiomicsLib/recipes``) names the params preset, regions (or several
region *scenarios*), the task, the pipeline steps, the classifiers, the clinical nomogram
predictors and the evaluation design. :func:`load_recipe` reads and checks one;
:func:`validate_recipe` refuses, in one line naming the recipe file, settings that cannot
run. The run itself is :func:`HER2RadiomicsLib.modelling.study.run`.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml

from ..errors import InputError, one_line
from .harmonization import ComBat
from .transformers import (CLASSIFIERS, CorrelationFilter, LassoSelector, UnivariateFilter,
                           URFModule)


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


UNITS = ("patients", "images")


#: the imaging modality a recipe's paper used; the features here come from ultrasound
#: whatever it says (a mammography protocol is run as written on ultrasound images)
MODALITIES = ("ultrasound", "mammography")


#: the columns of one ``deviations`` row (docs/presets.md's "paper -> ours -> why" table)
DEVIATION_KEYS = ("paper", "ours", "why")


def list_recipes() -> list:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path, _chain=()) -> dict:
    """Load and validate a recipe (name of a shipped one, or a YAML path)."""
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
        raise InputError(f"{p}: cannot read the recipe ({one_line(exc)})") from None
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
    r.setdefault("modality", "ultrasound")
    if isinstance(r["classifiers"], list) and r["classifiers"]:
        r.setdefault("primary", r["classifiers"][0])
    r.setdefault("evaluation", {})
    validate_recipe(r, p)
    r["_path"] = str(p)
    r["_text"] = text
    return r


def _step_settings() -> dict:
    """The settings each pipeline step accepts in a recipe (the others are set by the run)."""


    def params(cls, *not_these):
        return set(inspect.signature(cls).parameters) - set(not_these)
    return {"impute": set(), "variance": set(), "scale": set(), "smote": set(),
            "stable": {"threshold"},
            "combat": params(ComBat, "batch_col", "forbidden_covariates"),
            "univariate": params(UnivariateFilter),
            "urf": params(URFModule, "selector", "functions") | {
                "test", "p_threshold", "fold_change", "fold_change_direction", "min_features"},
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
    "fold_change_direction": (str, lambda v: v in ("up", "either"), "up or either"),
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
    _validate_provenance(r, bad)


def _text(v) -> bool:
    """A non-empty one-line string (reports and the model card print it as one line)."""
    return isinstance(v, str) and bool(v.strip()) and "\n" not in v.strip()


def _validate_provenance(r: dict, bad) -> None:
    """The keys that say how a recipe differs from its paper (shown in every report and model
    card): ``modality``, ``protocol_note``, ``assumed``, ``deviations``."""
    if r.get("modality", "ultrasound") not in MODALITIES:
        bad(f"modality {r['modality']!r}: choose {' or '.join(MODALITIES)}")
    if r.get("protocol_note") is not None and not _text(r["protocol_note"]):
        bad("protocol_note must be one line of text")
    assumed = r.get("assumed")
    if assumed is not None and (not isinstance(assumed, list)
                                or not all(_text(a) for a in assumed)):
        bad("assumed must be a list of one-line texts (the protocol steps the paper does "
            "not give)")
    devs = r.get("deviations")
    if devs is None:
        return
    if not isinstance(devs, list):
        bad("deviations must be a list of {paper: ..., ours: ..., why: ...}")
    for i, d in enumerate(devs, 1):
        if not isinstance(d, dict) or set(d) != set(DEVIATION_KEYS) or \
                not all(_text(d[k]) for k in DEVIATION_KEYS):
            bad(f"deviation {i} must have exactly paper, ours and why, each one line of text")


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


def _has_step(recipe: dict, name: str) -> bool:
    return any((s if isinstance(s, str) else next(iter(s))) == name for s in recipe["pipeline"])


def _recipe_regions(recipe: dict) -> list:
    scen = recipe.get("scenarios") or {"main": recipe.get("regions", ["tumor"])}
    return sorted({r for regions in scen.values() for r in regions})


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
