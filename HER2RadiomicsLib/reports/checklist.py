"""The CLEAR checklist (Kocak et al., Insights Imaging 2023: CheckList for EvaluAtion of
Radiomics research, 58 items) and the TRIPOD+AI items that a training run answers, written
beside each training report (``clear_checklist.csv``, ``tripod_ai_checklist.csv``) and shown
in it.

Each row says where the item is answered (``report.html: <section>`` or a file of the run),
or why it is not: ``manuscript`` (the authors' text: title, background, discussion),
``not done`` or ``not applicable``, always with a reason. The item texts are short
paraphrases; the checklist itself is the reference.
"""
from __future__ import annotations

import pandas as pd

#: statuses of a checklist row
REPORTED, MANUSCRIPT, NOT_DONE, NOT_APPLICABLE, USER = (
    "reported", "manuscript", "not done", "not applicable", "user")

#: report sections named by the checklists (each is an <h2> of report.html when shown)
S_SUMMARY, S_PROTOCOL, S_CARD, S_EXTRACT = ("Summary", "Protocol and deviations", "Model card",
                                            "Extraction settings")
S_MODELS, S_OPERATING, S_FIGS, S_SAMPLE = ("Models", "Operating point (primary model)",
                                           "Figures", "Sample size (events per predictor)")
S_MULTI, S_ICC, S_NOMO, S_RADSCORE = ("Multiple testing", "Stable features (ICC)",
                                      "Clinical-radiomic nomogram (logistic regression)",
                                      "Rad-score")
S_SELECTED, S_DELONG, S_NOTES, S_PIPE = ("Selected features", "DeLong comparison on the test set",
                                         "Notes", "Pipeline")

_MS = "the authors' text, not something a training run can answer"


def _where(*sections) -> str:
    return "; ".join(f"report.html: {s}" for s in sections)


def _externally_validated(summary: dict) -> bool:
    """An external site was evaluated: as an extra set, or as the test set (yin2024)."""
    card = summary.get("model_card") or {}
    if str(card.get("external_validation", "")).startswith("done"):
        return True
    return bool((summary.get("models", {}).get(summary.get("primary"), {}) or {})
                .get("external"))


