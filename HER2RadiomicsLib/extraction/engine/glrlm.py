r"""Grey-level run-length matrix (GLRLM): runs of one grey level along a direction.

P(i, j | θ) counts the runs (maximal lines of consecutive region pixels of level i) of length
j along each of the four 2D directions θ (0°, 45°, 90°, 135°). A direction along which the
region is one pixel thick everywhere is left out (pyradiomics leaves it out), instead of
counting every pixel as a run of length 1. The features are computed per direction and
averaged; with ``weightingNorm`` the directions are first summed into one matrix, each
weighted by its length in mm (infinity, Euclidean or Manhattan norm).

The features and their formulas are the family's (:mod:`.family`), with N_z = N_r, the number
of runs, and N_p the region's pixels:

=====================================  ============  ==============
Feature (pyradiomics)                  Family key    IBSI name
=====================================  ============  ==============
ShortRunEmphasis                       Small         rlm_sre
LongRunEmphasis                        Large         rlm_lre
GrayLevelNonUniformity                 GLN           rlm_glnu
GrayLevelNonUniformityNormalized       GLNN          rlm_glnu_norm
RunLengthNonUniformity                 SizeNU        rlm_rlnu
RunLengthNonUniformityNormalized       SizeNUN       rlm_rlnu_norm
RunPercentage                          Percentage    rlm_r_perc
GrayLevelVariance                      GLV           rlm_gl_var
RunVariance                            SizeVariance  rlm_rl_var
RunEntropy                             Entropy       rlm_rl_entr
LowGrayLevelRunEmphasis                LowGL         rlm_lgre
HighGrayLevelRunEmphasis               HighGL        rlm_hgre
ShortRunLowGrayLevelEmphasis           SmallLow      rlm_srlge
ShortRunHighGrayLevelEmphasis          SmallHigh     rlm_srhge
LongRunLowGrayLevelEmphasis            LargeLow      rlm_lrlge
LongRunHighGrayLevelEmphasis           LargeHigh     rlm_lrhge
=====================================  ============  ==============
"""
from __future__ import annotations

import numpy as np

from .family import FAMILY, family_features
from .region import Region, Settings, angle_weights, angles_2d

GLRLM = ("ShortRunEmphasis", "LongRunEmphasis", "GrayLevelNonUniformity",
         "GrayLevelNonUniformityNormalized", "RunLengthNonUniformity",
         "RunLengthNonUniformityNormalized", "RunPercentage", "GrayLevelVariance",
         "RunVariance", "RunEntropy", "LowGrayLevelRunEmphasis", "HighGrayLevelRunEmphasis",
         "ShortRunLowGrayLevelEmphasis", "ShortRunHighGrayLevelEmphasis",
         "LongRunLowGrayLevelEmphasis", "LongRunHighGrayLevelEmphasis")
TABLE = dict(zip(FAMILY, GLRLM))


def glrlm(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """Grey-level run-length features of one region, per angle then averaged."""
    present = region.present
    ng = int(present.max())
    angles = angles_2d([1])
    runs = []
    for dy, dx in angles:
        runs.append(_runs(region, int(dy), int(dx)))
    nr = max(1, max((int(ln.max()) for _, ln in runs if ln.size), default=1))
    P = np.zeros((ng, nr, len(angles)))
    for k, (lv, ln) in enumerate(runs):
        P[:, :, k] = np.bincount((lv - 1) * nr + (ln - 1), minlength=ng * nr).reshape(ng, nr)
    P = P[present - 1]
    return glrlm_features([glrlm_normalise(P, angles, region.spacing,
                                           settings.weighting_norm)], [present], names)[0]


def glrlm_features(Ps, presents, names=None, jvector=None) -> list:
    """GLRLM features of several regions' matrices (:func:`.family.family_features`)."""
    return family_features(TABLE, Ps, presents, names=names, jvector=jvector)


def glrlm_normalise(P, angles, spacing=(1.0, 1.0), weighting_norm=None):
    """Run counts ``(G, S, A)`` -> the matrix the features use: angles weighted by
    ``weighting_norm`` (summed into one), empty angles NaN (skipped by the angle means, as
    pyradiomics drops them)."""
    if weighting_norm is not None:
        w = angle_weights(angles, spacing, weighting_norm, "glrlm")
        P = np.sum(P * w[None, None, :], 2, keepdims=True)
    empty = P.sum((0, 1)) == 0
    if empty.any():
        P = P.copy()
        P[:, :, empty] = np.nan
    return P


def _runs(reg: Region, dy: int, dx: int):
    """(level, length) of every run of equal levels along direction (dy, dx), or nothing when
    no line in that direction holds two region pixels.

    A run starts at a region pixel whose predecessor along the direction has another level
    (or is outside) and ends at one whose successor does; starts and ends are paired in order
    along each line. Pixels come in row-major order, in which every line's pixels already run
    in the direction's order, so a stable sort by line pairs them.
    """
    ys, xs, lv = reg.ys, reg.xs, reg.lv
    line = {(0, 1): ys, (1, 0): xs, (1, 1): xs - ys, (1, -1): xs + ys}[(dy, dx)]
    pos = xs if (dy, dx) == (0, 1) else ys
    line = line - line.min() if line.size else line
    if line.size == 0 or int(np.bincount(line).max()) < 2:
        # the region is one pixel thick across every line: the angle is dropped (as
        # pyradiomics does) instead of counting every pixel as a run of length 1
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = reg.neighbour(-dy, -dx) != lv
    end = reg.neighbour(dy, dx) != lv
    if (dy, dx) == (0, 1):              # row-major order is this direction's order
        s_pos, e_pos, s_lv = pos[start], pos[end], lv[start]
    else:                               # int16 keys: numpy's stable sort is a radix sort
        key = line.astype(np.int16 if line.max() < 2 ** 15 else np.int64)
        s_idx = np.flatnonzero(start)
        e_idx = np.flatnonzero(end)
        s_idx = s_idx[np.argsort(key[s_idx], kind="stable")]
        e_idx = e_idx[np.argsort(key[e_idx], kind="stable")]
        s_pos, e_pos, s_lv = pos[s_idx], pos[e_idx], lv[s_idx]
    return s_lv.astype(np.int64), (e_pos - s_pos + 1).astype(np.int64)
