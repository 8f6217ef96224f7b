"""What a CLEAR / TRIPOD+AI / IBSI reviewer asks of a training run, computed from its
:class:`~HER2RadiomicsLib.modelling.study.StudyRun` for ``metrics.json`` (the report draws it):

* the params the features were actually extracted with (from the features' provenance file,
  not the recipe's default) and the extraction settings they hold (software, engine, binning,
  resampling, interpolation, normalisation, filters, an IBSI statement);
* the stable-feature filter's ICCs of the selected features (``--icc``);
* events per candidate predictor (sample size) of every model and of the nomogram;
* whether the univariate screening corrects for multiple testing, and why not;
* the recipe's protocol statements (modality, note, assumed steps, deviations);
* a model card (intended use, limitations, training data, calibration, external validation,
  synthetic data).

Nothing here changes a fitted model or a metric.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

#: events per candidate predictor below which a model is likely overfitted (the usual rule
#: of thumb, Peduzzi et al. 1996; TRIPOD+AI asks for the sample size to be justified)
MIN_EPV = 10

#: what the native engine promises about its definitions (tested against pyradiomics 3.0.1)
PYRADIOMICS_COMPATIBILITY = ("the native engine computes pyradiomics 3.0.1's feature "
                             "definitions and agrees with it to 1e-9 on every shipped params "
                             "preset (tested); the pyradiomics engine is pyradiomics itself")
IBSI_STATEMENT = ("Feature definitions follow pyradiomics, whose documentation lists where it "
                  "departs from IBSI; among them: fixed-bin-width discretisation with bin edges "
                  "at multiples of the bin width (IBSI starts the first bin at the lowest "
                  "intensity), kurtosis reported as kurtosis rather than excess kurtosis, and "
                  "first-order entropy and uniformity computed on the discretised grey levels. "
                  "2D images give 2D (per-image) features. The engine was not separately "
                  "validated against the IBSI digital phantom.")

INTENDED_USE = ("Research only: estimating HER2 status from breast-lesion radiomic features, to "
                "study the published protocol. Not for diagnosis or treatment decisions; HER2 "
                "status is determined by immunohistochemistry / in-situ hybridisation.")
LIMITATIONS = ("Trained on the data described below only; performance on other scanners, "
               "sites, populations or segmentation styles is unknown until validated there. "
               "Probabilities are calibrated to the training prevalence. Radiomic features "
               "depend on acquisition and segmentation.")
SYNTHETIC_STATEMENT = ("The training data are SYNTHETIC (the built-in simulated cohort): the "
                       "labels are not real patients' HER2 status, and no metric here says "
                       "anything about real-world performance.")

#: the justification shown when a univariate screen runs uncorrected; a recipe may give its
#: own (``multiple_testing_note``)
SCREEN_JUSTIFICATION = ("the paper screens at uncorrected p < {p:g}, reproduced as published; "
                        "the screen is a filter, not an inference: {after}, and the model is "
                        "judged on held-out patients only")


# -- params and extraction settings --------------------------------------------------------------

def read_provenance(features_csv) -> pd.DataFrame | None:
    """The ``<stem>_provenance.csv`` that ``extract`` wrote beside the features (None: none)."""
    p = Path(features_csv).with_name(Path(features_csv).stem + "_provenance.csv")
    if not p.exists():
        return None
    try:
        return pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def params_used(recipe: dict, prov: pd.DataFrame | None) -> dict:
    """The params the features came from, as their provenance records (name and sha256),
    beside the recipe's; ``matches_recipe`` False and a ``note`` when they differ."""
    from ..extraction.features import load_params, params_hash
    name = str(recipe.get("params", "default"))
    try:
        rhash = params_hash(load_params(name)[1])
    except InputError:
        rhash = None
    out = {"recipe_params": name, "recipe_params_hash": rhash}
    if prov is None or "params_hash" not in prov:
        out.update(source="recipe (no provenance file beside the features)", params=name,
                   params_hash=rhash, matches_recipe=None,
                   note="no provenance file beside the features: the params they were "
                        f"extracted with are not recorded; the recipe names {name!r}")
        return out
    used = (prov[["params", "params_hash"]] if "params" in prov else
            prov[["params_hash"]].assign(params="unrecorded")).drop_duplicates()
    out["source"] = "features provenance"
    out["used"] = [{"params": str(a), "params_hash": str(b)}
                   for a, b in zip(used["params"], used["params_hash"])]
    out["params"] = "; ".join(str(p) for p in used["params"])
    out["params_hash"] = "; ".join(str(h) for h in used["params_hash"])
    out["matches_recipe"] = bool(len(used) == 1 and used["params_hash"].iloc[0] == rhash)
    if not out["matches_recipe"]:
        out["note"] = (f"the features were extracted with params {out['params']!r}, not the "
                       f"recipe's {name!r}: the settings below are the ones actually used")
    return out


