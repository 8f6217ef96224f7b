"""Feature-engine benchmark: our numpy engine against pyradiomics (prints JSON).

Single thread (OMP_NUM_THREADS=1 is set before numpy loads). Both engines run on the same
cases in one run, interleaved case by case (each case ``--repeats`` times, the fastest kept),
through HER2RadiomicsLib's FeatureExtractor (the native engine computes a case's regions in
one pass; the pyradiomics path shares filtered images across regions). Reports the median
seconds per case and the ratios for:
- cui2023, tumour only;
- cui2023, tumour + 3 rings (0-3, 0-5, 0-8 mm);
- zhao2025, tumour only and tumour + 3 rings;
- cui2023, the 0-8 mm ring alone (what its pixels cost, shared or not), and the native engine's
  shared pass against the same four regions computed one by one.
Targets (issue 12): >= 5x faster than pyradiomics for cui2023 tumour + 3 rings, >= 3x for
zhao2025 tumour + 3 rings, tumour + 3 rings <= 2.5x the cost of tumour alone.

Usage: python benchmarks/bench_engine.py [--cases 20] [--repeats 3] [--out results.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import tempfile
import time
import sys
from pathlib import Path

# print the JSON, save it with --out (the same for every benchmark)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3,
                    help="timings per case and engine; the fastest counts (a shared 2-core "
                         "machine adds noise of the order of the effects measured)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    import csv
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    import SimpleITK as sitk
    res = {"cases": a.cases, "repeats": a.repeats, "threads": os.environ["OMP_NUM_THREADS"]}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        generate_cohort(d, n_cases=a.cases, seed=9, reader_fraction=0,
                        second_view_fraction=0)
        cases = []
        for r in list(csv.DictReader(open(d / "cohort.csv")))[:a.cases]:
            li, m = load_case(d / r["image"], d / r["mask"])
            regs = build_regions(li.image, m, "3,5,8", annuli=False)
            cases.append((li, regs.masks))
        for preset in ("cui2023", "zhao2025"):
            try:
                engines = {e: FeatureExtractor(preset, engine=e)
                           for e in ("pyradiomics", "native")}
            except InputError as exc:
                res[f"{preset}"] = {"native": f"not supported yet: {exc}"}
                continue
            scopes = {"tumour": ["tumor"], "tumour+3rings": None}
            if preset == "cui2023":
                # the largest ring alone: what any engine pays for its pixels, shared or not
                scopes["ring0-8mm"] = ["peri_0-8mm"]
            for scope, names in scopes.items():
                t = {e: [] for e in engines}
                for li, masks in cases:
                    regions = masks if names is None else {n: masks[n] for n in names}
                    best = {e: float("inf") for e in engines}
                    for _ in range(a.repeats):
                        for e, fx in engines.items():      # interleaved, same case
                            t0 = time.perf_counter()
                            fx.extract(li.image, regions, spacing_known=li.spacing_known)
                            best[e] = min(best[e], time.perf_counter() - t0)
                    for e in engines:
                        t[e].append(best[e])
                med = {e: statistics.median(v) for e, v in t.items()}
                res[f"{preset}/{scope}"] = {
                    "pyradiomics_s": round(med["pyradiomics"], 4),
                    "native_s": round(med["native"], 4),
                    "speedup": round(med["pyradiomics"] / med["native"], 2)}
        for e in ("pyradiomics", "native"):
            k1, k2, k3 = "cui2023/tumour", "cui2023/tumour+3rings", "cui2023/ring0-8mm"
            if k1 in res and k2 in res:
                res[f"cui2023_rings_cost_over_tumour_{e}"] = round(
                    res[k2][f"{e}_s"] / res[k1][f"{e}_s"], 2)
                res[f"cui2023_ring8_alone_cost_over_tumour_{e}"] = round(
                    res[k3][f"{e}_s"] / res[k1][f"{e}_s"], 2)
        # the shared pass against the same engine computing the four regions one by one
        fx = FeatureExtractor("cui2023", engine="native")
        t = {"together": [], "one_by_one": []}
        for li, masks in cases:
            best = {k: float("inf") for k in t}
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                fx.extract(li.image, masks, spacing_known=li.spacing_known)
                best["together"] = min(best["together"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                for n, m in masks.items():
                    fx.extract(li.image, {n: m}, spacing_known=li.spacing_known)
                best["one_by_one"] = min(best["one_by_one"], time.perf_counter() - t0)
            for k in t:
                t[k].append(best[k])
        med = {k: statistics.median(v) for k, v in t.items()}
        res["cui2023/tumour+3rings_native_shared_vs_one_by_one"] = {
            "together_s": round(med["together"], 4), "one_by_one_s": round(med["one_by_one"], 4),
            "speedup": round(med["one_by_one"] / med["together"], 2)}
        # pixels, for the ratios above: the rings' union is what the shared pass visits
        px = [(int(sitk.GetArrayViewFromImage(m["tumor"]).sum()),
               int(sitk.GetArrayViewFromImage(m["peri_0-8mm"]).sum())) for _, m in cases]
        res["median_pixels"] = {"tumour": statistics.median(p for p, _ in px),
                                "ring0-8mm": statistics.median(q for _, q in px)}
    emit(res, a.out)


if __name__ == "__main__":
    main()
