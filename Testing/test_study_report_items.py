"""Issue 31, items 3 and 4: what a CLEAR / TRIPOD+AI / IBSI reviewer asks of a training
report. The expected values come from the inputs written here (a params YAML's settings, a
hand-made ICC table, an independent logistic fit), never from the code under test."""
import csv
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

N_FEAT = 12
N_BOOT = 50          # not the default 2,000: the report must say what was used


def _tables(d, with_prov=True, with_truth=True):
    """90 patients (one image each), 12 features with a planted signal, clinical columns."""
    rng = np.random.default_rng(0)
    n = 90
    y = np.array(["zero"] * 45 + ["low"] * 45)
    X = rng.normal(size=(n, N_FEAT))
    X[:, 0] += 1.0 * (y == "low")
    X[:, 1] -= 0.8 * (y == "low")
    ids = [f"P{i:03d}-1" for i in range(n)]
    f = pd.DataFrame(X, columns=[f"tumor__f{j}" for j in range(N_FEAT)])
    f.insert(0, "case_id", ids)
    d.mkdir(parents=True, exist_ok=True)
    f.to_csv(d / "features.csv", index=False)
    lab = pd.DataFrame({"case_id": ids, "patient_id": [i[:-2] for i in ids], "her2": y,
                        "site": rng.choice(["A", "B"], n),
                        "age": rng.normal(55, 10, n).round() + 5 * (y == "low"),
                        "menopausal": rng.integers(0, 2, n), "er": rng.integers(0, 2, n),
                        "pr": rng.integers(0, 2, n), "ki67": rng.uniform(5, 60, n).round(),
                        "lesion_size_mm": rng.uniform(8, 40, n).round(1)})
    lab.to_csv(d / "cohort.csv", index=False)
    if with_prov:
        # extracted with yin2024's params although the recipe names "default"
        from HER2RadiomicsLib.extraction.features import load_params, params_hash
        h = params_hash(load_params("yin2024")[1])
        pd.DataFrame({"case_id": ids, "params": "yin2024", "params_hash": h,
                      "engine": "native", "engine_version": "9.9"}).to_csv(
            d / "features_provenance.csv", index=False)
    if with_truth:
        # the marker the built-in synthetic cohort writes beside its cohort.csv
        (d / "truth.json").write_text(json.dumps({"signal": {}, "label_noise": 0.1,
                                                  "cases": {}}))
    return d


PROTOCOL = {"modality": "mammography",
            "protocol_note": "a mammography (CC/MLO) protocol run on ultrasound images",
            "assumed": ["binWidth 5 (not given)", "L2 logistic with C = 1"],
            "deviations": [{"paper": "one split", "ours": "20 repeats", "why": "stability"}]}


def _recipe(**over):
    from HER2RadiomicsLib.modelling.study import load_recipe
    r = load_recipe("peritumoral2025")
    r["scenarios"] = {"intra": ["tumor"]}
    r["evaluation"] = {**r["evaluation"], "external_site": None, "repeats": 0,
                       "bootstrap": N_BOOT}
    r.update(over)
    return r


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One run with provenance, the synthetic marker, an ICC table and protocol keys."""
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    from HER2RadiomicsLib.reports.study import render_study
    d = _tables(tmp_path_factory.mktemp("items"))
    icc = pd.DataFrame({"feature": [f"tumor__f{j}" for j in range(N_FEAT)],
                        "ICC2": [0.91, 0.88, 0.86, 0.83, 0.8, 0.79, 0.4, 0.3, 0.2, 0.1, 0.5,
                                 0.6]})
    icc.to_csv(d / "icc.csv", index=False)
    sr = run(_recipe(**PROTOCOL), d / "features.csv", d / "cohort.csv", d / "out",
             StudyOptions(progress=False, icc=d / "icc.csv"))
    render_study(sr)
    out = d / "out"
    return {"dir": d, "out": out, "sr": sr, "icc": dict(zip(icc.feature, icc.ICC2)),
            "metrics": json.loads((out / "metrics.json").read_text()),
            "html": (out / "report.html").read_text()}


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A run without provenance, synthetic marker, ICC table or protocol keys."""
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    from HER2RadiomicsLib.reports.study import render_study
    d = _tables(tmp_path_factory.mktemp("bare"), with_prov=False, with_truth=False)
    r = _recipe()
    for k in PROTOCOL:
        r.pop(k, None)
    sr = run(r, d / "features.csv", d / "cohort.csv", d / "out",
             StudyOptions(progress=False, make_bundle=False))
    render_study(sr)
    return {"metrics": json.loads((d / "out" / "metrics.json").read_text()),
            "html": (d / "out" / "report.html").read_text(), "dir": d}


