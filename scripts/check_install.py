"""Install the library as Slicer would, on the Pythons Slicer ships, and check the features.

For each target (Python 3.12 with numpy 2.0.x as in Slicer 5.10 / 5.12 / preview; Python 3.9
with numpy 1.26.x as in Slicer 5.8) this builds a fresh virtualenv from pyenv's interpreter,
installs exactly the packages the Slicer dependency installer installs
(``HER2RadiomicsLib/requirements.py``, Slicer's own numpy and SimpleITK added with the pinned
numpy) with ``pip install --only-binary=:all:`` (radiologists have no C compiler: anything that
would need one fails here), puts the library on ``PYTHONPATH`` as the Slicer extension does,
imports every library module, and extracts features for synthetic cases with every shipped
preset and 3/5/8 mm rings. The values must equal the run of the interpreter running this script
(the project's Python 3.11 venv) to relative 1e-9.

Usage::

    python scripts/check_install.py [--targets 3.12 3.9] [--work build/install-check] [--keep]

Prints one JSON summary; exit status 0 when every target installs and matches.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: numpy as each Slicer line bundles it (the only Slicer package whose version decides which
#: wheels of everything else pip may pick)
TARGETS = {"3.12": "numpy==2.0.*", "3.9": "numpy==1.26.*"}
PRESETS = ("cui2023", "default", "yin2024", "zhao2025")
RINGS = "3,5,8"


def pyenv_python(version: str) -> Path:
    """pyenv's newest interpreter of ``version`` (e.g. 3.12 -> .../versions/3.12.1/bin/python3.12)."""
    root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                               check=True).stdout.strip())
    found = sorted((p for p in (root / "versions").glob(f"{version}.*")
                    if (p / "bin" / f"python{version}").exists()),
                   key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()])
    if not found:
        raise SystemExit(f"error: pyenv has no Python {version} (pyenv install {version})")
    return found[-1] / "bin" / f"python{version}"


def slicer_requirements(numpy_pin: str) -> list:
    """What a Slicer user ends up with: Slicer's numpy and SimpleITK plus our installer's list."""
    from HER2RadiomicsLib import requirements as R
    return [numpy_pin, *R.names(R.SLICER)[1:], *R.names(R.PIP)]


def run(cmd, env=None, log=None) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}\n{res.stdout}{res.stderr}\n")
    return res


def extract_all(python: Path, cohort: Path, out: Path, env: dict, log) -> dict:
    """Feature tables for every preset; ``{preset: path or error text}``."""
    tables = {}
    for preset in PRESETS:
        csv_path = out / f"{preset}.csv"
        res = run([python, "-m", "HER2RadiomicsLib", "extract", "--manifest", cohort,
                   "--params", preset, "--rings", RINGS, "--jobs", "1", "--no-progress",
                   "--out", csv_path], env=env, log=log)
        tables[preset] = csv_path if res.returncode == 0 else \
            (res.stderr.strip().splitlines() or ["failed"])[-1]
    return tables


def read_table(path: Path) -> dict:
    with open(path, newline="") as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


def compare(ref: Path, got: Path) -> dict:
    """Worst relative difference over every numeric cell, and any column or case mismatch."""
    a, b = read_table(ref), read_table(got)
    if set(a) != set(b):
        return {"ok": False, "problem": f"cases differ: {sorted(set(a) ^ set(b))[:5]}"}
    cols_a, cols_b = list(next(iter(a.values()))), list(next(iter(b.values())))
    if cols_a != cols_b:
        return {"ok": False, "problem": f"columns differ: {sorted(set(cols_a) ^ set(cols_b))[:5]}"}
    worst, where, n = 0.0, None, 0
    for case, row in a.items():
        for col, x in row.items():
            try:
                x, y = float(x), float(b[case][col])
            except ValueError:
                continue
            n += 1
            if math.isnan(x) and math.isnan(y):
                continue
            diff = abs(x - y) / max(abs(x), abs(y)) if abs(x - y) > 1e-12 else 0.0
            if diff > worst or math.isnan(diff):
                worst, where = diff, f"{case}:{col}"
    return {"ok": worst <= 1e-9, "cells": n, "worst_rel_diff": worst, "worst_at": where}