def clear_rows(summary: dict, shown: set) -> list:
    """The 58 CLEAR items for this run; ``shown``: the report's section headings."""
    sel_sec = S_RADSCORE if S_RADSCORE in shown else S_SELECTED
    nomo = S_NOMO in shown
    ext = _externally_validated(summary)
    icc = S_ICC in shown
    r = []

    def add(no, section, item, status, where="", note=""):
        r.append({"item": no, "section": section, "topic": item, "status": status,
                  "where": where, "note": note})
    add(1, "Title", "title names radiomics, modality and design", MANUSCRIPT, "",
        "the report's title names the recipe; " + _MS)
    add(2, "Abstract", "structured summary", MANUSCRIPT, "", _MS)
    add(3, "Keywords", "radiomics keywords", MANUSCRIPT, "", _MS)
    add(4, "Introduction", "scientific or clinical background", MANUSCRIPT, "", _MS)
    add(5, "Introduction", "rationale for a radiomic approach", MANUSCRIPT, "", _MS)
    add(6, "Introduction", "study objective", REPORTED, _where(S_SUMMARY),
        "task, label column and positive class")
    add(7, "Method: study design", "adherence to guidelines (this checklist)", REPORTED,
        "clear_checklist.csv; tripod_ai_checklist.csv")
    add(8, "Method: study design", "ethics: approval, consent, data protection", USER, "",
        "depends on the user's data; the software records none")
    add(9, "Method: study design", "sample size calculation", NOT_DONE, _where(S_SAMPLE),
        "no a-priori calculation: the run reports events per candidate predictor instead")
    add(10, "Method: study design", "study nature (retrospective / prospective)", USER, "",
        "a property of the user's cohort")
    add(11, "Method: study design", "eligibility criteria", USER, _where(S_NOTES),
        "the user's cohort; rows the run leaves out (missing labels, other classes) are in "
        "the notes")
    add(12, "Method: study design", "flowchart of the technical pipeline", REPORTED,
        _where(S_PIPE), "the pipeline's steps in order (no drawn flowchart)")
    add(13, "Method: data", "data source", REPORTED, _where(S_CARD),
        "sites and (synthetic or not) training data")
    add(14, "Method: data", "data overlap with earlier studies", USER, "",
        "unknown to the software")
    add(15, "Method: data", "data split methodology", REPORTED, _where(S_SUMMARY, S_MODELS),
        "patient-level stratified split, external site held out, repeated random splits")
    add(16, "Method: data", "imaging protocol (acquisition)", USER, _where(S_PROTOCOL),
        "the modality is stated; scanner settings are the user's")
    add(17, "Method: data", "definition of non-radiomic predictors", REPORTED if nomo else
        NOT_APPLICABLE, _where(S_NOMO) if nomo else "",
        "" if nomo else "no clinical predictors in this run")
    add(18, "Method: data", "reference standard (outcome)", REPORTED, _where(S_SUMMARY),
        "label column and classes; HER2 by IHC / ISH in the user's data")
    add(19, "Method: segmentation", "segmentation strategy", USER, "",
        "masks come with the user's data (or the auto-mask tool, recorded at extraction)")
    add(20, "Method: segmentation", "operators performing segmentation", USER, "",
        "the user's readers")
    add(21, "Method: pre-processing", "image pre-processing details", REPORTED,
        _where(S_EXTRACT), "normalisation, grey conversion")
    add(22, "Method: pre-processing", "resampling method and parameters", REPORTED,
        _where(S_EXTRACT))
    add(23, "Method: pre-processing", "discretisation method and parameters", REPORTED,
        _where(S_EXTRACT))
    add(24, "Method: pre-processing", "image types (original, filtered)", REPORTED,
        _where(S_EXTRACT))
    add(25, "Method: feature extraction", "extraction software and version, IBSI", REPORTED,
        _where(S_EXTRACT))
    add(26, "Method: feature extraction", "feature classes", REPORTED, _where(S_EXTRACT))
    add(27, "Method: feature extraction", "number of features", REPORTED,
        _where(S_SAMPLE), "candidate features per model")
    add(28, "Method: feature extraction", "default configuration for other parameters",
        REPORTED, _where(S_EXTRACT), "every setting of the params file is listed")
    add(29, "Method: data preparation", "handling of missing data", REPORTED, _where(S_PIPE),
        "median imputation fitted on training data; clinical rows with missing values are "
        "left out of the nomogram")
    add(30, "Method: data preparation", "class imbalance", REPORTED, _where(S_PIPE),
        "SMOTE inside the training folds where the recipe has it; stratified splits")
    add(31, "Method: data preparation", "segmentation reliability analysis",
        REPORTED if icc else NOT_DONE, _where(S_ICC) if icc else "",
        "" if icc else "no reader-study ICC table was given (--icc)")
    add(32, "Method: data preparation", "feature scaling", REPORTED, _where(S_PIPE))
    add(33, "Method: data preparation", "dimension reduction", REPORTED, _where(S_PIPE, S_MULTI))
    add(34, "Method: modelling", "algorithm details", REPORTED, _where(S_MODELS, S_PIPE))
    add(35, "Method: modelling", "training and tuning", REPORTED, _where(S_PIPE),
        "hyperparameters from the recipe; LASSO penalty by inner cross-validation by patient")
    add(36, "Method: modelling", "handling of confounders", REPORTED, _where(S_PIPE),
        "site effects by ComBat where the recipe has it; no other confounder adjustment")
    add(37, "Method: modelling", "model selection strategy", REPORTED, _where(S_MODELS),
        "primary model = the recipe's classifier in the scenario with the best training "
        "out-of-fold AUC")
    add(38, "Method: evaluation", "testing technique (internal, external)", REPORTED,
        _where(S_SUMMARY, S_MODELS))
    add(39, "Method: evaluation", "performance metrics and rationale", REPORTED,
        _where(S_MODELS, S_OPERATING) if S_OPERATING in shown else _where(S_MODELS))
    add(40, "Method: evaluation", "uncertainty (confidence intervals)", REPORTED,
        _where(S_MODELS), "DeLong and bootstrap intervals with the resamples used; caveats")
    add(41, "Method: evaluation", "statistical comparison of models", REPORTED
        if S_DELONG in shown or nomo else NOT_APPLICABLE,
        _where(*[s for s in (S_DELONG, S_NOMO) if s in shown]),
        "" if S_DELONG in shown or nomo else "a single model: nothing to compare")
    add(42, "Method: evaluation", "comparison with a non-radiomic approach",
        REPORTED if nomo else NOT_DONE, _where(S_NOMO) if nomo else "",
        "clinical-only model beside the nomogram" if nomo else
        "no nomogram in this run (no clinical predictors or no LASSO Rad-score)")
    add(43, "Method: evaluation", "interpretability and explainability", REPORTED,
        _where(sel_sec), "Rad-score coefficients / selected features; per-patient "
        "contributions in the case report")
    add(44, "Results", "baseline characteristics", REPORTED, _where(S_SUMMARY, S_CARD),
        "class counts per set and sites; clinical distributions not tabulated")
    add(45, "Results", "flowchart of eligibility", NOT_DONE, _where(S_SUMMARY),
        "counts per set are given; no drawn flowchart")
    add(46, "Results", "feature statistics (reproducibility, selection)", REPORTED,
        _where(*([S_ICC] if icc else []), sel_sec, S_MULTI))
    add(47, "Results", "model performance", REPORTED, _where(S_MODELS, S_FIGS))
    add(48, "Results", "comparison with non-radiomic and combined models",
        REPORTED if nomo else NOT_DONE, _where(S_NOMO) if nomo else "",
        "" if nomo else "no nomogram in this run")
    add(49, "Discussion", "overview of findings", MANUSCRIPT, "", _MS)
    add(50, "Discussion", "previous works and differences", REPORTED, _where(S_PROTOCOL),
        "the deviations from the published protocol; the rest is " + _MS)
    add(51, "Discussion", "practical implications", MANUSCRIPT, "", _MS)
    add(52, "Discussion", "strengths and limitations", REPORTED, _where(S_CARD),
        "the model card's limitations" + ("" if ext else "; no external validation"))
    add(53, "Open science", "share images and segmentations", USER, "",
        "the user's data (the synthetic cohort is regenerable from its seed)")
    add(54, "Open science", "share radiomic feature data", REPORTED,
        "features CSV and its provenance file (inputs of this run)")
    add(55, "Open science", "share pre-processing scripts or settings", REPORTED,
        _where(S_EXTRACT) + "; model_bundle.zip (params YAML)")
    add(56, "Open science", "share modelling code", REPORTED,
        "HER2RadiomicsLib (open source) with the recipe YAML in model_bundle.zip")
    add(57, "Open science", "share final model files", REPORTED
        if summary.get("bundle") else NOT_DONE, "model_bundle.zip" if summary.get("bundle")
        else "", "" if summary.get("bundle") else "the run was asked not to write a bundle")
    add(58, "Open science", "ready-to-use system", REPORTED,
        "her2radiomics predict / the 3D Slicer module (research use only)")
    return r


