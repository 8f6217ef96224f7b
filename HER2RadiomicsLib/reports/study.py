"""HTML report of one training run (``report.html`` beside ``metrics.json``).

:func:`render_study` draws a run's figures (:mod:`.study_plots`) and its report from the
:class:`~HER2RadiomicsLib.modelling.study.StudyRun` that ``run()`` returned; the ``train``
command and the demo call it after the run.

Recipe titles, label and class names, model and feature names, sites and notes are text from
the recipe and the data: every one is escaped (see ``reports.html``); numbers are formatted
only when they are numbers.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import html as H
from . import study_sections as SS

_n = H.text_num      # table cells are plain text: H.table escapes them


def _ci(d, key, pre="") -> str:
    if not d or key not in d or d[key] is None:
        return ""
    lo, hi = d.get(f"{pre or key}_ci_low"), d.get(f"{pre or key}_ci_high")
    return f"{_n(d[key])} ({_n(lo)}–{_n(hi)})" if lo is not None else _n(d[key])


def model_table(summary) -> pd.DataFrame:
    rows = []
    binary = summary["positive"] is not None
    for k, m in summary["models"].items():
        row = {"model": f"{k}" + (" ★" if k == summary["primary"] else ""),
               # a count: "5", never "5.000" (a model without a selector has none)
               "features": SS.count(m["n_selected"]) if m.get("n_selected") is not None
               else ""}
        for split in ("train_oof", "test", "external"):
            d = m.get(split)
            if not d:
                continue
            if binary:
                row[f"{split} AUC (DeLong 95% CI)"] = (
                    f"{_n(d['auc'])} ({_n(d['auc_delong_ci_low'])}–"
                    f"{_n(d['auc_delong_ci_high'])})")
                if split != "train_oof":
                    row[f"{split} AUC (bootstrap CI)"] = (
                        f"{_n(d['auc_boot_ci_low'])}–{_n(d['auc_boot_ci_high'])}")
            else:
                row[f"{split} macro AUC (95% CI)"] = (
                    f"{_n(d['auc_macro'])} ({_n(d['auc_macro_ci_low'])}–"
                    f"{_n(d['auc_macro_ci_high'])})")
        # one plain sentence next to the numbers when an interval says little
        cav = "  ".join(f"{split}: {SS.caveat_text(m.get(split))}" for split in
                        ("test", "external") if SS.caveat_text(m.get(split)))
        if cav:
            row["caveat"] = cav
        rows.append(row)
    return pd.DataFrame(rows)


def threshold_table(m) -> pd.DataFrame:
    rows = []
    for split in ("test", "external"):
        d = m.get(split)
        if not d or "sensitivity" not in d:
            continue
        rows.append({"set": split, f"n ({d.get('unit', 'images')})": SS.count(d["n"]),
                     **{name: _ci(d, name) for name in ("sensitivity", "specificity", "ppv",
                                                        "npv", "accuracy", "f1")},
                     "Brier": _n(d["brier"]),
                     "cal. slope": _n(d["calibration_slope"], ".2f"),
                     "cal. intercept": _n(d["calibration_intercept"], ".2f"),
                     "caveat": SS.caveat_text(d)})
    return pd.DataFrame(rows)


def _unit_text(summary) -> H.Html:
    """One sentence stating the unit of every count and metric."""
    unit = summary.get("unit", "images")
    imgs = summary.get("n_images")
    if unit == "patients":
        extra = (f" ({imgs['train']} / {imgs['test']} / {imgs['external']} images)"
                 if imgs else "")
        return H.fmt("<p><b>Unit: patients.</b> A patient's images are one observation, scored "
                     "by the mean of their image probabilities, so the intervals assume "
                     "independent patients{}.</p>", extra)
    return H.Html("<p><b>Unit: images.</b> Each image is scored as an independent observation; "
                  "with several images per patient the intervals are too narrow.</p>")


def _boot_text(summary) -> str:
    """The bootstrap resamples actually drawn (the run's, or per interval in older runs)."""
    b = (summary.get("bootstrap") or {}).get("n_boot")
    if b is None:
        prim = summary["models"].get(summary["primary"]) or {}
        b = (prim.get("test") or {}).get("auc_boot_n", (prim.get("test") or {}).get(
            "auc_macro_boot_n"))
    if b is None:
        return "bootstrap: stratified resamples (percentile; count not recorded)"
    return f"bootstrap: {SS.count(b)} stratified resamples (percentile)"


def write_report(out: Path, summary: dict, results: dict, figs: dict, recipe=None) -> Path:
    """``report.html`` (and the checklists ``clear_checklist.csv`` and
    ``tripod_ai_checklist.csv``, recorded in ``summary["checklists"]``)."""
    from ..imaging.io import atomic_write_text
    from . import checklist as C
    binary = summary["positive"] is not None
    prim = summary["models"][summary["primary"]]
    n = summary["n"]
    unit = summary.get("unit", "images")        # runs before units were recorded: images
    kp = [(f"train / test / external ({unit})",
           f"{SS.count(n['train'])} / {SS.count(n['test'])} / {SS.count(n['external'])}")]
    if binary:
        kp += [("test AUC (primary)", _n(prim["test"]["auc"]))]
        if prim.get("external"):
            kp += [("external AUC", _n(prim["external"]["auc"]))]
    else:
        kp += [("test macro AUC", _n(prim["test"]["auc_macro"]))]
    rs = summary["repeated_splits"]
    if rs.get("n"):
        kp += [(f"median AUC, {SS.count(rs['n'])} random splits", _n(rs["median"]))]
    sections = [("Summary", H.kpis(kp) + H.fmt(
        "<p>Recipe <b>{title}</b>. Task: <b>{task}</b> (label column <code>{label}</code>"
        "{positive}). External site: {site}. Thresholds are chosen on the training set's "
        "out-of-fold predictions (Youden) and applied unchanged to test and external data; "
        "every data-dependent step (imputation, ComBat, scaling, SMOTE, selection) is fitted "
        "on training data only.</p>", title=summary["title"], task=summary["task"],
        label=summary["label_col"],
        positive=f", positive = {summary['positive']}" if binary else "",
        site=summary["external_site"])
        + _unit_text(summary)
        + H.table(SS.int_frame(pd.DataFrame([{"set": k, **v} for k, v in
                                             summary["class_counts"].items() if v])))),
        ("Models", H.table(model_table(summary))
         + H.fmt("<p class='muted'>★ primary model (bundle). Every n, AUC and interval is per "
                 "<b>{}</b>. DeLong CI: normal approximation; {}.</p>", str(unit)[:-1],
                 _boot_text(summary)))]
    # the reviewer's sections (CLEAR / TRIPOD+AI / IBSI), where the run recorded them
    sections[1:1] = [x for x in (SS.protocol_section(summary), SS.card_section(summary),
                                 SS.extraction_section(summary), SS.pipeline_section(recipe))
                     if x]
    if summary["comparisons"]:
        comp = pd.DataFrame(summary["comparisons"])[["model_a", "model_b", "auc_a", "auc_b",
                                                     "z", "p"]]
        sections.append(("DeLong comparison on the test set", H.table(comp)))
    if binary:
        sections.append(("Operating point (primary model)", H.table(threshold_table(prim))
                         + H.fmt("<p class='muted'>Threshold {:.3f} (Youden on training "
                                 "out-of-fold predictions). Wilson 95% CIs; F1 by "
                                 "{}.</p>", prim["threshold"], _boot_text(summary))))
    sections += [x for x in (SS.sample_size_section(summary),
                             SS.multiple_testing_section(summary)) if x]
    order = [("roc_test", "ROC, test set (95% bootstrap bands)"),
             ("roc_external", "ROC, external site"), ("calibration", "Calibration"),
             ("decision_curve", "Decision curves (net benefit)"),
             ("confusion", "Confusion matrix at the Youden threshold"),
             ("repeated_splits", "Test AUC over repeated random 70/30 splits"),
             ("nomogram", "Nomogram")]
    figs_html = H.cat(*(H.figure(H.png_file_uri(figs[k]), cap) for k, cap in order
                        if k in figs))
    sections.append(("Figures", H.el("div", figs_html, class_="figs")))
    sel = summary.get("selected_features") or {}
    if sel.get("coef"):
        t = pd.DataFrame({"feature": sel["features"], "coefficient": sel["coef"]})
        formula = " ".join(f"{_n(c, '+.3f')}·[{f}]" for f, c in zip(sel["features"], sel["coef"]))
        sections.append(("Rad-score", H.fmt("<p><code>Rad-score = {:+.3f} {}</code> (z-scored "
                                            "features)</p>", sel["intercept"], formula)
                         + H.table(t)))
    elif sel.get("features"):
        sections.append(("Selected features", H.table(pd.DataFrame({
            "feature": sel["features"],
            "role": ["differential" if f in sel.get("differential", []) else "auxiliary"
                     for f in sel["features"]]}))))
    if SS.icc_section(summary):
        sections.append(SS.icc_section(summary))
    nom = summary.get("nomogram") or {}
    if nom.get("odds_ratios"):
        orr = pd.DataFrame(nom["odds_ratios"])
        txt = ""
        for split in ("test", "external"):
            if nom.get(split):
                txt += f"{split} AUC {_ci(nom[split], 'auc', 'auc_delong')}; "
        if nom.get("delong_vs_radiomics"):
            d = nom["delong_vs_radiomics"]
            txt += f"DeLong vs radiomics-only on the test set: p = {_n(d['p'])}"
        sections.append(("Clinical-radiomic nomogram (logistic regression)",
                         H.el("p", txt) + H.table(orr) + SS.nomogram_comparator(nom)))
    if summary["notes"]:
        sections.append(("Notes", H.el("ul", *(H.el("li", n) for n in summary["notes"]))))
    # the checklists name the sections above: built last, from the headings shown
    cl = C.write_checklists(out, summary, {h for h, _ in sections})
    summary["checklists"] = {"clear": cl["clear"], "tripod_ai": cl["tripod_ai"]}
    sections.append(SS.checklist_section(
        cl["rows"]["clear"], "CLEAR checklist",
        "CLEAR (Kocak et al. 2023), 58 items: where this report answers each, or why not "
        "(also clear_checklist.csv). 'manuscript': the authors' text; 'user': a property of "
        "the user's data that the software cannot know."))
    sections.append(SS.checklist_section(
        cl["rows"]["tripod_ai"], "TRIPOD+AI checklist",
        "TRIPOD+AI (Collins et al. 2024): the modelling and evaluation items a training run "
        "answers or leaves open (also tripod_ai_checklist.csv)."))
    page = H.page(f"HER2Radiomics model report — {summary['recipe']}", summary["title"],
                  sections, footer=f"run time {summary['seconds']} s")
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


def render_study(sr) -> dict:
    """Draw a study run's figures and ``report.html``, and record both in ``metrics.json``.

    ``sr`` is the :class:`~HER2RadiomicsLib.modelling.study.StudyRun` that
    :func:`~HER2RadiomicsLib.modelling.study.run` returned (its data outputs and bundle are
    already written); returns its summary with the ``figures`` and ``report`` paths
    (relative to the output folder, so the folder can be moved).
    """
    from ..modelling.study_outputs import write_metrics
    from .study_plots import study_figures
    out = sr.out
    figs = study_figures(sr)
    sr.summary["figures"] = {k: Path(v).relative_to(out).as_posix() for k, v in figs.items()}
    sr.summary["report"] = write_report(out, sr.summary, sr.results, figs, sr.recipe) \
        .relative_to(out).as_posix()
    write_metrics(out, sr.summary)
    return sr.summary
