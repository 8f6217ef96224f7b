"""Predict new patients with a model bundle (``her2radiomics predict``; the Slicer panel too).

The bundle's own params YAML and ring specs are used to extract exactly the features it was
trained on; missing features are an error naming them; version differences are warned about.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger(__name__)
TOP_CONTRIBUTIONS = 5
# A model input (or the Rad-score) is flagged as out of distribution when it lies outside its
# training range widened by this share of the range on each side: values just past the
# training extremes are ordinary in a new cohort, values half a range beyond them are not.
OOD_MARGIN = 0.5
# A calibrated pixel spacing this much beyond the training spacings' range is flagged.
SPACING_TOLERANCE = 0.25


@dataclass
class Prediction:
    """One patient's prediction."""

    case_id: str
    predicted_class: str
    probabilities: dict
    rad_score: float | None = None
    #: more than two classes: one one-vs-rest Rad-score (log-odds) per class
    class_rad_scores: dict | None = None
    contributions: list = field(default_factory=list)
    nomogram_probability: float | None = None
    nomogram_points: dict | None = None
    qc: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def as_row(self) -> dict:
        row = {"case_id": self.case_id, "predicted_class": self.predicted_class,
               **{f"p_{k}": v for k, v in self.probabilities.items()},
               "rad_score": self.rad_score, "nomogram_probability": self.nomogram_probability}
        for k, v in (self.class_rad_scores or {}).items():
            row[f"rad_score_{k}_vs_rest"] = v
        for i, c in enumerate(self.contributions):
            row[f"top{i + 1}"] = f"{c['feature']} ({c['contribution']:+.3f})"
        row["qc"] = "; ".join(f"{k}={v}" for k, v in self.qc.items())
        return row


def parse_clinical(values, what: str = "--clinical") -> dict:
    """Clinical values for the nomogram from ``"age=52, er=1"`` or ``["age=52", "er=1"]``.

    Shared by the ``predict``/``report`` commands, the Slicer CLI and the panel.
    """
    if isinstance(values, str):
        values = values.replace(";", ",").split(",")
    out = {}
    for part in values or []:
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"{what} {part!r}: expected name=value")
        key, value = part.split("=", 1)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"{what} {part!r}: value must be a number") from None
    return out


def extractor_for(bundle):
    """A FeatureExtractor configured with the bundle's params text (verbatim)."""
    from ..extraction.features import FeatureExtractor
    tmp = Path(tempfile.mkdtemp(prefix="h2r_bundle_")) / f"{bundle.meta['params_name']}.yaml"
    tmp.write_text(bundle.meta["params_yaml"])
    return FeatureExtractor(str(tmp))


def check_spacing_units(bundle, loaded, pixel_units: bool = False) -> list:
    """Make the image's pixel units agree with the bundle's training images.

    A bundle trained on images of unknown spacing (pixel units, 1 px = 1 mm) gives different
    features for a calibrated image, and the reverse; both are refused unless ``pixel_units``
    asks to treat the image as the training images were (1 px = 1 mm, recorded in QC).
    Returns warnings (spacing outside the training range).
    """
    ts = bundle.meta.get("training_spacing") or {}
    units = ts.get("units")
    where = loaded.path
    if units == "pixel":
        if loaded.spacing_known and not pixel_units:
            sx, sy = loaded.spacing_mm
            raise InputError(
                f"{where}: the bundle was trained on images of unknown spacing (pixel units, "
                f"1 px = 1 mm) but this image is calibrated ({sx:.4g} x {sy:.4g} mm, "
                f"{loaded.spacing_source}): its features would not match; pass --pixel-units "
                "to treat it as the training images were")
        if loaded.spacing_known:
            loaded.set_spacing((1.0, 1.0), "pixel-units (as the bundle's training images)")
        return []
    if units == "mm" and not loaded.spacing_known:
        if not pixel_units:
            raise InputError(
                f"{where}: the bundle was trained on calibrated images (mm) but this image's "
                "pixel spacing is unknown; give it with --spacing-mm X Y (or --pixel-units to "
                "force 1 px = 1 mm)")
        return ["pixel spacing unknown: treated as 1 x 1 mm (--pixel-units); the bundle was "
                "trained on calibrated images, so this prediction is unreliable"]
    out = []
    for ax, s in zip("xy", loaded.spacing_mm):
        rng = ts.get(f"spacing_{ax}_mm_range")
        if rng and loaded.spacing_known:
            lo, hi = rng
            if s < lo / (1 + SPACING_TOLERANCE) or s > hi * (1 + SPACING_TOLERANCE):
                out.append(f"pixel spacing {ax} {s:.4g} mm is outside the training images' "
                           f"{lo:.4g}-{hi:.4g} mm: features may not transfer")
    return out


