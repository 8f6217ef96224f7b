"""Benchmark of the modelling stage's hot paths (prints JSON): each fast path against the
slow one it replaced, interleaved in one run, medians, and a check that both give the same
numbers.

- the LASSO's inner-fold AUC: ``evaluation.roc_auc`` vs ``sklearn.metrics.roc_auc_score``
  (per call, 30-case folds; the LASSO's penalty search calls it ~200 times per fit);
- the ROC band of one curve: 500 resamples through ``evaluation.roc_points`` vs
  ``sklearn.metrics.roc_curve``;
- the F1 bootstrap interval (2,000 resamples): blocks of resamples vs one at a time;
- the multiclass macro-AUC bootstrap (2,000 resamples, 3 classes): row-wise midranks vs
  ``roc_auc_score`` per class and resample;
- ``MedianImputer.transform`` on 1,200 feature columns without gaps: only the columns with a
  gap vs ``fillna`` with a value for every column.

Usage: python benchmarks/bench_models.py [--repeats N] [--out results.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _pair(name, fast, slow, repeats, unit="s"):
    """Interleave the two contenders ``repeats`` times; medians and their ratio."""
    tf, ts = [], []
    for _ in range(repeats):
        tf.append(_median_time(fast, 1))
        ts.append(_median_time(slow, 1))
    f, s = statistics.median(tf), statistics.median(ts)
    return {"what": name, "fast_s": f, "slow_s": s, "speedup": s / f}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score, roc_curve

    from HER2RadiomicsLib.modelling import evaluation as E
    from HER2RadiomicsLib.modelling.transformers import MedianImputer
    rng = np.random.default_rng(0)
    rows, same = [], {}

    # the LASSO's inner-fold AUC: 200 calls on 30-case folds
    y = rng.integers(0, 2, 30)
    y[:2] = [0, 1]
    s = y + rng.normal(size=30)
    rows.append(_pair("inner-fold AUC x200 (30 cases)",
                      lambda: [E.roc_auc(y, s) for _ in range(200)],
                      lambda: [roc_auc_score(y, s) for _ in range(200)], a.repeats))
    same["inner-fold AUC"] = E.roc_auc(y, s) == roc_auc_score(y, s)

    # one ROC band: 500 resamples of 40 cases
    yb = rng.integers(0, 2, 40)
    yb[:2] = [0, 1]
    sb = np.round(yb + rng.normal(size=40), 2)
    grid = np.linspace(0, 1, 101)

    def band(fast):
        out = []
        for idx in E.stratified_bootstrap_indices(yb, 500, 0):
            if fast:
                out.append(np.interp(grid, *E.roc_points(yb[idx] == 1, sb[idx])))
            else:
                f, t, _ = roc_curve(yb[idx], sb[idx])
                out.append(np.interp(grid, f, t))
        return np.percentile(out, [2.5, 97.5], axis=0)
    rows.append(_pair("ROC band, 500 resamples", lambda: band(True), lambda: band(False),
                      a.repeats))
    same["ROC band"] = bool(np.array_equal(band(True), band(False)))

    # the F1 bootstrap interval, 2,000 resamples
    pred = (sb >= 0.5).astype(int)

    def f1_loop():
        def f1(yy, pp):
            t = ((pp == 1) & (yy == 1)).sum()
            d = (pp == 1).sum() + (yy == 1).sum()
            return 2 * t / d if d else 0.0
        return np.percentile([f1(yb[i], pred[i])
                              for i in E.stratified_bootstrap_indices(yb, 2000, 0)], [2.5, 97.5])

    def f1_blocks():
        return np.percentile(np.concatenate([E._f1_rows(yb[i], pred[i])
                                             for i in E.stratified_bootstrap_blocks(yb, 2000, 0)]),
                             [2.5, 97.5])
    rows.append(_pair("F1 bootstrap, 2,000 resamples", f1_blocks, f1_loop, a.repeats))
    same["F1 interval"] = bool(np.array_equal(f1_blocks(), f1_loop()))

    # multiclass macro AUC bootstrap, 2,000 resamples, 3 classes, 45 cases
    classes = ["zero", "low", "positive"]
    ym = np.array(classes * 15)
    pm = rng.dirichlet(np.ones(3), 45)

    def macro_loop():
        return [np.mean([roc_auc_score((ym[i] == c).astype(int), pm[i, j])
                         for j, c in enumerate(classes)])
                for i in E.stratified_bootstrap_indices(ym, 2000, 0)]

    def macro_fast():
        return np.concatenate([E._macro_auc_rows(ym, pm, classes, i)
                               for i in E.stratified_bootstrap_blocks(ym, 2000, 0)])
    rows.append(_pair("macro-AUC bootstrap, 2,000 resamples", macro_fast, macro_loop,
                      max(1, a.repeats // 3)))
    same["macro AUC, max abs difference"] = float(np.max(np.abs(macro_fast() -
                                                                np.asarray(macro_loop()))))

    # MedianImputer.transform, 96 rows x 1,200 columns, no gap
    X = pd.DataFrame(rng.normal(size=(96, 1200)), columns=[f"tumor__f{j}" for j in range(1200)])
    imp = MedianImputer().fit(X)

    def old_transform():
        Z = X[imp.selected_features_].copy()
        return Z.fillna(value={c: v for c, v in imp.medians_.items() if c in Z.columns})
    rows.append(_pair("imputer transform, 1,200 columns", lambda: imp.transform(X),
                      old_transform, a.repeats))
    same["imputer"] = bool(imp.transform(X).equals(old_transform()))
    return emit({"benchmark": "models", "rows": rows, "same_numbers": same}, a.out)


if __name__ == "__main__":
    sys.exit(main())
