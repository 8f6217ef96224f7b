"""What a bundle's content must satisfy beyond the allow-list, checked at every load.

Three groups, each refusing a file with one line that names it and the problem:

* :func:`check_schema_graph` — the skops schema as the graph skops walks. An object written
  twice is stored once and referred to by its ``__id__``; skops' type audit follows every
  reference again, so a small file of objects that each refer twice to the previous one costs
  2**n steps (a 41 kB file never finishes). We walk the graph once per object (memoised by
  id), refuse reference cycles (skops' writer cannot produce them) and cap the work skops'
  audit would do (:data:`MAX_SCHEMA_NODES`) and its depth (:data:`MAX_SCHEMA_DEPTH`).
* :func:`check_trees` — every ``sklearn.tree._tree.Tree`` in the loaded model. scikit-learn
  follows a tree's child and feature indices in compiled code without bounds checks, so an
  edited index reads or writes outside memory (a crash) or loops for ever. Every tree is
  checked: children inside the tree and after their parent (no cycles), features inside the
  owning estimator's inputs, finite thresholds, value arrays of the declared shape, and, for
  ensembles, sub-estimators that agree with the ensemble.
* :func:`check_meta` — the metadata that drives decisions: threshold, classes (the task's and
  the model's), training ranges, training spacing, research-use flag; and the metadata that
  drives extraction (:func:`check_extraction_meta`): rings, regions, engine, params.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np
from sklearn.tree._tree import Tree

from ..errors import HER2Error, ModelError
from ..extraction.features import ENGINES
from ..extraction.params import parse_params
from ..imaging.rings import ring_specs
from .recipes import class_names

# The work skops' type audit does on a schema, counted as it counts it (every reference
# followed again). Measured: every recipe with every classifier, tuned or not, needs at most
# 17,766 steps and a 300-tree forest on 1,500 features 17,241; 1,000,000 leaves fifty-fold
# room and audits in a few seconds.
MAX_SCHEMA_NODES = 1_000_000
# Objects nested inside objects, references followed. Our pipelines reach 19 levels; skops
# audits and builds recursively, so this also keeps it far from Python's recursion limit.
MAX_SCHEMA_DEPTH = 100
# Ring distances a bundle may ask for: our recipes use at most 3 (3, 5, 8 mm); one ring every
# mm out to 16 mm is 16. Each ring is a full-size mask of every image, built before any feature.
MAX_BUNDLE_RINGS = 16


class _Refused(ValueError):
    """A schema graph over a cap (internal: turned into a ModelError naming the file)."""


def _node_children(state: dict) -> list:
    """The schema nodes directly inside ``state`` (through plain lists and dicts)."""
    out, stack = [], list(state.values())
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "__loader__" in v:
                out.append(v)
            else:
                stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def schema_graph_size(schema: dict, max_nodes: int = None, max_depth: int = None) -> tuple:
    """``(nodes, depth)`` of a skops schema as skops' audit walks it, each object visited once.

    ``nodes`` counts every visit skops' recursive audit makes (an object referred to twice is
    counted twice, as skops walks it twice); ``depth`` is the longest chain of nested objects
    with references followed. A reference is any schema node whose non-zero ``__id__`` was
    seen before (skops' memo); when one id occurs several times in full, the largest is taken,
    so the counts bound skops' work whatever the order it reads them in.

    Raises
    ------
    ValueError
        A reference cycle, an ``__id__`` that is not an integer, or a count over a cap (the
        message says which).
    """
    max_nodes = MAX_SCHEMA_NODES if max_nodes is None else max_nodes
    max_depth = MAX_SCHEMA_DEPTH if max_depth is None else max_depth
    occurrences: dict = {}
    stack = [schema]
    while stack:                       # every occurrence of every id, without recursion
        v = stack.pop()
        if isinstance(v, dict):
            if "__loader__" in v:
                i = v.get("__id__")
                if i is not None and (type(i) is not int):
                    raise _Refused(f"object id {i!r} is not an integer")
                if i:
                    occurrences.setdefault(i, []).append(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    memo: dict = {}
    on_path: set = set()

    def visit(state, level):
        if level > max_depth:
            raise _Refused(f"objects nest deeper than {max_depth} levels")
        i = state.get("__id__")
        if not i:
            return own(state, level)
        if i not in memo:
            if i in on_path:
                raise _Refused(f"object {i} refers to itself (a reference cycle)")
            on_path.add(i)
            sizes = [own(occ, level) for occ in occurrences[i]]
            on_path.discard(i)
            memo[i] = (max(s[0] for s in sizes), max(s[1] for s in sizes))
        nodes, depth = memo[i]
        if level + depth - 1 > max_depth:
            raise _Refused(f"objects nest deeper than {max_depth} levels")
        return nodes, depth

    def own(state, level):
        nodes = depth = 1
        for child in _node_children(state):
            n, d = visit(child, level + 1)
            nodes += n
            depth = max(depth, d + 1)
            if nodes > max_nodes:
                raise _Refused(f"the model's object graph needs more than {max_nodes:,} "
                               "steps to audit (objects referring to each other many times)")
        return nodes, depth

    return own(schema, 1)


def check_schema_graph(schema, path) -> tuple:
    """:func:`schema_graph_size` with its refusals as a :class:`ModelError` naming ``path``."""
    if not isinstance(schema, dict):
        raise ModelError(f"{path}: the model schema is not an object (corrupt model)")
    try:
        return schema_graph_size(schema)
    except _Refused as exc:
        raise ModelError(f"{path}: refused: {exc}") from None


# -- trees: the compiled code that follows their indices checks none of them -------------------

def _objects(root):
    """``(where, obj)`` for every object reachable from ``root``, each visited once;
    ``where`` is the attribute path from the root, e.g. ``model['pipeline'].estimators_[0]``."""
    seen = {id(root)}
    stack = [("model", root)]
    while stack:
        where, obj = stack.pop()
        yield where, obj
        if isinstance(obj, dict):
            items = [(f"[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(f"[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, np.ndarray):
            items = [(f"[{i}]", v) for i, v in enumerate(obj.ravel())] \
                if obj.dtype == object else []
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            items = [(f".{k}", v) for k, v in vars(obj).items()]
        else:
            items = []
        for k, v in items:
            if id(v) not in seen and not isinstance(v, (str, bytes, int, float, bool,
                                                         type(None))):
                seen.add(id(v))
                stack.append((where + k, v))


def _tree_problem(tree, n_inputs) -> str | None:
    """What is wrong with one fitted tree, or None. ``n_inputs``: the columns its owner is
    given at prediction (``None`` when the tree has no estimator around it)."""
    n_nodes, capacity = int(tree.node_count), int(tree.capacity)
    # the node and value arrays are views of ``node_count`` entries of ``capacity``
    # allocated ones: read them only once this holds
    if not 0 < n_nodes <= capacity:
        return f"node_count {n_nodes} outside its {capacity} stored nodes"
    if not 0 <= int(tree.max_depth) < n_nodes:
        return f"max_depth {tree.max_depth} impossible for {n_nodes} nodes"
    n_features = int(tree.n_features)
    if n_inputs is not None and n_features != n_inputs:
        return f"built for {n_features} features, its estimator takes {n_inputs}"
    left = np.asarray(tree.children_left, dtype=np.int64)
    right = np.asarray(tree.children_right, dtype=np.int64)
    feature = np.asarray(tree.feature, dtype=np.int64)
    leaf = left == -1
    if (leaf != (right == -1)).any():
        return f"node {int(np.flatnonzero(leaf != (right == -1))[0])} has one child"
    nodes = np.arange(n_nodes)
    inner = ~leaf
    # scikit-learn appends children after their parent: an index at or before the parent
    # would loop for ever, one past the end reads outside the tree
    for side, child in (("left", left), ("right", right)):
        bad = inner & ((child <= nodes) | (child >= n_nodes))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"node {i}'s {side} child {int(child[i])} is outside nodes {i + 1}-" \
                   f"{n_nodes - 1}"
    bad = inner & ((feature < 0) | (feature >= n_features))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"node {i} splits on feature {int(feature[i])} of {n_features}"
    if (feature[leaf] != -2).any():                 # scikit-learn's TREE_UNDEFINED
        return "a leaf names a split feature"
    if not np.isfinite(np.asarray(tree.threshold)[inner]).all():
        return "a split threshold is not a finite number"
    n_classes = np.asarray(tree.n_classes)
    shape = (n_nodes, int(tree.n_outputs), int(n_classes.max()))
    if len(n_classes) != tree.n_outputs or tree.value.shape != shape:
        return f"value array {tree.value.shape} instead of {shape}"
    return None


def _trees_of(est):
    """The trees an ensemble's sub-estimators hold (flat)."""
    subs = getattr(est, "estimators_", None)
    if isinstance(subs, np.ndarray):
        subs = list(subs.ravel())
    return subs if isinstance(subs, list) else []


def check_trees(model, path) -> int:
    """Refuse a model holding a tree whose indices or shapes scikit-learn cannot follow safely.

    Every ``sklearn.tree._tree.Tree`` reachable from ``model`` is checked on its own (see
    :func:`_tree_problem`) and against the estimator holding it as ``tree_`` (feature count,
    classes, outputs); every ensemble's sub-estimators must take at most the ensemble's
    inputs (forests hand their own validated input to their trees unchecked), and gradient
    boosting's stage array must have one column per tree of an iteration.

    Returns the number of trees checked.

    Raises
    ------
    ModelError
        Naming ``path``, the estimator and the problem.
    """
    owned, n = {}, 0
    objs = list(_objects(model))
    for where, obj in objs:
        tree = getattr(obj, "tree_", None)
        if isinstance(tree, Tree):
            owned[id(tree)] = obj
            n_in = getattr(obj, "n_features_in_", None)
            problem = _tree_problem(tree, int(n_in) if n_in is not None else None)
            if problem is None:
                classes = getattr(obj, "n_classes_", None)
                if classes is not None and tuple(np.atleast_1d(classes)) != \
                        tuple(np.asarray(tree.n_classes)):
                    problem = f"{np.asarray(tree.n_classes).tolist()} classes in its tree, " \
                              f"{np.atleast_1d(classes).tolist()} in the estimator"
                elif int(getattr(obj, "n_outputs_", tree.n_outputs)) != tree.n_outputs:
                    problem = f"{tree.n_outputs} outputs in its tree, {obj.n_outputs_} in " \
                              "the estimator"
            if problem:
                raise ModelError(f"{path}: refused: damaged or hostile tree in "
                                 f"{type(obj).__name__} at {where}: {problem}")
            n += 1
        subs = _trees_of(obj)
        n_in = getattr(obj, "n_features_in_", None)
        if subs and n_in is not None:
            wide = [s for s in subs if getattr(s, "n_features_in_", 0) > n_in]
            if wide:
                raise ModelError(f"{path}: refused: {type(obj).__name__} at {where} takes "
                                 f"{n_in} features but its {type(wide[0]).__name__} takes "
                                 f"{wide[0].n_features_in_}")
            per_iter = getattr(obj, "n_trees_per_iteration_", None)
            est = obj.estimators_
            if per_iter is not None and isinstance(est, np.ndarray) and \
                    (est.ndim != 2 or est.shape[1] != per_iter):
                raise ModelError(f"{path}: refused: {type(obj).__name__} at {where} has "
                                 f"stages of shape {est.shape}, not {per_iter} trees per "
                                 "iteration")
    for where, obj in objs:
        if isinstance(obj, Tree) and id(obj) not in owned:
            problem = _tree_problem(obj, None)
            if problem:
                raise ModelError(f"{path}: refused: damaged or hostile tree at {where}: "
                                 f"{problem}")
            n += 1
    return n


# -- the metadata that decides a prediction -----------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _range_problem(v, positive: bool = False) -> str | None:
    if not (isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)):
        return f"{v!r} is not a pair of finite numbers [low, high]"
    if v[0] > v[1]:
        return f"{v!r} has low > high"
    if positive and v[0] <= 0:
        return f"{v!r} is not positive"
    return None


