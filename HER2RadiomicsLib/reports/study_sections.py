"""The training report's reviewer sections (CLEAR / TRIPOD+AI / IBSI): protocol and
deviations, model card, extraction settings, pipeline, sample size, multiple testing, stable
features, the nomogram's clinical-only comparator and the checklists.

Drawn from ``metrics.json``'s summary (see :mod:`HER2RadiomicsLib.modelling.
study_report_items`); every value is text from a recipe, a params file or the data and is
escaped by :mod:`.html`'s builders. A summary written before these items simply has no such
section.
"""
from __future__ import annotations

import pandas as pd

from . import checklist as C
from . import html as H
from .case import card_details_html

_n = H.text_num


def count(v) -> str:
    """A count as an integer (``12``, never ``12.000``); text stays text."""
    if H.is_number(v) and float(v) == int(v):
        return str(int(v))
    return _n(v)


def int_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Count columns as integers (a class missing from a set is 0, not ``0.000``)."""
    d = df.copy()
    for c in d.columns:
        if pd.api.types.is_numeric_dtype(d[c]) and not pd.api.types.is_bool_dtype(d[c]):
            v = d[c].fillna(0)
            if (v == v.round()).all():
                d[c] = v.astype(int)
    return d


def caveat_text(d) -> str:
    """One evaluated set's caveats as one plain sentence (empty when none)."""
    cav = (d or {}).get("caveats") or []
    return ("Caution: " + "; ".join(map(str, cav)) + ".") if cav else ""


def protocol_section(summary):
    p = summary.get("protocol")
    if not isinstance(p, dict):
        return None
    rows = [("modality", p.get("modality", "ultrasound"))]
    if p.get("protocol_note"):
        rows.append(("protocol note", p["protocol_note"]))
    inner = H.kv_table(rows)
    if p.get("assumed"):
        inner += H.el("h3", "Assumed protocol") + H.el(
            "p", "Steps the paper does not give; our assumptions:", class_="muted") + H.el(
            "ul", *(H.el("li", a) for a in p["assumed"]))
    if p.get("deviations"):
        inner += H.el("h3", "Deviations from the paper") + H.table(pd.DataFrame(
            p["deviations"], columns=["paper", "ours", "why"]))
    else:
        inner += H.el("p", "The recipe lists no deviations from the paper.", class_="muted")
    return C.S_PROTOCOL, inner


def card_section(summary):
    card = summary.get("model_card")
    if not isinstance(card, dict):
        return None
    return C.S_CARD, card_details_html(card)


def extraction_section(summary):
    e = summary.get("extraction_settings")
    if not isinstance(e, dict):
        return None
    pu = summary.get("params_used") or {}
    eng = e.get("engine") or {}
    rows = [("software", e.get("software")),
            ("engine", f"{eng.get('name')} {eng.get('version')}" if isinstance(eng, dict)
             else eng),
            ("pyradiomics compatibility", e.get("pyradiomics_compatibility")),
            ("params (as extracted)", f"{e.get('params')} (sha256 "
                                      f"{str(e.get('params_hash') or '')[:16]}…)"),
            ("params source", pu.get("source")),
            ("recipe's params", pu.get("recipe_params"))]
    if "bin_width" in e or "bin_count" in e:
        rows += [("discretisation", f"bin width {e.get('bin_width')}" if e.get("bin_width")
                  is not None else f"bin count {e.get('bin_count')}"),
                 ("resampling (mm)", e.get("resampled_pixel_spacing_mm")),
                 ("interpolator", e.get("interpolator")),
                 ("normalisation", f"normalize {e.get('normalize')}, normalizeScale "
                                   f"{e.get('normalize_scale')}, voxelArrayShift "
                                   f"{e.get('voxel_array_shift')}"),
                 ("image filters", "; ".join(f"{k} {v}" if v else str(k) for k, v in
                                             (e.get("image_types") or {}).items())),
                 ("feature classes", ", ".join(map(str, e.get("feature_classes") or []))),
                 ("other settings", ", ".join(f"{k} {v}" for k, v in
                                              (e.get("other_settings") or {}).items()))]
    elif e.get("settings_note"):
        rows.append(("settings", e["settings_note"]))
    rows.append(("IBSI compliance", e.get("ibsi")))
    inner = H.kv_table([(k, v) for k, v in rows if v not in (None, "")])
    if pu.get("note"):
        inner = H.el("p", H.el("b", pu["note"])) + inner
    return C.S_EXTRACT, inner


