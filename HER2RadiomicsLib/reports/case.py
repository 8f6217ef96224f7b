"""Per-patient prediction report (``her2radiomics report``; the Slicer panel's Report button).

One self-contained HTML page (or a PDF of it) with: the image and the lesion/ring overlay, the
predicted class with per-class probabilities and the model's calibration on its test set, the
Rad-score and its top feature contributions, nomogram points when clinical values are given, QC
flags (spacing source, ring clipping, version warnings) and the model card.

Usage
-----
>>> from HER2RadiomicsLib import load_bundle, predict_case, write_case_report  # doctest: +SKIP
>>> bundle = load_bundle("model_bundle.zip")                                  # doctest: +SKIP
>>> result = predict_case(bundle, "us.dcm", "mask.nrrd", site="A",
...                       clinical={"age": 52})                               # doctest: +SKIP
>>> write_case_report(bundle, result, "case.pdf")                             # doctest: +SKIP
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import html as H
from ..errors import InputError

log = logging.getLogger(__name__)

# Distinct, colour-blind-friendly contour colours (Okabe-Ito), tumour first.
REGION_COLOURS = ["#FF3B1F", "#F0E442", "#56B4E9", "#00C08B", "#CC79A7", "#E69F00", "#0072B2"]
# Field of view shown around the lesion, beyond its outermost ring (mm; px when spacing unknown).
VIEW_MARGIN_MM = 6.0


def region_colour(i: int) -> str:
    return REGION_COLOURS[i % len(REGION_COLOURS)]


def overlay_figure(image, masks: dict, title: str = "", spacing_known: bool = True,
                   margin_mm: float = VIEW_MARGIN_MM, ax=None):
    """Image cropped around the lesion with each region's outline (matplotlib Figure).

    Parameters
    ----------
    image : SimpleITK.Image
        2D grey image; its spacing (mm) sets the physical aspect and the scale bar.
    masks : dict
        Region name -> 2D binary SimpleITK image on the image grid, tumour first.
    spacing_known : bool
        When False the scale bar is in pixels.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.lines import Line2D
    arr = sitk.GetArrayFromImage(image).astype(float)
    sx, sy = image.GetSpacing()
    union = np.zeros(arr.shape, bool)
    mk = {}
    for name, m in masks.items():
        mk[name] = sitk.GetArrayFromImage(m) > 0
        union |= mk[name]
    if not union.any():
        raise InputError("overlay: every region is empty")
    ys, xs = np.nonzero(union)
    py, px = int(np.ceil(margin_mm / sy)), int(np.ceil(margin_mm / sx))
    y0, y1 = max(ys.min() - py, 0), min(ys.max() + py + 1, arr.shape[0])
    x0, x1 = max(xs.min() - px, 0), min(xs.max() + px + 1, arr.shape[1])
    crop = arr[y0:y1, x0:x1]
    lo, hi = np.percentile(crop, [1, 99.5])
    own = ax is None
    if own:
        h_mm, w_mm = (y1 - y0) * sy, (x1 - x0) * sx
        fig, ax = plt.subplots(figsize=(5.0, min(7.0, max(2.5, 5.0 * h_mm / max(w_mm, 1e-6)))))
    else:
        fig = ax.figure
    ext = (0, (x1 - x0) * sx, (y1 - y0) * sy, 0)
    ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=ext,
              interpolation="nearest")
    yy = (np.arange(y1 - y0) + 0.5) * sy
    xx = (np.arange(x1 - x0) + 0.5) * sx
    handles = []
    for i, (name, m) in enumerate(mk.items()):
        sub = m[y0:y1, x0:x1]
        if not sub.any():
            continue
        ax.contour(xx, yy, sub.astype(float), levels=[0.5], colors=[region_colour(i)],
                   linewidths=1.6 if i == 0 else 1.1)
        handles.append(Line2D([], [], color=region_colour(i), lw=2, label=name))
    # scale bar: 10 mm (or 50 px) in the lower left corner
    bar = 10.0 if spacing_known else 50.0 * sx
    if bar < ext[1] * 0.6:
        bx, by = ext[1] * 0.05, ext[2] * 0.93
        ax.plot([bx, bx + bar], [by, by], color="white", lw=3, solid_capstyle="butt")
        ax.text(bx + bar / 2, by - ext[2] * 0.03, "10 mm" if spacing_known else "50 px",
                color="white", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.75)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _prob_bars(probs: dict, predicted: str, threshold=None, positive=None) -> H.Html:
    rows = []
    for k, v in probs.items():
        bold = "font-weight:600" if k == predicted else None
        colour = "#16324f" if k == predicted else "#9fb3c8"
        tick = H.Html("")
        if H.is_number(threshold) and k == positive:
            tick = H.fmt("<div title='decision threshold' style='position:absolute;top:-3px;"
                         "left:{:.1f}%;width:2px;height:20px;background:#e0a100'></div>",
                         100 * threshold)
        rows.append(H.fmt(
            "<tr>{name}<td style='width:60%'>"
            "<div style='background:#eef2f6;border-radius:3px;position:relative;height:14px'>"
            "<div style='background:{colour};width:{width:.1f}%;height:14px;"
            "border-radius:3px'></div>{tick}</div></td>{value}</tr>",
            name=H.el("td", k, style=bold), colour=colour, width=100 * v, tick=tick,
            value=H.el("td", H.num(v), style=bold)))
    return H.el("table", *rows, style="width:100%")


