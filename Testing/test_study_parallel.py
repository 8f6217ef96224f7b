"""A study run gives the same numbers whatever the number of processes (``--jobs``): the
models of every scenario x classifier and the repeated splits are fitted in parallel, each
seeded on its own."""
import json

import numpy as np
import pandas as pd

from HER2RadiomicsLib.modelling.recipes import load_recipe


def _tables(tmp_path, n=60):
    """n patients (one image each), sites A/B/C, a weak signal in two tumour and two ring
    features; a second image for every sixth patient (per-patient averaging is exercised)."""
    rng = np.random.default_rng(5)
    pid = [f"p{i:02d}" for i in range(n)]
    y = np.array(["low", "zero"] * (n // 2))
    sig = (y == "low").astype(float)
    cols = {}
    for reg in ("tumor", "peri_0-3mm"):
        for j in range(6):
            cols[f"{reg}__f{j}"] = rng.normal(size=n) + (0.9 * sig if j < 2 else 0.0)
    feats = pd.DataFrame(cols)
    feats.insert(0, "case_id", pid)
    labels = pd.DataFrame({"case_id": pid, "patient_id": pid, "her2": y,
                           "site": list("ABC") * (n // 3), "age": rng.normal(50, 8, n)})
    extra = feats.iloc[::6].copy()
    extra["case_id"] = extra["case_id"] + "-2"
    extra.iloc[:, 1:] += rng.normal(scale=0.2, size=extra.iloc[:, 1:].shape)
    lab2 = labels.iloc[::6].copy()
    lab2["case_id"] = lab2["case_id"] + "-2"
    pd.concat([feats, extra]).to_csv(tmp_path / "features.csv", index=False)
    pd.concat([labels, lab2]).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "features.csv", tmp_path / "labels.csv"


def _recipe():
    """peritumoral2025's design (two scenarios, univariate + LASSO, nomogram) on small data."""
    r = load_recipe("peritumoral2025")
    r["scenarios"] = {"intra": ["tumor"], "intra+peri3mm": ["tumor", "peri_0-3mm"]}
    r["pipeline"] = ["impute", "variance", "scale",
                     {"univariate": {"test": "mannwhitney", "p_threshold": 0.2,
                                     "min_features": 2}},
                     {"lasso": {"cv": 3, "n_alphas": 6, "decades": 2, "max_features": 4}}]
    r["classifiers"], r["clinical"] = ["logistic", "decision_tree"], ["age"]
    r["evaluation"] = {**r["evaluation"], "repeats": 2, "bootstrap": 100}
    return r


def test_results_do_not_depend_on_the_number_of_processes(tmp_path):
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    fc, lc = _tables(tmp_path)
    runs = {}
    for jobs in (1, 2):
        sr = run(_recipe(), fc, lc, tmp_path / f"jobs{jobs}",
                 StudyOptions(jobs=jobs, progress=False, make_bundle=False))
        runs[jobs] = sr
    one, two = runs[1], runs[2]
    assert list(one.results) == list(two.results) == [
        "intra/logistic", "intra/decision_tree", "intra+peri3mm/logistic",
        "intra+peri3mm/decision_tree"]
    assert one.repeated_aucs == two.repeated_aucs and len(one.repeated_aucs) == 2
    assert one.repeated_choice == two.repeated_choice
    for k in one.results:
        for i in range(3):
            a, b = one.predictions[k][i], two.predictions[k][i]
            assert (a is None and b is None) or np.array_equal(a, b), (k, i)
        assert list(one.results[k]) == list(two.results[k])     # same keys, same order
    strip = {"seconds"}

    def doc(sr):
        s = json.loads((sr.out / "metrics.json").read_text())
        return {k: v for k, v in s.items() if k not in strip}
    assert doc(one) == doc(two)
    assert (one.out / "predictions.csv").read_bytes() == (two.out / "predictions.csv").read_bytes()
