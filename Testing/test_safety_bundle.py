"""Bundle hardening beyond the allow-list (issue 25, items 6 and 8): a bundle whose digest an
attacker recomputed cannot hang the type audit, crash scikit-learn through a decision tree's
indices, or decide with impossible metadata, and a damaged zip ends in one line naming it.

Each hostile file is a genuine bundle with one edit, model hash and digest recomputed, so only
the check under test stands in its way. Paths where the old code hung or crashed the process
run the CLI in a subprocess with a time limit.
"""
import hashlib
import io
import json
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from HER2RadiomicsLib.errors import ModelError
from test_bundle_allowlist import _entries, _reseal  # Testing/ is on sys.path

SHIPPED = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing"


# -- building hostile bundles from genuine ones --------------------------------------------------

def _write(path, entries, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as z:
        for n, b in entries.items():
            z.writestr(n, b)
    return path


def _with_model(src, out, files, method=zipfile.ZIP_STORED, **meta):
    """``src`` with its skops archive replaced by ``files`` (and ``meta`` fields changed),
    model hash and digest recomputed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for n, b in files.items():
            z.writestr(n, b)
    e = _entries(src)
    doc = json.loads(e["bundle.json"])
    doc.update(meta)
    doc["model_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    return _write(out, {"bundle.json": json.dumps(_reseal(doc)), "model.skops": buf.getvalue()})


def _model_files(src):
    inner = zipfile.ZipFile(io.BytesIO(_entries(src)["model.skops"]))
    return {n: inner.read(n) for n in inner.namelist()}


def _with_meta(src, out, **fields):
    e = _entries(src)
    doc = json.loads(e["bundle.json"])
    for k, v in fields.items():
        if v is _DROP:
            doc.pop(k, None)
        else:
            doc[k] = v
    e["bundle.json"] = json.dumps(_reseal(doc)).encode()
    return _write(out, e)


_DROP = object()


def _cli_run(*args, timeout=60):
    """The CLI as a user runs it; returns (returncode, stderr lines, seconds)."""
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr.strip().splitlines(), time.monotonic() - t


def _one_error_line(rc, err, path, *words):
    assert rc == 2, (rc, err)
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert str(path) in err[0] and "unexpected" not in err[0] and "Traceback" not in err[0]
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def _cli_in_process(capsys, *args):
    from HER2RadiomicsLib.cli import main
    rc = main(list(map(str, args)))
    return rc, capsys.readouterr().err.strip().splitlines()


# -- fixtures: the shipped bundle with its case's features; a small random forest ----------------

@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped bundle and a feature table of its self-test case (site and clinical too)."""
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import features_for_case
    d = tmp_path_factory.mktemp("shipped")
    bundle = SHIPPED / "model_bundle.zip"
    case = json.loads((SHIPPED / "case.json").read_text())
    feats, *_ = features_for_case(load_bundle(bundle), SHIPPED / "case.nrrd",
                                  SHIPPED / "case_mask.nrrd")
    csv = d / "case_features.csv"
    pd.DataFrame([{"case_id": case["case_id"], "site": case["site"], **case["clinical"],
                   **feats}]).to_csv(csv, index=False)
    return bundle, csv


def _frame(seed=0, n=120, p=8):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"tumor__f{i}" for i in range(p)])
    y = (X["tumor__f0"] + 0.7 * X["tumor__f1"] + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A genuine bundle holding a 3-tree random forest behind LASSO selection, and its input."""
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    from HER2RadiomicsLib.modelling.transformers import (ColumnSelector, LassoSelector,
                                                         make_classifier)
    d = tmp_path_factory.mktemp("forest")
    X, y = _frame()
    pl = Pipeline([("select", ColumnSelector()),
                   ("scale", StandardScaler().set_output(transform="pandas")),
                   ("lasso", LassoSelector(cv=3, n_alphas=5)),
                   ("classifier", make_classifier("random_forest", n_estimators=3))]).fit(X, y)
    meta = {"name": "t", "classes": ["zero", "low"], "positive_class": "1",
            "input_columns": list(X.columns), "threshold": 0.5, "regions": ["tumor"],
            "rings": {}, "params_name": "cui2023", "params_yaml": "setting: {binWidth: 5}\n",
            "batch_col": "site"}
    p = save_bundle(d / "forest.zip", {"pipeline": pl, "nomogram": None}, meta)
    csv = d / "feats.csv"
    X.assign(case_id=[f"c{i}" for i in range(len(X))]).to_csv(csv, index=False)
    return p, csv


def test_genuine_bundles_still_load_and_predict(shipped, forest, tmp_path, capsys):
    """The checks pass what our recipes write: the shipped bundle predicts its case as the
    self-test card says it did (these numbers come from the card, not from this code)."""
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.bundle_checks import check_trees
    bundle, csv = shipped
    out = tmp_path / "p.csv"
    from HER2RadiomicsLib.cli import main
    assert main(["predict", "--bundle", str(bundle), "--features", str(csv), "--out",
                 str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["predicted_class"] == "low" and abs(row["p_low"] - 0.8671) < 1e-3
    assert abs(row["nomogram_probability"] - 0.0193) < 1e-3
    b = load_bundle(forest[0])
    assert check_trees({"pipeline": b.pipeline}, "x") == 3


# -- the type audit: bounded however the objects refer to each other -----------------------------

def _list(i, content):
    return {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
            "__id__": i, "content": content}


def _dag(n, refs=2):
    """n lists, each referring ``refs`` times to the previous one through skops' memo: a
    flat schema of ~n * refs small nodes that skops' audit walks refs**n times."""
    items = [_list(1000, [])]
    for k in range(1, n):
        items.append(_list(1000 + k, [_list(1000 + k - 1, []) for _ in range(refs)]))
    return _list(999, items)


def _with_pipeline_node(src, out, node):
    files = _model_files(src)
    schema = json.loads(files["schema.json"])
    schema["content"]["pipeline"] = node
    files["schema.json"] = json.dumps(schema).encode()
    return _with_model(src, out, files)


def test_memo_reference_dag_is_refused_quickly(shipped, tmp_path):
    """A ~19 kB schema whose skops audit takes 2**60 steps hung predict for ever."""
    bundle, csv = shipped
    bad = _with_pipeline_node(bundle, tmp_path / "dag.zip", _dag(60))
    assert bad.stat().st_size < 64 * 1024
    rc, err, secs = _cli_run("predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "steps to audit")
    assert secs < 30


def test_reference_chain_deeper_than_the_cap_is_refused(shipped, tmp_path, capsys):
    """A flat schema of 3,000 lists each inside the previous one through references: skops
    recursed until Python's limit; now refused by the depth cap, before skops sees it."""
    bundle, csv = shipped
    bad = _with_pipeline_node(bundle, tmp_path / "chain.zip", _dag(3000, refs=1))
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "nest deeper than 100")
    # a reference cycle (skops' writer cannot produce one)
    loop = _list(1000, [_list(1001, [_list(1000, [])])])
    bad = _with_pipeline_node(bundle, tmp_path / "cycle.zip", _list(999, [loop]))
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "reference cycle")