def _contrib_table(contribs) -> H.Html:
    if not contribs:
        return H.Html("")
    m = max(abs(c["contribution"]) for c in contribs) or 1.0
    rows = []
    for c in contribs:
        v = c["contribution"]
        w = 50 * abs(v) / m
        left = 50 if v >= 0 else 50 - w
        colour = "#c0392b" if v >= 0 else "#2471a3"
        rows.append(H.fmt(
            "<tr><td><code>{feature}</code></td><td style='width:30%'>"
            "<div style='position:relative;height:12px;background:#eef2f6'>"
            "<div style='position:absolute;left:{left:.1f}%;width:{w:.1f}%;height:12px;"
            "background:{colour}'></div><div style='position:absolute;left:50%;width:1px;"
            "height:12px;background:#5a6877'></div></div></td><td>{v:+.3f}</td></tr>",
            feature=c["feature"], left=left, w=w, colour=colour, v=v))
    return (H.Html("<table style='width:100%'><tr><th>feature (z-scored)</th>"
                   "<th>contribution</th><th>log-odds</th></tr>") + H.cat(*rows)
            + H.Html("</table>"))


def task_text(meta: dict) -> str:
    """Plain words for what a bundle predicts, e.g. ``her2: low vs zero``."""
    cls = meta.get("classes") or []
    if meta.get("positive_class") is not None and len(cls) == 2:
        return f"{meta.get('label_col', 'label')}: {cls[1]} vs {cls[0]}"
    return f"{meta.get('label_col', 'label')}: " + " / ".join(map(str, cls))


def model_card_html(meta: dict) -> H.Html:
    """The bundle's model card: what it was trained on, how well it did, what it needs."""
    m = meta.get("metrics") or {}
    rows = [("recipe", meta.get("recipe")), ("task", task_text(meta)),
            ("classes", ", ".join(map(str, meta.get("classes", []))))]
    tr = meta.get("training") or {}
    if tr.get("n"):
        n = tr["n"]
        rows.append((f"{tr.get('unit', 'images')} train / test / external",
                     f"{n.get('train')} / {n.get('test')} / {n.get('external')}"))
    if tr.get("primary"):
        rows.append(("classifier", tr["primary"]))
    for split in ("test", "external"):
        d = m.get(split) or {}
        # H.fmt, not an f-string: a metric that is text in a tampered bundle is shown escaped
        if "auc" in d:
            rows.append((f"{split} AUC (95% CI)", H.fmt(
                "{:.3f} ({:.2f}–{:.2f}), n = {} {}", d["auc"], d.get("auc_delong_ci_low"),
                d.get("auc_delong_ci_high"), d.get("n"), d.get("unit", "images"))))
        elif "auc_macro" in d:
            rows.append((f"{split} macro AUC", H.fmt("{:.3f}, n = {} {}", d["auc_macro"],
                                                     d.get("n"), d.get("unit", "images"))))
    if meta.get("threshold") is not None:
        rows.append(("decision threshold", H.fmt("{:.3f} (Youden, training out-of-fold)",
                                                 meta["threshold"])))
    rows += [("regions", ", ".join(map(str, meta.get("regions") or []))),
             ("feature params", f"{meta.get('params_name')} (sha256 "
                                f"{str(meta.get('params_hash', ''))[:12]}…)"),
             ("input features", len(meta.get("input_columns", []))),
             ("sites (ComBat)", ", ".join(map(str, meta.get("sites") or [])) or "not harmonised"),
             ("clinical inputs", ", ".join(map(str, meta.get("clinical") or [])) or "none"),
             ("created", meta.get("created")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())),
             ("model sha256", str(meta.get("model_sha256", ""))[:16] + "…")]
    return H.kv_table(rows) + card_details_html(meta.get("model_card"))


