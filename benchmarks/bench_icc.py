"""ICC benchmark (prints JSON): all six forms with CIs for 1,500 features x 60 cases x 3 readers.

Two measurements, each against pingouin in the same run:

* computation: our vectorised ICC (one call for all features) against
  ``pingouin.intraclass_corr`` called once per feature on the same in-memory data; medians of
  ``--repeats`` runs for ours (pingouin is timed once: it takes tens of seconds);
* whole process, as a user runs it: ``python -m HER2RadiomicsLib icc --table T --out O`` on the
  long table written to disk (what ``reader-study`` writes as ``features_long.csv``) against a
  fresh Python process that reads the same table with pandas, calls pingouin per feature and
  writes the six forms (estimate, CI, F, p) as CSV. The two are interleaved (``--process-repeats``
  rounds of ``--ours-per-round`` runs of ours and one of the reference), and the medians
  compared (target: ours >= 30x faster). The start-up floor (an empty
  interpreter; one that imports numpy and scipy.special, which the command needs) is timed in
  the same loop, and the machine's load average is recorded before and after.

Usage: python benchmarks/bench_icc.py [--features 1500 --cases 60 --readers 3] [--out r.json]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# print the JSON, save it with --out (the same for every benchmark)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit

ROOT = Path(__file__).resolve().parents[1]

#: the reference process: what a user without this library would run (pandas + pingouin)
REFERENCE = """
import sys
import pandas as pd
import pingouin as pg
df = pd.read_csv(sys.argv[1])
rows = []
for f in [c for c in df.columns if c not in ("case_id", "reader")]:
    r = pg.intraclass_corr(df, "case_id", "reader", f)
    row = {"feature": f}
    # pingouin's rows: ICC1, ICC2, ICC3, ICC1k, ICC2k, ICC3k (their names vary by version)
    for i, name in enumerate(("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")):
        row[name] = r["ICC"].iloc[i]
        row[name + "_ci_low"], row[name + "_ci_high"] = r["CI95"].iloc[i]
        row[name + "_F"], row[name + "_p"] = r["F"].iloc[i], r["pval"].iloc[i]
    rows.append(row)
pd.DataFrame(rows).to_csv(sys.argv[2], index=False, float_format="%.10g")
"""


def long_table(F: int, n: int, k: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic ratings: a per-case signal of varying strength plus reader noise."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(F, n, 1)) * rng.uniform(0.5, 3, (F, 1, 1)) + rng.normal(size=(F, n, k))
    cases = np.repeat([f"P{i:04d}-1" for i in range(n)], k)
    readers = np.tile([f"R{j + 1}" for j in range(k)], n)
    cols = {f"tumor__original_f{i}": Y[i].reshape(-1) for i in range(F)}
    return pd.DataFrame({"case_id": cases, "reader": readers, **cols})


def _time(cmd, env) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return dt


def in_process(df: pd.DataFrame, repeats: int, pingouin_features=None) -> dict:
    import pingouin as pg
    from HER2RadiomicsLib.readers.reproducibility import icc_table
    feats = [c for c in df.columns if c not in ("case_id", "reader")]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        table = icc_table(df, "case_id", "reader")
        times.append(time.perf_counter() - t)
    ours = statistics.median(times)
    m = pingouin_features or len(feats)
    t = time.perf_counter()
    for f in feats[:m]:
        pg.intraclass_corr(df[["case_id", "reader", f]], "case_id", "reader", f)
    pg_time = (time.perf_counter() - t) * len(feats) / m
    return {"ours_s_median": round(ours, 4), "pingouin_s_all_features": round(pg_time, 2),
            "pingouin_features_timed": m, "speedup_ours_vs_pingouin": round(pg_time / ours, 1),
            "target_under_1s": ours < 1.0, "target_100x": pg_time / ours >= 100,
            "check_mean_icc2": round(float(table["ICC2"].mean()), 4)}


def whole_process(table: Path, d: Path, repeats: int, ours_per_round: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    py = sys.executable
    ours, ref, bare, floor = [], [], [], []
    for i in range(repeats):
        for j in range(ours_per_round):      # ours is cheap: more runs, a steadier median
            ours.append(_time([py, "-m", "HER2RadiomicsLib", "icc", "--table", str(table),
                               "--out", str(d / f"ours{i}_{j}.csv")], env))
        ref.append(_time([py, "-c", REFERENCE, str(table), str(d / f"ref{i}.csv")], env))
        bare.append(_time([py, "-c", "pass"], env))
        floor.append(_time([py, "-c", "import numpy, scipy.special"], env))
    a = pd.read_csv(d / "ours0_0.csv").set_index("feature")
    b = pd.read_csv(d / "ref0.csv").set_index("feature").loc[a.index]
    forms = ["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]
    m_ours, m_ref = statistics.median(ours), statistics.median(ref)
    return {"repeats": repeats, "ours_runs": len(ours),
            "ours_s_median": round(m_ours, 3), "ours_s_all": [round(t, 3) for t in ours],
            "pingouin_process_s_median": round(m_ref, 2),
            "pingouin_process_s_all": [round(t, 2) for t in ref],
            "speedup_whole_process": round(m_ref / m_ours, 1),
            "floor_python_s_median": round(statistics.median(bare), 3),
            "floor_numpy_scipy_special_s_median": round(statistics.median(floor), 3),
            "target_30x": m_ref / m_ours >= 30,
            "check_max_abs_diff_icc_vs_pingouin": float(
                np.nanmax(np.abs(a[forms].to_numpy() - b[forms].to_numpy())))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=1500)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--process-repeats", type=int, default=3,
                    help="whole-process runs of each contender (the reference takes ~30 s)")
    ap.add_argument("--ours-per-round", type=int, default=3,
                    help="runs of our command per reference run")
    ap.add_argument("--pingouin-features", type=int, default=None,
                    help="time pingouin in-process on this many features only (default: all)")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    F, n, k = a.features, a.cases, a.readers
    df = long_table(F, n, k)
    res = {"date": datetime.date.today().isoformat(), "features": F, "cases": n, "readers": k,
           "cpus": os.cpu_count(), "load_avg_1_5_15_before": list(os.getloadavg())}
    if not a.skip_in_process:
        res["computation"] = in_process(df, a.repeats, a.pingouin_features)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        table = d / "features_long.csv"
        df.to_csv(table, index=False, float_format="%.10g")   # as reader-study writes it
        res["table_mb"] = round(table.stat().st_size / 1e6, 2)
        res["whole_process"] = whole_process(table, d, a.process_repeats, a.ours_per_round)
    res["load_avg_1_5_15_after"] = list(os.getloadavg())
    return emit(res, a.out)


if __name__ == "__main__":
    sys.exit(main())