def _classes_problem(meta: dict, model_classes) -> str | None:
    classes = meta.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) and c for c in classes)):
        return f"classes {classes!r} is not a list of class names"
    if len(set(classes)) != len(classes):
        return f"classes {classes!r} repeats a name"
    binary = meta.get("positive_class") is not None
    if "task" in meta:
        try:
            want = [str(c) for c in class_names(meta["task"])]
        except Exception:  # noqa: BLE001 -- an unknown task name or a malformed task: refused below
            return f"task {meta['task']!r} is not a task of this library"
        if (classes != want) if binary else (set(classes) != set(want)):
            return f"classes {classes} are not the task's {want}"
    if model_classes is None:
        return None if classes == [] else "the model is not a classifier (no classes_)"
    have = [str(c) for c in model_classes]
    if binary:
        # binary bundles name their two classes after the task; the model predicts 0 / 1
        if len(classes) != 2 or sorted(have) != ["0", "1"]:
            return f"classes {classes} for a binary model predicting {have}"
    elif sorted(have) != sorted(classes):
        return f"classes {classes} differ from the model's {have}"
    return None


def check_meta(meta: dict, path, model_classes=None) -> None:
    """Refuse metadata whose decision values are impossible, one line naming the field.

    Checked: ``research_use_only`` present and true; ``threshold`` and
    ``nomogram_threshold`` finite in [0, 1] (or absent); ``classes`` unique names, the task's
    (binary: in order) and the model's (``model_classes``; ``None`` for a model that is not a
    classifier, allowed only with an empty class list); ``input_columns`` unique names;
    ``training_ranges`` finite ``[low, high]`` pairs with low <= high; ``training_spacing``
    units known and positive finite ranges.
    """
    def refuse(field, problem):
        raise ModelError(f"{path}: refused: bundle.json {field}: {problem}")

    if meta.get("research_use_only") is not True:
        refuse("research_use_only", f"{meta.get('research_use_only')!r}; a HER2Radiomics "
               "bundle must be marked research_use_only: true")
    for key in ("threshold", "nomogram_threshold"):
        v = meta.get(key)
        if v is not None and not (_number(v) and 0 <= v <= 1):
            refuse(key, f"{v!r} is not a probability in [0, 1]")
    problem = _classes_problem(meta, model_classes)
    if problem:
        refuse("classes", problem)
    cols = meta.get("input_columns")
    if cols is not None and not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)
                                 and len(set(cols)) == len(cols)):
        refuse("input_columns", "not a list of unique column names")
    ranges = meta.get("training_ranges")
    if ranges is not None:
        if not isinstance(ranges, dict) or not isinstance(ranges.get("features", {}), dict):
            refuse("training_ranges", "not {features: {column: [low, high]}, rad_score: [...]}")
        for col, v in (ranges.get("features") or {}).items():
            problem = _range_problem(v)
            if problem:
                refuse(f"training_ranges.features.{col}", problem)
        if ranges.get("rad_score") is not None:
            problem = _range_problem(ranges["rad_score"])
            if problem:
                refuse("training_ranges.rad_score", problem)
    check_extraction_meta(meta, path)
    spacing = meta.get("training_spacing")
    if spacing is not None:
        if not isinstance(spacing, dict):
            refuse("training_spacing", "not an object")
        if spacing.get("units") not in (None, "mm", "pixel", "mixed", "unrecorded"):
            refuse("training_spacing.units", f"{spacing.get('units')!r} is not mm, pixel, "
                   "mixed or unrecorded")
        for ax in ("x", "y"):
            key = f"spacing_{ax}_mm_range"
            if spacing.get(key) is not None:
                problem = _range_problem(spacing[key], positive=True)
                if problem:
                    refuse(f"training_spacing.{key}", problem)


