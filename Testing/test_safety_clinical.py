"""Clinical values are never silently accepted or dropped (issue 25, items 8 and 9): an
implausible value or an unknown name is refused in one line naming the value and what is
accepted; a missing one leaves the nomogram out with a warning; in a manifest or feature
table a bad cell is that row's error and the other rows are predicted.

The shipped bundle (HER2-low vs zero with a six-variable nomogram) and its self-test case are
the patient throughout; its case card gives the clinical values.
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SHIPPED = Path(__file__).resolve().parents[1] / "HER2Radiomics" / "Resources" / "Testing"
BUNDLE = SHIPPED / "model_bundle.zip"
CASE = json.loads((SHIPPED / "case.json").read_text())
CLINICAL = [f"{k}={v:g}" for k, v in CASE["clinical"].items()]


def _predict_image(*extra):
    return ["predict", "--bundle", str(BUNDLE), "--image", str(SHIPPED / "case.nrrd"),
            "--mask", str(SHIPPED / "case_mask.nrrd"), "--site", CASE["site"], *extra]


def _main(capsys, args):
    from HER2RadiomicsLib.cli import main
    rc = main(list(map(str, args)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip().splitlines()


def _clinical(**change):
    vals = dict(CASE["clinical"], **change)
    return [f"{k}={v}" for k, v in vals.items()]


def test_implausible_age_is_refused_in_one_line():
    """age=700 (days? a typo?) went into the nomogram and gave a probability, exit 0."""
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib",
                        *_predict_image("--clinical", *_clinical(age=700))],
                       capture_output=True, text=True, timeout=60)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, err)
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in r.stderr
    assert "age = 700" in err[0] and "10 to 110" in err[0]
    assert "nomogram probability" not in r.stdout


@pytest.mark.parametrize("change, words", [
    (dict(age=5), ["age = 5", "10 to 110 (years)"]),
    (dict(age="nan"), ["age = 'nan'", "not a finite number"]),
    (dict(ki67=250), ["ki67 = 250", "0 to 100"]),
    (dict(lesion_size_mm=0), ["lesion_size_mm = 0", "0 to 200 (mm, above 0)"]),
    (dict(lesion_size_mm=-12), ["lesion_size_mm = -12", "0 to 200"]),
    (dict(er=80), ["er = 80", "learnt it as 0/1"]),      # % given to a 0/1-status nomogram
    (dict(menopausal=2), ["menopausal = 2", "0 to 1"]),
])
def test_implausible_clinical_values_are_refused(change, words, capsys):
    rc, out, err = _main(capsys, _predict_image("--clinical", *_clinical(**change)))
    assert rc == 2, (out, err)
    assert len(err) == 1 and err[0].startswith("error: --clinical: clinical value"), err
    for w in words:
        assert w in err[0], err[0]


def test_unknown_clinical_name_is_refused_naming_the_accepted_ones(capsys):
    """'Ki67=30' (capital K) left the nomogram's ki67 missing: no nomogram, no word of it."""
    args = [a for a in CLINICAL if not a.startswith("ki67=")] + ["Ki67=30"]
    rc, out, err = _main(capsys, _predict_image("--clinical", *args))
    assert rc == 2 and len(err) == 1, err
    assert "unknown clinical value(s) Ki67" in err[0]
    assert "known names: age, menopausal, er, pr, ki67, lesion_size_mm" in err[0]


def test_missing_clinical_values_are_reported_not_silent(capsys):
    rc, out, err = _main(capsys, _predict_image("--clinical", *CLINICAL[:2]))
    assert rc == 0, err
    assert "nomogram probability" not in out
    assert "warning: nomogram not computed: no clinical value for er, pr, ki67, " \
           "lesion_size_mm" in out
    assert "nomogram not computed" in out.split("QC:")[1]


def test_parse_clinical_checks_ranges_for_every_caller():
    """The Slicer CLI and panel parse with the same function: ranges apply there too."""
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.modelling.clinical import parse_clinical
    assert parse_clinical("age=52, ki67=30") == {"age": 52.0, "ki67": 30.0}
    with pytest.raises(InputError, match="age = 520 is outside the plausible range 10 to 110"):
        parse_clinical("age=520")
    with pytest.raises(InputError, match="must be a number"):
        parse_clinical("age=old")


# -- tables: a bad cell is its row's error -------------------------------------------------------

