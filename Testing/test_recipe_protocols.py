"""Each recipe says where it stands against its paper (issue 31, item 2).

* The provenance keys (``modality``, ``protocol_note``, ``assumed``, ``deviations``) are
  validated: a wrong type or value is refused in one line naming the recipe file.
* docs/presets.md's deviations table and the recipes' ``deviations`` are the same rows.
* zhao2025's recipes say they are a mammography protocol; its single split is the primary
  result.
* cui2023's fold change has the paper's direction (higher in HER2-positive), shown on a hand
  table where a feature higher in the negatives with p < 0.05 is dropped.
* peritumoral2025 splits its patients 7:3 at random by default (no site held out), and lists
  every assumed step; yin2024 lists its assumed extraction settings with the preset's values.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from HER2RadiomicsLib.errors import InputError
from HER2RadiomicsLib.modelling.recipes import RECIPES_DIR, list_recipes, load_recipe

ROOT = Path(__file__).resolve().parents[1]


# --- schema ----------------------------------------------------------------------------------

def _write(tmp_path, **over):
    """A copy of the shipped cui2023 recipe with some top-level keys replaced."""
    r = yaml.safe_load((RECIPES_DIR / "cui2023.yaml").read_text())
    r.update(over)
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(r, allow_unicode=True))
    return p


@pytest.mark.parametrize("key,value,says", [
    ("modality", "MRI", "modality 'MRI'"),
    ("modality", 3, "modality 3"),
    ("protocol_note", ["a", "list"], "protocol_note"),
    ("protocol_note", "two\nlines", "protocol_note"),
    ("protocol_note", "   ", "protocol_note"),
    ("assumed", "binWidth 5", "assumed"),
    ("assumed", ["binWidth 5", 5], "assumed"),
    ("assumed", [""], "assumed"),
    ("deviations", {"paper": "a", "ours": "b", "why": "c"}, "deviations must be a list"),
    ("deviations", [{"paper": "a", "ours": "b"}], "deviation 1"),
    ("deviations", [{"paper": "a", "ours": "b", "why": "c"},
                    {"paper": "a", "ours": "b", "why": "c", "when": "d"}], "deviation 2"),
    ("deviations", [{"paper": "a", "ours": None, "why": "c"}], "deviation 1"),
    ("deviations", ["paper -> ours -> why"], "deviation 1"),
])
def test_bad_provenance_keys_are_refused_in_one_line(tmp_path, key, value, says):
    p = _write(tmp_path, **{key: value})
    with pytest.raises(InputError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{p}: ") and says in msg, msg


def test_good_provenance_keys_load_and_modality_defaults_to_ultrasound(tmp_path):
    r = load_recipe(_write(tmp_path, modality="mammography", protocol_note="one line",
                           assumed=["binWidth 5"], deviations=[
                               {"paper": "a", "ours": "b", "why": "c"}]))
    assert r["modality"] == "mammography" and r["assumed"] == ["binWidth 5"]
    text = yaml.safe_load((RECIPES_DIR / "cui2023.yaml").read_text())
    for k in ("modality", "protocol_note", "assumed", "deviations"):
        text.pop(k, None)
    p = tmp_path / "bare.yaml"
    p.write_text(yaml.safe_dump(text))
    assert load_recipe(p)["modality"] == "ultrasound"


def test_fold_change_direction_setting_is_validated(tmp_path):
    r = yaml.safe_load((RECIPES_DIR / "cui2023.yaml").read_text())
    for st in r["pipeline"]:
        if isinstance(st, dict) and "urf" in st:
            st["urf"]["fold_change_direction"] = "down"
    p = tmp_path / "dir.yaml"
    p.write_text(yaml.safe_dump(r))
    with pytest.raises(InputError, match="fold_change_direction 'down' must be up or either"):
        load_recipe(p)


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_carries_the_provenance_keys(name):
    raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    r = load_recipe(name)
    assert r["modality"] in ("ultrasound", "mammography")
    assert isinstance(r.get("protocol_note"), str) and r["protocol_note"].strip()
    assert isinstance(r.get("assumed"), list)
    assert r.get("deviations"), f"{name}: no deviations listed"
    if raw.get("extends"):
        # a variant inherits its base's provenance unless it says otherwise
        base = load_recipe(raw["extends"])
        for k in ("modality", "protocol_note", "assumed", "deviations"):
            assert r[k] == raw.get(k, base[k])


# --- docs/presets.md's table == the recipes' deviations --------------------------------------

def _cells(line: str) -> list:
    """A markdown table row's cells, split on unescaped pipes, markup removed."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"`|\*\*", "", c).replace("\\|", "|").strip() for c in parts]


def _doc_rows(text: str) -> dict:
    sec = text[text.index("## Deviations from the published protocols"):]
    lines = sec.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| recipe |"))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = _cells(ln)
        assert len(cells) == 4, f"docs/presets.md: a deviations row without 4 cells: {ln}"
        rows.setdefault(cells[0], []).append(tuple(cells[1:]))
    return rows