# -- the metadata that drives extraction ---------------------------------------------------------

def region_names(rings: dict) -> list:
    """The regions :func:`~HER2RadiomicsLib.imaging.rings.build_regions` makes for a bundle's
    ``rings`` (``tumor``, ``peri_0-<d>mm`` per distance, ``peri_<a>-<b>mm`` between consecutive
    distances with ``annuli``, ``tumor+peri_<d>mm`` per ``combined`` distance)."""
    d = rings.get("rings_mm") or []
    return (["tumor"] + [s.name for s in ring_specs(d, annuli=bool(rings.get("annuli")))]
            + [f"tumor+peri_{v:g}mm" for v in rings.get("combined") or []])


def _rings_problem(rings) -> tuple:
    """``(field, problem)`` of a bundle's ``rings``, or ``(None, None)``."""
    if not isinstance(rings, dict):
        return "rings", (f"{str(rings)[:60]!r} is not {{rings_mm: [...], annuli: ..., "
                         "combined: [...]}")
    unknown = sorted(set(map(str, rings)) - {"rings_mm", "annuli", "combined"})
    if unknown:
        return "rings", f"unknown key(s) {unknown[:5]}"
    d = rings.get("rings_mm", [])
    if not (isinstance(d, list) and all(_number(v) and v > 0 for v in d)):
        return "rings.rings_mm", f"{str(d)[:60]} is not a list of positive finite mm"
    if len(set(d)) != len(d):
        return "rings.rings_mm", f"{str(d)[:60]} repeats a distance"
    if len(d) > MAX_BUNDLE_RINGS:
        return "rings.rings_mm", f"{len(d)} distances (at most {MAX_BUNDLE_RINGS})"
    if not isinstance(rings.get("annuli", False), bool):
        return "rings.annuli", f"{rings['annuli']!r} is not true or false"
    c = rings.get("combined", [])
    if not (isinstance(c, list) and all(_number(v) for v in c)):
        return "rings.combined", f"{str(c)[:60]} is not a list of distances in mm"
    if not set(c) <= set(d):
        return "rings.combined", f"{sorted(set(c) - set(d))[:5]} not among rings_mm {d}"
    return None, None


