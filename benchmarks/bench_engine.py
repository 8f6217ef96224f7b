"""Feature-engine benchmark: our numpy engine against pyradiomics 3.0.1, measured fairly.

Fair means (issue 30): every timed call gets a *fresh* image and fresh masks (deep copies made
before the clock starts, so no engine reuses filtered images cached by an earlier repeat), the
clock is the process's CPU time (``time.process_time``; wall time is reported beside it),
numpy and ITK run on one thread (``OMP_NUM_THREADS=1`` before numpy loads,
``SetGlobalDefaultNumberOfThreads(1)``), and both engines run on the same masks in the same
run, interleaved case by case, so a ratio never mixes two machine states.

Cases: real BUS-BRA images (every k-th of ``--root``, spacing 0.1 mm, the tumour and nested
0-3/0-5/0-8 mm rings) when the dataset is there, synthetic ones otherwise (or with
``--synthetic``). Per preset (cui2023, zhao2025) it reports, as medians over the cases of each
case's fastest repeat:

- tumour alone and tumour + 3 rings, native vs pyradiomics, CPU and wall seconds and ratios;
- the native engine's shared pass over the four regions against the same engine computing
  them one at a time (filtered images computed once in both);
- microseconds of native CPU time per 1,000 pixels of the regions' union.

``--per-class`` instead splits one case's CPU time (tumour + 3 rings, ``--case``-th of the
cases) by feature class, ours against pyradiomics': where the remaining time goes.

``--whole-process`` instead runs ``bench_whole.py`` on ``--wp-images`` real images: the whole
``her2radiomics extract`` process against a plain pyradiomics script on the same region masks.

Targets (issue 30): cui2023 tumour + 3 rings >= 12x faster than pyradiomics in CPU time per
case, zhao2025 >= 7x, shared pass >= 1.5x faster than one region at a time; whole process
<= 0.12 of the plain pyradiomics script.

Usage: python benchmarks/bench_engine.py [--cases 12] [--repeats 3] [--synthetic]
       [--presets cui2023 zhao2025] [--whole-process [--wp-images 48]]
       [--per-class [--case 1]] [--out results.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit

REPO = Path(__file__).resolve().parents[1]
BUSBRA = REPO.parent / "shared" / "datasets" / "busbra"
SPACING_MM = (0.1, 0.1)       # BUS-BRA has no calibration; the parity script's value


def _load():
    """uptime's three load averages: other processes share this machine's cores."""
    return [round(v, 2) for v in os.getloadavg()]


def _busbra(root: Path, n: int) -> list:
    """``(image, mask, id)`` of every k-th BUS-BRA image (all scanners and sizes)."""
    with open(root / "bus_data.csv", newline="", encoding="utf-8-sig") as fh:
        ids = [r["ID"] for r in csv.DictReader(fh)]
    step = max(1, len(ids) // max(n, 1))
    return [(root / "images" / f"{s}.png", root / "masks" / f"{s.replace('bus_', 'mask_')}.png",
             s) for s in ids[::step][:n]]


def _cases(a, tmp: Path) -> tuple:
    """Loaded cases ``(image, {region: mask})`` and where they came from."""
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    if not a.synthetic and (Path(a.root) / "bus_data.csv").is_file():
        files, source, spacing = _busbra(Path(a.root), a.cases), "BUS-BRA", SPACING_MM
    else:
        from HER2RadiomicsLib.imaging.synth import generate_cohort
        generate_cohort(tmp, n_cases=a.cases, seed=9, reader_fraction=0,
                        second_view_fraction=0)
        with open(tmp / "cohort.csv") as fh:
            files = [(tmp / r["image"], tmp / r["mask"], r["image"])
                     for r in list(csv.DictReader(fh))[:a.cases]]
        source, spacing = "synthetic", None
    cases = []
    for img, msk, _ in files:
        try:
            li, m = load_case(img, msk, spacing_mm=spacing)
            regs = build_regions(li.image, m, "3,5,8", fov=None, annuli=False)
        except InputError:
            continue              # a case the command line would refuse: not a timing
        cases.append((li.image, regs.masks))
    return cases, source


def _fresh(image, masks: dict):
    """Deep copies: new pixel buffers and new objects, so no cache keyed on either hits."""
    import SimpleITK as sitk

    def copy(im):
        out = sitk.GetImageFromArray(sitk.GetArrayFromImage(im))
        out.CopyInformation(im)
        return out
    return copy(image), {r: copy(m) for r, m in masks.items()}


def _timed(fn) -> tuple:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def _median(rows, i):
    return statistics.median(r[i] for r in rows)


def engine_run(a) -> dict:
    import warnings
    # pyradiomics feeds LBP a float image; scikit-image warns each time (not news here)
    warnings.filterwarnings("ignore", "Applying `local_binary_pattern`", UserWarning)
    import numpy as np
    import SimpleITK as sitk
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)   # ITK's filters: one thread too
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.extraction import fast
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": _load(),
           "repeats": a.repeats, "threads": 1, "clock": "process_time (CPU), per case the "
           "fastest of the repeats, median over cases",
           "compiled_glrlm": fast.available()}     # the [fast] extra (numba) in use
    with tempfile.TemporaryDirectory() as tmp:
        cases, res["source"] = _cases(a, Path(tmp))
    res["cases"] = len(cases)
    union = [int(np.logical_or.reduce([sitk.GetArrayViewFromImage(m) > 0
                                       for m in masks.values()]).sum()) for _, masks in cases]
    tum = [int(sitk.GetArrayViewFromImage(masks["tumor"]).sum()) for _, masks in cases]
    res["median_pixels"] = {"tumour": statistics.median(tum),
                            "union_tumour_3rings": statistics.median(union)}
    for preset in a.presets:
        engines = {e: FeatureExtractor(preset, engine=e) for e in ("pyradiomics", "native")}
        for scope in ("tumour", "tumour+3rings"):
            per = {e: [] for e in engines}      # per case: (cpu, wall) of the fastest repeat
            for image, masks in cases:
                regions = {"tumor": masks["tumor"]} if scope == "tumour" else masks
                best = {e: (float("inf"), float("inf")) for e in engines}
                for _ in range(a.repeats):
                    for e, fx in engines.items():           # interleaved, same case
                        im, ms = _fresh(image, regions)
                        t = _timed(lambda: fx.extract(im, ms))
                        best[e] = min(best[e], t)
                for e in engines:
                    per[e].append(best[e])
            py, nat = per["pyradiomics"], per["native"]
            row = {"pyradiomics_cpu_s": round(_median(py, 0), 4),
                   "native_cpu_s": round(_median(nat, 0), 4),
                   "speedup_cpu": round(_median(py, 0) / _median(nat, 0), 2),
                   "pyradiomics_wall_s": round(_median(py, 1), 4),
                   "native_wall_s": round(_median(nat, 1), 4),
                   "speedup_wall": round(_median(py, 1) / _median(nat, 1), 2),
                   # the median of the per-case ratios (each case against itself)
                   "speedup_cpu_median_per_case": round(statistics.median(
                       p[0] / n[0] for p, n in zip(py, nat)), 2)}
            if scope != "tumour":
                row["native_us_per_1000_union_px"] = round(statistics.median(
                    n[0] / u * 1e9 for n, u in zip(nat, union)), 1)
                row["pyradiomics_us_per_1000_union_px"] = round(statistics.median(
                    p[0] / u * 1e9 for p, u in zip(py, union)), 1)
            res[f"{preset}/{scope}"] = row
        # the shared pass against the same engine one region at a time (one fresh image per
        # repeat, its filtered images computed once in both)
        fx = engines["native"]
        per = {"together": [], "one_by_one": []}
        for image, masks in cases:
            best = {k: (float("inf"),) * 2 for k in per}
            for _ in range(a.repeats):
                im, ms = _fresh(image, masks)
                best["together"] = min(best["together"], _timed(lambda: fx.extract(im, ms)))
                im, ms = _fresh(image, masks)
                best["one_by_one"] = min(best["one_by_one"], _timed(
                    lambda: [fx.extract(im, {n: m}) for n, m in ms.items()]))
            for k in per:
                per[k].append(best[k])
        res[f"{preset}/native_shared_vs_one_by_one"] = {
            "together_cpu_s": round(_median(per["together"], 0), 4),
            "one_by_one_cpu_s": round(_median(per["one_by_one"], 0), 4),
            "speedup_cpu": round(_median(per["one_by_one"], 0) / _median(per["together"], 0),
                                 2)}
    res["load_after"] = _load()
    res["targets"] = {
        "cui2023 tumour+3rings >= 12x (CPU)": res.get("cui2023/tumour+3rings", {}).get(
            "speedup_cpu", 0) >= 12,
        "zhao2025 tumour+3rings >= 7x (CPU)": res.get("zhao2025/tumour+3rings", {}).get(
            "speedup_cpu", 0) >= 7,
        "shared pass >= 1.5x one by one (cui2023)": res.get(
            "cui2023/native_shared_vs_one_by_one", {}).get("speedup_cpu", 0) >= 1.5}
    return res


def whole_process(a):
    """The whole-process comparison lives in ``bench_whole.py`` (medians, a baseline tree,
    stages); ``--whole-process`` runs it with ``--wp-images`` images."""
    import bench_whole
    argv = ["--images", str(a.wp_images), "--root", str(a.root)] + (
        ["--out", a.out] if a.out else [])
    bench_whole.main(argv)
    return None


def _timer(acc: dict, label: str, fn):
    """``fn`` adding its CPU seconds to ``acc[label]`` on every call."""
    def timed(*args, **kw):
        c0 = time.process_time()
        try:
            return fn(*args, **kw)
        finally:
            acc[label] = acc.get(label, 0.0) + time.process_time() - c0
    return timed


def per_class(a) -> dict:
    """CPU ms per feature class of one case (tumour + 3 rings), both engines: where the time
    goes. Our passes are timed where the shared pass calls them (matrices and formulas
    together); pyradiomics' per class around each class's construction and ``execute``.
    pyradiomics' filters are generators run between classes, so they fall in its remainder
    (with its diagnostics); ours in "filters"."""
    import warnings
    warnings.filterwarnings("ignore", "Applying `local_binary_pattern`", UserWarning)
    import logging
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    import SimpleITK as sitk
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    import radiomics
    from radiomics import featureextractor, imageoperations
    from HER2RadiomicsLib.extraction import engine as E
    from HER2RadiomicsLib.extraction import multi, native
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    acc = {}
    for mod, names in ((multi, ("_glcm", "_gldm", "_glrlm", "_glszm", "_ngtdm", "_Union")),
                       (E, ("glcm_features", "gldm_features", "glrlm_features",
                            "glszm_features", "firstorder_values", "shape2d"))):
        for n in names:
            label = {"_Union": "union set-up", "firstorder_values": "firstorder",
                     "shape2d": "shape2D"}.get(n, n.strip("_").replace("_features", ""))
            setattr(mod, n, _timer(acc, "native " + label, getattr(mod, n)))
    for n, label in (("diagnostics", "diagnostics"), ("_filtered", "filters")):
        setattr(native.NativeExtractor, n, _timer(acc, "native " + label,
                                                  getattr(native.NativeExtractor, n)))
    classes = radiomics.getFeatureClasses()       # pyradiomics looks them up here per call
    for name, cls in list(classes.items()):
        sub = type(cls.__name__, (cls,), {})
        sub.__init__ = _timer(acc, f"pyradiomics {name}", cls.__init__)
        sub.execute = _timer(acc, f"pyradiomics {name}", cls.execute)
        classes[name] = sub
    rfe = featureextractor.RadiomicsFeatureExtractor
    rfe.computeShape = _timer(acc, "pyradiomics shape2D", rfe.computeShape)
    rfe.loadImage = staticmethod(_timer(acc, "pyradiomics load and normalise",
                                        rfe.loadImage))
    imageoperations.checkMask = _timer(acc, "pyradiomics checkMask", imageoperations.checkMask)
    with tempfile.TemporaryDirectory() as tmp:
        cases, source = _cases(a, Path(tmp))
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": _load(),
           "source": source, "repeats": a.repeats, "clock": "process_time (CPU), mean over "
           "the repeats; total: median", "case": a.case}
    image, masks = cases[min(a.case, len(cases) - 1)]
    for preset in a.presets:
        for engine in ("native", "pyradiomics"):
            fx = FeatureExtractor(preset, engine=engine)
            fx.extract(*_fresh(image, masks))                  # imports and caches warm
            acc.clear()
            runs = [_fresh(image, masks) for _ in range(a.repeats)]
            total = sorted(_timed(lambda: fx.extract(im, ms))[0] for im, ms in runs)
            ms_ = {k.split(" ", 1)[1]: round(v / a.repeats * 1e3, 2)
                   for k, v in sorted(acc.items(), key=lambda kv: -kv[1])
                   if k.startswith(engine + " ")}
            ms_["total"] = round(total[len(total) // 2] * 1e3, 2)
            ms_["remainder"] = round(ms_["total"] - sum(
                v for k, v in ms_.items() if k != "total"), 2)
            res[f"{preset}/{engine}_ms"] = ms_
    res["load_after"] = _load()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh-image timings per case and engine; the fastest counts (a "
                         "shared 2-core machine adds noise of the order of the effects)")
    ap.add_argument("--root", default=str(BUSBRA))
    ap.add_argument("--synthetic", action="store_true", help="synthetic cases even when the "
                    "BUS-BRA images are there")
    ap.add_argument("--presets", nargs="+", default=["cui2023", "zhao2025"])
    ap.add_argument("--whole-process", action="store_true")
    ap.add_argument("--wp-images", type=int, default=48)
    ap.add_argument("--per-class", action="store_true", help="CPU ms per feature class of "
                    "one case (--case), both engines")
    ap.add_argument("--case", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.whole_process:
        whole_process(a)
        return
    emit(per_class(a) if a.per_class else engine_run(a), a.out)


if __name__ == "__main__":
    main()
