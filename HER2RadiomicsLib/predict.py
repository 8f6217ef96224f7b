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

from .errors import InputError

log = logging.getLogger(__name__)
TOP_CONTRIBUTIONS = 5


@dataclass
class Prediction:
    """One patient's prediction."""

    case_id: str
    predicted_class: str
    probabilities: dict
    rad_score: float | None = None
    contributions: list = field(default_factory=list)
    nomogram_probability: float | None = None
    nomogram_points: dict | None = None
    qc: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def as_row(self) -> dict:
        row = {"case_id": self.case_id, "predicted_class": self.predicted_class,
               **{f"p_{k}": v for k, v in self.probabilities.items()},
               "rad_score": self.rad_score, "nomogram_probability": self.nomogram_probability}
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
    from .features import FeatureExtractor
    tmp = Path(tempfile.mkdtemp(prefix="h2r_bundle_")) / f"{bundle.meta['params_name']}.yaml"
    tmp.write_text(bundle.meta["params_yaml"])
    return FeatureExtractor(str(tmp))


def features_for_case(bundle, image, mask=None, spacing_mm=None, frame=None, label=None,
                      fx=None, loaded=None, context: dict | None = None):
    """Extract the bundle's regions and features for one image.

    Returns ``(features, qc, loaded, mask)``; when ``context`` is a dict it also receives the
    ``regions`` (a :class:`~HER2RadiomicsLib.rings.RegionSet`) for overlays.
    """
    from .io import load_case
    from .rings import build_regions
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
    from .modeling import rad_score_contributions
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
    for i in range(len(X)):
        if binary:
            p1 = float(P[i, classes.index("1")])
            probs = {names[0]: 1 - p1, names[1]: p1}
            thr = meta.get("threshold") or 0.5
            cls = names[1] if p1 >= thr else names[0]
        else:
            probs = {c: float(P[i, classes.index(c)]) for c in names}
            cls = max(probs, key=probs.get)
        pr = Prediction(str(X["case_id"].iloc[i]) if "case_id" in X else str(i), cls, probs,
                        warnings=list(bundle.warnings))
        if contrib is not None:
            c = contrib.iloc[i]
            pr.rad_score = float(c.sum() + icpt)
            top = c.reindex(c.abs().sort_values(ascending=False).index)[:TOP_CONTRIBUTIONS]
            pr.contributions = [{"feature": k, "contribution": float(v)} for k, v in top.items()]
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
                 loaded=None):
    """Extract the bundle's features for one image + mask and predict.

    ``context``, when a dict, receives the loaded image, mask and regions (see
    :func:`features_for_case`). ``loaded`` (a :class:`~HER2RadiomicsLib.io.LoadedImage`) with a
    SimpleITK ``mask`` skips reading files (the Slicer module passes in-memory volumes).
    """
    feats, qc, loaded, mask = features_for_case(bundle, image, mask, spacing_mm, frame, label,
                                                loaded=loaded, context=context)
    row = pd.DataFrame([{"case_id": case_id or Path(str(image or loaded.path)).name.split(".")[0],
                         **feats}])
    clin = pd.DataFrame([clinical]) if clinical else None
    pr = predict_rows(bundle, row, site=site, clinical=clin)[0]
    pr.qc.update(qc)
    if bundle.meta.get("aggregate"):
        pr.warnings.append("the bundle was trained on per-patient mean features; one image is "
                           "used here")
    return pr