def _section(html, heading):
    i = html.index(f"<h2>{heading}</h2>")
    j = html.find("<h2>", i + 1)
    return html[i:j if j > 0 else None]


def test_bootstrap_count_actually_used_per_interval(full):
    m = full["metrics"]
    assert m["bootstrap"]["n_boot"] == N_BOOT
    prim = m["models"][m["primary"]]
    assert prim["test"]["auc_boot_n"] == N_BOOT and prim["test"]["f1_boot_n"] == N_BOOT
    assert m["nomogram"]["test"]["auc_boot_n"] == N_BOOT
    models = _section(full["html"], "Models")
    assert f"bootstrap: {N_BOOT} stratified resamples" in models
    op = _section(full["html"], "Operating point (primary model)")
    assert f"bootstrap: {N_BOOT} stratified" in op
    assert "2,000" not in full["html"] and "2000 " not in models


def test_degenerate_intervals_carry_a_plain_caveat():
    """A perfectly separated set of 8 (AUC 1, 4 events) and a calibration slope that is off
    the scale or not estimable each get a sentence; a sound set gets none."""
    from HER2RadiomicsLib.modelling.evaluation import ci_caveats, evaluate_binary
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    d = evaluate_binary(y, np.linspace(0.1, 0.9, 8), 0.5, n_boot=N_BOOT, seed=0)
    text = " ".join(d["caveats"])
    assert "AUC 1.000" in text and "only 4 cases of the smallest class" in text
    assert "calibration slope" in text
    assert any("slope 12.00 is outside" in c for c in ci_caveats(
        {"n": 200, "n_pos": 100, "auc": 0.8, "calibration_slope": 12.0}))
    assert any("not estimable" in c for c in ci_caveats(
        {"n": 200, "n_pos": 100, "auc": 0.8, "calibration_slope": math.nan}))
    assert ci_caveats({"n": 200, "n_pos": 100, "auc": 0.8, "auc_boot_ci_low": 0.7,
                       "auc_boot_ci_high": 0.9, "calibration_slope": 1.1}) == []
    # shown next to the number in the report
    from HER2RadiomicsLib.reports.study import model_table, threshold_table
    s = {"positive": 1, "primary": "m", "models": {"m": {"n_selected": 3, "test": {
        **d, "unit": "patients"}, "train_oof": d}}}
    row = model_table(s).iloc[0]
    assert "Caution" in row["caveat"] and "AUC 1.000" in row["caveat"]
    assert "Caution" in threshold_table({"test": d}).iloc[0]["caveat"]


