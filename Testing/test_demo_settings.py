"""The demo shortens its models stage without touching the recipes: their evaluation defaults
(what `her2radiomics train` runs) are the published ones, and every setting the demo runs
differently is listed, with the recipe's value beside it."""
from types import SimpleNamespace

import yaml

from HER2RadiomicsLib import demo
from HER2RadiomicsLib.modelling.recipes import RECIPES_DIR

#: the recipes' evaluation defaults as shipped (read from the YAML files themselves below)
SHIPPED = {"yin2024": {"repeats": 20, "bootstrap": 2000, "test_size": 0, "external_site": "C",
                       "seed": 42},
           "peritumoral2025": {"repeats": 10, "bootstrap": 2000, "test_size": 0.3,
                               "external_site": None, "seed": 42}}


def test_recipe_defaults_for_real_runs_are_unchanged():
    for name, want in SHIPPED.items():
        doc = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
        assert {k: doc["evaluation"][k] for k in want} == want, name
    assert set(demo.DEMO_RECIPES) == set(SHIPPED)


def test_the_demo_lists_what_it_reduces():
    rows = demo.reductions(3)
    by = {r["setting"]: r for r in rows}
    rep = by["repeated random splits (peritumoral2025)"]
    assert (rep["demo"], rep["real runs"]) == ("3", "10")
    params = by["feature params"]
    assert params["demo"].startswith("cui2023") and "yin2024: yin2024" in params["real runs"]
    assert "peritumoral2025: default" in params["real runs"]
    assert "peritumoral2025: none" in by["external site held out"]["real runs"]
    # the demo's default really is a reduction, and --repeats overrides it
    assert demo.DEFAULT_REPEATS < SHIPPED["peritumoral2025"]["repeats"]
    assert demo._demo_settings(SimpleNamespace(n=None, repeats=None)) == (
        120, demo.DEFAULT_REPEATS)
    assert demo._demo_settings(SimpleNamespace(n=60, repeats=10)) == (60, 10)


def test_the_prediction_cache_follows_the_bundle():
    """The unseen patient's card is reused only while the bundle that made it is: another
    --repeats retrains the models and so predicts again."""
    a, b = demo._stage_keys(120, 42, 3), demo._stage_keys(120, 42, 4)
    assert a["prediction"] != b["prediction"] and a["new_patient"] == b["new_patient"]
    assert demo._stage_keys(120, 43, 3)["prediction"] != a["prediction"]
