"""Image and mask I/O with trustworthy physical spacing.

Every image is returned as a 2D SimpleITK image (float32 grey) together with where its pixel
spacing came from.  Spacing precedence, recorded as ``spacing_source``:

1. ``user``                     explicit ``spacing_mm=(x, y)`` (CLI ``--spacing-mm X Y``)
2. ``dicom-us-region``          DICOM SequenceOfUltrasoundRegions PhysicalDeltaX/Y (cm -> mm);
                                with several B-mode regions, the one containing the lesion mask
3. ``dicom-pixel-spacing``      DICOM PixelSpacing, then ``dicom-imager-pixel-spacing``
                                (ImagerPixelSpacing, mammography)
4. ``sidecar`` / ``header``     ``<image>.json`` with ``{"spacing_mm": [x, y]}``; NRRD/NIfTI/MHA
                                header spacing
5. ``unknown``                  PNG/JPEG/BMP/TIFF without any of the above: spacing is set to
                                1 x 1 as a placeholder and every mm-based operation refuses.

Colour images are converted to grey with the ITU-R BT.601 luma weights
``Y = 0.299 R + 0.587 G + 0.114 B`` (alpha ignored); the conversion is recorded in the
provenance.  Coordinates follow SimpleITK/ITK: physical points in LPS millimetres, pixel index
``(x, y)`` = (column, row).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, one_line, SpacingUnknownError
# moved to .files when this file was split by job; imported from here by others
from .files import (  # noqa: F401
    DICOM_SUFFIXES, HEADER_SUFFIXES, RASTER_SUFFIXES, _real_target, _suffix, _umask,
    atomic_write_bytes, atomic_write_text, companion_files, write_image)
# moved to .headers when this file was split by job; imported from here by others
from .headers import (  # noqa: F401
    max_pixels, _check_size, _header_text, _nrrd_header, _nrrd_spacing_problem,
    _header_has_spacing, _check_header, _read_sitk, DEFAULT_MAX_PIXELS, MAX_HEADER_BYTES)

log = logging.getLogger(__name__)

GREY_FORMULA = "ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B (alpha ignored)"
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])
DEFAULT_MIN_MASK_PIXELS = 16
# Relative tolerance when comparing spacing/origin/direction of an image and its mask: below
# float32 round-off of typical header values, far below any real geometry difference.
_GEOMETRY_RTOL = 1e-4
# DICOM enumerations (PS3.3 C.8.5.5.1): RegionSpatialFormat 1 = 2D (B-mode tissue or colour
# flow); PhysicalUnits 3 = centimetres.
_US_2D_FORMAT = 1
_US_UNITS_CM = 3
#: plausible ultrasound pixel sizes (cm): 1 µm to 1 cm; anything else is a broken calibration
#: (a delta of 1e-300 or inf would make the rings' working grid absurd or infinite)
US_DELTA_CM = (1e-4, 1.0)


@dataclass
class UltrasoundRegion:
    """One calibrated 2D region of a DICOM ultrasound image (pixel box inclusive, mm spacing)."""

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple
    data_type: int = 1

    def contains(self, bbox) -> bool:
        """``bbox`` = (xmin, ymin, xmax, ymax) in pixels, inclusive."""
        return (self.x0 <= bbox[0] and self.y0 <= bbox[1] and bbox[2] <= self.x1
                and bbox[3] <= self.y1)


@dataclass
class LoadedImage:
    """A 2D grey image with the origin of its spacing.

    Attributes
    ----------
    image : SimpleITK.Image
        2D, float32, physical geometry attached (placeholder 1 x 1 spacing when unknown).
    path : str
        The file it came from (used in every error message).
    spacing_source : str
        One of ``user``, ``dicom-us-region``, ``dicom-pixel-spacing``,
        ``dicom-imager-pixel-spacing``, ``sidecar``, ``header``, ``unknown``.
    provenance : dict
        Reading details: format, size, grey conversion, frame, DICOM calibration notes.
    us_regions : list of UltrasoundRegion
        Calibrated B-mode regions when the file is a DICOM ultrasound image.
    """

    image: sitk.Image
    path: str
    spacing_source: str
    provenance: dict = field(default_factory=dict)
    us_regions: list = field(default_factory=list)

    @property
    def spacing_known(self) -> bool:
        return self.spacing_source != "unknown"

    @property
    def spacing_mm(self) -> tuple:
        return tuple(self.image.GetSpacing())

    def require_spacing(self, operation: str) -> None:
        """Raise :class:`SpacingUnknownError` if the spacing is unknown."""
        if not self.spacing_known:
            raise SpacingUnknownError(self.path, operation)

    def set_spacing(self, spacing_mm, source: str) -> None:
        self.image.SetSpacing([float(s) for s in spacing_mm])
        self.spacing_source = source
        self.provenance["spacing_mm"] = [float(s) for s in spacing_mm]
        self.provenance["spacing_source"] = source




def _is_dicom(path: Path) -> bool:
    if _suffix(path) in DICOM_SUFFIXES:
        return True
    if _suffix(path) in RASTER_SUFFIXES | HEADER_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _validate_spacing(spacing_mm, path) -> tuple:
    try:
        sp = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"{path}: spacing {spacing_mm!r} is not two numbers (mm)") from None
    if len(sp) != 2 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"{path}: spacing must be two positive numbers in mm, got {spacing_mm!r}")
    return sp


# A pixel counts as coloured when its channels differ by more than this share of the range;
# grey-scale exports saved as RGB differ by 0-2 levels of 255 (JPEG chroma noise).
COLOUR_CHROMA = 0.15


def to_grey(img: sitk.Image, prov: dict | None = None) -> sitk.Image:
    """A grey float32 image: colour converted with :data:`GREY_FORMULA` (ITU-R BT.601 luma,
    alpha ignored), grey + alpha by its grey channel, grey as it is. ``prov`` (a dict)
    receives ``grey_conversion`` and, for colour, the share of clearly coloured pixels."""
    prov = {} if prov is None else prov
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp == 1:
        out = sitk.Cast(img, sitk.sitkFloat32)
        prov["grey_conversion"] = "none"
        return out
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    if ncomp >= 3:
        grey = arr[..., :3] @ _GREY_WEIGHTS
        prov["grey_conversion"] = GREY_FORMULA
        rgb = arr[..., :3]
        span = float(rgb.max() - rgb.min()) or 1.0
        # colour Doppler boxes and coloured annotations: pixels whose channels differ clearly
        prov["colour_fraction"] = float(((rgb.max(-1) - rgb.min(-1)) > COLOUR_CHROMA * span)
                                        .mean())
    else:  # grey + alpha
        grey = arr[..., 0]
        prov["grey_conversion"] = "first channel of grey+alpha"
    out = sitk.GetImageFromArray(grey.astype(np.float32))
    out.CopyInformation(img)
    return out


def _to_2d(img: sitk.Image, path, frame) -> tuple[sitk.Image, int | None]:
    """Reduce a 3D image with one slice (or a chosen frame) to a true 2D image."""
    if img.GetDimension() == 2:
        if frame not in (None, 0):
            raise InputError(f"{path}: --frame {frame} given but the image has a single frame")
        return img, None
    if img.GetDimension() != 3:
        raise InputError(f"{path}: {img.GetDimension()}D images are not supported (2D expected)")
    nz = img.GetSize()[2]
    if nz > 1 and frame is None:
        raise InputError(f"{path}: multi-frame image ({nz} frames); choose one with --frame N "
                         f"(0..{nz - 1})")
    idx = 0 if frame is None else int(frame)
    if not 0 <= idx < nz:
        raise InputError(f"{path}: --frame {idx} out of range 0..{nz - 1}")
    size = list(img.GetSize())
    size[2] = 0
    out = sitk.Extract(img, size, [0, 0, idx])
    return out, (idx if nz > 1 else None)



def _dicom_meta(path: Path):
    import pydicom  # when run: DICOM inputs only; every writer imports this module
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises several unrelated types for corrupt files
        raise InputError(f"{path}: not a readable DICOM file ({one_line(exc)})") from None


def parse_us_regions(ds) -> list:
    """Calibrated 2D regions (cm units) of a DICOM dataset's SequenceOfUltrasoundRegions."""
    regions = []
    for item in getattr(ds, "SequenceOfUltrasoundRegions", []) or []:
        try:
            fmt = int(getattr(item, "RegionSpatialFormat", 0))
            ux = int(getattr(item, "PhysicalUnitsXDirection", 0))
            uy = int(getattr(item, "PhysicalUnitsYDirection", 0))
            dx = float(item.PhysicalDeltaX)
            dy = float(item.PhysicalDeltaY)
        except (AttributeError, TypeError, ValueError):
            continue
        if fmt != _US_2D_FORMAT or ux != _US_UNITS_CM or uy != _US_UNITS_CM:
            continue
        if not all(math.isfinite(v) and US_DELTA_CM[0] <= abs(v) <= US_DELTA_CM[1]
                   for v in (dx, dy)):
            # a note (shown with -v, kept in the provenance), not a warning on stderr: the
            # error that follows (spacing unknown) is the user's one line
            log.info("ultrasound region with PhysicalDeltaX/Y %r/%r cm ignored: not a "
                     "plausible pixel size", dx, dy)
            continue
        regions.append(UltrasoundRegion(
            int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
            int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1),
            (abs(dx) * 10.0, abs(dy) * 10.0), int(getattr(item, "RegionDataType", 1))))
    return regions