def test_params_actually_used_come_from_the_provenance(full, bare):
    """The settings shown are those of yin2024.yaml (the provenance's params), not the
    recipe's default: binWidth 5, 1 x 1 mm BSpline resampling, normalizeScale 100,
    voxelArrayShift 300 (read off the YAML by hand)."""
    m = full["metrics"]
    pu, es = m["params_used"], m["extraction_settings"]
    assert pu["params"] == "yin2024" and pu["recipe_params"] == "default"
    assert pu["matches_recipe"] is False and "not the recipe's 'default'" in pu["note"]
    assert any("yin2024" in n and "default" in n for n in m["notes"])
    assert es["params"] == "yin2024" and es["bin_width"] == 5
    assert es["resampled_pixel_spacing_mm"] == [1, 1] and es["interpolator"] == "sitkBSpline"
    assert es["normalize"] is True and es["normalize_scale"] == 100
    assert es["voxel_array_shift"] == 300
    assert set(es["image_types"]) >= {"Original", "LoG", "Wavelet", "LBP2D"}
    assert es["engine"] == {"name": "native", "version": "9.9"}
    sec = _section(full["html"], "Extraction settings")
    for text in ("voxelArrayShift 300", "normalizeScale 100", "bin width 5", "sitkBSpline",
                 "HER2RadiomicsLib", "native 9.9", "pyradiomics", "IBSI"):
        assert text in sec, text
    assert "not the recipe&#x27;s &#x27;default&#x27;" in sec
    # without a provenance file the recipe's params are named, and said to be unrecorded
    pb = bare["metrics"]["params_used"]
    assert pb["params"] == "default" and pb["matches_recipe"] is None
    assert bare["metrics"]["extraction_settings"]["bin_width"] == 5       # default.yaml
    assert bare["metrics"]["extraction_settings"]["normalize"] is False


def test_counts_are_printed_as_integers(full):
    sr, html = full["sr"], full["html"]
    summ = _section(html, "Summary")
    ytr = sr.data.y_unit("train")
    for c in np.unique(ytr):
        assert f"<td>{int((ytr == c).sum())}</td>" in summ
    assert not re.search(r"<td>\d+\.0+</td>", summ)
    models = _section(html, "Models")
    k = full["metrics"]["models"][full["metrics"]["primary"]]["n_selected"]
    assert re.search(rf"<td>{k}</td>", models) and not re.search(rf"<td>{k}\.0+</td>", models)
    assert not re.search(r"<td>\d+\.0+</td>", _section(html, "Sample size (events per "
                                                              "predictor)"))


def test_icc_table_of_the_selected_features(full, bare):
    m = full["metrics"]
    t = m["stable_features_icc"]
    sel = m["selected_features"]["features"]
    assert [r["feature"] for r in t["features"]] == sel and sel
    for r in t["features"]:
        assert r["icc"] == full["icc"][r["feature"]] and r["icc"] >= 0.75
    assert t["threshold"] == 0.75
    sec = _section(full["html"], "Stable features (ICC)")
    for f in sel:
        assert f in sec
    assert "stable_features_icc" not in bare["metrics"]
    assert "<h2>Stable features (ICC)</h2>" not in bare["html"]


def test_clinical_only_comparator_matches_an_independent_fit(full):
    """The clinical-only model: a plain maximum-likelihood logistic regression on the
    nomogram's clinical predictors, fitted on the training patients, scored on the test
    patients (statsmodels and sklearn called here, not through the library)."""
    import statsmodels.api as sm
    from sklearn.metrics import roc_auc_score
    m, d = full["metrics"], full["dir"]
    co = m["nomogram"]["clinical_only"]
    preds = co["predictors"]
    assert preds and "rad_score" not in preds
    lab = pd.read_csv(d / "cohort.csv")
    split = pd.read_csv(full["out"] / "predictions.csv").set_index("id")["split"]
    lab["split"] = lab["patient_id"].map(split)
    lab["y"] = (lab["her2"] == "low").astype(int)
    tr, te = lab[lab.split == "train_oof"], lab[lab.split == "test"]
    fit = sm.Logit(tr["y"], sm.add_constant(tr[preds].astype(float))).fit(disp=0)
    p = fit.predict(sm.add_constant(te[preds].astype(float)))
    assert co["test"]["auc"] == pytest.approx(roc_auc_score(te["y"], p), abs=1e-9)
    assert co["test"]["auc_boot_n"] == N_BOOT
    sec = _section(full["html"], "Clinical-radiomic nomogram (logistic regression)")
    assert "clinical-only model" in sec and "radiomics model" in sec
    assert f"{co['test']['auc']:.3f}" in sec