def check_extraction_meta(meta: dict, path) -> None:
    """Refuse metadata that would drive extraction somewhere impossible, one line naming the
    bundle file and the field.

    Checked (each when present): ``rings`` a mapping of positive finite ``rings_mm`` (unique,
    at most :data:`MAX_BUNDLE_RINGS`), boolean ``annuli`` and ``combined`` among
    ``rings_mm``; ``regions`` unique names that those rings make (:func:`region_names`);
    ``engine`` a mapping naming an engine of this library; ``params_yaml`` a valid params
    text within the engines' caps (:func:`~HER2RadiomicsLib.extraction.params.parse_params`);
    ``params_name``, ``batch_col`` text; ``sites`` and ``clinical`` lists of text.
    """

    def refuse(field, problem):
        raise ModelError(f"{path}: refused: bundle.json {field}: {problem}")

    rings = meta.get("rings")
    if rings is not None:
        field, problem = _rings_problem(rings)
        if problem:
            refuse(field, problem)
    regions = meta.get("regions")
    if regions is not None:
        if not (isinstance(regions, list) and all(isinstance(r, str) for r in regions)):
            refuse("regions", f"{str(regions)[:60]} is not a list of region names")
        if len(set(regions)) != len(regions):
            refuse("regions", "a region is named twice")
        made = region_names(rings or {})
        odd = [r for r in regions if r not in made]
        if odd:
            refuse("regions", f"{odd[0][:60]!r} is not a region the bundle's rings make "
                              f"({', '.join(made)})")
    engine = meta.get("engine")
    if engine is not None:
        if not isinstance(engine, dict) or engine.get("name") not in ENGINES:
            name = engine.get("name") if isinstance(engine, dict) else engine
            refuse("engine", f"{str(name)[:60]!r} is not an engine of this library "
                             f"({', '.join(ENGINES)})")
        if not isinstance(engine.get("version", ""), str):
            refuse("engine.version", f"{engine['version']!r} is not a version")
    for key in ("params_name", "batch_col", "params_yaml"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            refuse(key, "not text")
    for key in ("sites", "clinical"):
        v = meta.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            refuse(key, "not a list of names")
    text = meta.get("params_yaml")
    if text and text.strip():
        try:
            parse_params(text, "params")
        except HER2Error as exc:
            problem = str(exc)
            refuse("params_yaml", problem[len("params: "):] if problem.startswith("params: ")
                   else problem)
