r"""Neighbouring grey-tone difference matrix (NGTDM): a pixel against its neighbours' mean.

For each region pixel of level i, Ā is the mean level of its neighbours in the region (every
offset at the ``distances``, both ways). Per grey level i present: n_i pixels, p_i = n_i / N_vp,
s_i = Σ |i - Ā| over those pixels (a pixel without any neighbour in the region counts in n_i
with a difference of 0, as pyradiomics counts it). N_gp levels present, N_vp pixels; sums
over i, j run over the levels present.

Each feature (pyradiomics' name), its formula and its IBSI name:

- Coarseness: 1 / Σ p_i s_i; 10⁶ when Σ p_i s_i = 0. IBSI ngt_coarseness.
- Contrast: (Σ_i Σ_j p_i p_j (i - j)² / (N_gp (N_gp - 1))) (Σ s_i / N_vp); 0 when N_gp = 1.
  IBSI ngt_contrast.
- Busyness: Σ p_i s_i / Σ_i Σ_j |i p_i - j p_j|; 0 when the denominator is 0.
  IBSI ngt_busyness.
- Complexity: Σ_i Σ_j |i - j| (p_i s_i + p_j s_j) / (p_i + p_j) / N_vp. IBSI ngt_complexity.
- Strength: Σ_i Σ_j (p_i + p_j) (i - j)² / Σ s_i; 0 when Σ s_i = 0. IBSI ngt_strength.
"""
from __future__ import annotations

import numpy as np

from .region import Region, Settings

NGTDM = ("Coarseness", "Contrast", "Busyness", "Complexity", "Strength")


def ngtdm(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """Neighbouring grey-tone difference features of one region (see the module's table)."""
    count = np.zeros(region.lv.size, dtype=np.int64)    # neighbours in the region
    total = np.zeros(count.size, dtype=np.float64)      # the sum of their levels
    for b in region.neighbour_levels(settings.distances):
        count += b > 0
        total += b
    return ngtdm_values(region.lv, count, total, region.present, names)


def ngtdm_values(lv, c, total, present, names=None) -> dict:
    """:func:`ngtdm` from each region pixel's level ``lv``, its number of neighbours in the
    region ``c`` and the sum of their levels ``total``; ``present``: the levels present."""
    return ngtdm_features([(lv, c, total, present)], names)[0]


def _counts(lv, c, total, present):
    """Per level present: the pixel count n_i and the summed difference s_i."""
    diff = np.where(c > 0, np.abs(lv - total / np.maximum(c, 1)), 0.0)
    # counted per level (levels start at 1), then the levels present picked: each bin adds
    # the same pixels in the same order as counting by the level's position would
    top = int(present[-1]) + 1
    n = np.bincount(lv, minlength=top)[present].astype(np.float64)
    return n, np.bincount(lv, weights=diff, minlength=top)[present]


def ngtdm_features(regions, names=None) -> list:
    """:func:`ngtdm_values` of several regions at once, ``regions`` a list of ``(lv, c,
    total, present)``: the per-pixel work per region, the formulas once for all of them on
    (region, level, level) arrays zero-padded to the most levels (a region's formulas alone
    cost more numpy calls than arithmetic). A padded level has p = s = 0 and is masked out
    of the pairwise sums where a term would not vanish with it (Busyness, Complexity,
    Strength)."""
    return ngtdm_from_counts([_counts(*r) + (r[3],) for r in regions], names)


def ngtdm_from_counts(counts, names=None) -> list:
    """:func:`ngtdm_features` from each region's ``(n, s, present)``: pixels and summed
    differences per level present (float64), and those levels."""
    R, G = len(counts), max(len(c[2]) for c in counts)
    n, s, i = np.zeros((R, G)), np.zeros((R, G)), np.zeros((R, G))
    valid = np.zeros((R, G), bool)
    for k, (nk, sk, lk) in enumerate(counts):
        g = len(lk)
        n[k, :g], s[k, :g], i[k, :g], valid[k, :g] = nk, sk, lk, True
    nvp = n.sum(1)
    p = n / nvp[:, None]
    ngp = valid.sum(1).astype(np.float64)
    pair = valid[:, :, None] & valid[:, None, :]
    di2 = (i[:, :, None] - i[:, None, :]) ** 2
    ps = np.sum(p * s, 1)
    ssum = np.sum(s, 1)
    div = ngp * (ngp - 1)
    ip = i * p
    absdiff = np.sum(np.where(pair, np.abs(ip[:, :, None] - ip[:, None, :]), 0.0), (1, 2))
    psi = p * s
    denom = p[:, :, None] + p[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "Coarseness": np.where(ps != 0, 1.0 / ps, 1e6),
            "Contrast": np.where(div != 0, np.sum(p[:, :, None] * p[:, None, :] * di2, (1, 2))
                                 * ssum / nvp / np.where(div != 0, div, 1.0), 0.0),
            "Busyness": np.where(absdiff != 0, ps / absdiff, 0.0),
            "Complexity": np.sum(np.where(pair, np.abs(i[:, :, None] - i[:, None, :])
                                          * (psi[:, :, None] + psi[:, None, :])
                                          / np.where(denom == 0, 1, denom), 0.0), (1, 2))
            / nvp,
            "Strength": np.where(ssum != 0, np.sum(np.where(pair, denom * di2, 0.0), (1, 2))
                                 / np.where(ssum != 0, ssum, 1.0), 0.0)}
    return [{k: float(out[k][r]) for k in (names or NGTDM)} for r in range(R)]