def _table_problems(doc_text: str) -> list:
    """Differences between the docs' table and the shipped recipes' own ``deviations``."""
    rows = _doc_rows(doc_text)
    problems = [f"table names {k!r}, no shipped recipe" for k in rows
                if k not in ("all", "demo") and k not in list_recipes()]
    for name in list_recipes():
        raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
        if raw.get("extends") and "deviations" not in raw:
            continue                    # inherited: checked on its base
        ours = [(d["paper"].replace("`", ""), d["ours"].replace("`", ""),
                 d["why"].replace("`", "")) for d in raw.get("deviations") or []]
        if ours != rows.get(name, []):
            problems.append(f"{name}: recipe rows {len(ours)}, docs rows "
                            f"{len(rows.get(name, []))}, first difference: "
                            + str(next((a, b) for a, b in zip(ours + [None] * 99,
                                                                rows.get(name, []) + [None] * 99)
                                       if a != b)))
    return problems


def test_docs_deviations_table_equals_the_recipes_deviations():
    text = (ROOT / "docs" / "presets.md").read_text(encoding="utf-8")
    assert not _table_problems(text), _table_problems(text)


def test_the_table_check_fails_on_a_changed_or_missing_row():
    text = (ROOT / "docs" / "presets.md").read_text(encoding="utf-8")
    changed = text.replace("`repeats: 100`", "`repeats: 1000`", 1)
    assert changed != text and _table_problems(changed)
    dropped = "\n".join(ln for ln in text.splitlines() if not ln.startswith("| zhao2025 | one "))
    assert dropped != text and any("zhao2025" in p for p in _table_problems(dropped))


# --- zhao2025: a mammography protocol ----------------------------------------------------------

@pytest.mark.parametrize("name", ["zhao2025", "zhao2025_sln"])
def test_zhao_recipes_say_they_are_a_mammography_protocol(name):
    r = load_recipe(name)
    assert r["modality"] == "mammography"
    assert "mammography protocol" in r["title"]
    assert "mammography" in r["protocol_note"] and "ultrasound" in r["protocol_note"]
    papers = " ".join(d["paper"] for d in r["deviations"])
    assert "one random 7:3 split" in papers and "class weighting not stated" in papers
    # the single 7:3 split is the primary result: an internal test set, no site held out
    ev = r["evaluation"]
    assert ev["test_size"] == 0.3 and ev["external_site"] is None and ev["repeats"] == 20


def test_only_zhao_recipes_are_mammography():
    assert {n for n in list_recipes() if load_recipe(n)["modality"] == "mammography"} == {
        "zhao2025", "zhao2025_sln"}


# --- cui2023: fold change higher in HER2-positive ----------------------------------------------

def _hand_table():
    """10 negatives then 10 positives; every feature but 'flat' separates the classes
    completely (Mann-Whitney p = 1.8e-4). Class means (negative, positive):
    up (5.5, 15.5), up2 (11, 31), neg_up (-15.5, -5.5): higher in positives;
    down (15.5, 5.5), neg_down (-5.5, -15.5): higher in negatives; flat (3, 3)."""
    lo, hi = np.arange(1.0, 11.0), np.arange(11.0, 21.0)
    X = pd.DataFrame({
        "tumor__up": np.r_[lo, hi], "tumor__up2": 2 * np.r_[lo, hi],
        "tumor__neg_up": np.r_[-hi, -lo], "tumor__down": np.r_[hi, lo],
        "tumor__neg_down": np.r_[-lo, -hi], "tumor__flat": np.r_[lo % 5, lo % 5] + 1})
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    return X, y


def test_cui2023_fold_change_keeps_only_features_higher_in_her2_positive():
    from HER2RadiomicsLib.modelling.study import build_pipeline
    X, y = _hand_table()
    X.insert(0, "case_id", [f"c{i}" for i in range(len(y))])
    pipe = build_pipeline(load_recipe("cui2023"), ["tumor"], "logistic").fit(X, y)
    urf = pipe.named_steps["urf"]
    assert urf.selected_features_ == ["tumor__up", "tumor__up2", "tumor__neg_up"]
    assert urf.fallback_ is None


def test_fold_change_directions_on_the_hand_table():
    from HER2RadiomicsLib.modelling.transformers import UnivariateFilter, URFModule
    X, y = _hand_table()
    up = UnivariateFilter(test="mannwhitney", fold_change=1.0, fold_change_direction="up",
                          min_features=0).fit(X, y)
    assert up.selected_features_ == ["tumor__up", "tumor__up2", "tumor__neg_up"]
    # the symmetric rule passes every feature with p < 0.05 (the old behaviour)
    either = UnivariateFilter(test="mannwhitney", fold_change=1.0, min_features=0).fit(X, y)
    assert either.selected_features_ == [c for c in X.columns if c != "tumor__flat"]
    # a ratio threshold: up's means 15.5 / 5.5 = 2.82 and up2's 31 / 11 = 2.82 fail 2.9;
    # neg_up has negative means (no fold change): its direction alone decides
    assert UnivariateFilter(test="mannwhitney", fold_change=2.9, fold_change_direction="up",
                            min_features=0).fit(X, y).selected_features_ == ["tumor__neg_up"]
    # URFModule's own default is cui2023's rule
    assert URFModule().fit(X, y).differential_features_ == [
        "tumor__up", "tumor__up2", "tumor__neg_up"]


