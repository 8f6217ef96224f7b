"""ICC benchmark (prints JSON): all six forms with CIs for 1,500 features x 60 cases x 3 readers.

Our vectorised computation (one call for all features) against pingouin.intraclass_corr called
once per feature on the same data, both timed in this run; medians of ``--repeats`` runs for
ours (pingouin is timed once over all features: it takes tens of seconds).

Usage: python benchmarks/bench_icc.py [--features 1500 --cases 60 --readers 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=1500)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pingouin-features", type=int, default=None,
                    help="time pingouin on this many features only (default: all)")
    a = ap.parse_args(argv)
    import pingouin as pg
    from HER2RadiomicsLib.readers.reproducibility import icc_table
    rng = np.random.default_rng(0)
    F, n, k = a.features, a.cases, a.readers
    Y = rng.normal(size=(F, n, 1)) * rng.uniform(0.5, 3, (F, 1, 1)) + rng.normal(size=(F, n, k))
    cases = np.repeat([f"c{i}" for i in range(n)], k)
    readers = np.tile([f"r{j}" for j in range(k)], n)
    cols = {f"f{i}": Y[i].reshape(-1) for i in range(F)}
    df = pd.DataFrame({"case": cases, "reader": readers, **cols})
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        table = icc_table(df, "case", "reader")
        times.append(time.perf_counter() - t)
    ours = statistics.median(times)
    m = a.pingouin_features or F
    t = time.perf_counter()
    for i in range(m):
        pg.intraclass_corr(df[["case", "reader", f"f{i}"]], "case", "reader", f"f{i}")
    pg_time = (time.perf_counter() - t) * F / m
    res = {"features": F, "cases": n, "readers": k, "ours_s_median": round(ours, 4),
           "pingouin_s_all_features": round(pg_time, 2),
           "pingouin_features_timed": m, "speedup_ours_vs_pingouin": round(pg_time / ours, 1),
           "target_under_1s": ours < 1.0, "target_100x": pg_time / ours >= 100,
           "check_mean_icc2": round(float(table["ICC2"].mean()), 4)}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