def _settings_text(pu: dict) -> tuple:
    """``(params dict, name, hash)`` of the params actually used, or ``(None, name, hash)``
    when their file cannot be found again (a user's params file elsewhere)."""
    from ..extraction.features import load_params, params_hash
    names = [u["params"] for u in pu.get("used", [])] or [pu["recipe_params"]]
    hashes = [u["params_hash"] for u in pu.get("used", [])] or [pu["recipe_params_hash"]]
    if len(names) != 1:
        return None, "; ".join(names), "; ".join(hashes)
    for cand in (names[0], pu["recipe_params"]):
        try:
            params, text, _ = load_params(cand)
        except InputError:
            continue
        if params_hash(text) == hashes[0] or hashes[0] is None:
            return params, names[0], params_hash(text)
    return None, names[0], hashes[0]


def extraction_settings(pu: dict, prov: pd.DataFrame | None) -> dict:
    """The extraction-settings block (CLEAR 21-28, IBSI reporting): software, engine, params,
    binning, resampling, interpolation, normalisation, filters and feature classes."""
    from .. import __version__
    from .study_outputs import training_engine
    params, name, phash = _settings_text(pu)
    out = {"software": f"HER2RadiomicsLib {__version__}",
           "engine": training_engine(prov), "pyradiomics_compatibility":
           PYRADIOMICS_COMPATIBILITY, "params": name, "params_hash": phash,
           "ibsi": IBSI_STATEMENT}
    if params is None:
        out["settings_note"] = ("the params file is not a shipped preset and was not found: "
                                "its settings are in the features' provenance / bundle")
        return out
    s = dict(params.get("setting") or {})
    out.update({
        "bin_width": s.get("binWidth", None if "binCount" in s else 25),
        "bin_count": s.get("binCount"),
        "resampled_pixel_spacing_mm": s.get("resampledPixelSpacing") or "none (native grid)",
        "interpolator": s.get("interpolator", "sitkBSpline") if s.get("resampledPixelSpacing")
        else "not used (no resampling)",
        "normalize": bool(s.get("normalize", False)),
        "normalize_scale": s.get("normalizeScale", 1) if s.get("normalize") else None,
        "voxel_array_shift": s.get("voxelArrayShift", 0),
        "image_types": {str(k): v or {} for k, v in (params.get("imageType") or {}).items()},
        "feature_classes": sorted(map(str, (params.get("featureClass") or {}))),
        "other_settings": {str(k): v for k, v in s.items() if k not in (
            "binWidth", "binCount", "resampledPixelSpacing", "interpolator", "normalize",
            "normalizeScale", "voxelArrayShift")}})
    return out


# -- ICC, sample size, multiple testing ----------------------------------------------------------

def icc_of_selected(icc_values: dict | None, selected: list, recipe: dict,
                    model=None) -> dict | None:
    """The stable-feature filter's ICC of every selected feature (``--icc`` given); the
    threshold is the fitted filter's own when the model has one."""
    if icc_values is None:
        return None
    step = next((s["stable"] for s in recipe.get("pipeline", [])
                 if isinstance(s, dict) and "stable" in s), {}) or {}
    stable = model.named_steps.get("stable") if model is not None else None
    thr = getattr(stable, "threshold", step.get("threshold", 0.75))
    rows = [{"feature": f, "icc": icc_values.get(f)} for f in selected]
    return {"form": str(step.get("form", "ICC2")), "threshold": thr,
            "in_pipeline": stable is not None, "features": rows}