def pipeline_section(recipe):
    if not isinstance(recipe, dict) or not recipe.get("pipeline"):
        return None
    steps = []
    for s in recipe["pipeline"]:
        if isinstance(s, dict):
            k, v = next(iter(s.items()))
            steps.append({"step": k, "settings": ", ".join(f"{a}={b}" for a, b in
                                                           (v or {}).items())})
        else:
            steps.append({"step": s, "settings": ""})
    steps.append({"step": "classifier", "settings": ", ".join(
        map(str, recipe.get("classifiers") or []))})
    return C.S_PIPE, H.el("p", "Every data-dependent step is fitted on the training cases "
                          "only, inside each fold of the inner cross-validation (grouped by "
                          "patient).") + H.table(pd.DataFrame(steps))


def sample_size_section(summary):
    ss = summary.get("sample_size")
    if not isinstance(ss, dict):
        return None
    rows, warn = [], []
    for k, e in list((ss.get("models") or {}).items()) + (
            [("nomogram", ss["nomogram"])] if ss.get("nomogram") else []):
        rows.append({"model": k, "events": count(ss.get("events")),
                     "candidate predictors": count(e.get("candidates")),
                     "selected": count(e.get("selected")) if e.get("selected") is not None
                     else "", "events per candidate": _n(e.get("epv"), ".2f")})
        if e.get("warning"):
            warn.append(f"{k}: {e['warning']}")
    inner = H.fmt("<p>Events: {} ({}, {}). Fewer than {} events per candidate predictor "
                  "warn of overfitting.</p>", count(ss.get("events")),
                  ss.get("event_definition"), ss.get("unit"), count(ss.get("min_epv")))
    if warn:
        inner += H.el("ul", *(H.el("li", H.el("b", w)) for w in warn), class_="flags")
    return C.S_SAMPLE, inner + H.table(pd.DataFrame(rows))


def multiple_testing_section(summary):
    mt = summary.get("multiple_testing")
    if not isinstance(mt, dict):
        return None
    scr = mt.get("screens") or []
    if not scr:
        return C.S_MULTI, H.el("p", "No univariate screening step: no multiple testing.")
    return C.S_MULTI, H.el("p", "Univariate screening is not corrected for multiple testing "
                           "(no FDR); the justification per step:") + H.table(
        pd.DataFrame(scr, columns=["step", "test", "p_threshold", "correction",
                                   "justification"]))


def icc_section(summary):
    icc = summary.get("stable_features_icc")
    if not isinstance(icc, dict):
        return None
    t = pd.DataFrame(icc.get("features") or [], columns=["feature", "icc"])
    return C.S_ICC, H.fmt("<p>Inter-reader {} of the selected features (stable-feature "
                          "threshold {}).</p>", icc.get("form"), icc.get("threshold")) + H.table(t)


def nomogram_comparator(nom) -> H.Html:
    """Test / external AUCs of the nomogram, the radiomics model and the clinical-only model
    on the same units, side by side."""
    def ci(d):
        if not isinstance(d, dict) or "auc" not in d:
            return ""
        return (f"{_n(d['auc'])} ({_n(d.get('auc_delong_ci_low'))}–"
                f"{_n(d.get('auc_delong_ci_high'))})")
    co = nom.get("clinical_only") or {}
    rs = nom.get("radiomics_same_units") or {}
    rows = []
    for name, src in (("nomogram (Rad-score + clinical)", nom), ("radiomics model", rs),
                      ("clinical-only model", co)):
        rows.append({"model": name, **{f"{s} AUC (95% CI)": ci(src.get(s))
                                       for s in ("test", "external") if nom.get(s)},
                     "caveat": caveat_text(src.get("test"))})
    inner = H.el("h3", "Comparators") + H.table(pd.DataFrame(rows))
    if co.get("status"):
        inner += H.el("p", f"Clinical-only model {co['status']}.", class_="muted")
    elif co.get("predictors"):
        inner += H.el("p", "Clinical-only model: logistic regression on "
                      + ", ".join(map(str, co["predictors"])) + " alone, fitted on the same "
                      "training units.", class_="muted")
    return inner


def checklist_section(rows, heading, note):
    t = pd.DataFrame(rows)
    return heading, H.el("p", note, class_="muted") + H.table(t, max_rows=100)
