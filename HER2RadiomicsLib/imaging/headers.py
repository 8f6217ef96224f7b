"""Image headers read before any pixel is decoded: the pixel cap, NRRD/MetaImage header text and
its spacing checks, and SimpleITK reading with one-line errors.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .files import DICOM_SUFFIXES, RASTER_SUFFIXES, _suffix


#: Largest image accepted, in pixels per frame, checked on the header before any pixel is
#: decoded: 16k x 16k is beyond any ultrasound frame or mammogram (~4k x 5k) and keeps one
#: float64 working copy under 2 GiB. Set HER2RADIOMICS_MAX_PIXELS to change it.
DEFAULT_MAX_PIXELS = 16384 * 16384


def max_pixels() -> int:
    """The pixel cap in force (:data:`DEFAULT_MAX_PIXELS` unless the environment sets one)."""
    v = os.environ.get("HER2RADIOMICS_MAX_PIXELS", "")
    try:
        return int(v) if v.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise InputError(f"HER2RADIOMICS_MAX_PIXELS={v!r}: must be a whole number of "
                         "pixels") from None


def _check_size(path, size) -> None:
    dims = [int(d) for d in size]
    plane = dims[0] * (dims[1] if len(dims) > 1 else 1)
    frames = int(np.prod(dims[2:])) if len(dims) > 2 else 1
    cap = max_pixels()
    # a cine loop is read whole before one frame is taken: cap its total at 64 frames' worth
    if plane > cap or plane * frames > 64 * cap:
        raise InputError(f"{path}: image of {' x '.join(map(str, dims))} pixels is larger than "
                         f"the {cap:,}-pixel limit (set HER2RADIOMICS_MAX_PIXELS to raise it)")


#: longest NRRD/MetaImage header read (real headers are a few hundred bytes; a longer one
#: is refused rather than half-read, so that no field is missed)
MAX_HEADER_BYTES = 1 << 20


def _header_text(path: Path, magic: bytes, end: bytes) -> bytes:
    """A text header up to ``end`` (or the whole file when it is a detached header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_HEADER_BYTES + 1)
    except OSError:
        return b""
    if not head.startswith(magic):
        return b""
    cut = head.find(end)
    if cut < 0:
        if len(head) > MAX_HEADER_BYTES:
            raise InputError(f"{path}: header longer than {MAX_HEADER_BYTES // 1024} KiB; not "
                             "read (no real image header is this long)")
        return head
    return head[:cut]


def _nrrd_header(path: Path) -> dict:
    """The fields of an NRRD header (``key: value`` lines up to the first blank line)."""
    head = _header_text(path, b"NRRD", b"\n\n")
    if not head:
        return {}
    fields = {}
    for raw in head.split(b"\n")[1:]:
        line = raw.decode("latin-1").strip()
        if line.startswith("#") or ": " not in line:
            continue
        k, v = line.split(": ", 1)
        fields[k.strip().lower()] = v.strip()
    return fields


def _nrrd_spacing_problem(path: Path) -> str | None:
    """Why an NRRD header's spacing of a spatial axis is unusable (NaN, zero, negative,
    missing), or None. ITK replaces such values by 1 mm without a word, so read them here."""
    f = _nrrd_header(path)
    if not f:
        return None
    kinds = f.get("kinds", "").split()
    spatial = [k.lower() in ("domain", "space", "time") for k in kinds] if kinds else None
    if "space directions" in f:
        toks = re.findall(r"none|\([^)]*\)", f["space directions"])
        for i, t in enumerate(toks):
            is_spatial = spatial[i] if spatial and i < len(spatial) else True
            if t == "none":
                if is_spatial and spatial is not None:
                    return f"axis {i} has no space direction"
                continue
            try:
                vec = [float(x) for x in t.strip("()").split(",")]
            except ValueError:
                return f"space direction {t} is not numbers"
            if not all(np.isfinite(vec)) or float(np.hypot.reduce(vec)) <= 0:
                return f"space direction {t} gives no positive, finite spacing"
    if "spacings" in f:
        for i, t in enumerate(f["spacings"].split()):
            is_spatial = spatial[i] if spatial and i < len(spatial) else True
            try:
                v = float(t)
            except ValueError:
                return f"spacing {t!r} is not a number"
            if is_spatial and not (np.isfinite(v) and v != 0):
                return f"spacing {t} of axis {i} is not a positive, finite number"
    return None


def _header_has_spacing(path: Path) -> bool:
    """Whether the file states a pixel spacing at all: an NRRD without ``space directions`` or
    ``spacings`` and a MetaImage without ``ElementSpacing``/``ElementSize`` are read by ITK as
    1 mm, a placeholder that must not pass as millimetres."""
    suffix = _suffix(path)
    if suffix in (".nrrd", ".nhdr"):
        f = _nrrd_header(path)
        return not f or "space directions" in f or "spacings" in f
    if suffix in (".mha", ".mhd"):
        head = _header_text(path, b"", b"ElementDataFile").decode("latin-1").lower()
        return "elementspacing" in head or "elementsize" in head
    return True


def _check_header(path: Path, spacing: bool = True) -> None:
    """Size (and, unless the user gives the spacing, spacing) from the header alone, before
    the pixels are decoded."""
    if spacing and _suffix(path) in (".nrrd", ".nhdr"):
        why = _nrrd_spacing_problem(path)
        if why:
            raise InputError(f"{path}: the header's pixel spacing is unusable ({why}); fix the "
                             "header or give --spacing-mm X Y")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return          # the full read below says what is wrong, in one line
    _check_size(path, reader.GetSize())
    sp = reader.GetSpacing()
    if spacing and _suffix(path) not in RASTER_SUFFIXES | DICOM_SUFFIXES \
            and not all(np.isfinite(v) and v > 0 for v in sp):
        raise InputError(f"{path}: the header's pixel spacing {list(sp)} is not positive and "
                         "finite; fix the header or give --spacing-mm X Y")


def _read_sitk(path: Path, check_spacing: bool = False) -> sitk.Image:
    _check_header(path, spacing=check_spacing)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        detail = next((ln for ln in msg if "ERROR" in ln or "Unable" in ln or "Could not" in ln),
                      msg[-1] if msg else "")
        raise InputError(f"{path}: cannot read image ({detail.strip()[:160]})") from None
