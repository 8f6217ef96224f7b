"""What every feature class shares: discretisation, the settings, and the region object.

A :class:`Region` is one region of one (filtered) image after discretisation, holding the
arrays every class reads (the region's pixels, their grey levels, the levels present and each
pixel's neighbour at an offset), computed once when first asked for and passed explicitly
from class to class: no hidden state, safe in threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = np.spacing(1)      # pyradiomics guards every log2 and division with machine epsilon


@dataclass(frozen=True)
class Settings:
    """The pyradiomics settings the feature classes read (one image type's).

    Values are kept as the params file gives them (an integer ``binWidth`` stays an
    integer), so the arithmetic is the same as reading the params dict directly.

    Attributes
    ----------
    bin_width : float
        ``binWidth``: width of a grey-level bin, in the image's grey units.
    bin_count : int or None
        ``binCount``: a fixed number of bins instead of a fixed width.
    distances : tuple of int
        ``distances``: Chebyshev distances (pixels) of the GLCM, GLDM and NGTDM neighbours.
    symmetrical : bool
        ``symmetricalGLCM``: count each pair both ways.
    weighting_norm : str or None
        ``weightingNorm``: merge the GLCM and GLRLM angles with distance weights.
    gldm_alpha : float
        ``gldm_a``: largest grey-level difference of a dependent neighbour.
    voxel_array_shift : float
        ``voxelArrayShift``: added to the grey values of Energy, TotalEnergy and RMS.
    """

    bin_width: float = 25
    bin_count: int | None = None
    distances: tuple = (1,)
    symmetrical: bool = True
    weighting_norm: str | None = None
    gldm_alpha: float = 0
    voxel_array_shift: float = 0

    @classmethod
    def from_params(cls, st: dict) -> "Settings":
        """The settings of one image type, from pyradiomics' ``setting`` names."""
        return cls(bin_width=st.get("binWidth", 25), bin_count=st.get("binCount"),
                   distances=tuple(st.get("distances", [1])),
                   symmetrical=st.get("symmetricalGLCM", True),
                   weighting_norm=st.get("weightingNorm"), gldm_alpha=st.get("gldm_a", 0),
                   voxel_array_shift=st.get("voxelArrayShift", 0))


# -- discretisation ------------------------------------------------------------------------

def bin_edges(values: np.ndarray, bin_width: float = 25.0, bin_count: int | None = None):
    """Bin edges of the region's grey values.

    Fixed bin width: edges are multiples of ``bin_width`` from the largest one not above the
    minimum up to beyond the maximum, so every bin is half-open ``[lower, upper)``. Fixed bin
    count: ``bin_count`` equal bins over ``[min, max]``, the top edge nudged up by one so the
    maximum falls in the last bin.

    With a fixed width W this is IBSI's "fixed bin size" discretisation:
    ``X_b = floor(X / W) - floor(min(X) / W) + 1``.
    """
    if bin_count is not None:
        edges = np.histogram(values, int(bin_count))[1]
        edges[-1] += 1
        return edges
    lo, hi = values.min(), values.max()
    edges = np.arange(lo - (lo % bin_width), hi + 2 * bin_width, bin_width)
    if len(edges) == 1:          # a flat region: one bin around its single value
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def discretise(image: np.ndarray, mask: np.ndarray, bin_width: float = 25.0,
               bin_count: int | None = None) -> np.ndarray:
    """Grey levels 1, 2, ... inside the mask (0 outside), by ``numpy.digitize`` on the edges."""
    out = np.zeros(image.shape, dtype=np.int64)
    vals = image[mask]
    out[mask] = np.digitize(vals, bin_edges(vals, bin_width, bin_count))
    return out


# -- the region ------------------------------------------------------------------------------

class Region:
    """One discretised region: what every texture class reads, computed once.

    Parameters
    ----------
    levels : numpy.ndarray
        Grey levels 1, 2, ... of the region's pixels, 0 outside (2D, int).
    spacing : tuple of float
        (x, y) = (column, row) pixel spacing in mm, as SimpleITK gives it.
    values : numpy.ndarray, optional
        The region's grey values (float64, row-major order): first order needs them.

    Attributes
    ----------
    ys, xs : numpy.ndarray
        Row and column of each region pixel, row-major.
    lv : numpy.ndarray
        Grey level of each region pixel (same order).
    present : numpy.ndarray
        The grey levels that occur in the region, ascending.
    """

    def __init__(self, levels: np.ndarray, spacing=(1.0, 1.0), values=None):
        self.levels = levels
        self.spacing = spacing
        self.values = values
        self.inside = levels > 0
        self.ys, self.xs = np.nonzero(self.inside)
        self.lv = levels[self.ys, self.xs]
        found = np.flatnonzero(np.bincount(self.lv, minlength=1))
        self.present = found[found > 0]
        self._padded = {}
        self._nbr = {}

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray, spacing=(1.0, 1.0),
           settings: Settings = Settings()) -> "Region":
        """The region ``mask`` of ``image``, discretised with ``settings``' bins."""
        levels = discretise(image, mask, settings.bin_width, settings.bin_count)
        return cls(levels, spacing, image[mask].astype(np.float64))

    def neighbour(self, dy: int, dx: int) -> np.ndarray:
        """Level of the pixel at (+dy, +dx) from each region pixel (0: outside region/image).

        GLCM pairs, GLDM dependences and NGTDM sums all read the same neighbours, so each
        offset is looked up once (one padded copy of the levels per distance)."""
        key = (dy, dx)
        if key not in self._nbr:
            r = max(abs(dy), abs(dx))
            if r not in self._padded:
                pad = np.pad(self.levels, r)
                self._padded[r] = (pad.ravel(), (self.ys + r) * pad.shape[1] + self.xs + r,
                                   pad.shape[1])
            flat, at, width = self._padded[r]
            self._nbr[key] = flat[at + dy * width + dx]
        return self._nbr[key]

    def neighbour_levels(self, distances=(1,)):
        """For every offset at the given Chebyshev distances (both ways), the level of each
        region pixel's neighbour at that offset (0 when outside the region or the image)."""
        for dy, dx in angles_2d(distances):
            for sy, sx in ((dy, dx), (-dy, -dx)):
                yield self.neighbour(int(sy), int(sx))