def _events(y) -> int:
    """Events of a (binary or multiclass) outcome: the size of its smallest class."""
    _, c = np.unique(np.asarray(y).astype(str), return_counts=True)
    return int(c.min()) if len(c) else 0


def sample_size(sr) -> dict:
    """Events per candidate predictor of every model and of the nomogram (warning < 10)."""
    y = sr.data.y_unit("train")
    events = _events(y)
    out = {"events": events, "unit": sr.data.unit, "min_epv": MIN_EPV,
           "event_definition": "training cases of the smallest class", "models": {}}

    def entry(candidates, final):
        epv = events / candidates if candidates else float("nan")
        e = {"candidates": int(candidates), "selected": None if final is None else int(final),
             "epv": round(float(epv), 2)}
        if candidates and epv < MIN_EPV:
            e["warning"] = (f"{events} events for {int(candidates)} candidate predictors: "
                            f"{epv:.2f} events per candidate predictor (< {MIN_EPV}); the "
                            "selection and its apparent performance may be overfitted")
        return e
    for k, r in sr.results.items():
        sel = r["model"].named_steps.get("select")
        # the radiomic features offered to the pipeline (not the site or id columns)
        cand = sum("__" in str(c) for c in getattr(sel, "selected_features_", []) or [])
        out["models"][k] = entry(cand, r.get("n_selected"))
    nomo = sr.nomogram_results or {}
    if nomo.get("predictors"):
        screened = list(nomo.get("clinical_univariate_p") or {})
        cand = 1 + (len(screened) or len(nomo["predictors"]) - 1)
        out["nomogram"] = entry(cand, len(nomo["predictors"]))
    return out


def multiple_testing(recipe: dict) -> dict:
    """Per univariate screening step of the recipe: does it correct for multiple testing (no:
    none does), and why that is acceptable here (the recipe's own note, or the default)."""
    steps = [s for s in recipe.get("pipeline", []) if isinstance(s, dict)]
    names = [next(iter(s)) for s in steps] + [s for s in recipe.get("pipeline", [])
                                              if isinstance(s, str)]
    out = []
    for s in steps:
        key, cfg = next(iter(s.items()))
        if key not in ("univariate", "urf"):
            continue
        p = float((cfg or {}).get("p_threshold", 0.05))
        after = ("the LASSO that follows is the multiplicity control (it keeps features "
                 "jointly, by cross-validated penalty)" if "lasso" in names else
                 "the URF's correlation and tree steps that follow choose among the screened "
                 "features")
        out.append({"step": key, "test": (cfg or {}).get("test", "mannwhitney"),
                    "p_threshold": p, "correction": "none (uncorrected p)",
                    "justification": recipe.get("multiple_testing_note")
                    or SCREEN_JUSTIFICATION.format(p=p, after=after)})
    cs = recipe.get("clinical_selection") or {}
    if cs.get("univariate_p") is not None:
        out.append({"step": "clinical_selection", "test": "univariate logistic regression",
                    "p_threshold": float(cs["univariate_p"]), "correction":
                    "none (uncorrected p)", "justification": recipe.get(
                        "multiple_testing_note") or
                    f"the paper's clinical model: candidates with p < "
                    f"{float(cs['univariate_p']):g} enter the multivariable model, as published; "
                    "a handful of candidates, and the nomogram is judged on held-out patients"})
    return {"screens": out, "fdr": False}


def protocol(recipe: dict) -> dict:
    """The recipe's protocol statements (modality, note, assumed steps, deviations)."""
    dev = []
    for d in recipe.get("deviations") or []:
        if isinstance(d, dict):
            dev.append({k: str(d.get(k, "")) for k in ("paper", "ours", "why")})
    return {"modality": str(recipe.get("modality", "ultrasound")),
            "protocol_note": str(recipe.get("protocol_note") or ""),
            "assumed": [str(a) for a in recipe.get("assumed") or []], "deviations": dev}


# -- synthetic data and the model card -----------------------------------------------------------

