"""Overlap and surface-distance metrics between two binary 2D masks on the same grid.

Surface distances use the exact Euclidean distance transform with the pixel spacing, so they are
in mm when the spacing is known (pass ``spacing=(1, 1)`` for pixels).  The boundary of a mask is
its set of pixels with a 4-connected background neighbour.  HD95 follows the common definition
(e.g. MONAI): the larger of the two directed 95th-percentile boundary distances.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def _boundary(m: np.ndarray) -> np.ndarray:
    return m & ~ndi.binary_erosion(m, structure=ndi.generate_binary_structure(2, 1),
                                   border_value=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice = 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    den = a.sum() + b.sum()
    return 1.0 if den == 0 else float(2 * (a & b).sum() / den)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard (IoU) = |A∩B| / |A∪B|; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def directed_surface_distances(a, b, spacing=(1.0, 1.0)) -> np.ndarray:
    """Distances from each boundary pixel of ``a`` to the nearest boundary pixel of ``b``.

    ``spacing`` is (x, y) = (column, row) in mm; arrays are indexed (row, column).
    """
    ba, bb = _boundary(a.astype(bool)), _boundary(b.astype(bool))
    if not ba.any() or not bb.any():
        return np.array([])
    dt = ndi.distance_transform_edt(~bb, sampling=(spacing[1], spacing[0]))
    return dt[ba]


def surface_metrics(a, b, spacing=(1.0, 1.0)) -> dict:
    """HD95, maximum Hausdorff distance and mean (symmetric) surface distance.

    Returns NaN for all three when either mask is empty.
    """
    dab = directed_surface_distances(a, b, spacing)
    dba = directed_surface_distances(b, a, spacing)
    if dab.size == 0 or dba.size == 0:
        return {"hd95": math.nan, "hd": math.nan, "msd": math.nan}
    return {"hd95": float(max(np.percentile(dab, 95), np.percentile(dba, 95))),
            "hd": float(max(dab.max(), dba.max())),
            "msd": float((dab.sum() + dba.sum()) / (dab.size + dba.size))}


def compare_masks(a, b, spacing=(1.0, 1.0)) -> dict:
    """All agreement metrics between two masks (``a`` = reference).

    Returns
    -------
    dict
        ``dice``, ``jaccard``, ``hd95``, ``hd``, ``msd`` (spacing units), ``area_a``, ``area_b``
        (spacing units squared), ``area_diff_pct`` (100 (B − A) / A), ``centroid_shift``
        (spacing units).
    """
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    px = spacing[0] * spacing[1]
    out = {"dice": dice(a, b), "jaccard": jaccard(a, b), **surface_metrics(a, b, spacing)}
    out["area_a"] = float(a.sum() * px)
    out["area_b"] = float(b.sum() * px)
    out["area_diff_pct"] = (100.0 * (out["area_b"] - out["area_a"]) / out["area_a"]
                            if a.any() else math.nan)
    if a.any() and b.any():
        ca = np.array(ndi.center_of_mass(a)) * (spacing[1], spacing[0])
        cb = np.array(ndi.center_of_mass(b)) * (spacing[1], spacing[0])
        out["centroid_shift"] = float(np.linalg.norm(ca - cb))
    else:
        out["centroid_shift"] = math.nan
    return out