def test_direction_that_keeps_nothing_falls_back_and_says_so():
    from HER2RadiomicsLib.modelling.transformers import UnivariateFilter
    X, y = _hand_table()
    X = X[["tumor__down", "tumor__neg_down", "tumor__flat"]]
    f = UnivariateFilter(test="mannwhitney", fold_change=1.0, fold_change_direction="up",
                         min_features=2).fit(X, y)
    assert sorted(f.selected_features_) == ["tumor__down", "tumor__neg_down"]
    assert "0 feature(s) passed" in f.fallback_ and "higher in the positive class" in f.fallback_


# --- peritumoral2025: a random 7:3 split by default --------------------------------------------

def _three_site_tables(tmp_path, n=60):
    """n patients, one image each, sites A/B/C in turn, alternating low/zero, noise features."""
    rng = np.random.default_rng(0)
    ids = [f"p{i:02d}" for i in range(n)]
    feats = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"tumor__f{j}" for j in range(12)])
    feats.insert(0, "case_id", ids)
    labels = pd.DataFrame({"case_id": ids, "patient_id": ids,
                           "her2": ["low", "zero"] * (n // 2), "site": list("ABC") * (n // 3)})
    feats.to_csv(tmp_path / "features.csv", index=False)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "features.csv", tmp_path / "labels.csv"


def _quick_peritumoral():
    """The shipped recipe's evaluation design, a small pipeline (the split is under test)."""
    r = load_recipe("peritumoral2025")
    r["scenarios"], r["clinical"] = {"intra": ["tumor"]}, []
    r["pipeline"] = ["impute", "scale"]
    r["evaluation"] = {**r["evaluation"], "repeats": 0, "bootstrap": 50}
    return r


def test_peritumoral2025_splits_all_patients_7_to_3_at_random_by_default(tmp_path):
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    fc, lc = _three_site_tables(tmp_path)
    ev = load_recipe("peritumoral2025")["evaluation"]
    assert ev["test_size"] == 0.3 and ev["external_site"] is None
    sr = run(_quick_peritumoral(), fc, lc, tmp_path / "run",
             StudyOptions(progress=False, make_bundle=False))
    assert sr.external_site is None and len(sr.data.dext) == 0
    # 60 patients: 18 (30 %) tested, 42 trained, no patient on both sides
    assert len(sr.data.Xte) == 18 and len(sr.data.Xtr) == 42
    assert not set(sr.data.Xte.case_id) & set(sr.data.Xtr.case_id)
    # a random split of every site, stratified by class (9 low, 9 zero), not a site held out
    assert set(sr.data.Xte.site) == {"A", "B", "C"} == set(sr.data.Xtr.site)
    assert sorted(np.bincount(sr.data.yte)) == [9, 9]


def test_peritumoral2025_still_holds_out_a_site_when_asked(tmp_path):
    from HER2RadiomicsLib.modelling.study import StudyOptions, run
    fc, lc = _three_site_tables(tmp_path)
    sr = run(_quick_peritumoral(), fc, lc, tmp_path / "run",
             StudyOptions(progress=False, make_bundle=False, external_site="C"))
    assert sr.external_site == "C" and set(sr.data.dext.site) == {"C"} and len(sr.data.dext) == 20
    assert "C" not in set(sr.data.Xtr.site) | set(sr.data.Xte.site)


def test_peritumoral2025_lists_every_assumed_step_and_its_clinical_factors():
    r = load_recipe("peritumoral2025")
    six = ["age", "menopausal", "er", "pr", "ki67", "lesion_size_mm"]
    assert r["clinical"] == six
    assumed = " ".join(r["assumed"])
    for step in ("default params", "Mann-Whitney p < 0.05", "at least 5", "|r| > 0.8",
                 "top 10", "ComBat", "logistic", "age, menopausal status, ER, PR, Ki-67, "
                 "lesion size"):
        assert step in assumed, step
    assert r["params"] == "default"


# --- yin2024: assumed extraction settings ------------------------------------------------------

@pytest.mark.parametrize("name", ["yin2024", "yin2024_low1_vs_zero", "yin2024_low2_vs_zero",
                                  "yin2024_1_vs_2"])
def test_yin2024_lists_its_assumed_settings_with_the_presets_values(name):
    r = load_recipe(name)
    preset = yaml.safe_load((ROOT / "HER2RadiomicsLib" / "params" / "yin2024.yaml").read_text())
    setting = preset["setting"]
    assumed = " ".join(r["assumed"])
    for key in ("normalizeScale", "voxelArrayShift", "binWidth"):
        assert f"{key} {setting[key]:g}" in assumed, key
    devs = " ".join(d["paper"] + " " + d["ours"] for d in r["deviations"])
    assert "which one not stated" in devs and "C = 1" in devs