def tripod_rows(summary: dict, shown: set) -> list:
    """The TRIPOD+AI (Collins et al., BMJ 2024) modelling and evaluation items a training
    run answers or leaves open."""
    nomo = S_NOMO in shown
    card = summary.get("model_card") or {}
    ext = _externally_validated(summary)
    r = []

    def add(no, item, status, where="", note=""):
        r.append({"item": no, "topic": item, "status": status, "where": where, "note": note})
    add("8", "sample size: events per candidate predictor", REPORTED, _where(S_SAMPLE),
        "no a-priori calculation; EPV stated with a warning below 10")
    add("9", "missing data", REPORTED, _where(S_PIPE),
        "median imputation inside the pipeline; complete cases for the nomogram")
    add("12a", "data preparation and splitting", REPORTED, _where(S_SUMMARY, S_PIPE))
    add("12c", "model type, building and tuning", REPORTED, _where(S_PIPE, S_MODELS))
    add("12e", "performance measures and their uncertainty", REPORTED, _where(S_MODELS))
    add("12e-cal", "calibration (slope, intercept, plot)", REPORTED,
        _where(S_OPERATING, S_FIGS) if S_OPERATING in shown else _where(S_FIGS))
    add("12g", "class imbalance methods", REPORTED, _where(S_PIPE))
    add("12h", "fairness: performance across subgroups", NOT_DONE, "",
        "no subgroup analysis (age, site, scanner) is computed; do it before any use")
    add("12f", "comparison with a clinical-only model", REPORTED if nomo else NOT_DONE,
        _where(S_NOMO) if nomo else "", "" if nomo else "no nomogram in this run")
    add("13", "external validation", REPORTED if ext else NOT_DONE,
        _where(S_MODELS, S_CARD) if ext else "", str(card.get("external_validation", ""))
        if ext else "no external site was held out")
    add("20", "participants, flow and class counts", REPORTED, _where(S_SUMMARY, S_CARD))
    add("23", "model specification (coefficients, threshold)", REPORTED,
        _where(S_OPERATING if S_OPERATING in shown else S_MODELS))
    add("27", "limitations, intended use", REPORTED, _where(S_CARD))
    add("18", "open science: code and model availability", REPORTED,
        "model_bundle.zip; HER2RadiomicsLib (open source)")
    return r


def write_checklists(out, summary: dict, shown: set) -> dict:
    """``clear_checklist.csv`` and ``tripod_ai_checklist.csv`` in ``out``; returns their
    names (relative to ``out``) and the rows."""
    from ..outputs import write_csv
    clear, tripod = clear_rows(summary, shown), tripod_rows(summary, shown)
    write_csv(out / "clear_checklist.csv", pd.DataFrame(clear))
    write_csv(out / "tripod_ai_checklist.csv", pd.DataFrame(tripod))
    return {"clear": "clear_checklist.csv", "tripod_ai": "tripod_ai_checklist.csv",
            "rows": {"clear": clear, "tripod_ai": tripod}}
