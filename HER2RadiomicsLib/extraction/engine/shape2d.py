r"""2D shape: the region's outline and extent, independent of the grey values.

The outline is pyradiomics' marching-squares contour on the pixel-centre grid (vertices at
the midpoints of the cell edges; diagonal neighbours form separate contours). Notation: the
contour's segments (a_k, b_k) in mm; N_p the region's pixels, A_px the area of one pixel;
λ_major ≥ λ_minor the eigenvalues of the covariance of the pixel centres (mm²).

======================  ===================================================  ================
Feature (pyradiomics)   Formula                                              IBSI
======================  ===================================================  ================
MeshSurface             A = ½ |Σ_k a_k × b_k| (area inside the contour)      (IBSI defines
PixelSurface            N_p A_px                                              morphology in
Perimeter               P = Σ_k |b_k - a_k|                                   3D only)
PerimeterSurfaceRatio   P / A
Sphericity              2 sqrt(π A) / P
MaximumDiameter         largest distance between two contour vertices
MajorAxisLength         4 sqrt(λ_major)
MinorAxisLength         4 sqrt(λ_minor)
Elongation              sqrt(λ_minor / λ_major)
======================  ===================================================  ================
"""
from __future__ import annotations

import math

import numpy as np

SHAPE2D = ("Elongation", "MajorAxisLength", "MaximumDiameter", "MeshSurface",
           "MinorAxisLength", "Perimeter", "PerimeterSurfaceRatio", "PixelSurface",
           "Sphericity")

# Marching squares on the pixel-centre grid: a cell's corners are (row, col) offsets
# (0,0), (0,1), (1,1), (1,0); contour vertices sit at the midpoints of the cell edges
# top, right, bottom, left. For each of the 16 corner patterns, the edge pairs joined.
_EDGE_MID = np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 0.5], [0.5, 0.0]])   # (row, col)
_CORNERS = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=np.float64)


def _cell_segments(saddle_joined: bool) -> dict:
    table = {}
    for code in range(1, 15):
        on = [(code >> k) & 1 for k in range(4)]
        segs = []
        if code in (5, 10):
            # two diagonal corners set: either each set corner is cut off alone, or the two
            # are joined through the cell centre (each unset corner cut off alone)
            cut = [k for k in range(4) if on[k] == (0 if saddle_joined else 1)]
            segs = [((k + 3) % 4, k) for k in cut]
        else:
            # the boundary crosses every edge whose two corners differ
            crossed = [e for e in range(4) if on[e] != on[(e + 1) % 4]]
            segs = [tuple(crossed)]
        table[code] = segs
    return table


def _oriented(a, b, set_corners):
    """Order the segment's ends so that the set corners lie on its left ((x, y) = (col, row))."""
    d = b - a
    c = set_corners.mean(0) - a
    cross = d[1] * c[0] - d[0] * c[1]     # in (x=col, y=row) coordinates
    return (a, b) if cross > 0 else (b, a)


def _segment_table():
    """Each corner pattern's oriented segments as arrays: ``ends[code, k]`` = (start, end)
    (row, col) of its k-th segment (two for the saddles 5 and 10, one for the others), and
    ``two[code]``: the pattern has a second segment."""
    table = _cell_segments(saddle_joined=False)    # diagonal neighbours: separate contours
    ends = np.zeros((16, 2, 2, 2))
    two = np.zeros(16, bool)
    for c in range(1, 15):
        on = np.array([(c >> k) & 1 for k in range(4)], bool)
        for k_seg, (e0, e1) in enumerate(table[c]):
            a, b = _EDGE_MID[e0], _EDGE_MID[e1]
            # the set corners on this segment's side: those nearer to it than the others
            if c in (5, 10):
                k = e1 if (e1 - e0) % 4 == 1 else e0
                side = _CORNERS[[k]] if on[k] else _CORNERS[on]
            else:
                side = _CORNERS[on]
            ends[c, k_seg] = _oriented(a, b, side)
        two[c] = len(table[c]) == 2
    return ends, two


_ENDS, _TWO = _segment_table()


