"""Feature-extraction benchmark (prints JSON).

Medians of seconds per case on the built-in synthetic cohort, all measured in this run:
- our extraction vs a direct pyradiomics call with the same params (ratio = overhead of I/O,
  validation and bookkeeping);
- tumour only vs tumour + three rings (3/5/8 mm expansions);
- original image only vs the full filter set (default preset: original + LoG x3 + wavelet);
- batch throughput (cases/s) with 1 and 2 joblib workers.

Usage: python benchmarks/bench_extract.py [--cases N] [--out results.json]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

# print the JSON, save it with --out (the same for every benchmark)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit


def _median_time(fn, items):
    times = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    import radiomics
    from radiomics import featureextractor
    from HER2RadiomicsLib.extraction.batch import ExtractConfig, read_manifest, run_batch
    from HER2RadiomicsLib.extraction.features import FeatureExtractor, load_params
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    radiomics.setVerbosity(logging.ERROR)

    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    generate_cohort(tmp / "c", n_cases=a.cases, seed=7, reader_fraction=0,
                    second_view_fraction=0)
    rows = read_manifest(tmp / "c" / "cohort.csv")
    cases = [load_case(r["image"], r["mask"]) for r in rows]

    res = {"n_cases": len(rows), "unit": "seconds per case (median)"}
    for preset in ("cui2023", "default"):
        params = load_params(preset)[0]
        direct = featureextractor.RadiomicsFeatureExtractor(params)
        ours = FeatureExtractor(preset)

        def run_direct(c):
            direct.execute(c[0].image, c[1])

        def run_ours(c):
            ours.extract(c[0].image, {"tumor": c[1]})

        run_ours(cases[0])  # warm-up (imports, caches)
        t_direct = _median_time(run_direct, cases)
        t_ours = _median_time(run_ours, cases)
        res[f"{preset}_direct_pyradiomics_s"] = round(t_direct, 4)
        res[f"{preset}_ours_s"] = round(t_ours, 4)
        res[f"{preset}_ratio_ours_over_direct"] = round(t_ours / t_direct, 3)

    fx = FeatureExtractor("default")

    def with_rings(c):
        regs = build_regions(c[0].image, c[1], "3,5,8", annuli=False)
        fx.extract(c[0].image, regs.masks)

    t_tumour = res["default_ours_s"]
    t_rings = _median_time(with_rings, cases)
    res["default_tumour_only_s"] = t_tumour
    res["default_tumour_plus_3_rings_s"] = round(t_rings, 4)
    res["ratio_rings_over_tumour_only"] = round(t_rings / t_tumour, 3)
    res["original_only_s (cui2023)"] = res["cui2023_ours_s"]
    res["full_filter_set_s (default)"] = res["default_ours_s"]
    res["ratio_filters_over_original"] = round(res["default_ours_s"] / res["cui2023_ours_s"], 3)

    cfg = ExtractConfig(params="default", rings_mm=(3.0, 5.0, 8.0), annuli=False)
    for jobs in (1, 2):
        t = time.perf_counter()
        run_batch(rows, tmp / f"f{jobs}.csv", cfg, jobs=jobs, progress=False)
        dt = time.perf_counter() - t
        res[f"batch_{jobs}_jobs_cases_per_s"] = round(len(rows) / dt, 3)
    res["batch_speedup_2_over_1"] = round(res["batch_2_jobs_cases_per_s"]
                                          / res["batch_1_jobs_cases_per_s"], 3)
    import os
    res["cpu_count"] = os.cpu_count()
    return emit(res, a.out)


if __name__ == "__main__":
    sys.exit(main())
