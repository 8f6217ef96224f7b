r"""Grey-level dependence matrix (GLDM): how many neighbours depend on each pixel.

A neighbour (every offset at the ``distances``, both ways: 8 at distance 1) depends on the
centre pixel when it is in the region and its grey level differs from the centre's by at most
α (``gldm_a``). P(i, j) counts the pixels of level i with j - 1 dependent neighbours (j = 1..).
One matrix, no angles; N_z = N_p, the region's pixels. The features and their formulas are
the family's (:mod:`.family`) without GrayLevelNonUniformityNormalized and the percentage:

=====================================  ============  =========================================
Feature (pyradiomics)                  Family key    IBSI name (NGLDM, coarseness α)
=====================================  ============  =========================================
SmallDependenceEmphasis                Small         ngl_lde (low dependence emphasis)
LargeDependenceEmphasis                Large         ngl_hde (high dependence emphasis)
GrayLevelNonUniformity                 GLN           ngl_glnu
DependenceNonUniformity                SizeNU        ngl_dcnu
DependenceNonUniformityNormalized      SizeNUN       ngl_dcnu_norm
GrayLevelVariance                      GLV           ngl_gl_var
DependenceVariance                     SizeVariance  ngl_dc_var
DependenceEntropy                      Entropy       ngl_dc_entr
LowGrayLevelEmphasis                   LowGL         ngl_lgce
HighGrayLevelEmphasis                  HighGL        ngl_hgce
SmallDependenceLowGrayLevelEmphasis    SmallLow      ngl_ldlge
SmallDependenceHighGrayLevelEmphasis   SmallHigh     ngl_ldhge
LargeDependenceLowGrayLevelEmphasis    LargeLow      ngl_hdlge
LargeDependenceHighGrayLevelEmphasis   LargeHigh     ngl_hdhge
=====================================  ============  =========================================
"""
from __future__ import annotations

import numpy as np

from .family import FAMILY, family_features
from .region import Region, Settings

GLDM = ("SmallDependenceEmphasis", "LargeDependenceEmphasis", "GrayLevelNonUniformity",
        "DependenceNonUniformity", "DependenceNonUniformityNormalized", "GrayLevelVariance",
        "DependenceVariance", "DependenceEntropy", "LowGrayLevelEmphasis",
        "HighGrayLevelEmphasis", "SmallDependenceLowGrayLevelEmphasis",
        "SmallDependenceHighGrayLevelEmphasis", "LargeDependenceLowGrayLevelEmphasis",
        "LargeDependenceHighGrayLevelEmphasis")
TABLE = dict(zip([f for f in FAMILY if f not in ("GLNN", "Percentage")], GLDM))


def gldm(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """Grey-level dependence features of one region: a pixel's dependence is 1 + the number
    of neighbours (every offset at ``settings.distances``, both ways) in the region whose grey
    level differs from its own by at most ``settings.gldm_alpha``."""
    alpha = settings.gldm_alpha
    present, lv = region.present, region.lv
    dv = np.ones(lv.size, dtype=np.int64)
    for b in region.neighbour_levels(settings.distances):
        # only region pixels are counted, so the centre is in the region; a neighbour must
        # be too (level > 0), which equality to the centre's level already implies
        dv += (b == lv) if alpha == 0 else (b > 0) & (np.abs(lv - b) <= alpha)
    nd = int(dv.max())
    idx = np.searchsorted(present, lv)
    P = np.bincount(idx * nd + dv - 1, minlength=len(present) * nd).reshape(len(present), nd)
    return gldm_features([P.astype(np.float64)[:, :, None]], [present], names)[0]


def gldm_features(Ps, presents, names=None) -> list:
    """GLDM features of several regions' matrices (:func:`.family.family_features`)."""
    return family_features(TABLE, Ps, presents, names=names)