def card_details_html(card) -> H.Html:
    """The model card's statements (intended use, limitations, training data, calibration,
    external validation, synthetic data, protocol) from a bundle or a training run; every
    value is text from metadata and is escaped. Bundles written before cards: nothing."""
    if not isinstance(card, dict):
        return H.Html("")
    out = H.Html("")
    if card.get("synthetic_data"):
        out += H.el("p", H.el("b", str(card.get("synthetic_statement") or
                                       "The training data are synthetic: labels not real.")),
                    class_="synthetic")
    rows = [("intended use", card.get("intended_use")), ("limitations", card.get("limitations"))]
    td = card.get("training_data")
    if isinstance(td, dict):
        n, ni = td.get("n") or {}, td.get("n_images") or {}
        cc = td.get("class_counts") or {}
        rows += [("modality", td.get("modality")),
                 ("training data", f"{n.get('all')} {td.get('unit', '')} "
                                   f"({ni.get('all')} images); sites: "
                                   f"{', '.join(map(str, td.get('sites') or [])) or 'unrecorded'}"),
                 ("class counts", "; ".join(f"{k}: " + ", ".join(f"{c} {v}" for c, v in
                                                                  (d or {}).items())
                                            for k, d in cc.items() if d))]
    cal = card.get("calibration")
    if isinstance(cal, dict):
        rows.append(("calibration", H.Html("; ").join(H.fmt("{}: slope {:.2f}, intercept {:.2f}", k,
                                                    (v or {}).get("slope"),
                                                    (v or {}).get("intercept"))
                                              for k, v in cal.items())))
    elif cal:
        rows.append(("calibration", cal))
    rows += [("external validation", card.get("external_validation")),
             ("synthetic training data", "yes" if card.get("synthetic_data") else "no"),
             ("protocol note", card.get("protocol_note"))]
    if card.get("assumed_protocol"):
        rows.append(("assumed protocol", "; ".join(map(str, card["assumed_protocol"]))))
    for d in card.get("deviations") or []:
        if isinstance(d, dict):
            rows.append(("deviation", f"paper: {d.get('paper')} → ours: {d.get('ours')} "
                                      f"({d.get('why')})"))
    return out + H.kv_table([(k, v) for k, v in rows if v not in (None, "", [])])


def prediction_card_html(pred, meta: dict, overlay_uri: str | None = None,
                         true_label=None) -> H.Html:
    """The inner HTML of one patient's prediction card (shared by the demo report).

    Every value from the prediction or the bundle's metadata is escaped (see ``reports.html``).
    """
    left = H.Html("")
    if overlay_uri:
        left = H.figure(overlay_uri, "lesion mask and the peritumoral regions the model uses")
    test = (meta.get("metrics") or {}).get("test") or {}
    cal = H.Html("")
    if "brier" in test:
        cal = H.fmt("<p class='muted'>Calibration of this model on its test set (n = {} {}): "
                    "Brier {:.3f}, slope {:.2f}, intercept {:+.2f}; sensitivity {:.2f} and "
                    "specificity {:.2f} at the threshold.</p>",
                    test.get("n"), test.get("unit", "images"), test["brier"],
                    test.get("calibration_slope"), test.get("calibration_intercept"),
                    test.get("sensitivity"), test.get("specificity"))
    pos = meta.get("positive_class")
    positive_name = (meta.get("classes") or [None, None])[1] if pos is not None else None
    # kpis escapes every label and value
    head = H.kpis([("predicted", pred.predicted_class),
                   (f"P({pred.predicted_class})", H.num(pred.probabilities[pred.predicted_class],
                                                        ".2f"))]
                  + ([("Rad-score", H.num(pred.rad_score, "+.2f"))]
                     if pred.rad_score is not None else [])
                  + [(f"Rad-score {k} vs rest", H.num(v, "+.2f"))
                     for k, v in (getattr(pred, "class_rad_scores", None) or {}).items()]
                  + ([("nomogram P", H.num(pred.nomogram_probability, ".2f"))]
                     if pred.nomogram_probability is not None else [])
                  + ([("reference label", true_label)] if true_label is not None else []))
    body = (H.fmt("<p>Model task: <b>{}</b>. Case <code>{}</code>.</p>", task_text(meta),
                  pred.case_id)
            + head + H.Html("<h3>Probabilities</h3>")
            + _prob_bars(pred.probabilities, pred.predicted_class, meta.get("threshold"),
                         positive_name)
            + (H.fmt("<p class='muted'>Orange tick: decision threshold {:.3f} for {}.</p>",
                     meta["threshold"], positive_name)
               if meta.get("threshold") is not None else H.Html(""))
            + cal)
    if pred.contributions:
        body += (H.Html("<h3>Top Rad-score contributions</h3>")
                 + _contrib_table(pred.contributions)
                 + H.fmt("<p class='muted'>Red pushes towards {}, blue away from it.</p>",
                         positive_name or "the positive class"))
    if pred.nomogram_points:
        import pandas as pd
        pts = pd.DataFrame([{"predictor": k, "points": v} for k, v in pred.nomogram_points.items()])
        body += H.Html("<h3>Nomogram points</h3>") + H.table(pts, "{:.1f}")
    flags = [H.el("li", w) for w in pred.warnings]
    if pred.qc.get("spacing_source") in ("unknown", "header"):
        flags.append(H.fmt("<li>pixel spacing from {}: check it (the rings are in mm)</li>",
                           pred.qc["spacing_source"]))
    # rings.build_regions flags a ring that loses more than half its area to clipping
    for r in filter(None, str(pred.qc.get("flagged_rings", "")).split(",")):
        flags.append(H.fmt("<li>{} loses {} of its area at the image edge / field of view</li>",
                           r, pred.qc.get(r + "_clipped", "?")))
    left += (H.Html("<h3>Quality control</h3>") + H.kv_table(pred.qc.items())
             + (H.el("ul", *flags, class_="flags") if flags else
                H.Html("<p class='muted'>No QC flags.</p>")))
    # machine-readable copy of what the card shows (lets tools and tests check the report)
    data = H.json_block({k: getattr(pred, k) for k in (
        "case_id", "predicted_class", "probabilities", "rad_score", "nomogram_probability")},
        "prediction")
    return data + H.fmt("<div style='display:flex;gap:24px;flex-wrap:wrap'>"
                        "<div style='flex:0 1 420px'>{}</div>"
                        "<div style='flex:1 1 420px'>{}</div></div>", left, body)