def _same_spacing(regions) -> bool:
    first = np.array(regions[0].spacing_mm)
    return all(np.allclose(np.array(r.spacing_mm), first, rtol=1e-6) for r in regions)


def _find_sidecar(path: Path):
    for cand in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if cand.exists() and cand != path:
            return cand
    return None


def _record_intensity(img: sitk.Image, ds, prov: dict, path) -> None:
    """Record the grey range and DICOM photometry, and say when they are not what a user
    comparing with 8-bit exports of the same scan would expect."""
    arr = sitk.GetArrayViewFromImage(img)
    finite = arr[np.isfinite(arr)]
    prov["intensity_range"] = [float(finite.min()), float(finite.max())] if finite.size \
        else [float("nan"), float("nan")]
    if ds is None:
        return
    photo = str(getattr(ds, "PhotometricInterpretation", "")).strip()
    prov["photometric"] = photo
    if photo == "MONOCHROME1":
        # SimpleITK/GDCM inverts MONOCHROME1 on reading (value -> max - value), so tissue that
        # the scanner showed white is high; say so instead of "none"
        conv = prov.get("grey_conversion", "none")
        prov["grey_conversion"] = ("MONOCHROME1 inverted on reading (max - value)"
                                   + ("" if conv == "none" else f"; {conv}"))
    wide = photo == "PALETTE COLOR" or int(getattr(ds, "BitsAllocated", 8) or 8) > 8
    if finite.size and finite.max() > 255 and wide:
        note = (f"{photo or 'DICOM'} image with grey values up to {finite.max():.0f} "
                f"({int(getattr(ds, 'BitsAllocated', 16))}-bit): an 8-bit export of the same "
                "scan spans 0-255, so bin-width-based features differ between the two")
        prov["intensity_note"] = note
        log.warning("%s: %s", path, note)