def synthetic_data(labels_csv, declared: bool | None) -> dict:
    """Whether the training labels are synthetic: ``declared`` (the user's word) wins;
    otherwise the built-in cohort is recognised by the ``truth.json`` it writes beside its
    ``cohort.csv`` (the generator's latent values, with its signal and label-noise model)."""
    if declared is not None:
        return {"synthetic": bool(declared), "source": "declared by the user"}
    truth = Path(str(labels_csv)).with_name("truth.json")
    try:
        doc = json.loads(truth.read_text()) if truth.exists() else {}
    except (OSError, ValueError):
        doc = {}
    if isinstance(doc, dict) and {"signal", "label_noise", "cases"} <= set(doc):
        return {"synthetic": True, "source": "built-in synthetic cohort (truth.json beside "
                                             "the labels)"}
    return {"synthetic": False, "source": "not detected (no synthetic-cohort marker)"}


def model_card(sr, summary: dict, synth: dict, prot: dict) -> dict:
    """The model card of the primary model (report, ``metrics.json`` and the bundle)."""
    prim = sr.results[sr.primary]
    site_col = sr.recipe.get("batch_col", "site")
    sites = sorted(map(str, sr.table[site_col].dropna().unique())) if site_col in sr.table \
        else []
    cal = {}
    for part in ("train_oof", "test", "external"):
        d = prim.get(part) or {}
        if "calibration_slope" in d:
            cal[part] = {"slope": d["calibration_slope"], "intercept":
                         d["calibration_intercept"], "brier": d.get("brier")}
    ext = summary.get("external_site")
    if ext and prim.get("external"):
        ext_text = f"done on site {ext} ({summary['n']['external']} {summary['unit']})"
    elif ext and site_col in sr.data.Xte and len(sr.data.Xte) and \
            sr.data.Xte[site_col].astype(str).eq(str(ext)).all():
        # yin2024's design: every development patient trains, the external site is the test set
        ext_text = (f"done on site {ext}: the test set is that site ({summary['n']['test']} "
                    f"{summary['unit']})")
    else:
        ext_text = "not done"
    card = {"intended_use": INTENDED_USE, "limitations": LIMITATIONS,
            "training_data": {"modality": prot["modality"], "unit": summary["unit"],
                              "n": summary["n"], "n_images": summary["n_images"],
                              "sites": sites, "class_counts": summary["class_counts"]},
            "calibration": cal or "not computed (several classes)",
            "external_validation": ext_text,
            "synthetic_data": synth["synthetic"], "synthetic_source": synth["source"]}
    if synth["synthetic"]:
        card["synthetic_statement"] = SYNTHETIC_STATEMENT
    if prot["protocol_note"]:
        card["protocol_note"] = prot["protocol_note"]
    if prot["assumed"]:
        card["assumed_protocol"] = prot["assumed"]
    if prot["deviations"]:
        card["deviations"] = prot["deviations"]
    return card


def report_items(sr, icc_values=None, declared_synthetic=None) -> dict:
    """Every item above, as the ``metrics.json`` keys they are written under."""
    prov = read_provenance(sr.features_csv)
    pu = params_used(sr.recipe, prov)
    if pu.get("note") and pu.get("matches_recipe") is False:
        sr.notes.append(pu["note"])
    prim = sr.results[sr.primary]
    sel = []
    for name in ("lasso", "urf", "correlation", "univariate"):
        if name in prim["model"].named_steps:
            sel = list(getattr(prim["model"].named_steps[name], "selected_features_", []))
            break
    prot = protocol(sr.recipe)
    items = {"bootstrap": {"n_boot": int(sr.design.n_boot), "method":
                           "stratified bootstrap, percentile intervals",
                           "seed": int(sr.design.seed)},
             "params_used": pu, "extraction_settings": extraction_settings(pu, prov),
             "sample_size": sample_size(sr), "multiple_testing": multiple_testing(sr.recipe),
             "protocol": prot}
    icc = icc_of_selected(icc_values, sel, sr.recipe, prim["model"])
    if icc is not None:
        items["stable_features_icc"] = icc
    items["_synthetic"] = synthetic_data(sr.labels_csv, declared_synthetic)
    return items