# -- helpers of several classes -----------------------------------------------------------------

def angles_2d(distances=(1,)) -> np.ndarray:
    """Offsets (row, column) at Chebyshev distance d for each d, one of each +/- pair (the one
    whose first non-zero element is positive), in pyradiomics' order."""
    out = []
    for d in sorted(set(int(v) for v in distances)):
        for dy in range(d, -d - 1, -1):
            for dx in range(d, -d - 1, -1):
                if max(abs(dy), abs(dx)) != d:
                    continue
                if dy < 0 or (dy == 0 and dx <= 0):
                    continue
                out.append((dy, dx))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def angle_weights(angles: np.ndarray, spacing, weighting_norm, kind: str) -> np.ndarray:
    """pyradiomics' weight of each angle when ``weightingNorm`` merges them, from the angle's
    length in mm (``spacing`` (x, y)). GLCM (``kind`` "glcm") weighs by exp(-distance²),
    GLRLM by the distance itself; an unknown norm weighs every angle 1."""
    sp = np.asarray(spacing, dtype=np.float64)[::-1]        # (row, column) spacing
    if kind == "glcm":
        w = np.empty(len(angles))
        for k, a in enumerate(np.abs(angles) * sp):
            w[k] = {"infinity": lambda a=a: math.exp(-max(a) ** 2),
                    "euclidean": lambda a=a: math.exp(-np.sum(a ** 2)),
                    "manhattan": lambda a=a: math.exp(-np.sum(a) ** 2)}.get(weighting_norm,
                                                                             lambda: 1.0)()
        return w
    return np.array([{"infinity": lambda a: max(a),
                      "euclidean": lambda a: math.sqrt(np.sum(a ** 2)),
                      "manhattan": lambda a: np.sum(a)}.get(weighting_norm, lambda a: 1.0)(
                          np.abs(ang) * sp) for ang in angles])


def pad_stack(arrays, fill=0.0):
    """Stack arrays of different sizes along a new first axis, padded at the end of each
    axis with ``fill`` (several regions' matrices computed in one batch)."""
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.full((len(arrays),) + shape, fill, dtype=np.float64)
    for r, a in enumerate(arrays):
        out[(r,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


def angle_means(rows) -> list:
    """Each feature's mean over the angles where it is defined (NaN where none is), in one
    call: per-feature ``numpy.nanmean`` costs more than the feature itself."""
    try:                     # the usual case: every feature has one value per angle
        a = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    except ValueError:
        shape = np.broadcast_shapes(*(np.shape(r) for r in rows))
        a = np.array([np.broadcast_to(np.asarray(r, dtype=np.float64), shape) for r in rows],
                     dtype=np.float64).reshape(len(rows), -1)
    ok = ~np.isnan(a)
    n = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, a, 0.0).sum(1) / n
    return [float(v) if c else float("nan") for v, c in zip(m, n)]


def angle_means_many(values: dict, keys) -> np.ndarray:
    """:func:`angle_means` of several regions at once: ``values[k]`` (regions, angles) arrays
    (or broadcastable to them); returns (len(keys), regions). The same sums as one region at a
    time (each row over its few angles, in order), in one call instead of one per region."""
    try:                     # the usual case: every feature has one value per angle
        a = np.array([values[k] for k in keys], dtype=np.float64)
        if a.ndim != 3:
            raise ValueError
    except ValueError:
        shape = np.broadcast_shapes(*(np.shape(values[k]) for k in keys))
        a = np.stack([np.broadcast_to(np.asarray(values[k], dtype=np.float64), shape)
                      for k in keys])
    ok = ~np.isnan(a)
    n = ok.sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, a, 0.0).sum(2) / n, np.nan)