def features_for_case(bundle, image, mask=None, spacing_mm=None, frame=None, label=None,
                      fx=None, loaded=None, context: dict | None = None):
    """Extract the bundle's regions and features for one image.

    Returns ``(features, qc, loaded, mask)``; when ``context`` is a dict it also receives the
    ``regions`` (a :class:`~HER2RadiomicsLib.imaging.rings.RegionSet`) for overlays.
    """
    from ..imaging.io import load_case
    from ..imaging.rings import build_regions
    if loaded is None:
        loaded, mask = load_case(image, mask, spacing_mm=spacing_mm, frame=frame, label=label)
    rings = bundle.meta.get("rings") or {}
    regs = build_regions(loaded.image, mask, rings.get("rings_mm", []),
                         annuli=rings.get("annuli", False), combined=rings.get("combined", []),
                         spacing_known=loaded.spacing_known, path=loaded.path)
    needed = {r: regs.masks[r] for r in bundle.meta["regions"]}
    fx = fx or extractor_for(bundle)
    feats, _ = fx.extract(loaded.image, needed, spacing_known=loaded.spacing_known,
                          path=loaded.path)
    qc = {"spacing_source": loaded.spacing_source,
          "spacing_mm": "x".join(f"{s:.4g}" for s in loaded.spacing_mm),
          "fov": regs.fov_source}
    for r in bundle.meta["regions"]:
        if r != "tumor":
            qc[f"{r}_clipped"] = f"{100 * regs.qc[r]['clipped_fraction']:.0f}%"
    if regs.flagged:
        qc["flagged_rings"] = ",".join(regs.flagged)
    if context is not None:
        context.update(regions=regs, loaded=loaded, mask=mask)
    return feats, qc, loaded, mask


def out_of_distribution(bundle, row: pd.Series, rad_score=None) -> list:
    """Messages for model inputs and a Rad-score far outside their training ranges."""
    ranges = bundle.meta.get("training_ranges") or {}
    far = []
    for col, (lo, hi) in (ranges.get("features") or {}).items():
        v = pd.to_numeric(pd.Series([row.get(col)]), errors="coerce").iloc[0]
        m = OOD_MARGIN * (hi - lo)
        if not np.isfinite(v):
            far.append((col, v, lo, hi))
        elif v < lo - m or v > hi + m:
            far.append((col, v, lo, hi))
    out = []
    if far:
        ex = ", ".join(f"{c} = {v:.4g} (training {lo:.4g} to {hi:.4g})" for c, v, lo, hi in far[:3])
        out.append(f"{len(far)} of {len(ranges['features'])} model input(s) far outside the "
                   f"training range: {ex}; the prediction is an extrapolation")
    rs = ranges.get("rad_score")
    if rs and rad_score is not None:
        lo, hi = rs
        m = OOD_MARGIN * (hi - lo)
        if not np.isfinite(rad_score) or rad_score < lo - m or rad_score > hi + m:
            out.append(f"Rad-score {rad_score:+.3f} is far outside the training range "
                       f"{lo:+.3f} to {hi:+.3f}: the prediction is an extrapolation")
    return out