def case_report_html(pred, meta: dict, overlay_uri: str | None = None, true_label=None,
                     source: str = "") -> H.Html:
    """A complete per-patient HTML page (title, subtitle and footer are escaped as text)."""
    sections = [("Prediction", prediction_card_html(pred, meta, overlay_uri, true_label)),
                ("Model card", model_card_html(meta))]
    return H.page(f"HER2Radiomics — case {pred.case_id}",
                  f"{task_text(meta)} · model {meta.get('recipe')}", sections, footer=source)


def write_case_report(bundle, result, out, *, true_label=None, mask_source: str = "reader",
                      mask_flags=()):
    """Draw one patient's prediction into a report at ``out`` (.html or .pdf).

    Only draws: the prediction, image and regions come in ``result`` (see
    :func:`~HER2RadiomicsLib.modelling.predict.predict_case`); nothing is extracted or
    predicted here.

    Parameters
    ----------
    bundle : ModelBundle
        The bundle that made the prediction (its regions and model card are shown).
    result : CasePrediction
        What ``predict_case`` returned; it is not modified.
    out : str or Path
        ``.html``/``.htm`` (written atomically) or ``.pdf`` (printed by Chromium).
    true_label : str, optional
        A reference label to show beside the prediction (the demo's generator label).
    mask_source : str
        How the tumour mask was made (reader, CNN auto-mask ...), shown first in the QC table.
    mask_flags : sequence of str
        Doubts about an auto-mask, listed before the prediction's own warnings.

    Returns
    -------
    (Path, Prediction)
        The written file and the prediction as shown in it (with the mask's QC entries).

    Raises
    ------
    InputError
        ``out`` is not .html, .htm or .pdf.
    """
    import copy
    from ..imaging.io import atomic_write_text
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise InputError(f"{out}: report must end in .html or .pdf")
    pred = copy.deepcopy(result.prediction)
    pred.qc = {"mask_source": mask_source, **pred.qc}
    pred.warnings = list(mask_flags) + pred.warnings      # auto-mask doubts come first
    regs = result.regions
    masks = {r: regs.masks[r] for r in bundle.meta["regions"] if r in regs.masks}
    fig = overlay_figure(result.loaded.image, masks, spacing_known=result.loaded.spacing_known)
    page = case_report_html(pred, bundle.meta, H.fig_to_data_uri(fig, dpi=130), true_label,
                            source=f"image {result.source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".pdf":
        tmp = out.with_suffix(".html.tmp.html")
        tmp.write_text(page, encoding="utf-8")
        try:
            H.html_to_pdf(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        atomic_write_text(out, page)
    return out, pred