def read_image(path, spacing_mm=None, frame=None) -> LoadedImage:
    """Read a 2D image into a :class:`LoadedImage` with its spacing resolved.

    Parameters
    ----------
    path : str or Path
        DICOM (single or multi-frame), PNG/JPEG/BMP/TIFF, NRRD, NIfTI or MHA/MHD.
    spacing_mm : (float, float), optional
        In-plane pixel spacing (x = column, y = row) in mm; overrides everything else.
    frame : int, optional
        Frame index for multi-frame/cine files (required there).

    Returns
    -------
    LoadedImage

    Raises
    ------
    InputError
        Missing/unreadable file, unsupported dimensionality, multi-frame without ``frame``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give one image file")
    prov = {"path": str(path)}
    is_dicom = _is_dicom(path)
    ds = _dicom_meta(path) if is_dicom else None
    if ds is not None and int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 and frame is None:
        raise InputError(f"{path}: multi-frame DICOM ({int(ds.NumberOfFrames)} frames); "
                         "choose one with --frame N")
    if ds is not None and spacing_mm is None:
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            val = getattr(ds, tag, None)
            try:
                bad = val is not None and not all(math.isfinite(float(v)) and float(v) > 0
                                                   for v in val)
            except (TypeError, ValueError):
                bad = True
            if bad:
                raise InputError(f"{path}: DICOM {tag} {list(val) if val is not None else val} "
                                 "is not two positive, finite numbers; give --spacing-mm X Y")
    raw = _read_sitk(path, check_spacing=spacing_mm is None and not is_dicom)
    img2d, used_frame = _to_2d(raw, path, frame)
    img = to_grey(img2d, prov)
    prov.update(format="dicom" if is_dicom else _suffix(path).lstrip("."),
                size=list(img.GetSize()), frame=used_frame,
                pixel_type=raw.GetPixelIDTypeAsString())
    _record_intensity(img, ds, prov, path)

    loaded = LoadedImage(img, str(path), "unknown", prov)
    if is_dicom:
        # DICOM ultrasound has no patient-space geometry: keep the pixel grid at the origin.
        img.SetOrigin((0.0, 0.0))
        img.SetDirection((1.0, 0.0, 0.0, 1.0))
        loaded.us_regions = parse_us_regions(ds)
        prov["modality"] = str(getattr(ds, "Modality", ""))
        prov["us_regions"] = [r.__dict__ for r in loaded.us_regions]

    if spacing_mm is not None:
        loaded.set_spacing(_validate_spacing(spacing_mm, path), "user")
        return loaded
    if is_dicom:
        if loaded.us_regions:
            if _same_spacing(loaded.us_regions):
                loaded.set_spacing(loaded.us_regions[0].spacing_mm, "dicom-us-region")
                return loaded
            # Several regions with different calibration: resolved by resolve_us_region() once
            # the lesion mask is known.
            prov["spacing_note"] = "several ultrasound regions with different calibration"
        else:
            for tag, source in (("PixelSpacing", "dicom-pixel-spacing"),
                                ("ImagerPixelSpacing", "dicom-imager-pixel-spacing")):
                val = getattr(ds, tag, None)
                if val is not None and len(val) == 2 and min(float(v) for v in val) > 0:
                    # DICOM order is (row spacing, column spacing) = (y, x)
                    loaded.set_spacing((float(val[1]), float(val[0])), source)
                    return loaded
        loaded.set_spacing((1.0, 1.0), "unknown")
        return loaded
    sidecar = _find_sidecar(path)
    if sidecar is not None:
        try:
            sp = json.loads(sidecar.read_text())["spacing_mm"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{sidecar}: sidecar must be JSON with \"spacing_mm\": [x, y]") \
                from None
        loaded.set_spacing(_validate_spacing(sp, sidecar), "sidecar")
        prov["sidecar"] = str(sidecar)
        return loaded
    if _suffix(path) in RASTER_SUFFIXES or not _header_has_spacing(path):
        loaded.set_spacing((1.0, 1.0), "unknown")
        if _suffix(path) not in RASTER_SUFFIXES:
            prov["spacing_note"] = "the header states no pixel spacing"
    else:
        loaded.set_spacing(img.GetSpacing(), "header")
    return loaded


def resolve_us_region(loaded: LoadedImage, mask: sitk.Image) -> None:
    """Choose the calibrated ultrasound region that contains the lesion mask.

    Only acts when the image has several B-mode regions with different calibration and no
    explicit spacing was given.  Raises :class:`InputError` when no single calibration applies.
    """
    if loaded.spacing_source != "unknown" or len(loaded.us_regions) < 2:
        return
    bbox = mask_bbox(mask)
    hits = [r for r in loaded.us_regions if r.contains(bbox)]
    if not hits:
        raise InputError(f"{loaded.path}: the lesion mask (pixels {bbox}) is not inside any "
                         "calibrated ultrasound region; pass --spacing-mm X Y")
    if not _same_spacing(hits):
        raise InputError(f"{loaded.path}: the lesion mask lies in {len(hits)} ultrasound regions "
                         "with different calibration (ambiguous); pass --spacing-mm X Y")
    loaded.set_spacing(hits[0].spacing_mm, "dicom-us-region")
    mask.SetSpacing(loaded.image.GetSpacing())


def mask_bbox(mask: sitk.Image) -> tuple:
    """(xmin, ymin, xmax, ymax) pixel bounding box of non-zero pixels (inclusive)."""
    arr = sitk.GetArrayViewFromImage(mask)
    ys, xs = np.nonzero(arr)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _geometry_matches(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=_GEOMETRY_RTOL)
            and np.allclose(a.GetOrigin(), b.GetOrigin(),
                            atol=_GEOMETRY_RTOL * max(a.GetSpacing()))
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=_GEOMETRY_RTOL))


def _extent(img: sitk.Image):
    size = np.array(img.GetSize()) - 1
    corners = [img.TransformContinuousIndexToPhysicalPoint([float(c) for c in (sx, sy)])
               for sx in (-0.5, size[0] + 0.5) for sy in (-0.5, size[1] + 0.5)]
    c = np.array(corners)
    return c.min(0), c.max(0)


def read_mask(path, ref: LoadedImage, label: int | None = None,
              min_pixels: int = DEFAULT_MIN_MASK_PIXELS) -> sitk.Image:
    """Read a lesion mask onto the geometry of its image.

    Parameters
    ----------
    path : str or Path
        Mask file. Any non-zero pixel is lesion unless ``label`` is given.
    ref : LoadedImage
        The image the mask belongs to.
    label : int, optional
        Use only pixels equal to this value.
    min_pixels : int
        Smallest accepted lesion size in pixels (default 16).

    Returns
    -------
    SimpleITK.Image
        uint8 {0, 1}, same geometry as ``ref.image``.

    Raises
    ------
    InputError
        Unreadable, geometry different from the image (both files named), outside the image,
        empty, or smaller than ``min_pixels``.

    Notes
    -----
    Masks without geometry (PNG/JPEG/BMP/TIFF) adopt the image's geometry when the pixel grid
    matches. When the image's spacing was supplied by the user or is unknown, a mask header
    cannot be authoritative either, so only the pixel grid is compared.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: mask file not found")
    raw = _read_sitk(path)
    if raw.GetNumberOfComponentsPerPixel() > 1:
        raw = sitk.VectorIndexSelectionCast(raw, 0)
    frame = ref.provenance.get("frame")
    if raw.GetDimension() == 3 and raw.GetSize()[2] > 1 and frame is not None:
        m2d, _ = _to_2d(raw, path, frame)
    else:
        m2d, _ = _to_2d(raw, path, None)
    ref_img = ref.image
    has_geometry = _suffix(path) not in RASTER_SUFFIXES
    grid_only = (not has_geometry) or ref.spacing_source in ("user", "unknown", "sidecar") \
        or ref.provenance.get("format") == "dicom"
    if tuple(m2d.GetSize()) != tuple(ref_img.GetSize()) or (
            not grid_only and not _geometry_matches(m2d, ref_img)):
        if has_geometry and tuple(m2d.GetSize()) != tuple(ref_img.GetSize()):
            lo_m, hi_m = _extent(m2d)
            lo_i, hi_i = _extent(ref_img)
            if np.any(hi_m < lo_i) or np.any(lo_m > hi_i):
                raise InputError(f"{path}: mask lies outside the image {ref.path}")
        raise InputError(
            f"{path}: mask geometry (size {list(m2d.GetSize())}, spacing "
            f"{[round(s, 5) for s in m2d.GetSpacing()]}) differs from image {ref.path} (size "
            f"{list(ref_img.GetSize())}, spacing {[round(s, 5) for s in ref_img.GetSpacing()]}); "
            "resample the mask to the image first")
    arr = sitk.GetArrayFromImage(m2d)
    if label is None:
        binary = arr != 0
        if not binary.any():
            raise InputError(f"{path}: mask is empty (no non-zero pixel)")
    else:
        binary = arr == label
        if not binary.any():
            present = [int(v) for v in np.unique(arr) if v != 0][:10]
            raise InputError(f"{path}: mask has no pixel with label {label} "
                             f"(labels present: {present})")
    n = int(binary.sum())
    if n < min_pixels:
        raise InputError(f"{path}: mask has {n} lesion pixels, fewer than the minimum "
                         f"{min_pixels} (set --min-mask-pixels to change)")
    out = sitk.GetImageFromArray(binary.astype(np.uint8))
    out.CopyInformation(ref_img)
    return out