def test_schema_graph_is_walked_once_per_object():
    from HER2RadiomicsLib.modelling.bundle_checks import schema_graph_size
    # skops' audit makes 1 + sum over levels of 2**k visits; counted without making them
    nodes, depth = schema_graph_size(_dag(18), max_nodes=10**9)
    assert nodes == 1 + 1 + sum(1 + 2 * (2**k - 1) for k in range(1, 18))
    assert depth == 18 + 1
    t = time.monotonic()
    with pytest.raises(ValueError, match="steps to audit"):
        schema_graph_size(_dag(90))                  # 2**90 steps, within the depth cap
    assert time.monotonic() - t < 5


def test_load_that_runs_past_the_time_limit_is_refused(shipped, tmp_path, monkeypatch):
    """Within the caps a file can still keep skops busy: loading is given up on, by name."""
    import HER2RadiomicsLib.modelling.bundle as B
    import HER2RadiomicsLib.modelling.bundle_checks as C
    bundle, _ = shipped
    bad = _with_pipeline_node(bundle, tmp_path / "slow.zip", _dag(19))   # ~2**19 steps
    monkeypatch.setattr(C, "MAX_SCHEMA_NODES", 10**9)
    monkeypatch.setattr(B, "LOAD_TIMEOUT_S", 0.05)
    t = time.monotonic()
    with pytest.raises(ModelError, match="longer than 0.05 s") as exc:
        B.load_bundle(bad)
    assert str(bad) in str(exc.value) and time.monotonic() - t < 5


