r"""First-order statistics: the distribution of grey values inside the region.

Notation (as pyradiomics' documentation): X, the N_p grey values of the region's pixels;
``c`` = ``voxelArrayShift``; X̄ the mean; P(i) the share of pixels in discretised grey level
i (N_g levels present); ε machine epsilon; A the area of one pixel (mm²).

==================================  ============================================  ==================
Feature (pyradiomics)               Formula                                       IBSI name
==================================  ============================================  ==================
Energy                              Σ (X(i) + c)²                                 stat_energy
TotalEnergy                         A · Σ (X(i) + c)²                             (none)
Entropy                             -Σ_i P(i) log2(P(i) + ε)                      ih_entropy
Minimum                             min X                                         stat_min
Maximum                             max X                                         stat_max
10Percentile, 90Percentile          P10, P90 (numpy's linear method)              stat_p10, stat_p90
InterquartileRange                  P75 - P25                                     stat_iqr
Range                               max X - min X                                 stat_range
MeanAbsoluteDeviation               (1/N_p) Σ |X(i) - X̄|                          stat_mad
RobustMeanAbsoluteDeviation         the same over the values with P10 ≤ X ≤ P90   stat_rmad
Mean                                X̄                                             stat_mean
Median                              the median                                    stat_median
RootMeanSquared                     sqrt((1/N_p) Σ (X(i) + c)²)                   stat_rms
StandardDeviation                   sqrt(Variance) (off by default)               (none)
Skewness                            μ3 / μ2^(3/2), 0 for a flat region            stat_skew
Kurtosis                            μ4 / μ2² (not the excess), 0 when flat        stat_kurt + 3
Variance                            μ2 = (1/N_p) Σ (X(i) - X̄)²                    stat_var
Uniformity                          Σ_i P(i)²                                     ih_uniformity
==================================  ============================================  ==================

μk = (1/N_p) Σ (X(i) - X̄)^k, the k-th central moment. IBSI's kurtosis is the excess
(μ4/μ2² - 3); pyradiomics (and so this engine) does not subtract 3.
"""
from __future__ import annotations

import math

import numpy as np

from .region import EPS, Region, Settings

FIRSTORDER = ("10Percentile", "90Percentile", "Energy", "Entropy", "InterquartileRange",
              "Kurtosis", "Maximum", "MeanAbsoluteDeviation", "Mean", "Median", "Minimum",
              "Range", "RobustMeanAbsoluteDeviation", "RootMeanSquared", "Skewness",
              "TotalEnergy", "Uniformity", "Variance")
FIRSTORDER_OPTIONAL = ("StandardDeviation",)       # off unless asked for (equals sqrt(Variance))


def firstorder(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """First-order statistics of the region's grey values (see the module's table).

    ``Entropy`` and ``Uniformity`` use the discretised values; ``Energy``, ``TotalEnergy`` and
    ``RootMeanSquared`` add ``voxel_array_shift`` first; ``TotalEnergy`` multiplies by the pixel
    area (mm²); ``Kurtosis`` is m4 / m2² (not the excess).
    """
    counts = np.bincount(region.lv)
    return firstorder_values(region.values, counts[counts > 0], region.spacing,
                             settings.voxel_array_shift, names)


def firstorder_values(x: np.ndarray, counts: np.ndarray, spacing=(1.0, 1.0),
                      voxel_array_shift=0.0, names=None) -> dict:
    """:func:`firstorder` from the region's grey values ``x`` (float64, any order) and the
    pixel count of each grey level present (``counts``)."""
    p = counts / counts.sum()
    n = x.size
    # x + 0.0 is x: no pass over the pixels when there is no shift
    shifted = x + voxel_array_shift if voxel_array_shift else x
    mean = x.mean()
    dev = x - mean
    dev2 = dev * dev          # products, not ** 3 / ** 4: numpy's pow is ~20x slower
    m2, m3, m4 = dev2.mean(), (dev2 * dev).mean(), (dev2 * dev2).mean()
    xs = np.sort(x)           # one sort for every quantile (np.percentile re-partitions)
    p10, p25, p75, p90 = (_quantile(xs, q) for q in (0.10, 0.25, 0.75, 0.90))
    median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0
    inner = x[(x >= p10) & (x <= p90)]
    energy = float(np.sum(shifted * shifted))
    # numpy's std is the square root of this very mean of squared deviations (the same
    # operations in the same order): no second pass for it
    sd = np.sqrt(m2)
    flat = m2 == 0
    out = {
        "10Percentile": p10, "90Percentile": p90,
        "Energy": energy,
        "TotalEnergy": energy * float(np.prod(spacing)),
        "Entropy": -np.sum(p * np.log2(p + EPS)),
        "InterquartileRange": p75 - p25,
        "Kurtosis": 0.0 if flat else m4 / m2 ** 2.0,
        "Maximum": xs[-1], "Minimum": xs[0], "Mean": mean, "Median": median,
        "MeanAbsoluteDeviation": np.abs(dev).mean(),
        "Range": xs[-1] - xs[0],
        "RobustMeanAbsoluteDeviation": np.abs(inner - inner.mean()).mean(),
        "RootMeanSquared": math.sqrt(energy / n),
        "Skewness": 0.0 if flat else m3 / m2 ** 1.5,
        "StandardDeviation": sd,
        "Uniformity": np.sum(p ** 2),
        "Variance": sd ** 2,
    }
    return {k: float(out[k]) for k in (names or FIRSTORDER)}


def _quantile(xs: np.ndarray, q: float) -> float:
    """``numpy.percentile(x, 100 q)`` (linear method) of the sorted values ``xs``: the same
    virtual index and the same two-sided interpolation numpy uses."""
    v = (len(xs) - 1) * q
    lo = math.floor(v)
    hi = min(lo + 1, len(xs) - 1)
    t = v - lo
    a, b = float(xs[lo]), float(xs[hi])
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t
