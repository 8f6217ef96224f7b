"""Peritumoral regions in physical millimetres.

Regions come from an exact Euclidean distance map in physical units (scipy's
``distance_transform_edt`` with the pixel spacing as sampling, so anisotropic pixels are handled
exactly), computed in-plane on the 2D image.  A pixel belongs to ``peri_a-b mm`` when it lies
outside the tumour and its distance to the nearest tumour pixel ``d`` satisfies ``a < d <= b``
(``peri_0-b`` is the expansion by ``b`` mm minus the tumour, as the peritumoral studies define
it).

Rings are clipped to the valid image area: the ultrasound field of view (detected, or given) and
the image border.  The distance map is computed on a grid padded by the largest ring width, so the
area that would have been inside a ring beyond the image border is known and the fraction lost to
clipping is reported per region.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, SpacingUnknownError
from .io import atomic_write_text, write_image

log = logging.getLogger(__name__)

DEFAULT_RINGS_MM = (3.0, 5.0, 8.0)
DEFAULT_MAX_CLIP_FRACTION = 0.5
# The tumour must lie inside the detected FOV; if less than this share does, detection has
# failed (unusual screenshot layout) and the whole image is used instead.
_FOV_MIN_TUMOUR_SHARE = 0.9


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class RingSpec:
    """A peritumoral band from ``inner_mm`` to ``outer_mm`` outside the tumour boundary."""

    inner_mm: float
    outer_mm: float

    def __post_init__(self):
        if not (0 <= self.inner_mm < self.outer_mm) or not math.isfinite(self.outer_mm):
            raise InputError(f"ring {self.inner_mm}-{self.outer_mm} mm: need 0 <= inner < outer")

    @property
    def name(self) -> str:
        return f"peri_{_fmt(self.inner_mm)}-{_fmt(self.outer_mm)}mm"


# Largest padded grid (pixels) a ring computation may allocate: 200 Mpx is ~2 GB of working
# arrays; a true 0.05 mm ultrasound with 8 mm rings needs ~1 Mpx, a wrong spacing terabytes.
MAX_RING_GRID_PX = 200_000_000


def parse_rings(text) -> list:
    """Parse ``"3,5,8"`` (or an iterable of numbers) into sorted distances in mm."""
    if text is None or text == "":
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        given = [float(v) for v in items if str(v).strip() != ""]
    except ValueError:
        raise InputError(f"--rings {text!r}: expected comma-separated distances in mm, "
                         "e.g. 3,5,8") from None
    vals = sorted(set(given))
    if len(vals) != len(given):
        raise InputError(f"--rings {text!r}: a distance is given twice")
    if any(v <= 0 or not math.isfinite(v) for v in vals):
        raise InputError(f"--rings {text!r}: distances must be positive numbers of mm")
    return vals


def ring_specs(distances_mm, annuli: bool = True) -> list:
    """Expansion rings ``0-d`` for every distance, plus the annuli between consecutive ones."""
    d = parse_rings(distances_mm)
    specs = [RingSpec(0.0, v) for v in d]
    if annuli:
        specs += [RingSpec(a, b) for a, b in zip(d[:-1], d[1:])]
    return specs


def _disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def detect_fov(image: sitk.Image, threshold_fraction: float = 0.03) -> sitk.Image:
    """Detect the ultrasound field of view: the convex, non-black region holding the echo data.

    Black background and burned-in annotations (text, depth rulers, logos) on it are excluded:
    pixels brighter than ``threshold_fraction`` x the 99th percentile are closed, hole-filled
    and opened (opening removes thin text strokes), the largest component is kept and its
    convex hull taken (B-mode FOVs, linear or sector, are convex; the hull restores dark
    shadows that reach the FOV edge).

    Returns
    -------
    SimpleITK.Image
        uint8 {0, 1} with the image's geometry.
    """
    # imported when run: `parse_rings` alone must stay light, and a one-case extract without
    # rings loads neither (scikit-image's morphology alone costs ~0.2 s; tested in
    # test_outputs_atomic)
    from scipy import ndimage as ndi
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    h, w = arr.shape
    # Work at <= 256 px: the FOV is a large smooth shape and morphology cost grows with size^2.
    f = max(1, int(math.ceil(max(h, w) / 256)))
    small = arr[::f, ::f]
    hi = float(np.percentile(small, 99))
    fg = small > max(threshold_fraction * hi, 1e-6)
    r = max(1, round(min(small.shape) * 0.015))
    fg = _disk_morphology(_disk_morphology(fg, r, dilate=True), r, dilate=False)   # closing
    fg = ndi.binary_fill_holes(fg)
    fg = _disk_morphology(_disk_morphology(fg, 2 * r, dilate=False), 2 * r, dilate=True)
    lab, n = ndi.label(fg)
    if n == 0:
        out = np.ones_like(arr, dtype=np.uint8)
    else:
        # pixel counts per label; argmax takes the first of equal sizes, as ndi.sum's did
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        keep = lab == (1 + int(np.argmax(sizes)))
        hull = _convex_hull_mask(keep)
        out = np.repeat(np.repeat(hull, f, axis=0), f, axis=1)[:h, :w].astype(np.uint8)
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(image)
    return res


def _disk_morphology(a: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Binary dilation or erosion by :func:`_disk`, pixels outside the image counting as 0.

    What scipy's ``binary_dilation``/``binary_erosion`` give with ``border_value=0`` (so
    ``binary_closing``/``binary_opening`` as the detection used them; Testing/test_fov_hull.py
    compares), in row runs: the disk is a stack of centred horizontal segments, so each of
    its rows costs one shifted AND/OR of a segment result computed once per half-width,
    ~4 r array operations instead of the disk's ~3 r^2 pixels per image pixel.
    """
    disk = _disk(radius)
    r = disk.shape[0] // 2
    h, w = a.shape
    ap = np.pad(a, r)                                    # zeros outside, as border_value=0
    comb = np.logical_or if dilate else np.logical_and
    seg = {0: ap}                                        # half-width -> segment result
    half = [int(row.sum()) // 2 for row in disk]
    for k in range(1, max(half) + 1):
        prev = seg[k - 1]
        cur = prev.copy()
        comb(cur[:, k:], ap[:, :-k], out=cur[:, k:])     # the pixel k to the left
        comb(cur[:, :-k], ap[:, k:], out=cur[:, :-k])    # the pixel k to the right
        if not dilate:
            cur[:, :k] = False                           # their left neighbour is outside
            cur[:, -k:] = False
        seg[k] = cur
    out = None
    for dy, k in enumerate(half):
        part = seg[k][dy:dy + h, r:r + w]
        out = part.copy() if out is None else comb(out, part, out=out)
    return out


def _convex_hull_mask(keep: np.ndarray) -> np.ndarray:
    """The pixels inside or on the convex hull of ``keep``'s pixels taken as diamonds.

    The same set as scikit-image's ``convex_hull_image(keep)`` (hull of the pixel-edge
    midpoints, borders included; Testing/test_fov_hull.py compares them), without importing
    scikit-image's morphology and scipy's spatial package (~0.3 s a process). All coordinates
    are kept doubled, as integers, so every inside/on-edge decision is exact.
    """
    rows = np.flatnonzero(keep.any(axis=1))
    left = keep[rows].argmax(axis=1)
    right = keep.shape[1] - 1 - keep[rows, ::-1].argmax(axis=1)
    # every pixel lies between its row's first and last one, so these rows' diamonds span
    # the hull of all the pixels' diamonds
    r2, lo2, hi2 = 2 * rows, 2 * left, 2 * right
    pts = np.concatenate([np.stack([r2 - 1, lo2], 1), np.stack([r2 + 1, lo2], 1),
                          np.stack([r2, lo2 - 1], 1), np.stack([r2 - 1, hi2], 1),
                          np.stack([r2 + 1, hi2], 1), np.stack([r2, hi2 + 1], 1)])
    hull = _monotone_chain(sorted(set(map(tuple, pts.tolist()))))
    # a counter-clockwise hull (in (row, col) axes): a pixel (y, x) is kept when for every
    # edge v -> w, cross(w - v, p - v) = ey*(px - vx) - ex*(py - vy) >= 0 (0: on the edge)
    v = np.array(hull, dtype=np.int64)
    e = np.roll(v, -1, axis=0) - v
    vy, vx, ey, ex = v[:, 0:1], v[:, 1:2], e[:, 0:1], e[:, 1:2]
    py = 2 * np.arange(keep.shape[0], dtype=np.int64)[None, :]
    a = ey                                       # cross = a * px - c >= 0
    c = ex * (py - vy) + ey * vx
    big = np.int64(4 * (keep.shape[1] + 2))
    pos, neg = a > 0, a < 0
    safe = np.where(a == 0, 1, a)
    lo = np.where(pos, -((-c) // safe), -big)    # px >= ceil(c / a)
    hi = np.where(neg, c // safe, big)           # px <= floor(c / a)
    empty = ((a == 0) & (c > 0)).any(axis=0)     # a row beyond a horizontal edge
    lo_px = (lo.max(axis=0) + 1) // 2            # doubled -> pixel columns, rounded inwards
    hi_px = np.floor_divide(hi.min(axis=0), 2)
    cols = np.arange(keep.shape[1])[None, :]
    out = (cols >= lo_px[:, None]) & (cols <= hi_px[:, None])
    out[empty] = False
    return out


def _monotone_chain(points: list) -> list:
    """Convex hull (Andrew's monotone chain) of sorted integer points, collinear ones dropped,
    counter-clockwise in (row, col) axes."""
    def half(seq):
        out = []
        for p in seq:
            # cross(o, a, p) <= 0: a is no left turn, drop it (written out: this loop is the
            # hull's cost)
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]
    return half(points) + half(reversed(points))


@dataclass
class RegionSet:
    """Named binary regions on the image grid plus per-region QC.

    ``masks`` maps region name -> uint8 SimpleITK image; ``qc`` maps region name -> dict with
    ``area_mm2``, ``area_px``, ``unclipped_area_mm2``, ``clipped_fraction`` and ``flagged``.
    ``label_map`` holds the disjoint partition (tumour + consecutive annuli) and ``labels`` its
    values.
    """

    masks: dict = field(default_factory=dict)
    qc: dict = field(default_factory=dict)
    fov: sitk.Image | None = None
    fov_source: str = "none"
    label_map: sitk.Image | None = None
    labels: dict = field(default_factory=dict)

    @property
    def names(self) -> list:
        return list(self.masks)

    @property
    def flagged(self) -> list:
        return [k for k, v in self.qc.items() if v.get("flagged")]


def build_regions(image, mask: sitk.Image, rings_mm=DEFAULT_RINGS_MM, *,
                  annuli: bool = True, combined=(), fov="auto",
                  max_clip_fraction: float = DEFAULT_MAX_CLIP_FRACTION,
                  path: str | None = None) -> RegionSet:
    """Build the tumour and peritumoral regions.

    Parameters
    ----------
    image : LoadedImage or SimpleITK.Image
        2D image (used for FOV detection and geometry); spacing in mm. A
        :class:`~HER2RadiomicsLib.imaging.io.LoadedImage` also says whether its spacing is
        known (rings, defined in mm, refuse a placeholder spacing) and names its file in
        errors; a plain SimpleITK image's spacing is taken as known.
    mask : SimpleITK.Image
        2D binary tumour mask on the image grid.
    rings_mm : str or iterable of float
        Expansion distances in mm, e.g. ``"3,5,8"``.
    annuli : bool
        Also produce ``peri_3-5mm``, ``peri_5-8mm``... between consecutive distances.
    combined : iterable of float or "all"
        Distances ``d`` for which ``tumor+peri_<d>mm`` (tumour plus its 0-d ring) is produced.
    fov : "auto", None or SimpleITK.Image
        Valid-area mask: detected (``"auto"``), the whole image (``None``), or given.
    max_clip_fraction : float
        A ring losing more than this share of its area to clipping is flagged.
    path : str, optional
        The image as errors name it (default: the loaded image's file, else ``image``).

    Returns
    -------
    RegionSet
    """
    spacing_known = getattr(image, "spacing_known", True)
    path = path or getattr(image, "path", None) or "image"
    image = getattr(image, "image", image)          # a LoadedImage gives its SimpleITK image
    distances = parse_rings(rings_mm)
    if distances and not spacing_known:
        raise SpacingUnknownError(path, "peritumoral rings")
    if image.GetDimension() != 2 or mask.GetDimension() != 2:
        raise InputError(f"{path}: rings need 2D image and mask")
    sx, sy = mask.GetSpacing()
    tum = sitk.GetArrayFromImage(mask) > 0
    if not tum.any():
        raise InputError(f"{path}: tumour mask is empty")
    h, w = tum.shape

    if isinstance(fov, sitk.Image):
        fov_arr = sitk.GetArrayFromImage(fov) > 0
        if fov_arr.shape != tum.shape:
            raise InputError(f"{path}: FOV mask size {fov_arr.shape[::-1]} differs from image "
                             f"{tum.shape[::-1]}")
        fov_source = "user"
    elif fov == "auto" and not distances:
        # the field of view only clips rings: without rings there is nothing to detect it for
        fov_arr = np.ones_like(tum)
        fov_source = "not needed (no rings)"
    elif fov == "auto":
        fov_arr = sitk.GetArrayFromImage(detect_fov(image)) > 0
        fov_source = "detected"
        share = (fov_arr & tum).sum() / tum.sum()
        if share < _FOV_MIN_TUMOUR_SHARE:
            log.warning("%s: detected field of view covers only %.0f%% of the tumour; using "
                        "the whole image", path, 100 * share)
            fov_arr = np.ones_like(tum)
            fov_source = "whole-image (detection failed)"
    else:
        fov_arr = np.ones_like(tum)
        fov_source = "whole-image"

    out = RegionSet(fov_source=fov_source)
    out.fov = _like(fov_arr, mask)
    px_area = sx * sy
    out.masks["tumor"] = _like(tum, mask)
    out.qc["tumor"] = {"area_mm2": float(tum.sum() * px_area), "area_px": int(tum.sum()),
                       "unclipped_area_mm2": float(tum.sum() * px_area),
                       "clipped_fraction": float(1 - (tum & fov_arr).sum() / tum.sum()),
                       "flagged": False}
    if combined and combined != "all" and not distances:
        raise InputError(f"combined regions tumour+{combined} mm need those distances in "
                         "--rings (no ring distances given)")
    if distances:
        from scipy import ndimage as ndi  # when run: see detect_fov
        pad_x = int(math.ceil(max(distances) / sx)) + 1
        pad_y = int(math.ceil(max(distances) / sy)) + 1
        grid = (h + 2 * pad_y) * (w + 2 * pad_x)
        if grid > MAX_RING_GRID_PX:
            # bool + float64 distance + a band mask per ring: ~10 bytes a pixel at least
            raise InputError(
                f"{path}: a {max(distances):g} mm ring at {sx:.4g} x {sy:.4g} mm pixels needs a "
                f"{w + 2 * pad_x:,} x {h + 2 * pad_y:,} px working grid (~{10 * grid / 2**30:,.0f}"
                " GB); check the pixel spacing")
        # The distance map only where a ring can reach: the tumour's bounding box grown by the
        # padding (a pixel farther is > the largest ring away). Every tumour pixel, hence
        # every nearest one, lies inside, so the exact transform gives the same distances
        # there as on the whole padded grid (Testing/test_rings_window.py), at a fraction of
        # the cost: a BUS-BRA tumour's window is ~1/4 of the padded image.
        ys, xs = np.flatnonzero(tum.any(axis=1)), np.flatnonzero(tum.any(axis=0))
        y0, y1 = ys[0] - pad_y, ys[-1] + pad_y + 1        # window rows/cols in image indices
        x0, x1 = xs[0] - pad_x, xs[-1] + pad_x + 1
        tp = np.zeros((y1 - y0, x1 - x0), bool)
        iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)   # inside image
        tp[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = tum[iy0:iy1, ix0:ix1]
        dist = ndi.distance_transform_edt(~tp, sampling=(sy, sx))
        inside = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        valid = fov_arr[iy0:iy1, ix0:ix1]

        def clip(band):
            """The window's band on the image grid, clipped to the valid area."""
            out_arr = np.zeros((h, w), bool)
            out_arr[iy0:iy1, ix0:ix1] = band[inside] & valid
            return out_arr
        specs = ring_specs(distances, annuli=annuli)
        for spec in specs:
            band = (~tp) & (dist > spec.inner_mm) & (dist <= spec.outer_mm)
            full = int(band.sum())
            clipped = clip(band)
            kept = int(clipped.sum())
            frac = 1.0 - kept / full if full else 1.0
            out.masks[spec.name] = _like(clipped, mask)
            out.qc[spec.name] = {"area_mm2": kept * px_area, "area_px": kept,
                                 "unclipped_area_mm2": full * px_area,
                                 "clipped_fraction": frac,
                                 "flagged": bool(frac > max_clip_fraction or kept == 0)}
        if combined == "all":
            combined = distances
        for d in parse_rings(combined) if combined else []:
            ring = RingSpec(0.0, d).name
            if ring not in out.masks:
                raise InputError(f"combined region tumour+{_fmt(d)} mm needs {_fmt(d)} in --rings")
            name = f"tumor+peri_{_fmt(d)}mm"
            arr = tum | (sitk.GetArrayFromImage(out.masks[ring]) > 0)
            q = out.qc[ring]
            out.masks[name] = _like(arr, mask)
            out.qc[name] = {"area_mm2": float(arr.sum() * px_area), "area_px": int(arr.sum()),
                            "unclipped_area_mm2": (q["unclipped_area_mm2"]
                                                   + out.qc["tumor"]["area_mm2"]),
                            "clipped_fraction": q["clipped_fraction"], "flagged": q["flagged"]}
        lm = tum.astype(np.uint8)
        out.labels = {"tumor": 1}
        edges = [0.0] + distances
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            name = RingSpec(a, b).name
            arr = sitk.GetArrayFromImage(out.masks[name]) > 0 if name in out.masks else clip(
                (~tp) & (dist > a) & (dist <= b))
            lm[arr & (lm == 0)] = i + 2
            out.labels[name] = i + 2
        out.label_map = _like(lm, mask, binary=False)
    else:
        out.label_map = _like(tum, mask)
        out.labels = {"tumor": 1}
    for name in out.flagged:
        log.warning("%s: region %s lost %.0f%% of its area to the image border / field of view",
                    path, name, 100 * out.qc[name]["clipped_fraction"])
    return out


def _like(arr: np.ndarray, ref: sitk.Image, binary: bool = True) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    return img


def write_regions(regions: RegionSet, out_dir, extra: dict | None = None) -> Path:
    """Write ``<region>.nrrd`` per region, ``labels.nrrd``, ``fov.nrrd`` and ``rings.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, img in regions.masks.items():
        write_image(img, out_dir / f"{name}.nrrd")
    write_image(regions.label_map, out_dir / "labels.nrrd")
    if regions.fov is not None:
        write_image(regions.fov, out_dir / "fov.nrrd")
    doc = {"regions": regions.qc, "labels": regions.labels, "fov_source": regions.fov_source,
           "flagged": regions.flagged, **(extra or {})}
    atomic_write_text(out_dir / "rings.json", json.dumps(doc, indent=2))
    return out_dir / "rings.json"


#: regions one bit-coded label map can carry (bit 0 .. 30 of an unsigned 32-bit integer; bit
#: 31 is left free so a reader that takes the file as signed still sees positive labels)
MAX_BIT_REGIONS = 31


def encode_region_bits(masks: dict) -> tuple[sitk.Image, list]:
    """Overlapping region masks as one label map: region ``i`` sets bit ``i``.

    Nested rings (0-3 mm inside 0-5 mm) overlap, so an ordinary label map cannot hold them;
    the bits can, in one file a Slicer CLI takes as an ``image type="label"`` input.

    Parameters
    ----------
    masks : dict
        ``{region name: binary mask}``, all on one grid (the first mask's).

    Returns
    -------
    (SimpleITK.Image, list)
        UInt32 label map on the masks' grid and the region names in bit order.
    """
    names = list(masks)
    if not names:
        raise InputError("no region to encode")
    if len(names) > MAX_BIT_REGIONS:
        raise InputError(f"{len(names)} regions; one label map carries at most "
                         f"{MAX_BIT_REGIONS}")
    ref = masks[names[0]]
    bits = np.zeros(sitk.GetArrayViewFromImage(ref).shape, np.uint32)
    for i, name in enumerate(names):
        m = masks[name]
        if m.GetSize() != ref.GetSize():
            raise InputError(f"region '{name}': size {m.GetSize()} differs from "
                             f"'{names[0]}' {ref.GetSize()}")
        bits |= (sitk.GetArrayViewFromImage(m) > 0).astype(np.uint32) << np.uint32(i)
    out = sitk.GetImageFromArray(bits)
    out.CopyInformation(ref)
    return out, names


def decode_region_bits(label: sitk.Image, names, reference: sitk.Image | None = None,
                       path="label map") -> dict:
    """The masks of :func:`encode_region_bits` back, in the order of ``names``.

    ``reference`` (the image the features are taken from) gives the grid: sizes must match,
    and the masks take its origin, spacing and direction. A region whose bit is set nowhere
    is an error (it would be silently missing from the features).
    """
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)
             if n.strip()]
    if not names:
        raise InputError(f"{path}: no region names given for the bit-coded label map")
    if len(names) > MAX_BIT_REGIONS:
        raise InputError(f"{path}: {len(names)} region names; at most {MAX_BIT_REGIONS}")
    if len(set(names)) != len(names):
        raise InputError(f"{path}: region names repeat: {','.join(names)}")
    arr = sitk.GetArrayFromImage(label)
    if arr.ndim == 3 and arr.shape[0] == 1:     # Slicer writes a 2D image as one slice
        arr = arr[0]
    if np.issubdtype(arr.dtype, np.floating) or (arr < 0).any():
        raise InputError(f"{path}: not a bit-coded label map (negative or fractional values)")
    arr = arr.astype(np.uint64)
    if reference is not None and arr.shape != sitk.GetArrayViewFromImage(reference).shape:
        raise InputError(f"{path}: size {arr.shape[::-1]} differs from the image's "
                         f"{reference.GetSize()}")
    masks = {}
    for i, name in enumerate(names):
        m = ((arr >> np.uint64(i)) & np.uint64(1)).astype(np.uint8)
        if not m.any():
            raise InputError(f"{path}: region '{name}' (bit {i}) is empty")
        img = sitk.GetImageFromArray(m)
        if reference is not None:
            img.CopyInformation(reference)
        masks[name] = img
    return masks
