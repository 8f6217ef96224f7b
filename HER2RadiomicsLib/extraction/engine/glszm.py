r"""Grey-level size-zone matrix (GLSZM): 8-connected zones of one grey level.

P(i, j) counts the zones (sets of 8-connected region pixels of level i) of j pixels. One
matrix, no angles. The features and their formulas are the family's (:mod:`.family`), with
N_z the number of zones and N_p the region's pixels:

=====================================  ============  ==============
Feature (pyradiomics)                  Family key    IBSI name
=====================================  ============  ==============
SmallAreaEmphasis                      Small         szm_sze
LargeAreaEmphasis                      Large         szm_lze
GrayLevelNonUniformity                 GLN           szm_glnu
GrayLevelNonUniformityNormalized       GLNN          szm_glnu_norm
SizeZoneNonUniformity                  SizeNU        szm_zsnu
SizeZoneNonUniformityNormalized        SizeNUN       szm_zsnu_norm
ZonePercentage                         Percentage    szm_z_perc
GrayLevelVariance                      GLV           szm_gl_var
ZoneVariance                           SizeVariance  szm_zs_var
ZoneEntropy                            Entropy       szm_zs_entr
LowGrayLevelZoneEmphasis               LowGL         szm_lgze
HighGrayLevelZoneEmphasis              HighGL        szm_hgze
SmallAreaLowGrayLevelEmphasis          SmallLow      szm_szlge
SmallAreaHighGrayLevelEmphasis         SmallHigh     szm_szhge
LargeAreaLowGrayLevelEmphasis          LargeLow      szm_lzlge
LargeAreaHighGrayLevelEmphasis         LargeHigh     szm_lzhge
=====================================  ============  ==============
"""
from __future__ import annotations

import numpy as np

from .family import FAMILY, family_features
from .region import Region, Settings

GLSZM = ("SmallAreaEmphasis", "LargeAreaEmphasis", "GrayLevelNonUniformity",
         "GrayLevelNonUniformityNormalized", "SizeZoneNonUniformity",
         "SizeZoneNonUniformityNormalized", "ZonePercentage", "GrayLevelVariance",
         "ZoneVariance", "ZoneEntropy", "LowGrayLevelZoneEmphasis", "HighGrayLevelZoneEmphasis",
         "SmallAreaLowGrayLevelEmphasis", "SmallAreaHighGrayLevelEmphasis",
         "LargeAreaLowGrayLevelEmphasis", "LargeAreaHighGrayLevelEmphasis")
TABLE = dict(zip(FAMILY, GLSZM))


def glszm(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """Grey-level size-zone features of one region: zones are 8-connected pixels of one grey
    level (``settings`` is not read: the zones depend on the grey levels only)."""
    # imported when used: scikit-image's import is slow and the library must start fast
    from skimage.measure import label
    levels, present = region.levels, region.present
    # one pass for every grey level: scikit-image labels 8-connected runs of equal value
    # (scipy's label is binary, so it would take one pass over the image per level)
    lab = label(levels, background=0, connectivity=2).ravel()
    zs = np.bincount(lab)[1:]
    first = np.zeros(len(zs) + 1, dtype=np.intp)
    first[lab[::-1]] = np.arange(lab.size - 1, -1, -1)        # one pixel of each zone
    zl = levels.ravel()[first[1:]]
    idx = np.searchsorted(present, zl)
    ns = int(zs.max())
    P = np.bincount(idx * ns + zs - 1, minlength=len(present) * ns).reshape(len(present), ns)
    return glszm_features([P.astype(np.float64)[:, :, None]], [present], names)[0]


def glszm_features(Ps, presents, names=None, jvector=None) -> list:
    """GLSZM features of several regions' matrices (:func:`.family.family_features`)."""
    return family_features(TABLE, Ps, presents, names=names, jvector=jvector)
