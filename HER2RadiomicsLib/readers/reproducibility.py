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

Everything is vectorised over features: one call computes all features with numpy.  Missing
ratings: listwise deletion per feature (cases lacking any reader's value are dropped for that
feature), with the number of cases used reported and a warning; features with fewer than 2
complete cases or no variance get NaN and a reason, never a silent NaN.

Interpretation (Koo & Li 2016, as used by yin2024): poor < 0.5, moderate 0.5-0.75,
good 0.75-0.9, excellent > 0.9.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy import stats

from ..errors import InputError
from .metrics import compare_masks

log = logging.getLogger(__name__)

FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
MCGRAW_WONG = {"ICC1": "ICC(1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC1k": "ICC(k)",
               "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}
SHROUT_FLEISS = {"ICC1": "ICC(1,1)", "ICC2": "ICC(2,1)", "ICC3": "ICC(3,1)",
                 "ICC1k": "ICC(1,k)", "ICC2k": "ICC(2,k)", "ICC3k": "ICC(3,k)"}
BANDS = ((0.5, "poor"), (0.75, "moderate"), (0.9, "good"), (math.inf, "excellent"))
DEFAULT_FORM = "ICC2"
DEFAULT_THRESHOLD = 0.75


def icc_arrays(Y: np.ndarray, alpha: float = 0.05) -> dict:
    """All six ICC forms for a stack of complete tables.

    Parameters
    ----------
    Y : ndarray, shape (n_features, n_cases, n_readers)
        Complete ratings (no NaN).
    alpha : float
        1 - confidence level of the intervals.

    Returns
    -------
    dict
        For each form ``f`` in :data:`FORMS`: arrays ``f``, ``f_ci_low``, ``f_ci_high``,
        ``f_F``, ``f_p`` (length n_features); plus ``MSR``, ``MSC``, ``MSE``, ``MSW``.
    """
    Y = np.asarray(Y, dtype=np.float64)
    _, n, k = Y.shape
    if n < 2 or k < 2:
        raise InputError(f"ICC needs at least 2 cases and 2 readers (got {n} x {k})")
    grand = Y.mean(axis=(1, 2))
    rows = Y.mean(axis=2)
    cols = Y.mean(axis=1)
    ssr = k * ((rows - grand[:, None]) ** 2).sum(axis=1)
    ssc = n * ((cols - grand[:, None]) ** 2).sum(axis=1)
    sst = ((Y - grand[:, None, None]) ** 2).sum(axis=(1, 2))
    sse = sst - ssr - ssc
    df_r, df_c, df_e = n - 1, k - 1, (n - 1) * (k - 1)
    df_w = n * (k - 1)
    msr, msc, mse = ssr / df_r, ssc / df_c, sse / df_e
    msw = (ssc + sse) / df_w
    out = {"MSR": msr, "MSC": msc, "MSE": mse, "MSW": msw}
    # constant/degenerate features legitimately produce 0/0 and inf here; they are reported as
    # NaN with a reason by icc_table, so numpy's warnings would only be noise
    with np.errstate(all="ignore"):
        icc1 = (msr - msw) / (msr + (k - 1) * msw)
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
        icc1k = (msr - msw) / msr
        icc2k = (msr - mse) / (msr + (msc - mse) / n)
        icc3k = (msr - mse) / msr
        f1 = msr / msw
        f3 = msr / mse
        p1 = stats.f.sf(f1, df_r, df_w)
        p3 = stats.f.sf(f3, df_r, df_e)
        q = 1 - alpha / 2
        # one-way (ICC1, ICC1k)
        f1l = f1 / stats.f.ppf(q, df_r, df_w)
        f1u = f1 * stats.f.ppf(q, df_w, df_r)
        # consistency (ICC3, ICC3k)
        f3l = f3 / stats.f.ppf(q, df_r, df_e)
        f3u = f3 * stats.f.ppf(q, df_e, df_r)
        # absolute agreement (ICC2, ICC2k): Satterthwaite df (McGraw & Wong 1996, case 2A)
        fj = msc / mse
        a_ = k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2
        v = df_e * a_ ** 2 / (df_r * k ** 2 * icc2 ** 2 * fj ** 2
                              + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2)
        f2u = stats.f.ppf(q, df_r, v)
        f2l = stats.f.ppf(q, v, df_r)
        base = k * msc + (k * n - k - n) * mse
        l2 = n * (msr - f2u * mse) / (f2u * base + n * msr)
        u2 = n * (f2l * msr - mse) / (base + n * f2l * msr)
        res = {
            "ICC1": (icc1, (f1l - 1) / (f1l + k - 1), (f1u - 1) / (f1u + k - 1), f1, p1),
            "ICC2": (icc2, l2, u2, f3, p3),
            "ICC3": (icc3, (f3l - 1) / (f3l + k - 1), (f3u - 1) / (f3u + k - 1), f3, p3),
            "ICC1k": (icc1k, 1 - 1 / f1l, 1 - 1 / f1u, f1, p1),
            "ICC2k": (icc2k, l2 * k / (1 + l2 * (k - 1)), u2 * k / (1 + u2 * (k - 1)), f3, p3),
            "ICC3k": (icc3k, 1 - 1 / f3l, 1 - 1 / f3u, f3, p3),
        }
    for form, (val, lo, hi, F, p) in res.items():
        out[form], out[f"{form}_ci_low"], out[f"{form}_ci_high"] = val, lo, hi
        out[f"{form}_F"], out[f"{form}_p"] = F, p
    return out


def band(icc: float) -> str:
    """Koo & Li interpretation band of an ICC value ('' for NaN)."""
    if icc is None or not np.isfinite(icc):
        return ""
    for upper, name in BANDS:
        if icc < upper:
            return name
    return "excellent"


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
    cases = list(pd.unique(df[case_col].astype(str)))
    readers = list(pd.unique(df[reader_col].astype(str)))
    ci = df[case_col].astype(str).map({c: i for i, c in enumerate(cases)}).to_numpy()
    ri = df[reader_col].astype(str).map({r: i for i, r in enumerate(readers)}).to_numpy()
    arr = np.full((len(features), len(cases), len(readers)), np.nan)
    vals = df[features].to_numpy(dtype=np.float64, copy=True).T
    vals[~np.isfinite(vals)] = np.nan       # an infinite rating is no rating: dropped, noted
    arr[:, ci, ri] = vals
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
    arr, feats, cases, readers = wide_from_long(df, case_col, reader_col, features)
    F, n, k = arr.shape
    complete = ~np.isnan(arr).any(axis=2)             # (F, n): case complete for feature
    out = {c: np.full(F, np.nan) for c in _columns()}
    n_used = complete.sum(axis=1)
    notes = [""] * F
    # group features by their pattern of complete cases; usually a single group
    patterns = {}
    for i in range(F):
        patterns.setdefault(complete[i].tobytes(), []).append(i)
    for key, idx in patterns.items():
        rows = np.frombuffer(key, dtype=bool)
        m = int(rows.sum())
        if m < 2:
            for i in idx:
                notes[i] = f"fewer than 2 cases rated by all readers ({m})"
            continue
        sub = arr[idx][:, rows, :]
        res = icc_arrays(sub, alpha)
        for c in _columns():
            out[c][idx] = res[c]
        constant = (res["MSR"] == 0) & (res["MSE"] == 0) & (res["MSC"] == 0)
        for j, i in enumerate(idx):
            if constant[j]:
                for c in _columns():
                    out[c][i] = np.nan
                notes[i] = "constant feature (no variance): ICC undefined"
            elif m < n:
                notes[i] = f"{n - m} case(s) with missing ratings dropped"
    dropped = [i for i in range(F) if 0 < n - n_used[i] and n_used[i] >= 2]
    if dropped:
        log.warning("ICC: listwise deletion for %d feature(s); e.g. %s uses %d of %d cases",
                    len(dropped), feats[dropped[0]], n_used[dropped[0]], n)
    table = pd.DataFrame({"feature": feats, "n_cases": n_used, "n_readers": k})
    for c in _columns():
        table[c] = out[c]
    table["band"] = [band(v) for v in table[band_form]]
    table["note"] = notes
    return table


def _columns():
    return [f"{f}{s}" for f in FORMS for s in ("", "_ci_low", "_ci_high", "_F", "_p")]


def stable_features(icc: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
                    form: str = DEFAULT_FORM, use_lower_ci: bool = False) -> list:
    """Features whose ICC (or its lower 95 % bound) exceeds ``threshold``."""
    if form not in FORMS:
        raise InputError(f"ICC form {form!r}: choose one of {', '.join(FORMS)}")
    col = f"{form}_ci_low" if use_lower_ci else form
    keep = icc[col] > threshold
    return icc.loc[keep.fillna(False), "feature"].tolist()


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
