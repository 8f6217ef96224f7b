"""ICC of every feature at once, on numpy arrays: no pandas, no scipy.stats.

The numeric core of :mod:`.reproducibility` (which documents the forms and formulas and keeps
the DataFrame-facing functions). It lives apart so that ``her2radiomics icc`` can run without
importing pandas (0.4 s) or scipy.stats (0.6 s on top of scipy.special): start-up, not the
arithmetic, is what a user waits for on a 1,500-feature table (``benchmarks/bench_icc.py``).
The F distribution's survival and quantile functions are scipy.special's ``fdtrc``/``fdtri``,
the very functions ``scipy.stats.f.sf``/``ppf`` call, wrapped with ``scipy.stats``' rules for
invalid arguments, so every value is bit-for-bit what ``scipy.stats`` gives.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.special import fdtrc, fdtri

from ..errors import InputError

# the warning keeps the logger name it has always had (log filters and users' eyes know it)
log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".reproducibility")

FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
MCGRAW_WONG = {"ICC1": "ICC(1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC1k": "ICC(k)",
               "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}
SHROUT_FLEISS = {"ICC1": "ICC(1,1)", "ICC2": "ICC(2,1)", "ICC3": "ICC(3,1)",
                 "ICC1k": "ICC(1,k)", "ICC2k": "ICC(2,k)", "ICC3k": "ICC(3,k)"}
BANDS = ((0.5, "poor"), (0.75, "moderate"), (0.9, "good"), (math.inf, "excellent"))
DEFAULT_FORM = "ICC2"
DEFAULT_THRESHOLD = 0.75
#: the value columns of an ICC table, in order: each form, then its CI, F and p
COLUMNS = tuple(f"{f}{s}" for f in FORMS for s in ("", "_ci_low", "_ci_high", "_F", "_p"))


def f_sf(x, dfn, dfd) -> np.ndarray:
    """``scipy.stats.f.sf(x, dfn, dfd)``: NaN for NaN x or degrees of freedom not > 0, 1 at
    x <= 0, 0 at x = inf, ``fdtrc`` inside the support."""
    x, dfn, dfd = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, dfn, dfd)))
    ok = (dfn > 0) & (dfd > 0)
    out = np.zeros(x.shape)
    out[~ok | np.isnan(x)] = np.nan
    out[ok & (x <= 0)] = 1.0
    inside = ok & (x > 0) & (x < np.inf)
    out[inside] = fdtrc(dfn[inside], dfd[inside], x[inside])
    return out


def f_ppf(q: float, dfn, dfd) -> np.ndarray:
    """``scipy.stats.f.ppf(q, dfn, dfd)`` for one probability 0 < q < 1: NaN where a degree of
    freedom is not > 0 (or NaN), ``fdtri`` elsewhere."""
    if not 0 < q < 1:
        raise ValueError(f"q must lie strictly between 0 and 1 (got {q})")
    dfn, dfd = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (dfn, dfd)))
    ok = (dfn > 0) & (dfd > 0)
    out = np.full(dfn.shape, np.nan)
    out[ok] = fdtri(dfn[ok], dfd[ok], q)
    return out


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
    # NaN with a reason by icc_columns, so numpy's warnings would only be noise
    with np.errstate(all="ignore"):
        icc1 = (msr - msw) / (msr + (k - 1) * msw)
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
        icc1k = (msr - msw) / msr
        icc2k = (msr - mse) / (msr + (msc - mse) / n)
        icc3k = (msr - mse) / msr
        f1 = msr / msw
        f3 = msr / mse
        p1 = f_sf(f1, df_r, df_w)
        p3 = f_sf(f3, df_r, df_e)
        q = 1 - alpha / 2
        # one-way (ICC1, ICC1k)
        f1l = f1 / f_ppf(q, df_r, df_w)
        f1u = f1 * f_ppf(q, df_w, df_r)
        # consistency (ICC3, ICC3k)
        f3l = f3 / f_ppf(q, df_r, df_e)
        f3u = f3 * f_ppf(q, df_e, df_r)
        # absolute agreement (ICC2, ICC2k): Satterthwaite df (McGraw & Wong 1996, case 2A)
        fj = msc / mse
        a_ = k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2
        v = df_e * a_ ** 2 / (df_r * k ** 2 * icc2 ** 2 * fj ** 2
                              + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2)
        f2u = f_ppf(q, df_r, v)
        f2l = f_ppf(q, v, df_r)
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


def ratings_array(case_keys, reader_keys, values: np.ndarray):
    """Place long-table rows into an array (features, cases, readers).

    Parameters
    ----------
    case_keys, reader_keys : sequence of str, one per row
        Case and reader of each row (at most one row per pair: the caller checks).
    values : ndarray, shape (n_features, n_rows)
        The ratings; infinite ones are treated as missing.

    Returns
    -------
    (ndarray, list, list)
        The array (NaN where a rating is missing), case IDs and reader IDs in order of first
        appearance (the order fixes the summation order, hence the last bits of every value).
    """
    cases = list(dict.fromkeys(case_keys))
    readers = list(dict.fromkeys(reader_keys))
    c_index = {c: i for i, c in enumerate(cases)}
    r_index = {r: i for i, r in enumerate(readers)}
    ci = np.fromiter((c_index[c] for c in case_keys), dtype=np.intp, count=len(case_keys))
    ri = np.fromiter((r_index[r] for r in reader_keys), dtype=np.intp, count=len(reader_keys))
    vals = np.array(values, dtype=np.float64, copy=True)
    vals[~np.isfinite(vals)] = np.nan       # an infinite rating is no rating: dropped, noted
    arr = np.full((vals.shape[0], len(cases), len(readers)), np.nan)
    arr[:, ci, ri] = vals
    return arr, cases, readers


def icc_columns(arr: np.ndarray, feats, alpha: float = 0.05):
    """ICC of every feature of a ratings array, listwise deletion per feature.

    Parameters
    ----------
    arr : ndarray, shape (n_features, n_cases, n_readers)
        Ratings, NaN where missing (:func:`ratings_array`).
    feats : list of str
        Feature names (for the warning about dropped cases).

    Returns
    -------
    (dict, ndarray, list)
        :data:`COLUMNS` -> float arrays; the number of cases used per feature; a note per
        feature (why a value is NaN, or how many cases were dropped; '' otherwise).
    """
    F, n, k = arr.shape
    complete = ~np.isnan(arr).any(axis=2)             # (F, n): case complete for feature
    out = {c: np.full(F, np.nan) for c in COLUMNS}
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
        for c in COLUMNS:
            out[c][idx] = res[c]
        constant = (res["MSR"] == 0) & (res["MSE"] == 0) & (res["MSC"] == 0)
        for j, i in enumerate(idx):
            if constant[j]:
                for c in COLUMNS:
                    out[c][i] = np.nan
                notes[i] = "constant feature (no variance): ICC undefined"
            elif m < n:
                notes[i] = f"{n - m} case(s) with missing ratings dropped"
    dropped = [i for i in range(F) if 0 < n - n_used[i] and n_used[i] >= 2]
    if dropped:
        log.warning("ICC: listwise deletion for %d feature(s); e.g. %s uses %d of %d cases",
                    len(dropped), feats[dropped[0]], n_used[dropped[0]], n)
    return out, n_used, notes


def stable_names(feats, values, threshold: float) -> list:
    """The features whose value exceeds ``threshold`` (NaN never does), in table order."""
    return [f for f, v in zip(feats, values) if v > threshold]


def check_form(form: str) -> str:
    """``form`` if it is one of :data:`FORMS`; an :class:`InputError` naming them otherwise."""
    if form not in FORMS:
        raise InputError(f"ICC form {form!r}: choose one of {', '.join(FORMS)}")
    return form