def check_target(version: str, work: Path, cohort: Path, reference: dict, keep: bool) -> dict:
    numpy_pin = TARGETS[version]
    venv = work / f"py{version}"
    shutil.rmtree(venv, ignore_errors=True)
    out = work / f"out-{version}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report = {"python": version, "numpy": numpy_pin}
    t0 = time.perf_counter()
    with open(work / f"log-{version}.txt", "w") as log:
        base = pyenv_python(version)
        run([base, "-m", "venv", venv], log=log)
        py = venv / "bin" / "python"
        reqs = slicer_requirements(numpy_pin)
        res = run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", *reqs], log=log)
        report["install_s"] = round(time.perf_counter() - t0, 1)
        if res.returncode:
            report.update(ok=False, problem="pip install --only-binary=:all: failed: "
                          + (res.stderr.strip().splitlines() or ["?"])[-1])
            return report
        freeze = run([py, "-m", "pip", "freeze"]).stdout.split()
        report["installed"] = sorted(f for f in freeze if f.split("==")[0].lower() in {
            "numpy", "simpleitk", "scipy", "scikit-image", "scikit-learn", "pandas",
            "pywavelets", "pyradiomics"})
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        # every module must at least import on this Python (syntax, annotations, stdlib APIs)
        res = run([py, "-c", IMPORT_ALL], env=env, log=log)
        report["imports"] = res.stdout.strip() or res.stderr.strip().splitlines()[-1:]
        if res.returncode:
            report.update(ok=False, problem=f"import failed: {report['imports']}")
            return report
        got = extract_all(py, cohort, out, env, log)
        # the synthetic cohort written on this Python (pydicom 2.4 on 3.9) reads back
        own = out / "own-cohort"
        res = run([py, "-m", "HER2RadiomicsLib", "synth", "--n", "1", "--out", own], env=env,
                  log=log)
        if res.returncode == 0:
            res = run([py, "-m", "HER2RadiomicsLib", "extract", "--manifest",
                       own / "cohort.csv", "--params", "cui2023", "--rings", RINGS,
                       "--no-progress", "--out", out / "own.csv"], env=env, log=log)
        report["synth_and_extract_here"] = "ok" if res.returncode == 0 else \
            (res.stderr.strip().splitlines() or ["failed"])[-1]
    report["presets"] = {}
    for preset in PRESETS:
        if not isinstance(got[preset], Path):
            report["presets"][preset] = {"ok": False, "problem": got[preset]}
        elif not isinstance(reference[preset], Path):
            report["presets"][preset] = {"ok": False, "problem": "reference run failed"}
        else:
            report["presets"][preset] = compare(reference[preset], got[preset])
    report["ok"] = all(p["ok"] for p in report["presets"].values()) \
        and report["synth_and_extract_here"] == "ok"
    report["total_s"] = round(time.perf_counter() - t0, 1)
    if not keep:
        shutil.rmtree(venv, ignore_errors=True)
    return report


# Imports every library module (torch, which comes from Slicer's PyTorch extension and not from
# this list, is imported only inside the CNN's functions), and proves no pyradiomics is there.
IMPORT_ALL = """
import importlib, pkgutil, sys
import HER2RadiomicsLib as L
names = [m.name for m in pkgutil.walk_packages(L.__path__, "HER2RadiomicsLib.")
         if not m.name.endswith("__main__")]
for n in names:
    importlib.import_module(n)
try:
    import radiomics
    sys.exit("pyradiomics is installed; the check must run without it")
except ImportError:
    pass
print(f"{len(names)} modules")
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--work", default=str(ROOT / "build" / "install-check"))
    ap.add_argument("--keep", action="store_true", help="keep the virtualenvs")
    ap.add_argument("--cases", type=int, default=2, help="synthetic patients (default 2)")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    cohort = generate_cohort(work / "cohort", n_cases=a.cases, seed=7, reader_fraction=0)
    ref_out = work / "out-reference"
    shutil.rmtree(ref_out, ignore_errors=True)
    ref_out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(work / "log-reference.txt", "w") as log:
        reference = extract_all(Path(sys.executable), cohort, ref_out, env, log)
    summary = {"reference_python": sys.version.split()[0], "cases": a.cases,
               "presets": list(PRESETS), "rings_mm": RINGS,
               "targets": [check_target(v, work, cohort, reference, a.keep)
                           for v in a.targets]}
    summary["ok"] = all(t["ok"] for t in summary["targets"])
    print(json.dumps(summary, indent=1, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