# -- decision trees: indices the compiled code follows without checking --------------------------

def _edit_first_tree(src, out, edit):
    """``src`` with its first tree's arrays changed by ``edit(nodes, values, tree, files)``."""
    files = _model_files(src)
    schema = json.loads(files["schema.json"])
    stack, tree = [schema], None
    while stack and tree is None:
        v = stack.pop()
        if isinstance(v, dict):
            if v.get("__loader__") == "TreeNode":
                tree = v
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    state = tree["content"]["content"]
    nodes = np.load(io.BytesIO(files[state["nodes"]["file"]]), allow_pickle=False)
    values = np.load(io.BytesIO(files[state["values"]["file"]]), allow_pickle=False)
    nodes, values = edit(nodes.copy(), values.copy(), tree, files)
    for key, arr in (("nodes", nodes), ("values", values)):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        files[state[key]["file"]] = buf.getvalue()
    files["schema.json"] = json.dumps(schema).encode()
    return _with_model(src, out, files)


def _set(nodes, field, value, node=0):
    nodes[field][node] = value
    return nodes


def _one_class(nodes, values, tree, files):
    """The tree says one class (its n_classes array and values cut to match)."""
    n_classes = tree["__reduce__"]["args"]["content"][1]
    buf = io.BytesIO()
    np.save(buf, np.array([1], dtype=np.intp), allow_pickle=False)
    files[n_classes["file"]] = buf.getvalue()
    return nodes, np.ascontiguousarray(values[:, :, :1])


# edits that crashed the process or never let it finish
CRASHING_TREE_EDITS = {
    "feature past the end": lambda n, v, t, f: (_set(n, "feature", 10**6), v),
    "child loops to its parent": lambda n, v, t, f: (_set(n, "left_child", 0), v),
    "one child missing": lambda n, v, t, f: (_set(n, "right_child", -1), v),
}
# edits that made predictions silently wrong
WRONG_TREE_EDITS = {
    "threshold NaN": lambda n, v, t, f: (_set(n, "threshold", np.nan), v),
    "one class in the tree": _one_class,
}


def test_tree_with_child_index_past_the_end_is_refused(forest, tmp_path):
    """scikit-learn followed the index into foreign memory: a segmentation fault (return code
    -11) instead of an error."""
    bundle, csv = forest
    bad = _edit_first_tree(bundle, tmp_path / "tree.zip",
                           lambda n, v, t, f: (_set(n, "left_child", 10**6), v))
    rc, err, _ = _cli_run("predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "tree in DecisionTreeClassifier",
                    "left child 1000000")


