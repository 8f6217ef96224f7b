"""Whole-process benchmark: ``her2radiomics extract`` against a plain pyradiomics script.

Times two whole processes on ``--images`` real BUS-BRA images (spacing 0.1 mm):
``python -m HER2RadiomicsLib extract --manifest M --params cui2023 --rings 3,5,8 --jobs 1``
against a plain Python script calling pyradiomics' ``RadiomicsFeatureExtractor`` on the same
region masks (tumour, 0-3/0-5/0-8 mm rings and the 3-5/5-8 mm annuli, written to files
beforehand, outside the clock). The clock is the children's CPU time (``getrusage``) and wall
time; numpy and ITK run on one thread; the commands run interleaved, ``--repeats`` times, and
the medians count (the machine is shared: the load averages are reported before and after).

``--baseline DIR`` adds a third command: the same extract run from another source tree (e.g.
``git archive <commit> | tar -x -C DIR``), interleaved with the others, so an optimisation's
before/after comes from one run.

With ``--stages`` it also reports our process's stages (start-up imports, loading, rings and
field of view, features, the rest) from one in-process profile of the same batch.

Target (issue 30): ours <= 0.12 of the plain pyradiomics script, CPU and wall.

Usage: python benchmarks/bench_whole.py [--images 48] [--repeats 5] [--baseline DIR]
       [--stages] [--out results.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before numpy loads: one thread, as timed

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit
from bench_engine import BUSBRA, REPO, SPACING_MM, _busbra, _load


PLAIN = '''"""A plain pyradiomics script: one extractor, every region of every image, one CSV."""
import csv, logging, sys
import SimpleITK as sitk
from radiomics import featureextractor
logging.getLogger("radiomics").setLevel(logging.ERROR)
params, listing, out = sys.argv[1:4]
ex = featureextractor.RadiomicsFeatureExtractor(params)
rows = []
with open(listing, newline="") as fh:
    for r in csv.DictReader(fh):
        image = sitk.ReadImage(r["image"])
        feats = {"case_id": r["case_id"], "region": r["region"]}
        res = ex.execute(image, sitk.ReadImage(r["mask"]))
        feats.update({k: float(v) for k, v in res.items() if not k.startswith("diagnostics")})
        rows.append(feats)
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
'''


def _child(cmd, env, cwd=None) -> tuple:
    import resource
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime), wall


def _stages(manifest: Path, out: Path) -> dict:
    """Our batch's CPU seconds by stage, from one profiled in-process run."""
    import pstats
    code = ("import sys; from HER2RadiomicsLib.cli import main; "
            f"main(['extract', '--manifest', {str(manifest)!r}, '--params', 'cui2023', "
            f"'--rings', '3,5,8', '--spacing-mm', '0.1', '0.1', '--jobs', '1', "
            f"'--no-progress', '--out', {str(out)!r}])")
    prof, script = out.with_suffix(".prof"), out.with_suffix(".py")
    script.write_text(code)
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(script)],
                   env=dict(os.environ, PYTHONPATH=str(REPO)), check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    st = pstats.Stats(str(prof)).stats
    cum = {}
    for (file, _line, fn), (_cc, _nc, _tt, ct, _callers) in st.items():
        key = f"{Path(file).name}:{fn}"
        cum[key] = max(cum.get(key, 0.0), ct)
    total = max(ct for (_cc, _nc, _tt, ct, _c) in st.values())
    parts = {"features": cum.get("features.py:extract", 0.0),
             "rings_and_fov": cum.get("rings.py:build_regions", 0.0),
             "fov_detection": cum.get("rings.py:detect_fov", 0.0),
             "loading": cum.get("io.py:load_case", 0.0)}
    # profiled seconds (the profiler slows pure-Python parts most); shares are what count
    return {"profiled_total_s": round(total, 2),
            **{f"{k}_share": round(v / total, 3) for k, v in parts.items()},
            "note": "rings_and_fov includes fov_detection; imports made inside a stage count "
                    "in it"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--root", default=str(BUSBRA))
    ap.add_argument("--baseline", help="another source tree to time the same extract from")
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--keep", help="keep the inputs and outputs in this folder")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    import SimpleITK as sitk
    sys.path.insert(0, str(REPO))
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.extraction.features import resolve_params
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    root = Path(a.root)
    if not (root / "bus_data.csv").is_file():
        return emit({"whole_process": f"skipped: no BUS-BRA images at {root}"}, a.out)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": _load()}
    env = dict(os.environ, OMP_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(a.keep or tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        man, listing, n = [], [], 0
        for img, msk, stem in _busbra(root, 4 * a.images):
            if n == a.images:
                break
            try:
                li, m = load_case(img, msk, spacing_mm=SPACING_MM)
                regs = build_regions(li, m, "3,5,8", fov="auto")
            except InputError:
                continue
            n += 1
            man.append({"case_id": stem, "image": str(img), "mask": str(msk)})
            sitk.WriteImage(li.image, str(tmp / f"{stem}.nrrd"))
            for r, rm in regs.masks.items():
                sitk.WriteImage(rm, str(tmp / f"{stem}__{r}.nrrd"))
                listing.append({"case_id": stem, "region": r, "image": str(tmp / f"{stem}.nrrd"),
                                "mask": str(tmp / f"{stem}__{r}.nrrd")})
        for name, rows in (("manifest.csv", man), ("regions.csv", listing)):
            with open(tmp / name, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        (tmp / "plain.py").write_text(PLAIN)

        def ours(tree, out):
            return ([sys.executable, "-m", "HER2RadiomicsLib", "extract", "--manifest",
                     str(tmp / "manifest.csv"), "--params", "cui2023", "--rings", "3,5,8",
                     "--spacing-mm", *map(str, SPACING_MM), "--jobs", "1", "--no-progress",
                     "--out", str(tmp / out)], dict(env, PYTHONPATH=str(tree)), str(tree))
        cmds = {"ours": ours(REPO, "ours.csv")}
        if a.baseline:
            cmds["ours_baseline"] = ours(Path(a.baseline).resolve(), "baseline.csv")
        cmds["plain_pyradiomics"] = ([sys.executable, str(tmp / "plain.py"),
                                      str(resolve_params("cui2023")), str(tmp / "regions.csv"),
                                      str(tmp / "plain.csv")], env, None)
        t = {k: [] for k in cmds}
        for _ in range(a.repeats):
            # interleaved; `python -m` puts the working folder first on the path, so each
            # tree's extract runs from inside that tree
            for k, (cmd, e, cwd) in cmds.items():
                t[k].append(_child(cmd, e, cwd))
        if a.stages:
            res["stages_ours"] = _stages(tmp / "manifest.csv", tmp / "staged.csv")
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
           for k, v in t.items()}
    ref = med["plain_pyradiomics"]
    res.update({"images": n, "regions": len(listing), "repeats": a.repeats,
                **{f"{k}_cpu_s": round(c, 2) for k, (c, _) in med.items()},
                **{f"{k}_wall_s": round(w, 2) for k, (_, w) in med.items()},
                "ratio_cpu": round(med["ours"][0] / ref[0], 3),
                "ratio_wall": round(med["ours"][1] / ref[1], 3),
                "all_runs": {k: [[round(c, 2), round(w, 2)] for c, w in v]
                             for k, v in t.items()},
                "target": "ratio <= 0.12 (medians)", "load_after": _load()})
    if a.baseline:
        res["ratio_cpu_baseline"] = round(med["ours_baseline"][0] / ref[0], 3)
        res["ratio_wall_baseline"] = round(med["ours_baseline"][1] / ref[1], 3)
    return emit({"whole_process": res}, a.out)


if __name__ == "__main__":
    sys.exit(main())