def predict_rows(bundle, rows: pd.DataFrame, site=None, clinical: pd.DataFrame | None = None):
    """Predict from a table that already holds the bundle's feature columns.

    Parameters
    ----------
    rows : DataFrame
        ``case_id`` + feature columns (extra columns ignored).
    site : str, optional
        Site/scanner for ComBat when the rows have no site column.
    clinical : DataFrame, optional
        Clinical columns for the nomogram (same row order).
    """
    from .transformers import rad_score_contributions, rad_score_per_class
    meta = bundle.meta
    batch = meta.get("batch_col", "site")
    X = rows.copy()
    need = [c for c in meta["input_columns"] if c != batch]
    missing = [c for c in need if c not in X.columns]
    if missing:
        raise InputError(f"{len(missing)} feature(s) required by the bundle are missing, e.g. "
                         f"{missing[:5]}; extract with the bundle's params "
                         f"({meta['params_name']}) and regions {meta['regions']}")
    if batch in meta["input_columns"]:
        if site is not None:
            X[batch] = str(site)
        if batch not in X.columns or X[batch].isna().any():
            raise InputError(f"this bundle harmonises sites with ComBat; give the scanner site "
                             f"(--site, one of {meta.get('sites')})")
        unknown = sorted(set(X[batch].astype(str)) - set(meta.get("sites") or []))
        if unknown:
            raise InputError(f"site(s) {unknown} unknown to the bundle (trained on "
                             f"{meta.get('sites')}); choose the closest known scanner")
    pl = bundle.pipeline
    P = pl.predict_proba(X)
    classes = [str(c) for c in pl.classes_]
    names = meta["classes"]
    binary = meta.get("positive_class") is not None
    out = []
    try:
        contrib, icpt = rad_score_contributions(pl, X)
    except InputError:
        contrib, icpt = None, None
    try:
        per_class = rad_score_per_class(pl, X) if not binary else None
    except InputError:
        per_class = None
    for i in range(len(X)):
        if binary:
            p1 = float(P[i, classes.index("1")])
            probs = {names[0]: 1 - p1, names[1]: p1}
            thr = meta.get("threshold")
            thr = 0.5 if thr is None else float(thr)   # a threshold of 0.0 stays 0.0
            cls = names[1] if p1 >= thr else names[0]
        else:
            probs = {c: float(P[i, classes.index(c)]) for c in names}
            cls = max(probs, key=probs.get)
        pr = Prediction(str(X["case_id"].iloc[i]) if "case_id" in X else str(i), cls, probs,
                        warnings=list(bundle.warnings))
        if per_class is not None:
            pr.class_rad_scores = {c: float(per_class.iloc[i][c]) for c in per_class.columns}
        if contrib is not None:
            c = contrib.iloc[i]
            pr.rad_score = float(c.sum() + icpt)
            top = c.reindex(c.abs().sort_values(ascending=False).index)[:TOP_CONTRIBUTIONS]
            pr.contributions = [{"feature": k, "contribution": float(v)} for k, v in top.items()]
        ood = out_of_distribution(bundle, X.iloc[i], pr.rad_score)
        if ood:
            pr.warnings += ood
            pr.qc["out_of_distribution"] = "yes"
        if bundle.nomogram is not None and clinical is not None and pr.rad_score is not None:
            need_c = list(bundle.nomogram.predictors[1:])
            have = clinical.iloc[i] if i < len(clinical) else pd.Series(dtype=float)
            vals = {k: have.get(k) for k in need_c}
            if all(v is not None and v == v for v in vals.values()):
                Z = pd.DataFrame([{"rad_score": pr.rad_score, **vals}])
                pr.nomogram_probability = float(bundle.nomogram.predict_proba(Z)[0, 1])
                pr.nomogram_points = {k: float(v) for k, v in
                                      bundle.nomogram.points(Z).iloc[0].items()}
        out.append(pr)
    return out


def predict_case(bundle, image, mask, spacing_mm=None, site=None, clinical: dict | None = None,
                 case_id=None, frame=None, label=None, context: dict | None = None,
                 loaded=None, pixel_units: bool = False):
    """Extract the bundle's features for one image + mask and predict.

    ``context``, when a dict, receives the loaded image, mask and regions (see
    :func:`features_for_case`). ``loaded`` (a :class:`~HER2RadiomicsLib.imaging.io.LoadedImage`) with a
    SimpleITK ``mask`` skips reading files (the Slicer module passes in-memory volumes).
    """
    from ..imaging.io import load_case
    if loaded is None:
        loaded, mask = load_case(image, mask, spacing_mm=spacing_mm, frame=frame, label=label)
    spacing_warnings = check_spacing_units(bundle, loaded, pixel_units)
    feats, qc, loaded, mask = features_for_case(bundle, image, mask, loaded=loaded,
                                                context=context)
    row = pd.DataFrame([{"case_id": case_id or Path(str(image or loaded.path)).name.split(".")[0],
                         **feats}])
    clin = pd.DataFrame([clinical]) if clinical else None
    pr = predict_rows(bundle, row, site=site, clinical=clin)[0]
    pr.qc.update(qc)
    pr.warnings += spacing_warnings
    if bundle.meta.get("engine"):
        from ..extraction.features import engine_info
        used, trained = engine_info(), bundle.meta["engine"]
        pr.qc["engine"] = f"{used['name']} {used['version']}"
        if (used["name"], used["version"]) != (trained.get("name"), trained.get("version")):
            pr.qc["engine"] += f" (bundle trained with {trained.get('name')} " \
                               f"{trained.get('version')})"
    if bundle.meta.get("aggregate"):
        pr.warnings.append("the bundle was trained on per-patient mean features; one image is "
                           "used here")
    return pr
