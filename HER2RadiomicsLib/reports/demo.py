"""The demo's single self-contained report (``demo-output/report.html`` and ``report.pdf``).

Built from the files the demo stages leave behind (cohort, CNN metrics, reader study, model
runs, the unseen patient's prediction), so it can be rebuilt in seconds without recomputing
anything.  Every image is embedded; the page opens offline and prints cleanly.  Every value
read from those files (site, scanner and case names, recipe names, CSV cells) is escaped (see
``reports.html``).
"""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from . import html as H
from . import study_sections as SS
from .case import card_details_html, overlay_figure, prediction_card_html, task_text

log = logging.getLogger(__name__)
_n = H.text_num      # numbers read from the stages' JSON; anything else shown as text

EXAMPLE_RINGS_MM = (3.0, 5.0, 8.0)
MODEL_FIGURES = [("roc_test", "ROC, internal test set, with 95% bootstrap band"),
                 ("roc_external", "ROC, external site (never seen in training)"),
                 ("calibration", "Calibration (test and external)"),
                 ("decision_curve", "Decision curves: net benefit vs treat-all / treat-none"),
                 ("confusion", "Confusion matrix at the Youden threshold (test set)"),
                 ("nomogram", "Clinical-radiomic nomogram")]


def _examples_figure(cohort_dir: Path, cohort: pd.DataFrame):
    """One example image per site, tumour outline and the 3/5/8 mm expansions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..imaging.io import load_case
    from ..imaging.rings import build_regions
    # one typical case per site: a mid-sized lesion whose 8 mm ring stays inside the scan
    picks = []
    for _site, g in cohort.groupby("site", sort=True):
        g = g.iloc[(g["lesion_size_mm"] - g["lesion_size_mm"].median()).abs().argsort()]
        for _, r in g.head(8).iterrows():
            loaded, mask = load_case(cohort_dir / r["image"], cohort_dir / r["mask"])
            regs = build_regions(loaded.image, mask, EXAMPLE_RINGS_MM, annuli=False,
                                 combined="all", path=str(r["image"]))
            if not regs.flagged:
                break
        picks.append((r, loaded, regs))
    fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 4.0))
    axes = np.atleast_1d(axes)
    for ax, (r, loaded, regs) in zip(axes, picks):
        masks = {"tumour": regs.masks["tumor"]}
        for d in EXAMPLE_RINGS_MM:
            masks[f"+{d:g} mm"] = regs.masks[f"tumor+peri_{d:g}mm"]
        overlay_figure(loaded.image, masks, ax=ax, spacing_known=loaded.spacing_known,
                       margin_mm=4.0,
                       title=f"site {r['site']} · HER2 {r['her2']} · {r['case_id']}")
    fig.tight_layout()
    return fig


def _segmentation_section(out: Path, cohort_dir: Path, cohort: pd.DataFrame, seg: dict | None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    path = out / "segmentation_metrics.csv"
    if seg is None or not path.exists():
        return H.Html("<p>The shipped CNN model is missing; the demo used the generator's "
                      "masks.</p>")
    df = pd.read_csv(path)
    per_site = df.groupby("site").agg(images=("dice", "size"), mean_dice=("dice", "mean"),
                                      median_dice=("dice", "median"),
                                      median_hd95_mm=("hd95_mm", "median"),
                                      misses=("dice", lambda d: int((d < 0.1).sum())))
    fig, ax = plt.subplots(figsize=(5, 3))
    for s, g in df.groupby("site"):
        ax.hist(g["dice"], bins=np.linspace(0.5, 1, 26), alpha=0.6, label=f"site {s}")
    ax.set_xlabel("Dice, CNN vs generator ground truth")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    figs = H.figure(H.fig_to_data_uri(fig), "Dice distribution per site")
    worst = df.sort_values("dice").iloc[0]
    row = cohort.set_index("case_id").loc[worst["case_id"]]
    cnn = out / "cnn_masks" / f"{worst['case_id']}.nrrd"
    if cnn.exists():
        from ..imaging.io import load_case
        loaded, truth = load_case(cohort_dir / row["image"], cohort_dir / row["mask"])
        cm = sitk.ReadImage(str(cnn))
        cm.CopyInformation(truth)
        fig = overlay_figure(loaded.image, {"ground truth": truth, "CNN": cm},
                             spacing_known=loaded.spacing_known,
                             title=f"worst case {worst['case_id']} (Dice {worst['dice']:.2f})")
        figs += H.figure(H.fig_to_data_uri(fig), "The CNN's worst image in the cohort: the "
                                                 "mask a reader would correct first")
    miss = seg["miss_rate"]
    return (H.kpis([("images", seg["n"]), ("mean Dice", _n(seg["mean_dice"])),
                    ("median Dice", _n(seg["median_dice"])),
                    ("median HD95", f"{_n(seg['median_hd95_mm'], '.2f')} mm"),
                    ("misses (Dice < 0.1)",
                     f"{_n(100 * miss, '.1f')}%" if H.is_number(miss) else miss)])
            + H.table(per_site.reset_index())
            + H.Html("<p class='muted'>The shipped U-Net was trained on BUS-BRA (real ultrasound) "
                     "and never saw the synthetic cohort. Features and models below use the "
                     "generator's masks, as a reader-drawn study would.</p>")
            + H.el("div", figs, class_="figs"))


def _reader_section(out: Path, rs: dict | None):
    if not rs:
        return H.Html("<p>No reader study.</p>")
    icc = pd.read_csv(out / "reader_study" / "icc.csv", keep_default_na=False)
    form = rs["form"]
    vals = pd.to_numeric(icc[form], errors="coerce")
    bands = icc["band"].replace("", "undefined").value_counts().reindex(
        ["excellent", "good", "moderate", "poor", "undefined"]).fillna(0).astype(int)
    agree = pd.read_csv(out / "reader_study" / "agreement_summary.csv")
    pairs = agree[agree.level == "pair"][["group", "n", "dice_mean", "dice_median",
                                          "hd95_median", "area_diff_pct_mean"]]
    plots = out / "reader_study" / "plots"
    figs = H.cat(*(H.figure(u, cap) for cap, u in (
        ("ICC by feature class and region", H.png_file_uri(plots / "icc_by_class.png")),
        ("Dice per reader pair", H.png_file_uri(plots / "dice_per_pair.png"))) if u))
    return (H.kpis([("cases", rs["n_cases"]), ("readers", rs["n_readers"]),
                    ("stable features", f"{rs['n_stable']} / {rs['n_features']}"),
                    (f"median {form}", _n(np.nanmedian(vals))),
                    ("mean reader Dice", _n(rs["mean_dice"]))])
            + H.fmt("<p>Stable = {form} {ci}&gt; {threshold} (all six Shrout–Fleiss forms with "
                    "95% CIs are in <code>reader_study/icc.csv</code>); the yin2024 recipe keeps "
                    "only stable features.</p>", form=form,
                    ci="lower 95% CI " if rs["lower_ci"] else "", threshold=rs["threshold"])
            + H.fmt("<div style='display:flex;gap:24px;flex-wrap:wrap'><div>{}</div><div>{}"
                    "</div></div>",
                    H.table(bands.rename_axis("ICC band (Koo & Li)")
                            .reset_index(name="features")),
                    H.table(pairs.rename(columns={"group": "reader pair"})))
            + H.el("div", figs, class_="figs"))


def _model_section(out: Path, name: str, s: dict):
    from .study import model_table, threshold_table
    m = s["models"][s["primary"]]
    binary = s["positive"] is not None
    from ..modelling.recipes import class_names
    kp = [("task", task_text({"classes": class_names(s["task"]), "label_col": s["label_col"],
                              "positive_class": s["positive"]})),
          (f"train / test / external ({s.get('unit', 'images')})",
           f"{s['n']['train']} / {s['n']['test']} / {s['n']['external']}"),
          ("primary model", s["primary"])]
    if binary:
        t = m["test"]
        kp.append((f"test AUC, per {str(s.get('unit', 'images'))[:-1]}",
                   f"{_n(t['auc'])} ({_n(t['auc_delong_ci_low'], '.2f')}–"
                   f"{_n(t['auc_delong_ci_high'], '.2f')})"))
        if m.get("external"):
            e = m["external"]
            kp.append((f"external AUC (site {s['external_site']})",
                       f"{_n(e['auc'])} ({_n(e['auc_delong_ci_low'], '.2f')}–"
                       f"{_n(e['auc_delong_ci_high'], '.2f')})"))
    figs = H.cat(*(H.figure(u, cap, wide=k == "nomogram") for k, cap in MODEL_FIGURES
                   if (u := H.png_file_uri(out / "models" / name / "plots" / f"{k}.png"))))
    note = (H.fmt("<p><b>Features:</b> {}.</p>", s["features_note"])
            if s.get("features_note") else H.Html(""))
    inner = (H.kpis(kp) + note
             + H.fmt("<p>{title}. Every data-dependent step is fitted on the training split "
                     "only; the threshold is the Youden point of the training out-of-fold "
                     "predictions; site {site} is held out entirely. <a href='{href}'>Full "
                     "model report</a>.</p>", title=s["title"], site=s["external_site"],
                     href=f"models/{quote(str(name))}/report.html")
             + H.table(model_table(s)))
    if binary:
        inner += H.Html("<h3>At the Youden threshold</h3>") + H.table(threshold_table(m))
    return inner + _reviewer_items(name, s) + H.el("div", figs, class_="figs")


def _reviewer_items(name: str, s: dict) -> H.Html:
    """What a CLEAR/TRIPOD reviewer asks of the model, from its metrics.json: the protocol and
    its deviations, extraction settings, events per predictor, multiple testing, the
    clinical-only comparator and the checklists (the full report has every section)."""
    out = H.Html("")
    for section in (SS.protocol_section, SS.extraction_section, SS.sample_size_section,
                    SS.multiple_testing_section):
        got = section(s)
        if got:
            heading, inner = got
            out += H.el("h3", heading) + inner
    nom = s.get("nomogram") or {}
    if nom.get("clinical_only") or nom.get("radiomics_same_units"):
        out += SS.nomogram_comparator(nom)
    if s.get("checklists"):
        base = f"models/{quote(str(name))}"
        out += H.fmt("<p>Reporting checklists, item by item (where the report answers each, "
                     "or why not): <a href='{a}'>CLEAR</a>, <a href='{b}'>TRIPOD+AI</a>.</p>",
                     a=f"{base}/clear_checklist.csv", b=f"{base}/tripod_ai_checklist.csv")
    return out


def _cohort_section(cohort: pd.DataFrame, truth: dict) -> H.Html:
    counts = pd.crosstab(cohort["site"], cohort["her2"]).reindex(
        columns=[c for c in ("zero", "low", "positive") if c in set(cohort["her2"])])
    counts.columns.name = None
    counts["images"] = counts.sum(axis=1)
    counts["patients"] = cohort.groupby("site")["patient_id"].nunique()
    counts["scanner"] = cohort.groupby("site")["scanner"].first()
    clin = cohort.groupby("her2").agg(images=("case_id", "size"), age_median=("age", "median"),
                                      er_pos_pct=("er", lambda v: 100 * v.mean()),
                                      ki67_median=("ki67", "median"),
                                      size_median_mm=("lesion_size_mm", "median"))
    clin = clin.reindex([c for c in ("zero", "low", "positive") if c in clin.index])
    sig = truth.get("signal") or {}
    effects = [("internal heterogeneity (a.u.)", "heterogeneity", "tumour"),
               ("echogenic halo (a.u., decays within ~2 mm)", "halo", "0-2 mm ring"),
               ("stroma texture (a.u.), strongest 3-5 mm", "peri_texture", "1-8 mm rings"),
               ("calcification foci (Poisson mean)", "calcifications_mean", "tumour"),
               ("P(spiculated margin)", "p_spiculated", "tumour shape"),
               ("P(posterior enhancement)", "p_enhancement", "below the tumour")]
    planted = pd.DataFrame([{"planted effect": label, "where": where,
                             **{k: v.get(key) for k, v in sig.items()}}
                            for label, key, where in effects
                            if any(key in v for v in sig.values())])
    prof = truth.get("peri_texture_profile_mm")
    prof_text = (f" The stroma texture's weight rises from {_n(prof[0], 'g')} to "
                 f"{_n(prof[1], 'g')} mm outside the boundary, is full to {_n(prof[2], 'g')} mm "
                 f"and gone at {_n(prof[3], 'g')} mm, so the intra + 5 mm scenario can beat "
                 "intratumoral features alone." if prof else "")
    noise = truth.get("label_noise", 0)
    return (H.kpis([("patients", cohort["patient_id"].nunique()), ("images", len(cohort)),
                    ("sites", cohort["site"].nunique()),
                    ("label noise", f"{_n(100 * noise, '.0f')}%" if H.is_number(noise)
                     else noise)])
            + H.fmt("<p>Synthetic breast-ultrasound cohort generated by "
                    "<code>HER2RadiomicsLib.imaging.synth</code> with the planted, documented "
                    "class means below (every case draws around them, so classes overlap).{} "
                    "It exists to exercise the pipeline; its AUCs say nothing about real "
                    "patients.</p>", prof_text)
            + (H.table(planted, "{:.2f}") if len(planted) else H.Html(""))
            + H.fmt("<div style='display:flex;gap:24px;flex-wrap:wrap'><div>{}</div><div>{}"
                    "</div></div>", H.table(counts.reset_index(), "{:.0f}"),
                    H.table(clin.reset_index(), "{:.1f}")))


def _versions() -> list:
    from importlib.metadata import PackageNotFoundError, version
    rows = [("python", platform.python_version()), ("platform", platform.platform(terse=True))]
    for pkg in ("HER2RadiomicsLib", "numpy", "pandas", "SimpleITK", "pyradiomics",
                "scikit-learn", "scipy", "torch", "skops", "matplotlib"):
        try:
            rows.append((pkg, version(pkg)))
        except PackageNotFoundError:
            if pkg == "HER2RadiomicsLib":
                from .. import __version__
                rows.append((pkg, __version__))
    return rows


def write_demo_report(out, timings: dict, seg: dict | None, rs: dict | None, runs: dict,
                      card: dict | None, settings: dict, pdf: bool = True,
                      reductions: list | None = None) -> dict:
    """Write ``report.html`` (and ``report.pdf`` when Chromium is available).

    ``reductions``: the settings the demo runs differently from the recipes' defaults
    (``demo.reductions``), listed beside the settings.

    Returns
    -------
    dict
        ``{"html": Path, "pdf": Path or None, "pdf_error": str or None}``.
    """
    from ..errors import HER2Error
    from ..imaging.io import atomic_write_text
    out = Path(out)
    cohort_dir = out / "cohort"
    cohort = pd.read_csv(cohort_dir / "cohort.csv")
    truth = json.loads((cohort_dir / "truth.json").read_text()) \
        if (cohort_dir / "truth.json").exists() else {}
    sections = []
    kp = [("images", len(cohort))]
    if seg:
        kp.append(("CNN mean Dice", _n(seg["mean_dice"])))
    if rs:
        kp.append(("stable features", f"{rs['n_stable']} / {rs['n_features']}"))
    for name, s in runs.items():
        m = s["models"][s["primary"]]
        if s["positive"] is not None:
            what = " on original-image features" if s.get("features_note") else ""
            kp.append((f"{name}{what}: test AUC per {str(s.get('unit', 'images'))[:-1]}",
                       _n(m["test"]["auc"])))
    kp.append(("compute time, stages 1-6", f"{_n(sum(timings['computed'].values()), '.0f')} s"))
    nav = H.el("nav", *(H.el("a", t, href=f"#{a}") for a, t in (
        ("cohort", "Cohort"), ("examples", "Examples"), ("seg", "Segmentation"),
        ("readers", "Reader study"), *[(f"m-{n}", n) for n in runs], ("card", "Prediction card"),
        ("settings", "Versions & settings"))))
    sections.append(("Summary", H.kpis(kp) + nav))
    sections.append(("Cohort", _cohort_section(cohort, truth)))
    sections.append(("Example images: tumour and 3 / 5 / 8 mm peritumoral expansions",
                     H.figure(H.fig_to_data_uri(_examples_figure(cohort_dir, cohort), dpi=120),
                              "Ground-truth tumour outline (red) and the expansions by 3, 5 and "
                              "8 mm measured in physical millimetres, clipped to the scan's "
                              "field of view; scale bar 10 mm")))
    sections.append(("Segmentation quality (shipped CNN)",
                     _segmentation_section(out, cohort_dir, cohort, seg)))
    sections.append(("Reader study: inter-observer reproducibility", _reader_section(out, rs)))
    for name, s in runs.items():
        what = " on original-image features" if s.get("features_note") else ""
        sections.append((f"Model {name}{what}", _model_section(out, name, s)))
    if card:
        from types import SimpleNamespace
        from ..modelling.bundle import read_meta
        # the metadata only (checked): loading the model itself cost ~1 s of every rerun
        meta = read_meta(out / "models" / card["bundle_recipe"] / "model_bundle.zip")
        pred = SimpleNamespace(**{k: card[k] for k in (
            "case_id", "predicted_class", "probabilities", "rad_score", "contributions",
            "nomogram_probability", "nomogram_points", "qc", "warnings")})
        uri = H.png_file_uri(out / "new_patient" / "overlay.png")
        sections.append(("Prediction card: an unseen patient",
                         H.Html("<p>A new synthetic patient, never part of the cohort, taken "
                                "through what the Slicer panel does: CNN auto-mask → rings → "
                                "features → model bundle. <code>her2radiomics report</code> "
                                "writes the same card for any image.</p>")
                         + prediction_card_html(pred, meta, uri, card["true_label"])
                         # the bundle's model card: intended use, training data, synthetic
                         + (H.el("h3", "Model card") + card_details_html(meta["model_card"])
                            if meta.get("model_card") else H.Html(""))))
    st = [(k, v) for k, v in settings.items()]
    t = pd.DataFrame([{"stage": k, "computed (s)": v, "this run (s)": timings["this_run"][k],
                       "": "cached" if k in timings["cached"] else ""}
                      for k, v in timings["computed"].items()])
    red = H.Html("")
    if reductions:
        red = (H.el("h3", "Reduced or changed for the demo")
               + H.fmt("<p>The demo's time budget; <code>her2radiomics train</code> uses each "
                       "recipe's own settings (right column) on real cohorts.</p>")
               + H.table(pd.DataFrame(reductions)))
    sections.append(("Versions and settings",
                     H.fmt("<div style='display:flex;gap:28px;flex-wrap:wrap'><div><h3>Software"
                           "</h3>{}</div><div><h3>Settings</h3>{}</div><div><h3>Stage times"
                           "</h3>{}</div></div>", H.kv_table(_versions()), H.kv_table(st),
                           H.table(t, "{:.1f}")) + red))
    anchors = ["", "cohort", "examples", "seg", "readers", *[f"m-{n}" for n in runs],
               *(["card"] if card else []), "settings"]
    page = H.page("HER2Radiomics demo report",
                  "the whole study on the built-in synthetic cohort, in one command", sections,
                  anchors=anchors)
    path = out / "report.html"
    atomic_write_text(path, page)
    res = {"html": path, "pdf": None, "pdf_error": None}
    if pdf:
        try:
            res["pdf"] = H.html_to_pdf(path, out / "report.pdf")
        except HER2Error as exc:
            res["pdf_error"] = str(exc)
            log.warning("%s", exc)
    return res