def test_other_crashing_tree_edits_are_refused(forest, tmp_path):
    """Each edit in one child process running the CLI entry point (a crash or a hang shows
    as a negative return code or the time limit, not as a dead test run)."""
    bundle, csv = forest
    bad = [_edit_first_tree(bundle, tmp_path / f"tree{i}.zip", edit)
           for i, edit in enumerate(CRASHING_TREE_EDITS.values())]
    code = ("import sys\nfrom HER2RadiomicsLib.cli import main\n"
            "for b in sys.argv[2:]:\n"
            "    print(main(['predict', '--bundle', b, '--features', sys.argv[1]]), flush=True)\n"
            "    sys.stderr.flush()\n")
    r = subprocess.run([sys.executable, "-c", code, str(csv), *map(str, bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["2"] * len(bad)
    err = r.stderr.strip().splitlines()
    assert len(err) == len(bad), err
    for line, path in zip(err, bad):
        _one_error_line(2, [line], path, "refused", "tree in DecisionTreeClassifier")


@pytest.mark.parametrize("kind", list(WRONG_TREE_EDITS))
def test_tree_giving_wrong_answers_is_refused(kind, forest, tmp_path, capsys):
    bundle, csv = forest
    bad = _edit_first_tree(bundle, tmp_path / "tree.zip", WRONG_TREE_EDITS[kind])
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "tree in DecisionTreeClassifier")


def test_tree_checks_reach_every_estimator_kind():
    """Trees nested in boosting, calibration and the hierarchical classifier are all found,
    and named by where they sit; a forest whose trees take more inputs than it validates, and
    boosting stages of the wrong width, are refused."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier
    from HER2RadiomicsLib.modelling.bundle_checks import check_trees
    X, y = _frame(1, n=80, p=4)
    y3 = np.digitize(X["tumor__f1"], [-0.5, 0.5])
    gb = GradientBoostingClassifier(n_estimators=3, random_state=0).fit(X, y3)
    cal = CalibratedClassifierCV(DecisionTreeClassifier(max_depth=2), cv=2).fit(X, y)
    assert check_trees({"pipeline": gb}, "b") == 9
    assert check_trees({"pipeline": cal}, "b") == 2
    from HER2RadiomicsLib.modelling.study import HierarchicalClassifier
    h = HierarchicalClassifier(RandomForestClassifier(2, random_state=0)).fit(
        X, np.array(["zero", "low", "positive"])[y3])
    assert check_trees({"pipeline": h}, "b") == 4
    h.stage2_.estimators_[1].tree_.feature[0] = 999       # the tree's own memory, edited
    with pytest.raises(ModelError, match=r"DecisionTreeClassifier at model\['pipeline'\]"
                                         r"\.stage2_\.estimators_\[1\]: node 0 splits on "
                                         "feature 999 of 4"):
        check_trees({"pipeline": h}, "b")
    rf = RandomForestClassifier(2, random_state=0).fit(X, y)
    rf.n_features_in_ = 2
    with pytest.raises(ModelError,
                       match=r"RandomForestClassifier at model\['pipeline'\] takes 2 "):
        check_trees({"pipeline": rf}, "b")
    gb.estimators_ = gb.estimators_[:, :2]
    with pytest.raises(ModelError, match="not 3 trees per iteration"):
        check_trees({"pipeline": gb}, "b")


# -- the metadata that decides ------------------------------------------------------------------

META_EDITS = {
    "threshold": 7.0,
    "nomogram_threshold": -0.5,
    "classes": ["zero", "zero"],
    "classes ": ["low", "zero"],             # the task's order swapped: the threshold inverted
    "training_ranges": {"features": {"tumor__original_glrlm_RunEntropy": [5.3, 4.6]}},
    "training_spacing": {"units": "mm", "spacing_x_mm_range": [-0.15, 0.12],
                         "spacing_y_mm_range": [0.12, 0.15]},
    "research_use_only": False,
    "research_use_only ": _DROP,
}


def test_impossible_threshold_is_refused_in_one_line(shipped, tmp_path):
    """A threshold of 7 made every case 'zero' with exit code 0."""
    bundle, csv = shipped
    bad = _with_meta(bundle, tmp_path / "thr.zip", threshold=7.0)
    rc, err, _ = _cli_run("predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", "threshold", "[0, 1]")


@pytest.mark.parametrize("field", list(META_EDITS))
def test_impossible_metadata_is_refused_by_field(field, shipped, tmp_path, capsys):
    bundle, csv = shipped
    bad = _with_meta(bundle, tmp_path / "meta.zip", **{field.strip(): META_EDITS[field]})
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "refused", f"bundle.json {field.strip()}")


def test_nan_threshold_and_classes_the_model_does_not_have(forest, tmp_path, capsys):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    bundle, csv = forest
    for fields, word in ((dict(threshold=float("nan")), "threshold"),
                         (dict(positive_class=None), "classes"),
                         (dict(classes=["zero", "low", "high"]), "classes")):
        bad = _with_meta(bundle, tmp_path / "m.zip", **fields)
        with pytest.raises(ModelError, match=f"bundle.json {word}"):
            load_bundle(bad)


# -- the metadata that drives extraction (adversarial finding 22) ------------------------------

EXTRACTION_EDITS = [
    # (field, value, the field the one line names, words in it)
    ("rings", "3,5,8", "rings", ["is not {rings_mm"]),
    ("rings", {"rings_mm": [-3.0], "annuli": False, "combined": []}, "rings.rings_mm",
     ["positive finite"]),
    ("rings", {"rings_mm": [float("nan")]}, "rings.rings_mm", ["positive finite"]),
    ("rings", {"rings_mm": [3.0], "annuli": "yes"}, "rings.annuli", ["'yes'"]),
    ("rings", {"rings_mm": [3.0], "combined": [5.0]}, "rings.combined", ["[5.0]"]),
    ("rings", {"rings_mm": list(range(1, 2001))}, "rings.rings_mm", ["2000 distances"]),
    ("regions", ["tumor", "peri_0-999mm"], "regions", ["'peri_0-999mm'", "peri_0-3mm"]),
    ("regions", ["tumor", "../../x"], "regions", ["'../../x'"]),
    ("regions", ["tumor", "tumor"], "regions", ["twice"]),
    ("engine", {"name": "os.system", "version": "1"}, "engine", ["'os.system'", "native"]),
    ("engine", "native", "engine", ["not an engine"]),
    ("params_yaml", "setting: {binWidth: [", "params_yaml", ["not valid YAML"]),
    ("params_yaml", "setting: {binCount: 1000000}\n", "params_yaml",
     ["binCount", "1000000", "5,000"]),
    ("params_yaml", "setting: {binWidth: 25}\nimageType: {Original: {}, Wavelet: {level: "
                    "1000}}\n", "params_yaml", ["level", "1000"]),
    ("params_yaml", "setting: {distances: [100000]}\n", "params_yaml",
     ["distances", "100000"]),
]


def test_extraction_metadata_is_checked_at_load_naming_the_field(shipped, tmp_path, capsys):
    """Rings as text, a region the rings do not make (or a path), an engine that is not ours,
    params that are not YAML or ask for grids no image needs: each is refused when the bundle
    loads, one line naming the bundle file and the field (was: 'unexpected AttributeError /
    KeyError', an error blamed on a --rings option never given or on a deleted temporary
    file, or accepted)."""
    bundle, csv = shipped
    for field, value, named, words in EXTRACTION_EDITS:
        bad = _with_meta(bundle, tmp_path / "x.zip", **{field: value})
        rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
        _one_error_line(rc, err, bad, "refused", f"bundle.json {named}:", *words)
        assert "h2r_bundle_" not in err[0] and "--rings" not in err[0], err


def test_unknown_or_missing_site_names_the_bundle_and_lists_few_sites(shipped, tmp_path,
                                                                     capsys):
    """A bundle listing 200,000 sites printed them all in a 2 MB line; a missing site named
    no file."""
    bundle, csv = shipped
    bad = _with_meta(bundle, tmp_path / "sites.zip", sites=[f"S{i}" for i in range(200_000)])
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    assert rc == 1 and len(err) == 1, err             # that row's error (the only row)
    assert err[0].strip().startswith(f"P0001-1: {bad}: site 'A' is unknown"), err
    assert "'S9', ... (200000 in all)" in err[0] and len(err[0]) < 400, err
    no_site = tmp_path / "no_site.csv"
    pd.read_csv(csv).drop(columns=["site"]).to_csv(no_site, index=False)
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bundle, "--features", no_site)
    _one_error_line(rc, err, bundle, "harmonises sites with ComBat", "'A', 'B'")


def test_bundle_params_resampling_to_a_giant_grid_is_refused_naming_the_image(shipped,
                                                                            tmp_path):
    """A bundle's params asking for 2e-4 mm pixels (a 6.9 Gpx grid on the shipped case) ended
    in an ITK allocation error naming a header file, or took the machine's memory."""
    import resource
    bundle, _ = shipped
    bad = _with_meta(bundle, tmp_path / "resample.zip", params_yaml=(
        "setting: {binWidth: 25, resampledPixelSpacing: [0.0002, 0.0002]}\n"
        "imageType: {Original: {}}\nfeatureClass: {firstorder: [Mean]}\n"))
    image = SHIPPED / "case.nrrd"
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", "predict", "--bundle",
                        str(bad), "--image", str(image), "--mask",
                        str(SHIPPED / "case_mask.nrrd"), "--site", "A"],
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS,
                                                             (4 * 2**30, 4 * 2**30)))
    line = _one_error_line(r.returncode, r.stderr.strip().splitlines(), image,
                           "resampledPixelSpacing [0.0002, 0.0002]", "px grid")
    assert f"{bad}: bundle.json params_yaml" in line and "h2r_bundle_" not in line