def test_events_per_candidate_predictor_warning(full):
    """90 patients, 30 % to test: the smaller training class has the events; 12 candidate
    features: fewer than 10 events per candidate, so a warning with the numbers."""
    m, sr = full["metrics"], full["sr"]
    _, counts = np.unique(sr.data.y_unit("train"), return_counts=True)
    events = int(counts.min())
    e = m["sample_size"]["models"][m["primary"]]
    assert m["sample_size"]["events"] == events and e["candidates"] == N_FEAT
    assert e["epv"] == pytest.approx(events / N_FEAT, abs=0.01)
    assert f"{events} events for {N_FEAT} candidate predictors" in e["warning"]
    nomo = m["sample_size"]["nomogram"]
    assert nomo["candidates"] == 1 + 6            # Rad-score + the six clinical factors
    sec = _section(full["html"], "Sample size (events per predictor)")
    assert f"{events} events for {N_FEAT} candidate predictors" in sec


def test_model_card_in_report_metrics_and_bundle(full, bare):
    from HER2RadiomicsLib.modelling.bundle import read_meta
    from HER2RadiomicsLib.reports.case import model_card_html
    card = full["metrics"]["model_card"]
    assert card["synthetic_data"] is True and "SYNTHETIC" in card["synthetic_statement"]
    td = card["training_data"]
    assert td["modality"] == "mammography" and td["n"]["all"] == 90
    assert td["sites"] == ["A", "B"] and td["n_images"]["all"] == 90
    assert card["external_validation"] == "not done"
    assert set(card["calibration"]) >= {"test"} and "slope" in card["calibration"]["test"]
    assert card["intended_use"] and card["limitations"]
    assert card["assumed_protocol"] == PROTOCOL["assumed"]
    sec = _section(full["html"], "Model card")
    assert "labels are not real" in sec and "not done" in sec and "mammography" in sec
    meta = read_meta(full["out"] / "model_bundle.zip")
    assert meta["model_card"]["synthetic_data"] is True
    case_html = model_card_html(meta)
    assert "labels are not real" in case_html and "Research only" in case_html
    assert "20 repeats" in case_html
    # no marker: not synthetic, and no statement
    assert bare["metrics"]["model_card"]["synthetic_data"] is False
    assert "labels are not real" not in bare["html"]


def test_user_declares_synthetic_labels(tmp_path):
    from HER2RadiomicsLib.modelling.study_report_items import synthetic_data
    _tables(tmp_path, with_prov=False, with_truth=False)
    assert synthetic_data(tmp_path / "cohort.csv", None)["synthetic"] is False
    assert synthetic_data(tmp_path / "cohort.csv", True)["synthetic"] is True
    (tmp_path / "truth.json").write_text(json.dumps({"signal": 1, "label_noise": 0,
                                                     "cases": {}}))
    assert synthetic_data(tmp_path / "cohort.csv", None)["synthetic"] is True
    assert synthetic_data(tmp_path / "cohort.csv", False)["synthetic"] is False


@pytest.mark.parametrize("name", ["peritumoral2025", "zhao2025", "cui2023", "yin2024"])
def test_multiple_testing_is_reported_per_recipe(name):
    """Every univariate screen of a shipped recipe is listed as uncorrected, with a reason."""
    from HER2RadiomicsLib.modelling.recipes import load_recipe
    from HER2RadiomicsLib.modelling.study_report_items import multiple_testing
    r = load_recipe(name)
    mt = multiple_testing(r)
    steps = [next(iter(s)) for s in r["pipeline"] if isinstance(s, dict)]
    want = [s for s in steps if s in ("univariate", "urf")]
    if (r.get("clinical_selection") or {}).get("univariate_p") is not None:
        want.append("clinical_selection")
    assert [s["step"] for s in mt["screens"]] == want and mt["fdr"] is False
    for s in mt["screens"]:
        assert s["correction"].startswith("none") and len(s["justification"]) > 40
        if s["step"] == "univariate" and "lasso" in steps:
            assert "LASSO" in s["justification"]