def shape2d(mask: np.ndarray, spacing=(1.0, 1.0), names=None):
    """2D shape features of a region: marching-squares contour (perimeter, enclosed area,
    largest vertex distance) and the principal axes of the pixel centres.

    ``spacing`` is (x, y) = (column, row) in mm, as SimpleITK gives it.
    """
    m = np.pad(np.asarray(mask, bool), 1)
    sp = np.array([spacing[1], spacing[0]], dtype=np.float64)       # (row, col)
    mb = m.view(np.uint8)
    code = mb[:-1, :-1] | (mb[:-1, 1:] << 1) | (mb[1:, 1:] << 2) | (mb[1:, :-1] << 3)
    # every boundary cell's segments at once, looked up by its corner pattern (one pass,
    # no loop over the patterns): the first segment of each cell, then the saddles' second
    flat = code.ravel()
    cells = np.flatnonzero((flat > 0) & (flat < 15))
    kinds = flat[cells]
    ys, xs = np.divmod(cells, code.shape[1])
    base = np.stack([ys, xs], 1).astype(np.float64)
    two = _TWO[kinds]
    base = np.concatenate([base, base[two]])
    ends = np.concatenate([_ENDS[kinds, 0], _ENDS[kinds[two], 1]])        # (segments, 2, 2)
    A = (base + ends[:, 0]) * sp
    B = (base + ends[:, 1]) * sp
    # shoelace in (x, y) = (col, row)
    area2 = np.sum(A[:, 1] * B[:, 0] - B[:, 1] * A[:, 0])
    perimeter = np.sum(np.hypot(*(B - A).T))
    # contour vertices, doubled to integers (they lie on half-pixel positions); only the
    # leftmost and rightmost of each row can be corners of the convex hull, on which the
    # farthest pair lies: the others are dropped before the hull is sought
    vy = (2 * np.concatenate([base[:, 0] + ends[:, 0, 0], base[:, 0] + ends[:, 1, 0]])
          ).astype(np.intp)
    vx = (2 * np.concatenate([base[:, 1] + ends[:, 0, 1], base[:, 1] + ends[:, 1, 1]])
          ).astype(np.intp)
    lo = np.full(2 * code.shape[0] + 1, np.iinfo(np.intp).max)
    hi = np.full(lo.size, -1)
    np.minimum.at(lo, vy, vx)
    np.maximum.at(hi, vy, vx)
    rows = np.flatnonzero(hi >= 0)
    V = np.concatenate([np.stack([rows, lo[rows]], 1), np.stack([rows, hi[rows]], 1)])
    area = abs(area2) / 2.0
    # (base + a) * spacing, as the segments' ends were computed: halves are exact
    diameter = _max_distance(V.astype(np.float64) / 2.0 * sp)
    coords = np.argwhere(m).astype(np.float64) * sp
    coords -= coords.mean(0)
    coords /= math.sqrt(len(coords))
    ev = np.linalg.eigvals(coords.T @ coords)
    ev = np.where((ev < 0) & (ev > -1e-10), 0.0, ev)
    ev.sort()
    npx = int(np.count_nonzero(m))
    out = {
        "MeshSurface": area, "PixelSurface": npx * sp[0] * sp[1], "Perimeter": perimeter,
        "PerimeterSurfaceRatio": perimeter / area if area else np.nan,
        "Sphericity": 2 * math.sqrt(math.pi * area) / perimeter if perimeter else np.nan,
        "MaximumDiameter": diameter,
        "MajorAxisLength": math.sqrt(ev[1]) * 4 if ev[1] >= 0 else np.nan,
        "MinorAxisLength": math.sqrt(ev[0]) * 4 if ev[0] >= 0 else np.nan,
        "Elongation": math.sqrt(ev[0] / ev[1]) if ev[0] >= 0 and ev[1] > 0 else np.nan,
    }
    return {k: float(out[k]) for k in (names or SHAPE2D)}


def _max_distance(V: np.ndarray) -> float:
    """Largest distance between two points. The farthest pair are corners of the convex
    hull, so only those are compared (a ring's contour has thousands of vertices, its hull a
    few hundred); the same pairwise arithmetic as comparing all points, in blocks."""
    if len(V) > 64:
        # when run: scipy.spatial only for contours this long (one-case extract start-up)
        from scipy.spatial import ConvexHull, QhullError
        try:
            V = V[ConvexHull(V).vertices]
        except (QhullError, ValueError):   # collinear points: no 2D hull, compare them all
            pass
    best = 0.0
    for s in range(0, len(V), 2048):
        d = V[s:s + 2048, None, :] - V[None, :, :]
        best = max(best, float(np.sqrt((d ** 2).sum(-1)).max()))
    return best