# -- damaged archives (item 8): one line naming the file ----------------------------------------

def _entry_data_offset(raw, info):
    n, m = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + n + m


def _corrupt_deflate(src, out, name):
    raw = bytearray(Path(src).read_bytes())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo(name)
    start = _entry_data_offset(raw, info) + min(100, info.compress_size // 4)
    for k in range(start, start + min(300, info.compress_size // 2)):
        raw[k] ^= 0x5A
    out.write_bytes(bytes(raw))
    return out


def test_corrupt_deflate_is_one_line(shipped, tmp_path):
    """Was 'unexpected error: Error -3 while decompressing data ... please report it'."""
    bundle, csv = shipped
    bad = _corrupt_deflate(bundle, tmp_path / "deflate.zip", "model.skops")
    rc, err, _ = _cli_run("predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, "corrupt bundle", "model.skops")


def _damaged(kind, src, tmp):
    out = tmp / f"{kind.replace(' ', '_')}.zip"
    raw = Path(src).read_bytes()
    if kind == "corrupt deflate in bundle.json":
        return _corrupt_deflate(src, out, "bundle.json")
    if kind == "corrupt deflate in the model's schema":
        files = _model_files(src)
        inner = tmp / "inner.zip"
        _write(inner, files)                         # deflated, then damaged
        files_raw = bytearray(inner.read_bytes())
        info = zipfile.ZipFile(inner).getinfo("schema.json")
        start = _entry_data_offset(files_raw, info) + 50
        for k in range(start, start + 200):
            files_raw[k] ^= 0x5A
        e = _entries(src)
        doc = json.loads(e["bundle.json"])
        doc["model_sha256"] = hashlib.sha256(bytes(files_raw)).hexdigest()
        return _write(out, {"bundle.json": json.dumps(_reseal(doc)),
                            "model.skops": bytes(files_raw)})
    if kind == "truncated":
        out.write_bytes(raw[:len(raw) // 2])
    elif kind == "truncated central directory":
        out.write_bytes(raw[:-10])
    elif kind == "not a zip":
        out.write_bytes(b"case_id,age\nP1,52\n" * 20)
    elif kind == "empty file":
        out.write_bytes(b"")
    elif kind == "encrypted entry":
        b = bytearray(raw)
        z = zipfile.ZipFile(io.BytesIO(raw))
        for info in z.infolist():                    # set the 'encrypted' flag everywhere
            b[info.header_offset + 6] |= 1
        cd = raw.rfind(b"PK\x01\x02", 0)
        while cd != -1:
            b[cd + 8] |= 1
            cd = raw.rfind(b"PK\x01\x02", 0, cd)
        out.write_bytes(bytes(b))
    elif kind == "unknown compression method":
        b = bytearray(raw)
        z = zipfile.ZipFile(io.BytesIO(raw))
        for info in z.infolist():
            b[info.header_offset + 8:info.header_offset + 10] = struct.pack("<H", 99)
        cd = raw.find(b"PK\x01\x02")
        while cd != -1:
            b[cd + 10:cd + 12] = struct.pack("<H", 99)
            cd = raw.find(b"PK\x01\x02", cd + 4)
        out.write_bytes(bytes(b))
    elif kind == "zip bomb":
        # 200 MiB of zeros (under the 256 MiB size cap) deflated to 0.2 MB, digest valid
        blob = b"\0" * (200 * 2**20)
        e = _entries(src)
        doc = json.loads(e["bundle.json"])
        doc["model_sha256"] = hashlib.sha256(blob).hexdigest()
        _write(out, {"bundle.json": json.dumps(_reseal(doc)), "model.skops": blob})
    return out


DAMAGED = {"corrupt deflate in bundle.json": "bundle.json",
           "corrupt deflate in the model's schema": "schema.json",
           "truncated": "not a HER2Radiomics bundle",
           "truncated central directory": "not a HER2Radiomics bundle",
           "not a zip": "not a HER2Radiomics bundle",
           "empty file": "not a HER2Radiomics bundle",
           "encrypted entry": "does not decompress",
           "unknown compression method": "does not decompress",
           "zip bomb": "200-fold"}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_archive_is_one_line_naming_the_file(kind, shipped, tmp_path, capsys,
                                                     monkeypatch):
    import HER2RadiomicsLib.modelling.bundle as B
    bundle, csv = shipped
    bad = _damaged(kind, bundle, tmp_path)
    inflated = []
    real = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read",
                        lambda self, n=-1: inflated.append(n) or real(self, n))
    rc, err = _cli_in_process(capsys, "predict", "--bundle", bad, "--features", csv)
    _one_error_line(rc, err, bad, DAMAGED[kind])
    if kind == "zip bomb":                # refused on the directory, never inflated
        assert not any(n > B.MAX_META_BYTES + 1 for n in inflated), inflated