# A lesion mask covering more than this share of the image is refused: breast lesions fill a
# fraction of an ultrasound frame, and a whole-image mask leaves no room for any ring.
MAX_LESION_FRACTION = 0.9


def load_case(image_path, mask_path=None, spacing_mm=None, frame=None, label=None,
              min_pixels: int = DEFAULT_MIN_MASK_PIXELS):
    """Read an image and (optionally) its mask, resolving multi-region DICOM calibration.

    Returns
    -------
    (LoadedImage, SimpleITK.Image or None)
    """
    loaded = read_image(image_path, spacing_mm=spacing_mm, frame=frame)
    mask = None
    if mask_path is not None:
        mask = read_mask(mask_path, loaded, label=label, min_pixels=min_pixels)
        share = float(sitk.GetArrayViewFromImage(mask).mean())
        if share > MAX_LESION_FRACTION:
            raise InputError(f"{mask_path if isinstance(mask_path, (str, Path)) else 'mask'}: "
                             f"the mask covers {100 * share:.0f}% of the image, which is no "
                             "lesion contour (an inverted mask, or a field-of-view mask?)")
        resolve_us_region(loaded, mask)
        mask.CopyInformation(loaded.image)
    if loaded.provenance.get("spacing_note") and not loaded.spacing_known:
        # info, not a warning: an operation in mm then fails with its own one-line error
        log.info("%s: %s; spacing unknown", loaded.path, loaded.provenance["spacing_note"])
    return loaded, mask


_to_grey = to_grey      # the name earlier versions of the Slicer module imported
