"""Inter-observer reproducibility: ICC for every feature at once, contour agreement, consensus.

ICC forms (Shrout & Fleiss 1979) with their McGraw & Wong (1996) names
------------------------------------------------------------------------
==========  =============  ==============================================================
column      McGraw & Wong  model
==========  =============  ==============================================================
ICC1        ICC(1)         one-way random effects, absolute agreement, single rater
ICC2        ICC(A,1)       two-way random effects, absolute agreement, single rater
ICC3        ICC(C,1)       two-way mixed effects, consistency, single rater
ICC1k       ICC(k)         one-way random, absolute agreement, mean of k raters
ICC2k       ICC(A,k)       two-way random, absolute agreement, mean of k raters
ICC3k       ICC(C,k)       two-way mixed, consistency, mean of k raters
==========  =============  ==============================================================

The radiomics studies' "two-way mixed effects, absolute agreement, single rater" (yin2024) is
McGraw & Wong's ICC(A,1) under the mixed model: its point estimate and F-based interval are
computed with the same formula as ICC(2,1), so use column ``ICC2`` (the default here).

From the two-way ANOVA of the n x k table (cases x readers): MSR (rows), MSC (columns), MSE
(residual) and MSW = (SSC + SSE) / (n (k - 1)) (within rows):

* ICC1 = (MSR - MSW) / (MSR + (k-1) MSW);  ICC1k = (MSR - MSW) / MSR
* ICC2 = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n);
  ICC2k = (MSR - MSE) / (MSR + (MSC - MSE) / n)
* ICC3 = (MSR - MSE) / (MSR + (k-1) MSE);  ICC3k = (MSR - MSE) / MSR

F tests: ICC1/ICC1k use F = MSR/MSW on (n-1, n(k-1)) df; the others F = MSR/MSE on
(n-1, (n-1)(k-1)) df.  95 % CIs are the standard F-based intervals (Shrout & Fleiss; McGraw &
Wong with Satterthwaite's degrees of freedom for the absolute-agreement forms).

Everything is vectorised over features: one call computes all features with numpy (the numeric
core, pandas-free, is :mod:`.icc`).  Missing
ratings: listwise deletion per feature (cases lacking any reader's value are dropped for that
feature), with the number of cases used reported and a warning; features with fewer than 2
complete cases or no variance get NaN and a reason, never a silent NaN.

Interpretation (Koo & Li 2016, as used by yin2024): poor < 0.5, moderate 0.5-0.75,
good 0.75-0.9, excellent > 0.9.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import InputError
# the numeric core, pandas-free for the `icc` command; its names are importable from here too
from .icc import (BANDS, COLUMNS, DEFAULT_FORM, DEFAULT_THRESHOLD, FORMS,  # noqa: F401
                  MCGRAW_WONG, SHROUT_FLEISS, band, check_form, icc_arrays, icc_columns,
                  ratings_array, stable_names)
from .metrics import compare_masks


def wide_from_long(df: pd.DataFrame, case_col: str = "case_id", reader_col: str = "reader",
                   features=None):
    """Pivot a long table (one row per case x reader) to an array (features, cases, readers).

    Returns
    -------
    (ndarray, list, list, list)
        The array (NaN where a rating is missing), feature names, case IDs, reader IDs.
    """
    for c in (case_col, reader_col):
        if c not in df.columns:
            raise InputError(f"column {c!r} not in the table (columns: {list(df.columns)[:8]}...)")
    if features is None:
        features = [c for c in df.columns if c not in (case_col, reader_col)
                    and pd.api.types.is_numeric_dtype(df[c])]
    if not features:
        raise InputError("no numeric feature columns found")
    dup = df.duplicated([case_col, reader_col])
    if dup.any():
        first = df.loc[dup, [case_col, reader_col]].iloc[0].tolist()
        raise InputError(f"case {first[0]!r} has more than one row for reader {first[1]!r}")
    vals = df[features].to_numpy(dtype=np.float64, copy=True).T
    arr, cases, readers = ratings_array(df[case_col].astype(str).tolist(),
                                        df[reader_col].astype(str).tolist(), vals)
    return arr, list(features), cases, readers


def icc_table(df: pd.DataFrame, case_col: str = "case_id", reader_col: str = "reader",
              features=None, alpha: float = 0.05, band_form: str = DEFAULT_FORM) -> pd.DataFrame:
    """ICC of every feature of a long table (case, reader, feature columns).

    Returns
    -------
    pandas.DataFrame
        One row per feature: ``feature, n_cases, n_readers``, then for ``ICC1, ICC2, ICC3,
        ICC1k, ICC2k, ICC3k`` the value followed by ``_ci_low, _ci_high, _F, _p``; then
        ``band`` (of ``band_form``) and ``note`` (why a value is NaN, or how many cases were
        dropped).
    """
    arr, feats, _, _ = wide_from_long(df, case_col, reader_col, features)
    out, n_used, notes = icc_columns(arr, feats, alpha)
    table = pd.DataFrame({"feature": feats, "n_cases": n_used, "n_readers": arr.shape[2]})
    for c in COLUMNS:
        table[c] = out[c]
    table["band"] = [band(v) for v in table[band_form]]
    table["note"] = notes
    return table


def stable_features(icc: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
                    form: str = DEFAULT_FORM, use_lower_ci: bool = False) -> list:
    """Features whose ICC (or its lower 95 % bound) exceeds ``threshold``."""
    col = check_form(form) + ("_ci_low" if use_lower_ci else "")
    return stable_names(icc["feature"].tolist(), icc[col].tolist(), threshold)


# -- contours -----------------------------------------------------------------------------------

def pairwise_agreement(masks: dict, spacing=(1.0, 1.0), unit: str = "mm") -> list:
    """All reader pairs of one case: list of dicts (reader_a, reader_b, metrics)."""
    readers = sorted(masks)
    out = []
    for i, a in enumerate(readers):
        for b in readers[i + 1:]:
            m = compare_masks(masks[a], masks[b], spacing)
            out.append({"reader_a": a, "reader_b": b, **m, "distance_unit": unit})
    return out


def consensus_masks(masks: list) -> dict:
    """STAPLE (SimpleITK, probability >= 0.5) and strict-majority consensus of binary masks.

    Strict majority: a pixel is included when more than half of the readers include it (with
    an even number of readers, ties are excluded).
    """
    arrs = [np.asarray(m, dtype=np.uint8) for m in masks]
    votes = np.sum(arrs, axis=0)
    majority = votes * 2 > len(arrs)
    imgs = [sitk.GetImageFromArray(a) for a in arrs]
    prob = sitk.GetArrayFromImage(sitk.STAPLE(imgs, 1.0))
    return {"staple": prob >= 0.5, "staple_probability": prob, "majority": majority}


def perturb_contour(mask: np.ndarray, spacing=(1.0, 1.0), grow_mm: float = 1.0,
                    n_random: int = 4, amplitude_mm: float = 0.7, seed: int = 0) -> dict:
    """Perturbed versions of one contour (MIRP-style robustness proxy, not a reader study).

    Returns ``{"original", "grow_1mm", "shrink_1mm", "random_1".."random_N"}``: growth and
    shrinkage by ``grow_mm`` from the exact distance map, and smooth random boundary
    deformations (a low-pass random field of +-``amplitude_mm`` added to the signed distance).
    """
    m = np.asarray(mask, bool)
    samp = (spacing[1], spacing[0])
    sd = (ndi.distance_transform_edt(~m, sampling=samp)
          - ndi.distance_transform_edt(m, sampling=samp))
    out = {"original": m, f"grow_{grow_mm:g}mm": sd <= grow_mm,
           f"shrink_{grow_mm:g}mm": sd <= -grow_mm}
    rng = np.random.default_rng(seed)
    sigma_px = max(2.0, 3.0 / min(spacing))          # ~3 mm correlation length
    for i in range(n_random):
        f = ndi.gaussian_filter(rng.standard_normal(m.shape), sigma_px)
        f = f / (np.abs(f).max() + 1e-12) * amplitude_mm
        pm = sd <= f
        lab, n = ndi.label(pm)
        if n > 1:   # keep the component that overlaps the original most
            ov = ndi.sum(m, lab, index=np.arange(1, n + 1))
            pm = lab == (1 + int(np.argmax(ov)))
        out[f"random_{i + 1}"] = ndi.binary_fill_holes(pm)
    return out
