"""Radiomics feature extraction driven by one params YAML (pyradiomics' own format).

The params file is the only customisation surface: presets named after the studies ship in
``HER2RadiomicsLib/params`` (``default``, ``cui2023``, ``yin2024``, ``zhao2025``), and any
pyradiomics params file can be given instead.

Engines: ``native`` (the default) is our own numpy engine in :mod:`.extraction`; it needs no
compiled code and installs from wheels on every Python Slicer ships. ``pyradiomics`` (3.0.1)
is the optional reference engine (``pip install HER2RadiomicsLib[pyradiomics]``); the two
agree to 1e-9 on every shipped preset (tested). Params are validated without pyradiomics
(:mod:`.extraction.params`, the same rules as pyradiomics' schema).

2D handling: images are handled as true 2D SimpleITK images.  pyradiomics'
``force2D`` is a 3D-input setting; on a 1-slice 3D image it silently drops LoG ("Image too
small"), and on a true 2D image it makes the wavelet filter run along one axis only
(``wavelet-H/L`` instead of ``LL/LH/HL/HH``).  It is therefore removed from the settings for 2D
input (recorded in the provenance); every other value equals what pyradiomics returns for the
1-slice 3D image with ``force2D`` (tested).

Feature columns are ``<region>__<pyradiomics key>``, e.g. ``tumor__original_glszm_ZoneEntropy``;
pyradiomics' ``diagnostics_*`` (reference engine only) go to a separate provenance table.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
import scipy
import SimpleITK as sitk

from .. import __version__
from ..errors import Cancelled, InputError, SpacingUnknownError
from ..imaging.io import max_pixels
from . import ENGINE_VERSION
from .native import NativeExtractor
from .params import parse_params

log = logging.getLogger(__name__)

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"     # package data, at the top
AGGREGATIONS = ("mean", "median", "first")


def list_presets() -> list:
    """Names of the params presets shipped with the library."""
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def resolve_params(name_or_path) -> Path:
    """Map a preset name or a file path to the params file path."""
    if name_or_path is None:
        name_or_path = "default"
    p = Path(str(name_or_path))
    if p.suffix.lower() in (".yaml", ".yml", ".json") and p.exists():
        return p
    preset = PARAMS_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    raise InputError(f"{name_or_path}: neither a params file nor a preset "
                     f"(presets: {', '.join(list_presets())})")


# Grey levels per region above which we refuse (GLCM: levels^2 x 4 angles x 8 bytes, so 5,000
# levels already need 0.8 GB per region); IBSI-style binning gives 16-256.
from .params import MAX_GREY_LEVELS  # noqa: E402 (kept here under its old name)


_VALIDATED = {}


def load_params(name_or_path="default", label: str | None = None) -> tuple:
    """Load and validate a pyradiomics params file.

    ``label`` names the params in error messages instead of the file's path (a model
    bundle's params are written to a temporary file: the bundle is what the user can fix).

    Returns
    -------
    (dict, str, str)
        The parsed params, the file text (kept verbatim in model bundles) and its source path.
    """
    path = resolve_params(name_or_path)
    text = path.read_text()
    if text in _VALIDATED:   # once per text: batch workers load the same file per case
        return copy.deepcopy(_VALIDATED[text]), text, str(path)
    params = parse_params(text, label or str(path))
    if len(_VALIDATED) < 64:         # a few params files per process; never grows unbounded
        _VALIDATED[text] = copy.deepcopy(params)
    return params, text, str(path)


PYRADIOMICS_MISSING = ("the pyradiomics reference engine is not installed (pip install "
                       "'HER2RadiomicsLib[pyradiomics]'; it builds from source, on Python "
                       "<= 3.11 with a C compiler); the default engine, native, needs nothing")


def _import_pyradiomics():
    try:
        import radiomics  # optional reference engine (Python <= 3.11, a C compiler)
    except ImportError:
        raise InputError(PYRADIOMICS_MISSING) from None
    return radiomics


def _quiet_pyradiomics():
    radiomics = _import_pyradiomics()
    # pyradiomics logs every filter at INFO; keep only its errors (-vv shows ours). Its handler
    # level alone is not enough: records would still propagate to the root handler.
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def params_hash(text: str) -> str:
    """sha256 of the params file text (what a model bundle pins)."""
    return hashlib.sha256(text.encode()).hexdigest()


def uses_physical_units(params: dict) -> list:
    """Which settings of ``params`` are defined in mm (and so need a known spacing)."""
    used = []
    setting = params.get("setting") or {}
    if setting.get("resampledPixelSpacing"):
        used.append("resampling (resampledPixelSpacing)")
    if "LoG" in (params.get("imageType") or {}):
        used.append("LoG sigma")
    if "shape2D" in (params.get("featureClass") or {}):
        used.append("2D shape")
    return used


def versions(engine: str = "native") -> dict:
    """Versions of everything that changes feature values with ``engine``."""
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "SimpleITK": sitk.Version_VersionString(), "scipy": scipy.__version__,
           "HER2RadiomicsLib": __version__}
    if engine == "pyradiomics":
        out["pyradiomics"] = _import_pyradiomics().__version__
    else:   # the filters of the native engine; metadata, not imports (skimage costs 0.2 s)
        out.update({"PyWavelets": version("PyWavelets"), "scikit-image": version("scikit-image")})
    return out


#: "native": our numpy engine (extraction/), the default; "pyradiomics": the optional reference,
#: equal to it on every shipped preset (Testing/test_engine_parity.py).
ENGINES = ("native", "pyradiomics")
DEFAULT_ENGINE = "native"


def engine_info(engine: str = DEFAULT_ENGINE) -> dict:
    """The feature engine and its version (recorded in bundles so features are reproducible)."""
    if engine == "native":
        return {"name": "native", "version": ENGINE_VERSION}
    return {"name": "pyradiomics", "version": _import_pyradiomics().__version__}


def _unit_spacing(img: sitk.Image) -> sitk.Image:
    """A copy of ``img`` whose pixels are 1 mm (same origin and direction)."""
    out = sitk.Image(img)
    out.SetSpacing((1.0,) * img.GetDimension())
    return out


class FeatureExtractor:
    """Configure once, extract many times (the pyradiomics habit).

    Parameters
    ----------
    params : str or Path
        Preset name or params file.
    pixel_units : bool
        Allow mm-based settings (resampling, LoG, shape) on images whose spacing is unknown,
        treating one pixel as 1 mm. Off by default: such values are not comparable across
        scanners.

    Examples
    --------
    >>> fx = FeatureExtractor("cui2023")                     # doctest: +SKIP
    >>> feats, diag = fx.extract(image, {"tumor": mask})     # doctest: +SKIP
    """

    def __init__(self, params="default", pixel_units: bool = False,
                 engine: str = DEFAULT_ENGINE, label: str | None = None):
        self.params, self.params_text, self.params_source = load_params(params, label)
        #: how error messages name the params (the file, or the bundle that carries them)
        self.params_label = label or self.params_source
        self.params_hash = params_hash(self.params_text)
        self.pixel_units = pixel_units
        self._extractors = {}
        if engine not in ENGINES:
            raise InputError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}")
        self.engine = engine
        self._native = None
        if engine == "pyradiomics":
            _import_pyradiomics()        # fail now, with the install hint, not per case
        if engine == "native":   # refuses, by name, what it does not implement yet: fail fast
            self._native = NativeExtractor(self.params, source=self.params_label)

    @property
    def name(self) -> str:
        return Path(self.params_source).stem

    def effective_params(self, dimension: int) -> dict:
        """The params actually passed to pyradiomics for an image of this dimension."""
        p = copy.deepcopy(self.params)
        if dimension == 2:
            (p.get("setting") or {}).pop("force2D", None)
            (p.get("setting") or {}).pop("force2Ddimension", None)
        return p

    def _extractor(self, dimension: int):
        if dimension not in self._extractors:
            from radiomics import featureextractor  # optional: see _import_pyradiomics
            _quiet_pyradiomics()
            self._extractors[dimension] = featureextractor.RadiomicsFeatureExtractor(
                self.effective_params(dimension))
        return self._extractors[dimension]

    def extract(self, image: sitk.Image, regions: dict, *, spacing_known: bool = True,
                path: str = "image", progress=None) -> tuple:
        """Extract features for every region.

        Parameters
        ----------
        image : SimpleITK.Image
            2D (preferred) or 3D grey image.
        regions : dict
            Region name -> binary SimpleITK mask on the image grid (value 1 = inside).
        spacing_known : bool
            False when the spacing is a placeholder; mm-based settings then refuse unless
            ``pixel_units``.
        path : str
            Used in error messages.
        progress : callable, optional
            ``progress(done, total, next_region)`` before each region and once at the end;
            with the native engine and several regions (computed together) ``done`` is the
            fraction of filtered images finished times ``total``; returning ``False`` cancels
            (raises :class:`~HER2RadiomicsLib.errors.Cancelled`). Used by the Slicer panel.

        Returns
        -------
        (dict, dict)
            ``{"<region>__<key>": float}`` in a stable order, and the diagnostics
            ``{"<region>__diagnostics_...": value}``.
        """
        if not spacing_known and not self.pixel_units:
            mm = uses_physical_units(self.params)
            if mm:
                raise SpacingUnknownError(path, f"{', '.join(mm)} of params '{self.name}'")
        if not spacing_known:
            # the declared spacing is a placeholder: one pixel counts as 1 mm, whatever the
            # file says, so pixel-unit features do not depend on a meaningless number
            image, regions = _unit_spacing(image), {r: _unit_spacing(m)
                                                    for r, m in regions.items()}
        self.check_input(image, regions, path)
        if self._native is not None and image.GetDimension() == 3 and image.GetSize()[2] == 1:
            # a one-slice volume (Slicer's 2D images) is the 2D image the native engine wants
            image = image[:, :, 0]
            regions = {r: m[:, :, 0] for r, m in regions.items()}
        label = int((self.params.get("setting") or {}).get("label", 1))
        feats, diags = {}, {}
        failed = {}
        template = None
        if self._native is not None:
            ex, shared = None, False
        else:
            ex = self._extractor(image.GetDimension())
            shared = self._shared_filters_ok(ex)
        filtered = None
        masks = {r: (m if label == 1 else sitk.Cast(m > 0, sitk.sitkUInt8) * label)
                 for r, m in regions.items()}
        together = None
        if self._native is not None and len(regions) > 1:
            # the native engine computes the regions together (one pass over their union);
            # progress then counts the filtered images done, as a fraction of the regions
            n = len(regions)
            if progress is not None and progress(0, n, next(iter(regions))) is False:
                raise Cancelled(f"{path}: feature extraction cancelled")
            together = self._native.execute_many(
                image, masks, progress=None if progress is None else
                (lambda k, steps: k == 0 or progress(n * k / steps, n, "")))
            if together is None:
                raise Cancelled(f"{path}: feature extraction cancelled")
        for done, (region, m) in enumerate(masks.items()):
            if (together is None and progress is not None
                    and progress(done, len(regions), region) is False):
                raise Cancelled(f"{path}: feature extraction cancelled")
            try:
                if together is not None:
                    res = together[region]
                    if isinstance(res, Exception):
                        raise res
                elif self._native is not None:
                    res = self._native.execute(image, m)
                elif shared:
                    res, filtered = _execute_shared(ex, image, m, filtered)
                else:
                    res = ex.execute(image, m, label=label)
            except Exception as exc:  # noqa: BLE001 -- pyradiomics raises ValueError/RuntimeError/AssertionError
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if region == "tumor" or len(regions) == 1:
                    raise InputError(f"{path}: feature extraction failed for region "
                                     f"'{region}' ({msg[:200]})") from None
                log.warning("%s: region %s: extraction failed (%s); its features are NaN",
                            path, region, msg)
                failed[region] = msg
                continue
            keys = [k for k in res if not k.startswith("diagnostics_")]
            template = template or keys
            for k in keys:
                feats[f"{region}__{k}"] = _to_float(res[k])
            for k, v in res.items():
                if k.startswith("diagnostics_"):
                    diags[f"{region}__{k}"] = _jsonable(v)
        if progress is not None:
            progress(len(regions), len(regions), "")
        for region, msg in failed.items():
            for k in template or []:
                feats[f"{region}__{k}"] = float("nan")
            diags[f"{region}__diagnostics_error"] = msg
        ordered = {}
        for region in regions:  # keep region order, then pyradiomics' key order
            for k in template or []:
                col = f"{region}__{k}"
                if col in feats:
                    ordered[col] = feats[col]
        return ordered, diags

    def check_input(self, image: sitk.Image, regions: dict, path: str = "image") -> None:
        """Refuse inputs pyradiomics would choke on with an unhelpful message.

        NaN/Inf pixels (they spread through every filter and histogram), and a bin width so
        fine for the region's grey range that the texture matrices would not fit in memory
        (pyradiomics answers "Maximum allowed size exceeded" or MemoryError).
        """
        arr = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(arr).all():     # counted only when there is something to say
            bad = ~np.isfinite(arr)
            raise InputError(f"{path}: the image has {int(bad.sum())} NaN/Inf pixel(s); "
                             "radiomics needs finite grey values (fix or mask them first)")
        st = self.params.get("setting") or {}
        self.check_resampling(image, regions, path)
        if st.get("binCount") or not regions:
            return
        width = float(st.get("binWidth", 25))
        union = np.zeros(arr.shape, bool)
        for m in regions.values():
            union |= sitk.GetArrayViewFromImage(m) > 0
        if not union.any():
            return
        if st.get("normalize"):   # pyradiomics normalises with the whole image's mean and SD
            vals = arr.astype(np.float64)
            sd = vals.std()
            vals = float(st.get("normalizeScale", 1)) * (vals - vals.mean()) / (sd or 1.0)
            inside = vals[union]
        else:
            # no float64 copy: the conversion is exact and monotone, so the extremes and
            # their difference (in Python floats, i.e. float64) are the same
            inside = arr[union]
        lo, hi = float(inside.min()), float(inside.max())
        levels = (hi - lo) / width
        if levels > MAX_GREY_LEVELS:
            raise InputError(
                f"{path}: binWidth {width:g} on grey values spanning {lo:.4g} to "
                f"{hi:.4g} gives {levels:,.0f} grey levels (at most "
                f"{MAX_GREY_LEVELS:,}: the texture matrices would need "
                f"~{4 * 8 * levels ** 2 / 2 ** 30:,.0f} GB); raise binWidth or use binCount")

    def check_resampling(self, image: sitk.Image, regions: dict, path: str = "image") -> None:
        """Refuse a ``resampledPixelSpacing`` whose grid for this image would be larger than
        an image we read (:func:`~HER2RadiomicsLib.imaging.io.max_pixels`), before any
        engine allocates it (ITK would answer with a MemoryError or an allocation failure).

        Both engines resample around each region: its bounding box at the new spacing plus
        ``padDistance`` pixels each side, clipped to the image; the regions' union box bounds
        every one of them.
        """
        st = self.params.get("setting") or {}
        new = st.get("resampledPixelSpacing")
        if not new or st.get("interpolator", "sitkBSpline") is None or not regions:
            return
        size, old = image.GetSize(), image.GetSpacing()
        union = np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
        for m in regions.values():
            union |= sitk.GetArrayViewFromImage(m) > 0
        if not union.any():
            return
        pad = int(st.get("padDistance", 5))
        grid = []
        for axis, (n, s_old, s_new) in enumerate(zip(size, old, new)):
            # numpy's axes run the other way; an axis the regions span one pixel of, or a
            # spacing of 0, is not resampled
            inside = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim)
                                                         if a != union.ndim - 1 - axis)))
            extent = int(inside[-1] - inside[0] + 1)
            ratio = s_old / s_new if s_new and extent > 1 else 1.0
            grid.append(min(math.ceil(n * ratio), math.ceil(extent * ratio) + 2 * pad + 2))
        px = math.prod(grid)
        cap = max_pixels()
        if px > cap:
            raise InputError(
                f"{path}: resampledPixelSpacing {list(new)} mm of {self.params_label} turns "
                f"{' x '.join(f'{s:.4g}' for s in old)} mm pixels into a "
                f"{' x '.join(f'{g:,}' for g in grid)} px grid ({px:,} px, more than the "
                f"{cap:,}-pixel limit of an image; ~{8 * px / 2 ** 30:,.0f} GB a copy); give "
                "a spacing near the image's own")

    @staticmethod
    def _shared_filters_ok(ex) -> bool:
        """True when filtered images do not depend on the mask, so regions can share them.

        pyradiomics 3.0.1 filters read the mask only for LBP3D; resampling, pre-cropping and
        resegmentation make the image itself mask-dependent.  Voxel-based mode is not used.
        """
        st = ex.settings
        return not (st.get("resampledPixelSpacing") or st.get("preCrop")
                    or st.get("resegmentRange") is not None or "LBP3D" in ex.enabledImagetypes)


def _execute_shared(ex, image, mask, filtered):
    """pyradiomics' ``execute`` for one region, reusing filtered images across regions.

    Mirrors ``RadiomicsFeatureExtractor.execute`` (3.0.1) step by step for segment-based
    extraction; the filtered images are generated once (first region) and reused.  Values are
    identical to separate ``execute`` calls (tested).
    """
    _import_pyradiomics()
    from radiomics import generalinfo, imageoperations  # optional: see _import_pyradiomics
    st = ex.settings.copy()
    label = st.get("label", 1)
    info = None
    if st.get("additionalInfo", False):
        info = generalinfo.GeneralInfo()
        info.addGeneralSettings(st)
        info.addEnabledImageTypes(ex.enabledImagetypes)
    img, msk = ex.loadImage(image, mask, info, **st)
    bbox, corrected = imageoperations.checkMask(img, msk, **st)
    if corrected is not None:
        if info is not None:
            info.addMaskElements(img, corrected, label, "corrected")
        msk = corrected
    vec = {}
    if info is not None:
        vec.update(info.getGeneralInfo())
    vec.update(ex.computeShape(img, msk, bbox, **st))
    if filtered is None:
        filtered = []
        for image_type, custom in ex.enabledImagetypes.items():
            args = st.copy()
            args.update(custom)
            gen = getattr(imageoperations, f"get{image_type}Image")(img, msk, **args)
            filtered.extend(gen)
    for fimg, type_name, kwargs in filtered:
        cimg, cmsk = imageoperations.cropToTumorMask(fimg, msk, bbox, padDistance=0)
        vec.update(ex.computeFeatures(cimg, cmsk, type_name, **kwargs))
    return vec, filtered


def _to_float(v) -> float:
    if type(v) is float:          # the native engine's values: nothing to convert
        return v
    try:
        return float(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size > 1 else _to_float(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return json.dumps({str(k): _jsonable(x) for k, x in v.items()})
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def aggregate_patients(features, patient_ids, how: str = "mean"):
    """Aggregate image-level feature rows per patient (cui2023 averages a patient's images).

    Parameters
    ----------
    features : pandas.DataFrame
        Rows = images, first column ``case_id``, the rest numeric features.
    patient_ids : sequence
        Patient of each row.
    how : {"mean", "median", "first"}

    Returns
    -------
    pandas.DataFrame
        One row per patient; ``case_id`` holds the patient ID, ``n_images`` the count.
    """
    if how not in AGGREGATIONS:
        raise InputError(f"--aggregate {how!r}: choose one of {', '.join(AGGREGATIONS)}")
    df = features.drop(columns=["case_id"]).copy()
    df.insert(0, "_patient", list(patient_ids))
    g = df.groupby("_patient", sort=False)
    agg = getattr(g, how)(numeric_only=True) if how != "first" else g.first()
    agg.insert(0, "n_images", g.size())
    agg.insert(0, "case_id", agg.index.astype(str))
    return agg.reset_index(drop=True)
