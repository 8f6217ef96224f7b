r"""The features shared by the run-length, size-zone and dependence matrices.

GLRLM, GLSZM and GLDM all count, per grey level i, "pieces" of size j: runs of length j
(GLRLM), 8-connected zones of j pixels (GLSZM), pixels with j - 1 dependent neighbours
(GLDM). Their features are the same formulas on different matrices, so they are written once
here; each class module names them its own way (:data:`FAMILY` -> the class's names).

Notation: P(i, j) the count of pieces of grey level i and size j (one matrix per angle for
GLRLM, averaged over angles afterwards); N_z = Σ P(i, j) the number of pieces (runs, zones;
for GLDM the number of pixels); N_p the number of pixels; p(i, j) = P(i, j) / N_z;
μ_i = Σ p(i, j) i, μ_j = Σ p(i, j) j; ε machine epsilon.

Each key, its formula, then its GLRLM / GLSZM / GLDM names:

- Small: Σ P(i,j) / j² / N_z. ShortRunEmphasis, SmallAreaEmphasis, SmallDependenceEmphasis.
- Large: Σ P(i,j) j² / N_z. LongRunEmphasis, LargeAreaEmphasis, LargeDependenceEmphasis.
- GLN: Σ_i (Σ_j P(i,j))² / N_z. GrayLevelNonUniformity (all three).
- GLNN: Σ_i (Σ_j P(i,j))² / N_z². GrayLevelNonUniformityNormalized (not GLDM).
- SizeNU: Σ_j (Σ_i P(i,j))² / N_z. RunLength-, SizeZone-, DependenceNonUniformity.
- SizeNUN: Σ_j (Σ_i P(i,j))² / N_z². The same names + Normalized.
- Percentage: N_z / N_p. RunPercentage, ZonePercentage (not GLDM).
- GLV: Σ p(i,j) (i - μ_i)². GrayLevelVariance (all three).
- SizeVariance: Σ p(i,j) (j - μ_j)². RunVariance, ZoneVariance, DependenceVariance.
- Entropy: -Σ p(i,j) log2(p(i,j) + ε). RunEntropy, ZoneEntropy, DependenceEntropy.
- LowGL: Σ P(i,j) / i² / N_z. LowGrayLevelRunEmphasis, LowGrayLevelZoneEmphasis,
  LowGrayLevelEmphasis.
- HighGL: Σ P(i,j) i² / N_z. The same with High.
- SmallLow: Σ P(i,j) / (i² j²) / N_z. ShortRun-, SmallArea-, SmallDependence-
  LowGrayLevelEmphasis.
- SmallHigh: Σ P(i,j) i² / j² / N_z. The same with HighGrayLevelEmphasis.
- LargeLow: Σ P(i,j) j² / i² / N_z. LongRun-, LargeArea-, LargeDependence-
  LowGrayLevelEmphasis.
- LargeHigh: Σ P(i,j) i² j² / N_z. The same with HighGrayLevelEmphasis.

The IBSI names are in each class's module.
"""
from __future__ import annotations

import numpy as np

from .region import EPS, angle_means_many, pad_stack

#: the shared features, in the order each class lists its names
FAMILY = ("Small", "Large", "GLN", "GLNN", "SizeNU", "SizeNUN", "Percentage", "GLV",
          "SizeVariance", "Entropy", "LowGL", "HighGL", "SmallLow", "SmallHigh", "LargeLow",
          "LargeHigh")


def _family(P, ivector, jvector, N, Np=None) -> dict:
    """The shared features of (grey level x size, angle) matrices of several regions at once:
    ``P`` (R, G, S, A), ``ivector`` (R, G) grey levels, ``jvector`` (S,) sizes, normalised by
    ``N`` (R, A: runs, zones or voxels per angle); ``Np`` (R, A: pixels) for the percentage.
    Returns ``{feature: (R, A) array}``."""
    pg, ps = P.sum(2), P.sum(1)                                   # (R, G, A), (R, S, A)
    i, j = ivector[:, :, None], jvector[None, :, None]
    j2 = j * j
    i2 = i * i
    pg2 = pg * pg
    ps2 = ps * ps
    out = {
        "Small": np.sum(ps / j2, 1) / N,
        "Large": np.sum(ps * j2, 1) / N,
        "GLN": np.sum(pg2, 1) / N,
        "GLNN": np.sum(pg2, 1) / N ** 2,
        "SizeNU": np.sum(ps2, 1) / N,
        "SizeNUN": np.sum(ps2, 1) / N ** 2,
        "LowGL": np.sum(pg / i2, 1) / N,
        "HighGL": np.sum(pg * i2, 1) / N,
    }
    if Np is not None:
        out["Percentage"] = N / Np
    pgn, psn = pg / N[:, None, :], ps / N[:, None, :]
    ui, uj = np.sum(pgn * i, 1), np.sum(psn * j, 1)
    out["GLV"] = np.sum(pgn * (i - ui[:, None, :]) ** 2, 1)
    out["SizeVariance"] = np.sum(psn * (j - uj[:, None, :]) ** 2, 1)
    p = P / N[:, None, None, :]
    out["Entropy"] = -np.sum(p * np.log2(p + EPS), (1, 2))
    i3, j3 = i2[:, :, None], j2[:, None]                          # (R, G, 1, 1), (1, 1, S, 1)
    out["SmallLow"] = np.sum(P / (i3 * j3), (1, 2)) / N
    out["SmallHigh"] = np.sum(P * i3 / j3, (1, 2)) / N
    out["LargeLow"] = np.sum(P * j3 / i3, (1, 2)) / N
    out["LargeHigh"] = np.sum(P * i3 * j3, (1, 2)) / N
    return out


def family_features(table: dict, Ps, presents, N=None, Np=None, names=None,
                    jvector=None) -> list:
    """The features of several regions of one class, named by ``table`` (:data:`FAMILY` key
    -> the class's name; a class without "Percentage" gets no ``Np``): ``Ps`` are (G_r, S_r, A)
    matrices (rows: the region's present grey levels; column s: size ``jvector[s]``, by
    default s + 1), zero-padded to a common size. ``N``/``Np`` default to the matrix sums
    (pixels: sum of size x count)."""
    P = pad_stack(Ps)
    R, G, S, A = P.shape
    ivector = pad_stack([p.astype(np.float64) for p in presents], 1.0)
    if jvector is None:
        jvector = np.arange(1, S + 1, dtype=np.float64)
    used = np.any(P != 0, axis=(0, 1, 3))     # sizes that occur: an empty one adds nothing
    if not used.all():
        P, jvector = P[:, :, used], jvector[used]
    if N is None:
        N = P.sum((1, 2))
    if Np is None and "Percentage" in table:
        Np = np.sum(P.sum(1) * jvector[None, :, None], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = _family(P, ivector, jvector, N, Np)
    keys = [k for k in vals if k in table]
    means = angle_means_many(vals, keys)                     # (features, regions)
    wanted = list(names or table.values())
    row = {table[k]: f for f, k in enumerate(keys)}
    return [{n: float(means[row[n], r]) for n in wanted} for r in range(R)]
