"""Model bundles as an attacker would write them: code never runs, edits are refused by name,
limits are checked before reading, and the CLI answers each with one line and exit 2.

Every malicious variant is built from a genuine bundle by rewriting its skops schema or zip,
so the only difference between a refused file and a loaded one is the attack itself.
"""
import hashlib
import importlib
import inspect
import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from HER2RadiomicsLib.errors import ModelError

LOAD_MSG = "error:"


def _frame(seed=0, n=120, p=8):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"tumor__f{i}" for i in range(p)])
    y = (X["tumor__f0"] + 0.7 * X["tumor__f1"] + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    return X, y


def _pipeline(X, y):
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from HER2RadiomicsLib.modelling.transformers import (ColumnSelector, LassoSelector,
                                                         make_classifier)
    return Pipeline([("select", ColumnSelector()),
                     ("scale", StandardScaler().set_output(transform="pandas")),
                     ("lasso", LassoSelector(cv=3, n_alphas=5)),
                     ("classifier", make_classifier("logistic"))]).fit(X, y)


def _meta(X, **over):
    meta = {"name": "t", "classes": ["zero", "low"], "positive_class": "1",
            "input_columns": list(X.columns), "threshold": 0.5, "regions": ["tumor"],
            "rings": {}, "params_name": "cui2023", "params_yaml": "setting: {binWidth: 5}\n",
            "batch_col": "site", "engine": {"name": "pyradiomics", "version": "3.0.1"}}
    meta.update(over)
    return meta


@pytest.fixture
def good(tmp_path):
    """A genuine bundle, its features as CSV, and the pipeline it holds."""
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    from HER2RadiomicsLib.modelling.study import training_ranges
    X, y = _frame()
    pl = _pipeline(X, y)
    meta = _meta(X, training_ranges=training_ranges(pl, X))
    p = save_bundle(tmp_path / "good.zip", {"pipeline": pl, "nomogram": None}, meta)
    csv = tmp_path / "feats.csv"
    X.assign(case_id=[f"c{i}" for i in range(len(X))]).to_csv(csv, index=False)
    return p, csv, pl, X


def _entries(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in entries.items():
            z.writestr(n, b)
    return path


def _reseal(doc):
    """Recompute hashes and digest, as an attacker who knows the format would."""
    from HER2RadiomicsLib.modelling.bundle import integrity_record
    doc = {k: v for k, v in doc.items() if k != "integrity"}
    doc["integrity"] = integrity_record(doc)
    return doc


def _with_module_names(path, out, renames: dict):
    """The bundle at ``path`` with module names in its skops schema renamed (new -> old), model
    hash and digest recomputed: a bundle as an older release wrote it."""
    e = _entries(path)
    inner = zipfile.ZipFile(io.BytesIO(e["model.skops"]))
    files = {n: inner.read(n) for n in inner.namelist()}
    text = files["schema.json"].decode()
    for new, old in renames.items():
        assert f'"{new}"' in text, new
        text = text.replace(f'"{new}"', f'"{old}"')
    files["schema.json"] = text.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    doc = json.loads(e["bundle.json"])
    doc["model_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    return _write(out, {"bundle.json": json.dumps(_reseal(doc)), "model.skops": buf.getvalue()})


def _with_skops_node(good_path, out, node, extra_files=None):
    """The genuine bundle with its pipeline replaced by ``node`` (a skops schema node),
    model hash and digest recomputed so that only the allow-list can stop it."""
    e = _entries(good_path)
    inner = zipfile.ZipFile(io.BytesIO(e["model.skops"]))
    schema = json.loads(inner.read("schema.json"))
    schema["content"]["pipeline"] = node
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
        for n, b in (extra_files or {}).items():
            z.writestr(n, b)
    blob = buf.getvalue()
    doc = json.loads(e["bundle.json"])
    doc["model_sha256"] = hashlib.sha256(blob).hexdigest()
    return _write(out, {"bundle.json": json.dumps(_reseal(doc)), "model.skops": blob})


def _str(s):
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(s), "is_json": True, "__id__": id(s)}


def _call(module, name, *args):
    """ConstructorFromReduceNode: skops calls ``module.name(*args)`` when it trusts the type."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins",
                        "__loader__": "TupleNode", "content": list(args), "__id__": 1},
            "__id__": 2}


def _cli(capsys, bundle, csv, *extra):
    from HER2RadiomicsLib.cli import main
    rc = main(["predict", "--bundle", str(bundle), "--features", str(csv), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _refused(capsys, bundle, csv, marker=None, match=None):
    rc, err = _cli(capsys, bundle, csv)
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith(LOAD_MSG), err      # one line, no traceback
    assert str(bundle) in err[0]
    if match:
        assert match in err[0], err[0]
    if marker is not None:
        assert not marker.exists(), "the bundle ran code"
    return err[0]


def test_genuine_bundle_predicts(good, capsys):
    p, csv, pl, X = good
    rc, err = _cli(capsys, p, csv)
    assert rc == 0, err


@pytest.mark.parametrize("attack", ["eval", "exec", "open", "os.system", "posix.system",
                                    "subprocess", "importlib", "pickle.loads", "_pickle.loads",
                                    "getattr"])
def test_code_in_skops_never_runs(attack, good, tmp_path, capsys):
    p, csv, _, _ = good
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    extra = None
    node = {
        "eval": lambda: _call("builtins", "eval", _str(code)),
        "exec": lambda: _call("builtins", "exec", _str(code)),
        "open": lambda: _call("builtins", "open", _str(str(marker)), _str("w")),
        "os.system": lambda: _call("os", "system", _str(f"touch {marker}")),
        "posix.system": lambda: _call("posix", "system", _str(f"touch {marker}")),
        "subprocess": lambda: _call("subprocess", "getoutput", _str(f"touch {marker}")),
        "importlib": lambda: _call("importlib", "import_module", _str("antigravity")),
        "getattr": lambda: _call("builtins", "getattr", _str("x"), _str("upper")),
    }.get(attack)
    if node is not None:
        node = node()
    else:
        class Evil:
            def __reduce__(self):
                return (exec, (code,))
        mod, name = attack.split(".")
        extra = {"evil.bin": pickle.dumps(Evil())}
        node = _call(mod, name, {"__class__": "bytes", "__module__": "builtins",
                                 "__loader__": "BytesNode", "file": "evil.bin", "__id__": 3})
    bad = _with_skops_node(p, tmp_path / "evil.zip", node, extra)
    msg = _refused(capsys, bad, csv, marker, match="allow-list")
    assert "." + node["__class__"] in msg or node["__class__"] in msg   # the type is named
    # the library call refuses too, and names the type
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    with pytest.raises(ModelError, match="allow-list"):
        load_bundle(bad)
    assert not marker.exists()


@pytest.mark.parametrize("variant", ["joblib", "pickle-format", "pkl-name", "pickle-as-skops"])
def test_pickle_under_every_name_is_refused(variant, good, tmp_path, capsys):
    p, csv, _, _ = good
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    blob = pickle.dumps({"pipeline": Evil()})
    doc = json.loads(_entries(p)["bundle.json"])
    doc["model_sha256"] = hashlib.sha256(blob).hexdigest()
    name = {"joblib": "model.joblib", "pickle-format": "model.joblib", "pkl-name": "model.pkl",
            "pickle-as-skops": "model.skops"}[variant]
    doc["model_file"] = name
    doc["model_format"] = {"joblib": "joblib", "pickle-format": "pickle", "pkl-name": "pickle",
                           "pickle-as-skops": "skops"}[variant]
    bad = _write(tmp_path / "evil.zip", {"bundle.json": json.dumps(_reseal(doc)), name: blob})
    _refused(capsys, bad, csv, marker)


@pytest.mark.parametrize("field,value", [
    ("params_yaml", "setting: {binWidth: 25}\n"),
    ("threshold", 0.0),
    ("input_columns", "reversed"),
    ("classes", ["low", "zero"]),
    ("rings", {"rings_mm": [1.0]}),
    ("engine", {"name": "other", "version": "9"}),
    ("regions", ["peri_0-5mm"]),
    ("training_ranges", {"features": {}}),
])
def test_tampered_field_is_refused_by_name(field, value, good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    doc = json.loads(e["bundle.json"])
    doc[field] = list(reversed(doc[field])) if value == "reversed" else value
    e["bundle.json"] = json.dumps(doc).encode()
    bad = _write(tmp_path / "tampered.zip", e)
    msg = _refused(capsys, bad, csv, match="tampered or corrupt bundle")
    assert msg.endswith(field), msg


def test_tampered_model_bytes_and_digest(good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    blob = bytearray(e["model.skops"])
    blob[-30] ^= 1
    e["model.skops"] = bytes(blob)
    _refused(capsys, _write(tmp_path / "b1.zip", e), csv, match="model_sha256")
    # the per-field hashes edited to match but not the overall digest
    e = _entries(p)
    doc = json.loads(e["bundle.json"])
    doc["integrity"]["digest"] = "0" * 64
    e["bundle.json"] = json.dumps(doc).encode()
    _refused(capsys, _write(tmp_path / "b2.zip", e), csv, match="integrity digest")


def test_bundle_saved_before_the_package_layout_still_loads(good, tmp_path, capsys):
    """0.1 bundles name their classes by the old flat modules (HER2RadiomicsLib.modeling...):
    they load through aliases, predict the same, and the aliases do not outlive the load."""
    import sys
    from HER2RadiomicsLib.modelling.bundle import LEGACY_MODULES, load_bundle
    p, csv, pl, X = good
    text = zipfile.ZipFile(io.BytesIO(_entries(p)["model.skops"])).read("schema.json").decode()
    used = {new: old for old, new in LEGACY_MODULES.items() if f'"{new}"' in text}
    assert "HER2RadiomicsLib.modelling.transformers" in used
    old = _with_module_names(p, tmp_path / "old.zip", used)
    b = load_bundle(old)
    assert not any(m in sys.modules for m in LEGACY_MODULES)
    np.testing.assert_array_equal(b.pipeline.predict_proba(X), pl.predict_proba(X))
    rc, err = _cli(capsys, old, csv)
    assert rc == 0, err


def test_hierarchical_bundle_naming_the_class_by_its_old_module_still_loads(tmp_path):
    """The hierarchical classifier moved from ``modelling.study`` to ``modelling.pipelines``;
    a bundle whose schema names the old module loads (through the old module's export) and
    predicts exactly what the new one does."""
    from imblearn.pipeline import Pipeline
    from HER2RadiomicsLib.modelling.bundle import load_bundle, save_bundle
    from HER2RadiomicsLib.modelling.pipelines import HierarchicalClassifier
    from HER2RadiomicsLib.modelling.transformers import ColumnSelector, make_classifier
    X, _ = _frame(n=150)
    y = np.array(["zero", "low", "positive"])[np.arange(len(X)) % 3]
    pl = Pipeline([("select", ColumnSelector()),
                   ("classifier", HierarchicalClassifier(make_classifier("logistic")))]).fit(X, y)
    meta = _meta(X, classes=["zero", "low", "positive"], positive_class=None, task="three_class")
    p = save_bundle(tmp_path / "new.zip", {"pipeline": pl, "nomogram": None}, meta)
    old_path = _with_module_names(p, tmp_path / "old.zip", {
        "HER2RadiomicsLib.modelling.pipelines": "HER2RadiomicsLib.modelling.study"})
    b = load_bundle(old_path)
    assert type(b.pipeline[-1]) is HierarchicalClassifier
    np.testing.assert_array_equal(b.pipeline.predict_proba(X), pl.predict_proba(X))


@pytest.mark.parametrize("old", ["HER2RadiomicsLib.modelling.transformers",
                                 "HER2RadiomicsLib.modeling"])
def test_bundle_naming_the_lasso_by_its_old_module_still_loads(good, tmp_path, capsys, old):
    """``LassoSelector`` moved from ``modelling.transformers`` (and, before the package layout,
    ``modeling``) to ``modelling.lasso``: a bundle whose schema names an old module passes the
    allow-list, loads as the same class and predicts exactly what the new one does."""
    from HER2RadiomicsLib.modelling.bundle import LEGACY_MODULES, load_bundle
    from HER2RadiomicsLib.modelling.lasso import LassoSelector
    p, csv, pl, X = good
    renames = {"HER2RadiomicsLib.modelling.lasso": old}
    if old == "HER2RadiomicsLib.modeling":      # a 0.1 bundle named every module the old way
        text = zipfile.ZipFile(io.BytesIO(_entries(p)["model.skops"])).read(
            "schema.json").decode()
        renames.update({new: o for o, new in LEGACY_MODULES.items() if f'"{new}"' in text})
    b = load_bundle(_with_module_names(p, tmp_path / "old.zip", renames))
    assert type(b.pipeline.named_steps["lasso"]) is LassoSelector
    np.testing.assert_array_equal(b.pipeline.predict_proba(X), pl.predict_proba(X))
    rc, err = _cli(capsys, tmp_path / "old.zip", csv)
    assert rc == 0, err


def test_newer_format_and_format_without_digest(good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    doc = json.loads(e["bundle.json"])
    doc["format_version"] = 99
    e["bundle.json"] = json.dumps(_reseal(doc)).encode()
    _refused(capsys, _write(tmp_path / "new.zip", e), csv, match="newer")
    doc["format_version"] = 1
    doc.pop("integrity")
    e["bundle.json"] = json.dumps(doc).encode()
    old = _write(tmp_path / "old.zip", e)
    _refused(capsys, old, csv, match="no integrity digest")
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    assert load_bundle(old, trust=True).meta["format_version"] == 1


@pytest.mark.parametrize("name", ["../bundle.json", "/etc/passwd", "sub/model.skops",
                                  "..\\evil", "evil.py"])
def test_unexpected_or_traversal_entries(name, good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    e[name] = b"print('hi')"
    msg = _refused(capsys, _write(tmp_path / "z.zip", e), csv, match="refused")
    assert "entr" in msg


def test_size_caps_checked_before_reading(good, tmp_path, capsys, monkeypatch):
    import HER2RadiomicsLib.modelling.bundle as B
    p, csv, _, _ = good
    e = _entries(p)
    # a 40 MB entry that deflates to ~40 kB: refused on its declared size, never inflated
    e["model.skops"] = b"\0" * (40 * 2**20)
    big = _write(tmp_path / "big.zip", e)
    reads = []
    real = B._read_entry
    monkeypatch.setattr(B, "_read_entry", lambda *a, **k: reads.append(a[1].filename)
                        or real(*a, **k))
    monkeypatch.setattr(B, "MAX_MODEL_BYTES", 8 * 2**20)
    _refused(capsys, big, csv, match="cap")
    assert "model.skops" not in reads
    monkeypatch.setattr(B, "MAX_META_BYTES", 64)
    _refused(capsys, p, csv, match="bundle.json is")
    # a skops model whose inner archive inflates past its cap
    monkeypatch.setattr(B, "MAX_META_BYTES", 16 * 2**20)
    monkeypatch.setattr(B, "MAX_MODEL_BYTES", 256 * 2**20)
    monkeypatch.setattr(B, "MAX_MODEL_UNCOMPRESSED_BYTES", 2**20)
    node = {"__class__": "bytes", "__module__": "builtins", "__loader__": "BytesNode",
            "file": "pad.bin", "__id__": 3}
    # incompressible padding: the inflated-size cap is tested, not the compression ratio
    noise = np.random.default_rng(0).bytes(3 * 2**20)
    pad = _with_skops_node(p, tmp_path / "pad.zip", node, {"pad.bin": noise})
    _refused(capsys, pad, csv, match="inflates")


def test_absurd_nesting_is_refused(good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    doc = json.loads(e["bundle.json"])
    deep = "[" * 5000 + "]" * 5000
    text = json.dumps(doc)[:-1] + ', "x": ' + deep + "}"
    e["bundle.json"] = text.encode()
    _refused(capsys, _write(tmp_path / "deep.zip", e), csv, match="nests deeper")
    node = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
            "content": [], "__id__": 1}
    for _ in range(300):
        node = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                "content": [node], "__id__": 1}
    _refused(capsys, _with_skops_node(p, tmp_path / "deep2.zip", node), csv,
             match="nests deeper")


def test_not_a_zip_and_missing_file(tmp_path, good, capsys):
    _, csv, _, _ = good
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    _refused(capsys, junk, csv, match="not a HER2Radiomics bundle")
    _refused(capsys, tmp_path / "missing.zip", csv, match="not found")


def test_json_nesting_scanner_ignores_brackets_in_strings():
    from HER2RadiomicsLib.modelling.bundle import json_nesting
    assert json_nesting('{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert json_nesting('"\\"[["') == 0
    assert json_nesting("[]") == 1


# -- the allow-list: exact names, covering our pipelines, holding nothing dangerous -----------

DANGEROUS_MODULES = {"builtins", "os", "posix", "nt", "subprocess", "pickle", "_pickle",
                     "importlib", "io", "_io", "shutil", "sys", "runpy", "code", "codecs",
                     "functools", "operator", "_operator", "ctypes", "socket", "marshal",
                     "shelve", "pathlib", "tempfile", "webbrowser", "pty", "joblib", "dill",
                     "cloudpickle", "types", "inspect", "gc", "threading", "multiprocessing"}


def test_allow_list_is_exact_and_harmless():
    from sklearn.base import BaseEstimator
    from HER2RadiomicsLib.modelling.bundle import ALLOWED_TYPES
    import sklearn.metrics
    for name in ALLOWED_TYPES:
        mod, _, attr = name.rpartition(".")
        assert mod.split(".")[0] not in DANGEROUS_MODULES, name
        obj = getattr(importlib.import_module(mod), attr)      # exact: it resolves
        if inspect.isclass(obj):
            # classes only: estimators, or the fitted structures and helpers they hold
            assert not any(k.__module__.split(".")[0] in DANGEROUS_MODULES - {"builtins"}
                           for k in obj.__mro__), name
            assert issubclass(obj, BaseEstimator) or mod.startswith(("sklearn.", "imblearn.")), \
                name
        else:
            # the single function: the AUC scorer of nested tuning, a pure computation
            assert obj is sklearn.metrics.roc_auc_score, name
    assert not any(n.endswith((".eval", ".exec", ".open", ".system", ".loads", ".load",
                               "__import__", ".getattr", ".compile")) for n in ALLOWED_TYPES)


def _pipelines_of_every_recipe():
    """Fitted pipelines as the shipped recipes build them: each recipe with its own
    classifiers, tuned and not (the three-class recipe also hierarchical); each of the seven
    classifiers once (types do not depend on the selection steps before it); a nomogram."""
    import warnings
    from HER2RadiomicsLib.modelling.transformers import CLASSIFIERS
    from HER2RadiomicsLib.modelling.nomogram import NomogramModel
    from HER2RadiomicsLib.modelling.study import (build_pipeline, list_recipes, load_recipe,
                                                  task_spec)
    rng = np.random.default_rng(0)
    n = 72
    regions = ["tumor", "peri_0-3mm", "peri_0-5mm", "peri_0-8mm"]
    X = pd.DataFrame({f"{r}__original_firstorder_F{i}": rng.normal(size=n)
                      for r in regions for i in range(6)})
    X["site"] = rng.choice(["A", "B"], n)
    y3 = np.array(["zero", "low", "positive"] * (n // 3))
    yb = np.tile([0, 1], n // 2)
    X.iloc[:, 0] += yb * 2
    X.iloc[:, 1] += (y3 == "low") * 2
    icc = {c: 0.9 for c in X.columns}
    out = []
    for i, name in enumerate(sorted(list_recipes())):
        r0 = load_recipe(name)
        # LASSO iterations change no type; the paper's 100,000 only cost time here
        r0["pipeline"] = [{"lasso": {**s["lasso"], "max_iter": 2000}}
                          if isinstance(s, dict) and "lasso" in s else s
                          for s in r0["pipeline"]]
        regs = r0.get("regions") or next(iter(r0["scenarios"].values()))
        tasks = [r0["task"]] + (["hierarchical"] if r0["task"] == "three_class" else [])
        for task in tasks:
            y = y3 if "classes" in task_spec(task) else yb
            clfs = [(c, t) for c in r0["classifiers"] for t in (False, True)]
            if i == 0:
                clfs += [(c, False) for c in CLASSIFIERS if c not in r0["classifiers"]]
            for clf, tune in clfs:
                r = dict(r0, task=task, tune=tune)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out.append(build_pipeline(r, regs, clf, icc_values=icc, y_train=y)
                               .fit(X, y))
    Z = pd.DataFrame({"rad_score": rng.normal(size=n), "age": rng.normal(50, 9, n)})
    out.append(NomogramModel(predictors=("rad_score", "age")).fit(Z, yb))
    return out


@pytest.mark.slow
def test_allow_list_covers_every_shipped_recipe():
    import skops.io as sio
    from HER2RadiomicsLib.modelling.bundle import ALLOWED_TYPES
    seen = set()
    for pl in _pipelines_of_every_recipe():
        seen |= set(sio.get_untrusted_types(data=sio.dumps({"pipeline": pl})))
    assert seen <= ALLOWED_TYPES, sorted(seen - ALLOWED_TYPES)
    # and the list is no wider than needed: every name is used by some pipeline
    assert ALLOWED_TYPES <= seen | {"sklearn.metrics._ranking.roc_auc_score",
                                    "sklearn.metrics._scorer._Scorer"}, \
        sorted(ALLOWED_TYPES - seen)


# -- threshold, spacing units, out-of-distribution --------------------------------------------

def test_threshold_zero_stays_zero(tmp_path):
    from HER2RadiomicsLib.modelling.bundle import load_bundle, save_bundle
    from HER2RadiomicsLib.modelling.predict import predict_rows
    X, y = _frame()
    pl = _pipeline(X, y)
    p = save_bundle(tmp_path / "t0.zip", {"pipeline": pl, "nomogram": None},
                    _meta(X, threshold=0.0))
    preds = predict_rows(load_bundle(p), X.assign(case_id=range(len(X))))
    # P(low) > 0 for every row, so a threshold of exactly 0 calls every case 'low'
    assert {pr.predicted_class for pr in preds} == {"low"}
    assert load_bundle(p).meta["threshold"] == 0.0


def test_out_of_distribution_inputs_and_rad_score_are_flagged(good):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import predict_rows
    p, _, pl, X = good
    b = load_bundle(p)
    used = list(b.meta["training_ranges"]["features"])
    assert used and set(used) <= set(X.columns)
    ok = predict_rows(b, X.iloc[:5].assign(case_id=range(5)))
    assert all("out_of_distribution" not in pr.qc for pr in ok)
    far = X.iloc[:1].copy()
    lo, hi = b.meta["training_ranges"]["features"][used[0]]
    far[used[0]] = hi + 3 * (hi - lo)
    pr = predict_rows(b, far.assign(case_id=["far"]))[0]
    assert pr.qc["out_of_distribution"] == "yes"
    assert any("far outside the training range" in w and used[0] in w for w in pr.warnings)
    assert any(w.startswith("Rad-score") for w in pr.warnings)
    # just inside the widened range: no flag
    near = X.iloc[:1].copy()
    for c in used:
        lo, hi = b.meta["training_ranges"]["features"][c]
        near[c] = hi + 0.1 * (hi - lo)
    pr = predict_rows(b, near.assign(case_id=["near"]))[0]
    assert not any("model input" in w for w in pr.warnings)


class _FakeBundle:
    def __init__(self, units, **ranges):
        self.meta = {"training_spacing": {"units": units, **ranges}}


def _loaded(spacing, source):
    import SimpleITK as sitk
    from HER2RadiomicsLib.imaging.io import LoadedImage
    img = sitk.GetImageFromArray(np.zeros((8, 8), np.float32))
    img.SetSpacing(spacing)
    return LoadedImage(image=img, path="scan.dcm", spacing_source=source, provenance={})


def test_pixel_unit_bundle_refuses_calibrated_image_unless_asked():
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.modelling.predict import check_spacing_units
    b = _FakeBundle("pixel")
    with pytest.raises(InputError, match="--pixel-units"):
        check_spacing_units(b, _loaded((0.1, 0.1), "dicom-us-region"))
    ld = _loaded((0.1, 0.1), "dicom-us-region")
    assert check_spacing_units(b, ld, pixel_units=True) == []
    assert ld.spacing_mm == (1.0, 1.0) and "pixel-units" in ld.spacing_source
    # a mm bundle refuses an uncalibrated image, and flags a spacing outside its range
    mm = _FakeBundle("mm", spacing_x_mm_range=[0.08, 0.12], spacing_y_mm_range=[0.08, 0.12])
    with pytest.raises(InputError, match="--spacing-mm"):
        check_spacing_units(mm, _loaded((1.0, 1.0), "unknown"))
    assert check_spacing_units(mm, _loaded((0.1, 0.1), "dicom-us-region")) == []
    w = check_spacing_units(mm, _loaded((0.5, 0.1), "dicom-us-region"))
    assert len(w) == 1 and "spacing x 0.5" in w[0]


def test_version_warning_printed_once(good, tmp_path, capsys):
    p, csv, _, _ = good
    e = _entries(p)
    doc = json.loads(e["bundle.json"])
    doc["versions"]["scikit-learn"] = "0.0.1"
    e["bundle.json"] = json.dumps(_reseal(doc)).encode()
    old = _write(tmp_path / "old_sklearn.zip", e)
    rc, err = _cli(capsys, old, csv)
    assert rc == 0
    assert sum("differs from the bundle's 0.0.1" in ln for ln in err) == 1, err


def test_a_bundle_saved_by_a_newer_scikit_learn_runs_on_the_floor(monkeypatch):
    """scikit-learn 1.8 removed LogisticRegression.multi_class, which 1.6/1.7 (1.6.1 is the
    last release for Python 3.9, Slicer 5.8) still read in predict_proba: a loaded bundle gets
    their default back. `make install-check --floors` runs the real thing on Python 3.9."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from HER2RadiomicsLib.modelling.bundle import _for_older_sklearn
    X, y = _frame()
    model = {"pipeline": _pipeline(X, y), "nomogram": None}
    lrs = [o for o in _walk(model) if isinstance(o, LogisticRegression)]
    assert lrs
    for lr in lrs:
        vars(lr).pop("multi_class", None)            # as a 1.8+ model arrives
    monkeypatch.setattr(sklearn, "__version__", "1.9.1")
    _for_older_sklearn(model)
    assert all("multi_class" not in vars(lr) for lr in lrs)     # 1.8+: nothing to do
    monkeypatch.setattr(sklearn, "__version__", "1.7.2")
    _for_older_sklearn(model)
    assert all(vars(lr)["multi_class"] == "deprecated" for lr in lrs)


def _walk(obj, seen=None):
    from HER2RadiomicsLib.modelling.bundle_checks import _objects
    return [o for _, o in _objects(obj)]
