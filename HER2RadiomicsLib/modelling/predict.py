"""Predict new patients with a model bundle (``her2radiomics predict``; the Slicer panel too).

The bundle's own params YAML and ring specs are used to extract exactly the features it was
trained on; missing features are an error naming them; version differences are warned about.

Clinical values for a bundle's nomogram are checked before use: a name the nomogram does not
take, a value that is not a number or lies outside its plausible range
(:mod:`.clinical`), or a non-0/1 value for a predictor the nomogram learnt as 0/1, is
refused in one line naming the value and what is accepted; a missing one leaves the nomogram
out with a warning and a QC note, never silently.
"""
from __future__ import annotations

import logging
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, ModelError
from ..extraction.features import FeatureExtractor, engine_info
from ..imaging.io import LoadedImage, load_case
from ..imaging.rings import build_regions
from .clinical import _missing, clinical_inputs
from .transformers import rad_score_contributions, rad_score_per_class

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


def params_file_name(name) -> str:
    """A safe file name for a bundle's params: the last part of ``params_name`` (a preset name
    or the training params file's path) without folders or odd characters, so that neither a
    training path (``/home/x/my.yaml``) nor a crafted one (``../../x``) leaves the folder."""
    stem = re.split(r"[\\/]", str(name))[-1]
    if stem.lower().endswith((".yaml", ".yml")):
        stem = stem.rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".")[:64]
    return f"{stem or 'params'}.yaml"


@contextmanager
def bundle_params_file(bundle):
    """The bundle's params text (verbatim) as a file, for as long as the ``with`` block runs.

    The feature engine and its batch workers read params from a path, and the file's stem
    names the params in the provenance; the private folder holding it is removed when the
    block ends (also on an error or Ctrl-C), so no run leaves a temporary folder behind.

    >>> with bundle_params_file(bundle) as path:                     # doctest: +SKIP
    ...     run_batch(rows, out_csv, ExtractConfig(params=str(path)))
    """
    with tempfile.TemporaryDirectory(prefix="h2r_bundle_") as folder:
        path = Path(folder) / params_file_name(bundle.meta.get("params_name", "params"))
        path.write_text(bundle.meta["params_yaml"])
        yield path


def extractor_for(bundle):
    """A FeatureExtractor configured with the bundle's params text (verbatim); its errors
    name the bundle (the params file is a temporary copy the user never sees, removed once
    the extractor has read it: the extractor keeps the parsed params)."""
    if not isinstance(bundle.meta.get("params_yaml"), str) or \
            not bundle.meta["params_yaml"].strip():
        raise ModelError(f"{bundle.path}: bundle.json params_yaml is empty: this bundle "
                         "cannot extract features (predict from a feature table instead)")
    with bundle_params_file(bundle) as path:
        return FeatureExtractor(str(path), label=f"{bundle.path}: bundle.json params_yaml")


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


@dataclass(frozen=True)
class ReadOptions:
    """How one case's image and mask files are read and calibrated (the ``predict`` and
    ``report`` commands' options; ignored for an image passed already loaded).

    Attributes
    ----------
    spacing_mm : (float, float), optional
        Pixel spacing in mm (column, row); overrides DICOM, header and sidecar.
    frame : int, optional
        Frame of a multi-frame image (from 0).
    label : int, optional
        The mask's label value (default: any non-zero pixel).
    pixel_units : bool
        Treat the image as 1 px = 1 mm, as a bundle trained on uncalibrated images was.
    """

    spacing_mm: tuple | None = None
    frame: int | None = None
    label: int | None = None
    pixel_units: bool = False


@dataclass
class CasePrediction:
    """One case's prediction and everything it was made from, so that a report, an overlay or
    a table draws it without extracting or predicting again (in the spirit of scikit-learn's
    ``Bunch``: plain attributes, no behaviour).

    The prediction's own fields read through: ``result.predicted_class`` is
    ``result.prediction.predicted_class`` (``probabilities``, ``rad_score``, ``qc``, ...).

    Attributes
    ----------
    prediction : Prediction
        Class, probabilities, Rad-score, contributions, nomogram, QC and warnings.
    loaded : LoadedImage
        The image as read (grey, spacing in mm and its source).
    mask : SimpleITK.Image
        The tumour mask on the image grid.
    regions : RegionSet
        The bundle's regions (tumour and peritumoral rings in mm) built from ``mask``.
    features : dict
        The extracted features, ``<region>__<pyradiomics key>``.
    source : str
        The image's file name (a report names it in its footer).
    """

    prediction: Prediction
    loaded: object
    mask: object
    regions: object
    features: dict
    source: str = ""

    def __getattr__(self, name):
        # only called for names the result lacks: the prediction's fields read through
        if name == "prediction":          # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.prediction, name)


