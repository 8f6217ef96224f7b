"""``her2radiomics demo``: the main job on the built-in synthetic cohort.

Stages (each cached: a rerun reuses finished stages):
1. generate the synthetic cohort (unless present);
2. build peritumoral rings (3/5/8 mm) and extract features in parallel with a progress bar.
Later stages (auto-segmentation, reader study, modelling, report) are added as they land.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


def run_demo(a) -> int:
    from .batch import ExtractConfig, read_manifest, run_batch, summarize
    from .synth import generate_cohort
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t = time.time()
    cohort = out / "cohort"
    if not (cohort / "cohort.csv").exists():
        generate_cohort(cohort, n_cases=a.n, seed=a.seed, jobs=a.jobs)
    times["1 synthetic cohort"] = time.time() - t

    t = time.time()
    rows = read_manifest(cohort / "cohort.csv")
    cfg = ExtractConfig(params="default", rings_mm=(3.0, 5.0, 8.0), combined=(5.0,))
    res = run_batch(rows, out / "features.csv", cfg, jobs=a.jobs, resume=True,
                    aggregate="mean")
    times["2 rings + features"] = time.time() - t
    print(summarize(res))
    (out / "timings.json").write_text(json.dumps(times, indent=2))
    print("\nstage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print(f"outputs: cohort {cohort}/cohort.csv; features {res.features_csv}; "
          f"provenance {res.provenance_csv}; errors {res.errors_csv}")
    return res.exit_code