def test_multiple_testing_section_in_report(full):
    sec = _section(full["html"], "Multiple testing")
    assert "no FDR" in sec and "LASSO" in sec and "uncorrected" in sec


def test_protocol_keys_shown_everywhere(full, bare):
    m, html = full["metrics"], full["html"]
    assert m["protocol"] == {**PROTOCOL}
    sec = _section(html, "Protocol and deviations")
    assert "mammography" in sec and "CC/MLO" in sec and "Assumed protocol" in sec
    for a in PROTOCOL["assumed"]:
        assert a in sec
    assert "20 repeats" in sec and "stability" in sec
    assert m["model_card"]["deviations"] == PROTOCOL["deviations"]
    assert m["model_card"]["protocol_note"] == PROTOCOL["protocol_note"]
    b = bare["metrics"]["protocol"]
    assert b["modality"] == "ultrasound" and b["assumed"] == [] and b["deviations"] == []
    assert "Assumed protocol" not in bare["html"]


def _checklist(out, name):
    with open(out / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("which", ["full", "bare"])
def test_clear_checklist_every_item_once_and_answered(which, full, bare):
    run = {"full": full, "bare": bare}[which]
    out = run["out"] if "out" in run else run["dir"] / "out"
    rows = _checklist(out, "clear_checklist.csv")
    assert sorted(int(r["item"]) for r in rows) == list(range(1, 59))
    html = run["html"]
    for r in rows:
        for part in filter(None, (p.strip() for p in r["where"].split(";"))):
            if part.startswith("report.html: "):
                assert f"<h2>{part[len('report.html: '):]}</h2>" in html, (r["item"], part)
        if r["status"] != "reported":
            assert r["note"].strip(), r          # not done / n.a. / manuscript: say why
        else:
            assert r["where"].strip(), r
    assert run["metrics"]["checklists"]["clear"] == "clear_checklist.csv"
    assert "<h2>CLEAR checklist</h2>" in html and "<h2>TRIPOD+AI checklist</h2>" in html
    # the ICC item follows the run: reported with --icc, not done (with why) without it
    item31 = next(r for r in rows if r["item"] == "31")
    assert item31["status"] == ("reported" if which == "full" else "not done")


def test_tripod_ai_checklist(full):
    rows = _checklist(full["out"], "tripod_ai_checklist.csv")
    by = {r["topic"]: r for r in rows}
    fair = next(r for t, r in by.items() if "fairness" in t)
    assert fair["status"] == "not done" and "subgroup" in fair["note"]
    ext = next(r for t, r in by.items() if "external validation" in t)
    assert ext["status"] == "not done" and ext["note"]
    for r in rows:
        for part in filter(None, (p.strip() for p in r["where"].split(";"))):
            if part.startswith("report.html: "):
                assert f"<h2>{part[len('report.html: '):]}</h2>" in full["html"]
        if r["status"] != "reported":
            assert r["note"].strip()


def test_new_sections_escape_recipe_and_data_text(tmp_path):
    """Payloads in the protocol, model card, params, ICC and sample-size entries stay text."""
    from test_safety_reports import IMG, SCRIPT, SVG, _summary, assert_inert

    from HER2RadiomicsLib.reports.study import write_report
    s = _summary()
    s.update({
        "protocol": {"modality": SCRIPT, "protocol_note": IMG, "assumed": [SVG],
                     "deviations": [{"paper": SCRIPT, "ours": IMG, "why": SVG}]},
        "model_card": {"intended_use": SCRIPT, "limitations": IMG, "synthetic_data": True,
                       "synthetic_statement": SVG, "external_validation": SCRIPT,
                       "training_data": {"modality": IMG, "n": {"all": SCRIPT},
                                         "n_images": {"all": SVG}, "sites": [IMG],
                                         "class_counts": {SVG: {IMG: 2}}, "unit": SCRIPT},
                       "calibration": {SCRIPT: {"slope": IMG, "intercept": 1.0}},
                       "deviations": [{"paper": IMG, "ours": SVG, "why": SCRIPT}],
                       "assumed_protocol": [IMG]},
        "params_used": {"source": SCRIPT, "recipe_params": IMG, "note": SVG},
        "extraction_settings": {"software": SCRIPT, "engine": {"name": IMG, "version": SVG},
                                "params": SCRIPT, "params_hash": "0" * 64, "bin_width": SVG,
                                "image_types": {SCRIPT: {IMG: SVG}},
                                "other_settings": {IMG: SCRIPT}, "ibsi": SVG},
        "stable_features_icc": {"form": SCRIPT, "threshold": IMG,
                                "features": [{"feature": SVG, "icc": IMG}]},
        "sample_size": {"events": SCRIPT, "unit": IMG, "event_definition": SVG,
                        "min_epv": 10, "models": {IMG: {"candidates": SVG, "selected": 2,
                                                        "epv": SCRIPT, "warning": IMG}}},
        "multiple_testing": {"screens": [{"step": SCRIPT, "test": IMG, "p_threshold": SVG,
                                          "correction": SCRIPT, "justification": IMG}]},
        "bootstrap": {"n_boot": SCRIPT}})
    s["nomogram"]["clinical_only"] = {"predictors": [SCRIPT], "status": IMG}
    assert_inert(write_report(tmp_path, s, {}, {}, {"pipeline": [{SCRIPT: {IMG: SVG}}, SVG],
                                                    "classifiers": [SCRIPT]})
                 .read_text(encoding="utf-8"))


def test_train_cli_lets_the_user_declare_synthetic_labels(monkeypatch, tmp_path):
    """--synthetic-labels / --real-labels reach the run's options (None: recognise)."""
    import HER2RadiomicsLib.modelling.study as study
    from HER2RadiomicsLib.cli import build_parser
    seen = []

    def fake_run(recipe, features, labels, out, opts):
        seen.append(opts.synthetic)
        raise SystemExit(0)
    monkeypatch.setattr(study, "run", fake_run)
    base = ["train", "--recipe", "x", "--features", "f.csv", "--labels", "l.csv", "--out",
            str(tmp_path / "o")]
    for extra, want in (([], None), (["--synthetic-labels"], True), (["--real-labels"], False)):
        a = build_parser().parse_args(base + extra)
        with pytest.raises(SystemExit):
            a.func(a)
        assert seen[-1] is want


def test_external_validation_status_when_the_external_site_is_the_test_set(tmp_path):
    """yin2024's design (test_size 0): site B is the test set; the card says validated there
    (it used to say "not done", the external metrics being empty), and so do the checklists."""
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    from HER2RadiomicsLib.reports.study import render_study
    d = _tables(tmp_path / "t", with_prov=False, with_truth=False)
    r = _recipe()
    r["evaluation"] = {**r["evaluation"], "external_site": "B", "test_size": 0}
    sr = run(r, d / "features.csv", d / "cohort.csv", d / "out",
             StudyOptions(progress=False, make_bundle=False))
    s = render_study(sr)
    n_b = int((pd.read_csv(d / "cohort.csv")["site"] == "B").sum())
    assert s["n"]["test"] == n_b and s["n"]["external"] == 0
    assert s["model_card"]["external_validation"].startswith("done on site B")
    assert str(n_b) in s["model_card"]["external_validation"]
    rows = _checklist(d / "out", "tripod_ai_checklist.csv")
    assert next(r for r in rows if "external validation" in r["topic"])["status"] == "reported"