def _load(image, mask, options: ReadOptions):
    """``(LoadedImage, mask)``: ``image`` read with ``options`` unless it is loaded already
    (a :class:`~HER2RadiomicsLib.imaging.io.LoadedImage`; then ``mask`` is a SimpleITK
    image)."""
    if isinstance(image, LoadedImage):
        return image, mask
    return load_case(image, mask, spacing_mm=options.spacing_mm, frame=options.frame,
                     label=options.label)


def features_for_case(bundle, image, mask=None, *, options: ReadOptions | None = None,
                      fx=None, features=None):
    """Extract the bundle's regions and features for one image.

    Parameters
    ----------
    image : str, Path or LoadedImage
        The image file (read with ``options``), or an image loaded already (Slicer's
        in-memory volume); then ``mask`` is a SimpleITK image on its grid.
    fx : FeatureExtractor, optional
        An extractor with the bundle's params (default: made from the bundle).
    features : dict, optional
        The bundle's regions' features, extracted already for exactly these pixels and
        params (the Slicer panel keeps them with fingerprints of the pixels): nothing is
        extracted again.

    Returns
    -------
    (dict, dict, LoadedImage, SimpleITK.Image, RegionSet)
        Features, QC entries, the loaded image, the mask and the regions.
    """
    loaded, mask = _load(image, mask, options or ReadOptions())
    if not bundle.meta.get("regions"):
        raise ModelError(f"{bundle.path}: bundle.json names no regions: this bundle cannot "
                         "extract features (predict from a feature table instead)")
    rings = bundle.meta.get("rings") or {}
    regs = build_regions(loaded, mask, rings.get("rings_mm", []),
                         annuli=rings.get("annuli", False), combined=rings.get("combined", []))
    needed = {r: regs.masks[r] for r in bundle.meta["regions"]}
    if features is not None:
        feats = dict(features)
    else:
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
    return feats, qc, loaded, mask, regs


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


def listed(names, cap: int = 10) -> str:
    """``names`` for a message: the first ``cap`` and how many more (a crafted bundle can
    list 200,000 sites; a message is one readable line)."""
    names = [str(n) for n in names or []]
    shown = ", ".join(repr(n[:60]) for n in names[:cap])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > cap else shown or "none"


def _site_problems(bundle, X: pd.DataFrame, batch: str) -> dict:
    """``{row position: problem}`` for rows without a site or with one the bundle's ComBat
    does not know."""
    sites = bundle.meta.get("sites") or []
    known = set(map(str, sites))
    out = {}
    for i, v in enumerate(X[batch]):
        if _missing(v):
            out[i] = (f"{bundle.path}: this bundle harmonises sites with ComBat; give the "
                      f"scanner site (--site or a {batch} column; one of {listed(sites)})")
        elif str(v) not in known:
            out[i] = (f"{bundle.path}: site {str(v)[:60]!r} is unknown to the bundle (trained "
                      f"on {listed(sites)}); choose the closest known scanner")
    return out