def _manifest(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _row(case_id, **change):
    return {"case_id": case_id, "image": str(SHIPPED / "case.nrrd"),
            "mask": str(SHIPPED / "case_mask.nrrd"), "site": CASE["site"],
            **dict(CASE["clinical"], **change)}


def test_manifest_bad_cells_fail_only_their_rows(tmp_path):
    """One non-numeric clinical cell aborted the whole run ('unexpected ValueError')."""
    man = _manifest(tmp_path / "m.csv", [
        _row("good"), _row("words", age="sixty"), _row("implausible", ki67=250),
        _row("no_file", image=str(tmp_path / "gone.nrrd")), _row("good2")])
    out = tmp_path / "preds.csv"
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", "predict", "--bundle",
                        str(BUNDLE), "--manifest", str(man), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    assert pd.read_csv(out).case_id.tolist() == ["good", "good2"]
    err = r.stderr.strip().splitlines()
    assert len(err) == 3, err
    assert "words" in err[0] and "age = 'sixty' is not a number" in err[0] and str(man) in err[0]
    assert "implausible" in err[1] and "ki67 = 250" in err[1]
    assert "no_file" in err[2] and "gone.nrrd" in err[2]


def test_manifest_row_failing_unexpectedly_does_not_abort_the_others(tmp_path, capsys,
                                                                     monkeypatch):
    import HER2RadiomicsLib.modelling.predict as P
    real = P.predict_case

    def flaky(bundle, image, mask, **kw):
        if kw.get("case_id") == "boom":
            raise RuntimeError("simulated failure")
        return real(bundle, image, mask, **kw)
    monkeypatch.setattr(P, "predict_case", flaky)
    man = _manifest(tmp_path / "m.csv", [_row("boom"), _row("good")])
    out = tmp_path / "preds.csv"
    rc, _, err = _main(capsys, ["predict", "--bundle", BUNDLE, "--manifest", man, "--out", out])
    assert rc == 1
    assert pd.read_csv(out).case_id.tolist() == ["good"]
    assert len(err) == 1 and "boom" in err[0] and "simulated failure" in err[0]


def test_feature_table_bad_clinical_cell_fails_only_its_row(tmp_path, capsys):
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.predict import features_for_case
    feats, *_ = features_for_case(load_bundle(BUNDLE), SHIPPED / "case.nrrd",
                                  SHIPPED / "case_mask.nrrd")
    rows = [{"case_id": c, "site": CASE["site"], **CASE["clinical"], **feats}
            for c in ("good", "words", "blank")]
    table = pd.DataFrame(rows).astype({"age": object})
    table.loc[1, "age"] = "sixty"
    table.loc[2, "age"] = None                     # missing: predicted without the nomogram
    table.to_csv(tmp_path / "f.csv", index=False)
    out = tmp_path / "p.csv"
    rc, _, err = _main(capsys, ["predict", "--bundle", BUNDLE, "--features", tmp_path / "f.csv",
                                "--out", out])
    assert rc == 1, err
    pred = pd.read_csv(out).set_index("case_id")
    assert list(pred.index) == ["good", "blank"]
    assert pred.loc["good", "nomogram_probability"] > 0
    assert pd.isna(pred.loc["blank", "nomogram_probability"])
    assert "nomogram=not computed (no age)" in pred.loc["blank", "qc"]
    assert len(err) == 1 and "words" in err[0] and "age = 'sixty' is not a number" in err[0]


def test_candidates_a_nomogram_did_not_select_are_accepted_not_used():
    """yin2024 and zhao2025 select clinical variables by univariate p: a bundle's nomogram
    may use only age and ki67, and the other recipe variables given as well are no typo."""
    import numpy as np
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.modelling.bundle import load_bundle
    from HER2RadiomicsLib.modelling.nomogram import NomogramModel
    from HER2RadiomicsLib.modelling.clinical import clinical_inputs
    b = load_bundle(BUNDLE)
    rng = np.random.default_rng(0)
    Z = pd.DataFrame({"rad_score": rng.normal(size=40), "age": rng.uniform(30, 80, 40),
                      "ki67": rng.uniform(1, 90, 40)})
    b.nomogram = NomogramModel(("rad_score", "age", "ki67")).fit(Z, np.tile([0, 1], 20))
    b.meta = dict(b.meta, clinical=["age", "ki67"])
    inputs, missing = clinical_inputs(b, dict(CASE["clinical"]))
    assert inputs == {"age": CASE["clinical"]["age"], "ki67": CASE["clinical"]["ki67"]}
    assert missing == []
    with pytest.raises(InputError, match="unknown clinical value"):
        clinical_inputs(b, {"age": 50, "ki-67": 30})
