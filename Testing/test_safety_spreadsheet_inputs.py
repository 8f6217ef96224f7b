"""Modelling and extraction inputs a spreadsheet or a params file can turn against the user
(adversarial findings 17, 20, 23): ``train`` refuses the case and patient ids ``extract``
refuses, ``predict --features`` fails only the rows whose id or site it cannot use, the
prediction tables quote formula cells, a params file cannot ask for a grid or matrices no
image needs, and every refusal is one line naming the file to fix.

The tables are built here (30 patients, four features, a two-step recipe): a refused run
stops before any fit, so each CLI call takes about a second.
"""
import csv
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

CLI = [sys.executable, "-m", "HER2RadiomicsLib"]
SHIPPED = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing"
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _limited():
    # a run that would allocate a giant grid fails at 4 GB instead of taking the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def _run(*args, timeout=120):
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, preexec_fn=_limited)
    return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]


def _one_error(rc, err, *words):
    assert rc == 2, (rc, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "unexpected" not in err[0] and "Traceback" not in err[0], err
    for w in words:
        assert str(w) in err[0], (w, err[0])
    return err[0]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Features, labels and a two-step recipe of 30 one-image patients."""
    d = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    her2 = np.array(["zero", "low", "positive"])[np.arange(30) % 3]
    F = rng.normal(size=(30, 4))
    F[:, 0] += 1.5 * (her2 != "zero")
    ids = [f"c{i:03d}" for i in range(30)]
    feats = pd.DataFrame(F, columns=[f"tumor__original_f{j}" for j in range(4)])
    feats.insert(0, "case_id", ids)
    labels = pd.DataFrame({"case_id": ids, "patient_id": ids, "her2": her2, "site": "A"})
    (d / "tiny.yaml").write_text(
        "name: tiny\ntitle: tiny\nparams: default\nregions: [tumor]\ntask: lowpos_vs_zero\n"
        "pipeline: [impute, scale]\nclassifiers: [logistic]\nevaluation: {test_size: 0.3, "
        "external_site: null, repeats: 0, bootstrap: 50, seed: 1}\n")
    return d, feats, labels


def _train(d, feats, labels, *extra, capsys=None):
    """``train`` as a user runs it; with ``capsys``, in this process (the same code path,
    without a second start-up of the libraries)."""
    f, lab = d / "features.csv", d / "labels.csv"
    feats.to_csv(f, index=False)
    labels.to_csv(lab, index=False)
    args = ["train", "--recipe", d / "tiny.yaml", "--features", f, "--labels", lab,
            "--out", d / "model", *extra]
    if capsys is None:
        rc, out, err = _run(*args)
    else:
        from HER2RadiomicsLib.cli import main
        rc = main([str(a) for a in args])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return rc, err, f, lab


def test_train_refuses_ids_extract_refuses(tables, tmp_path, capsys):
    """A formula case id in either table, or a formula patient id, went through to
    predictions.csv and the bundle's report (extract refuses such ids)."""
    _, feats, labels = tables
    (tmp_path / "tiny.yaml").write_text((tables[0] / "tiny.yaml").read_text())
    f2, l2 = feats.copy(), labels.copy()
    f2.loc[3, "case_id"] = l2.loc[3, "case_id"] = "=1+c003"
    rc, err, f, lab = _train(tmp_path, f2, l2)
    _one_error(rc, err, f, "row 5", "'=1+c003'", "formula")
    l3 = labels.copy()
    l3.loc[1, "patient_id"] = "@SUM(1)c001"
    rc, err, f, lab = _train(tmp_path, feats, l3, capsys=capsys)
    _one_error(rc, err, lab, "row 3", "patient_id '@SUM(1)c001'", "formula")
    l4 = labels.copy()
    l4.loc[2, "case_id"] = "../c002"
    rc, err, f, lab = _train(tmp_path, feats, l4, capsys=capsys)
    _one_error(rc, err, lab, "row 4", "path separators")
    assert not (tmp_path / "model" / "predictions.csv").exists()


def test_train_errors_name_the_table_to_fix(tables, tmp_path, capsys):
    """A patient whose images disagree was found only after every fit, naming no file; an ICC
    or function table without its columns named no file either."""
    _, feats, labels = tables
    (tmp_path / "tiny.yaml").write_text((tables[0] / "tiny.yaml").read_text())
    l2 = labels.copy()
    l2.loc[1, "patient_id"] = "c000"                  # c000 zero, c001 low: one patient
    rc, err, f, lab = _train(tmp_path, feats, l2)
    _one_error(rc, err, lab, "patient(s) c000 have images with different labels")
    bad = tmp_path / "icc.csv"
    bad.write_text("a,b\n1,2\n")
    rc, err, *_ = _train(tmp_path, feats, labels, "--icc", bad, capsys=capsys)
    _one_error(rc, err, bad, "ICC table lacks columns")
    rc, err, *_ = _train(tmp_path, feats, labels, "--functions", bad, capsys=capsys)
    _one_error(rc, err, bad, "feature,function")


def test_prediction_tables_quote_formula_cells(tmp_path):
    """train's predictions.csv and predictions_images.csv go through the CSV writer that
    quotes formula cells (ids are refused up front; this is the second line of defence)."""
    from HER2RadiomicsLib.modelling.study_outputs import _write_predictions
    X = pd.DataFrame({"case_id": ["=cmd|'/C calc'!A0", "+c2"], "patient_id": ["@p1", "-p2"]})
    none = X.iloc[:0]
    d = SimpleNamespace(Xtr=X, Xte=none, dext=none, ytr=np.array([0, 1]), yte=None, yext=None,
                        unit="patients",
                        per_unit=lambda part, a: (np.array(["@p1", "-p2"]), np.array([0, 1]),
                                                  None))
    p = np.array([0.2, 0.7])
    _write_predictions(tmp_path, {"m": (p, None, None)}, d, ["zero", "low"], "low", "m",
                       [p, None, None])
    for name in ("predictions.csv", "predictions_images.csv"):
        cells = [c for row in csv.reader(open(tmp_path / name)) for c in row]
        assert not [c for c in cells if c.startswith(FORMULA) and c.lstrip("+-")[:1]
                    not in "0123456789."], (name, cells)
        assert "'@p1" in cells and "'-p2" in cells


@pytest.fixture(scope="module")
def shipped_features(tmp_path_factory):
    """The shipped bundle's features of its self-test case, as a one-row DataFrame."""
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import features_for_case
    feats, *_ = features_for_case(load_bundle(SHIPPED / "model_bundle.zip"),
                                  SHIPPED / "case.nrrd", SHIPPED / "case_mask.nrrd")
    return pd.DataFrame([feats])


def test_predict_features_fails_only_rows_with_a_bad_id_or_site(shipped_features, tmp_path,
                                                                capsys):
    """A formula case id was written raw into the predictions; one row of an unknown site
    aborted the whole table (rc 2, nothing written)."""
    ids = ["good", "=1+P2", "other_site", "no_site", "good2"]
    table = pd.concat([shipped_features] * 5, ignore_index=True)
    table.insert(0, "case_id", ids)
    table.insert(1, "site", ["A", "A", "C", None, "B"])
    src, out = tmp_path / "f.csv", tmp_path / "p.csv"
    table.to_csv(src, index=False)
    bundle = SHIPPED / "model_bundle.zip"
    rc, _, err = _run("predict", "--bundle", bundle, "--features", src, "--out", out)
    assert rc == 1, err
    assert pd.read_csv(out).case_id.tolist() == ["good", "good2"]
    assert len(err) == 3 and not any("Traceback" in e or "unexpected" in e for e in err), err
    assert f"{src}: row 3: case_id '=1+P2'" in err[0] and "formula" in err[0]
    assert f"other_site: {bundle}: site 'C' is unknown" in err[1] and "'A', 'B'" in err[1]
    assert f"no_site: {bundle}: this bundle harmonises sites with ComBat" in err[2]
    # --site fills the rows without one; a row's own site still wins
    from HER2RadiomicsLib.cli import main
    assert main(["predict", "--bundle", str(bundle), "--features", str(src), "--out", str(out),
                 "--site", "B"]) == 1
    assert pd.read_csv(out).case_id.tolist() == ["good", "no_site", "good2"]
    assert len([ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]) == 2


PARAMS = "setting: {{binWidth: 25, {}}}\nimageType: {{Original: {{}}}}\n" \
         "featureClass: {{firstorder: [Mean]}}\n"


def test_params_that_size_giant_grids_are_refused_in_one_line(tmp_path):
    """resampledPixelSpacing 2e-4 mm on 0.12 mm pixels asks for a 2.8 Gpx grid (ITK failed
    with a header path, or the machine ran out of memory); a binCount of a million or a
    texture distance of 1,000 px asked for matrices and loops no image needs."""
    img, mask = SHIPPED / "case.nrrd", SHIPPED / "case_mask.nrrd"
    cases = [("resampledPixelSpacing: [0.0002, 0.0002]",
              [img, "resampledPixelSpacing [0.0002, 0.0002]", "px grid", "268,435,456"]),
             ("binCount: 1000000", ["binCount", "1000000", "5,000"]),
             ("distances: [1000]", ["distances", "1000", "32"])]
    for i, (setting, words) in enumerate(cases):
        p = tmp_path / f"p{i}.yaml"
        p.write_text(PARAMS.format(setting))
        out = tmp_path / f"f{i}.csv"
        rc, _, err = _run("extract", "--image", img, "--mask", mask, "--params", p, "--out",
                          out, "--no-progress", timeout=60)
        line = _one_error(rc, err, *words)
        assert str(p) in line