def predict_rows(bundle, rows: pd.DataFrame, site=None, clinical: pd.DataFrame | None = None,
                 errors: list | None = None, source=None):
    """Predict from a table that already holds the bundle's feature columns.

    Parameters
    ----------
    rows : DataFrame
        ``case_id`` + feature columns (extra columns ignored).
    site : str, optional
        Site/scanner for ComBat, for rows without one (no site column, or an empty cell).
    clinical : DataFrame, optional
        Clinical columns for the nomogram (same row order).
    errors : list, optional
        When given, a row whose site is missing or unknown to the bundle, or whose clinical
        values are refused (see :func:`clinical_inputs`), is left out and ``{"case_id",
        "error"}`` appended here; otherwise the first such row raises.
    source : str, optional
        The file the rows come from, named when features are missing (default: the bundle,
        whose own extraction produced them).

    Raises
    ------
    InputError
        Missing features; a missing or unknown site or a refused clinical value when
        ``errors`` is None.
    """
    meta = bundle.meta
    batch = meta.get("batch_col", "site")
    X = rows.copy()
    need = [c for c in meta["input_columns"] if c != batch]
    missing = [c for c in need if c not in X.columns]
    if missing:
        by = "" if source is None else f" {bundle.path}"
        raise InputError(f"{source or bundle.path}: {len(missing)} feature(s) required by the "
                         f"bundle{by} are missing, e.g. {listed(missing, 5)}; extract with the "
                         f"bundle's params ({meta.get('params_name')}) and regions "
                         f"{listed(meta.get('regions'))}")
    bad = {}
    if batch in meta["input_columns"]:
        if site is not None:
            # an explicit site fills the rows that have none (as for a manifest's rows)
            X[batch] = X[batch].where(~X[batch].map(_missing), str(site)) \
                if batch in X.columns else str(site)
        if batch not in X.columns:     # no row has a site: one line, not one per row
            raise InputError(f"{bundle.path}: this bundle harmonises sites with ComBat; give "
                             f"the scanner site (--site or a {batch} column; one of "
                             f"{listed(meta.get('sites'))})")
        bad = _site_problems(bundle, X, batch)
        if bad and errors is None:
            raise InputError(next(iter(bad.values())))
    cases = [str(X["case_id"].iloc[i]) if "case_id" in X else str(i) for i in range(len(X))]
    for i, problem in bad.items():
        errors.append({"case_id": cases[i], "error": problem})
    keep = [i for i in range(len(X)) if i not in bad]
    if not keep:
        return []
    X = X.iloc[keep]
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
    for i, pos in enumerate(keep):
        case = cases[pos]
        try:
            have = clinical.iloc[pos] if clinical is not None and pos < len(clinical) else None
            inputs, missing = clinical_inputs(bundle, have, what=f"case {case}")
        except InputError as exc:
            if errors is None:
                raise
            errors.append({"case_id": case, "error": str(exc)})
            continue
        if binary:
            p1 = float(P[i, classes.index("1")])
            probs = {names[0]: 1 - p1, names[1]: p1}
            thr = meta.get("threshold")
            thr = 0.5 if thr is None else float(thr)   # a threshold of 0.0 stays 0.0
            cls = names[1] if p1 >= thr else names[0]
        else:
            probs = {c: float(P[i, classes.index(c)]) for c in names}
            cls = max(probs, key=probs.get)
        pr = Prediction(case, cls, probs, warnings=list(bundle.warnings))
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
        if missing:
            pr.warnings.append(f"nomogram not computed: no clinical value for "
                               f"{', '.join(missing)}")
            pr.qc["nomogram"] = f"not computed (no {', '.join(missing)})"
        elif inputs is not None and pr.rad_score is not None:
            Z = pd.DataFrame([{"rad_score": pr.rad_score, **inputs}])
            pr.nomogram_probability = float(bundle.nomogram.predict_proba(Z)[0, 1])
            pr.nomogram_points = {k: float(v) for k, v in
                                  bundle.nomogram.points(Z).iloc[0].items()}
        out.append(pr)
    return out


def predict_case(bundle, image, mask, *, site=None, clinical: dict | None = None,
                 case_id=None, options: ReadOptions | None = None,
                 features=None) -> CasePrediction:
    """Extract the bundle's features for one image + mask and predict.

    Parameters
    ----------
    image : str, Path or LoadedImage
        The image file, or an image loaded already (the Slicer module passes in-memory
        volumes); then ``mask`` is a SimpleITK image on its grid.
    mask : str, Path or SimpleITK.Image
        The tumour mask.
    site : str, optional
        Scanner site, for bundles that harmonise sites with ComBat.
    clinical : dict, optional
        Clinical values for the bundle's nomogram (see :func:`clinical_inputs`).
    case_id : str, optional
        Default: the image file's name without its extensions.
    options : ReadOptions, optional
        How the files are read (spacing, frame, label) and ``pixel_units``.
    features : dict, optional
        The bundle's regions' features, extracted already for these pixels and the bundle's
        params: the extraction is skipped.

    Returns
    -------
    CasePrediction
        The prediction with the loaded image, mask, regions and features it was made from;
        :func:`~HER2RadiomicsLib.reports.case.write_case_report` draws it as is.
    """
    options = options or ReadOptions()
    # clinical values first: a refused one costs no image reading or extraction
    clinical_inputs(bundle, clinical)
    loaded, mask = _load(image, mask, options)
    spacing_warnings = check_spacing_units(bundle, loaded, options.pixel_units)
    feats, qc, loaded, mask, regs = features_for_case(bundle, loaded, mask, features=features)
    source = Path(str(loaded.path if image is None or image is loaded else image)).name
    row = pd.DataFrame([{"case_id": case_id or source.split(".")[0], **feats}])
    clin = pd.DataFrame([clinical]) if clinical else None
    pr = predict_rows(bundle, row, site=site, clinical=clin)[0]
    pr.qc.update(qc)
    pr.warnings += spacing_warnings
    if clinical and bundle.nomogram is None:
        pr.warnings.append("the bundle has no nomogram: the clinical values given are not used")
    if bundle.meta.get("engine"):
        used, trained = engine_info(), bundle.meta["engine"]
        pr.qc["engine"] = f"{used['name']} {used['version']}"
        if (used["name"], used["version"]) != (trained.get("name"), trained.get("version")):
            pr.qc["engine"] += f" (bundle trained with {trained.get('name')} " \
                               f"{trained.get('version')})"
    if bundle.meta.get("aggregate"):
        pr.warnings.append("the bundle was trained on per-patient mean features; one image is "
                           "used here")
    return CasePrediction(pr, loaded, mask, regs, feats, source)
