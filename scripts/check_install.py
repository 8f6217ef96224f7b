"""Install the library as Slicer would, on the Pythons Slicer ships, and check it works.

For each target (Python 3.12 with numpy 2.0.x as in Slicer 5.10 / 5.12 / preview; Python 3.9
with numpy 1.26.x as in Slicer 5.8) this builds a fresh virtualenv from pyenv's interpreter,
installs exactly the packages the Slicer dependency installer installs
(``HER2RadiomicsLib/requirements.py``, Slicer's own numpy and SimpleITK added with the pinned
numpy) with ``pip install --only-binary=:all:`` (radiologists have no C compiler: anything that
would need one fails here), puts the library on ``PYTHONPATH`` as the Slicer extension does,
imports every library module, extracts features for synthetic cases with every shipped preset
and 3/5/8 mm rings, predicts the shipped self-test case with the shipped bundle (a bundle saved
by the project's newer scikit-learn), writes its HTML report and fits the statsmodels models
(calibration, nomogram). Features must equal the run of the interpreter running this script
(the project's Python 3.11 venv) to relative 1e-9; the prediction (class, probabilities,
Rad-score, contributions, nomogram) and the fits to 1e-6.

``--floors`` installs instead every requirement at exactly its declared floor for that Python
(``pkg==floor`` from ``pyproject.toml``, environment markers evaluated for the target; numpy's
floor must lie in the Slicer line above), so each floor in pyproject is proven, not assumed.

Usage::

    python scripts/check_install.py [--floors] [--targets 3.12 3.9] [--work build/install-check]
                                    [--keep]

Prints one JSON summary and writes it to ``<work>/summary.json`` (``summary-floors.json`` with
``--floors``); exit status 0 when every target installs and matches.
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
    """pyenv's newest interpreter of ``version`` (e.g. 3.12 -> .../3.12.1/bin/python3.12)."""
    root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                               check=True).stdout.strip())
    found = sorted((p for p in (root / "versions").glob(f"{version}.*")
                    if (p / "bin" / f"python{version}").exists()),
                   key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()])
    if not found:
        raise SystemExit(f"error: pyenv has no Python {version} (pyenv install {version})")
    return found[-1] / "bin" / f"python{version}"


def slicer_requirements(numpy_pin: str) -> list:
    """What a Slicer user ends up with: Slicer's numpy and SimpleITK plus our installer's list
    (with their markers: pip evaluates them for the target's Python)."""
    from HER2RadiomicsLib import requirements as R
    itk = [r for r in R.names(R.SLICER, python="all") if not r.startswith("numpy")]
    return [numpy_pin, *itk, *R.names(R.PIP, python="all")]


def declared_floors(version: str) -> dict:
    """``{name: floor}`` of every pyproject dependency whose marker holds on Python ``version``.

    Each entry must have exactly one specifier, ``>=``: the floor (an upper bound or a pin
    would make "install the floor" ambiguous, so it is refused here).
    """
    import tomllib

    from packaging.requirements import Requirement
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = {"python_version": version, "python_full_version": f"{version}.0"}
    floors = {}
    for text in deps:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != ">=":
            raise SystemExit(f"error: pyproject.toml: {text!r}: a floor is one '>=' specifier")
        if req.name in floors:
            raise SystemExit(f"error: pyproject.toml: two floors of {req.name} on {version}")
        floors[req.name] = specs[0].version
    return floors


def floor_requirements(version: str) -> list:
    """Every requirement at exactly its floor on ``version``; numpy's must be Slicer's line."""
    from packaging.specifiers import SpecifierSet
    floors = declared_floors(version)
    line = SpecifierSet(TARGETS[version].replace("numpy", "", 1))
    if floors.get("numpy") is None or floors["numpy"] not in line:
        raise SystemExit(f"error: pyproject.toml: numpy's floor on {version} "
                         f"({floors.get('numpy')}) is not in Slicer's line {TARGETS[version]}")
    return [f"{name}=={v}" for name, v in floors.items()]


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


def check_target(version: str, work: Path, cohort: Path, reference: dict, keep: bool,
                 floors: bool = False) -> dict:
    label = f"{version}-floors" if floors else version
    venv = work / f"py{label}"
    shutil.rmtree(venv, ignore_errors=True)
    out = work / f"out-{label}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    reqs = floor_requirements(version) if floors else slicer_requirements(TARGETS[version])
    report = {"python": version, "mode": "floors" if floors else "current",
              "requested": reqs}
    t0 = time.perf_counter()
    with open(work / f"log-{label}.txt", "w") as log:
        base = pyenv_python(version)
        run([base, "-m", "venv", venv], log=log)
        py = venv / "bin" / "python"
        res = run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", *reqs], log=log)
        report["install_s"] = round(time.perf_counter() - t0, 1)
        if res.returncode:
            report.update(ok=False, problem="pip install --only-binary=:all: failed: "
                          + (res.stderr.strip().splitlines() or ["?"])[-1])
            return report
        freeze = run([py, "-m", "pip", "freeze"]).stdout.split()
        declared = {_canonical(n) for n in declared_floors(version)} | {"pyradiomics"}
        report["installed"] = sorted(f for f in freeze
                                     if _canonical(f.split("==")[0]) in declared)
        if floors:
            from packaging.version import Version
            got = dict(_canonical(f).split("==") for f in report["installed"])
            off = [r for r in reqs if Version(got.get(_canonical(r).split("==")[0], "0"))
                   != Version(r.split("==")[1])]
            if off:
                report.update(ok=False, problem=f"pip did not install these floors: {off}")
                return report
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
        report["prediction"] = compare_prediction(reference["prediction"],
                                                  predict_shipped(py, out, env, log))
        res = run([py, "-m", "HER2RadiomicsLib", *shipped_args("report"),
                   "--out", out / "report.html"], env=env, log=log)
        written = (out / "report.html").is_file() and (out / "report.html").stat().st_size
        report["report"] = "ok" if res.returncode == 0 and written else \
            (res.stderr.strip().splitlines() or ["no report written"])[-1]
        report["fits"] = compare_numbers(reference["fits"], run_fits(py, env, log))
    report["presets"] = {}
    for preset in PRESETS:
        if not isinstance(got[preset], Path):
            report["presets"][preset] = {"ok": False, "problem": got[preset]}
        elif not isinstance(reference[preset], Path):
            report["presets"][preset] = {"ok": False, "problem": "reference run failed"}
        else:
            report["presets"][preset] = compare(reference[preset], got[preset])
    report["ok"] = all(p["ok"] for p in report["presets"].values()) \
        and report["synth_and_extract_here"] == "ok" and report["prediction"]["ok"] \
        and report["report"] == "ok" and report["fits"]["ok"]
    report["total_s"] = round(time.perf_counter() - t0, 1)
    if not keep:
        shutil.rmtree(venv, ignore_errors=True)
    return report


def _canonical(name: str) -> str:
    """PEP 503 name (``PyWavelets==1.6`` -> ``pywavelets==1.6``) for comparing with freeze."""
    import re
    head, sep, tail = name.partition("==")
    return re.sub(r"[-_.]+", "-", head).lower() + sep + tail


#: the self-test case and bundle the Slicer module ships (trained by the project's venv, so
#: saved by its newer scikit-learn: loading it on older versions is part of the check)
SHIPPED = ROOT / "HER2Radiomics" / "Resources" / "Testing"


def shipped_args(command: str) -> list:
    case = json.loads((SHIPPED / "case.json").read_text())
    return [command, "--bundle", SHIPPED / "model_bundle.zip", "--image", SHIPPED / "case.nrrd",
            "--mask", SHIPPED / "case_mask.nrrd", "--site", case["site"], "--clinical",
            *(f"{k}={v}" for k, v in case["clinical"].items())]


def predict_shipped(python: Path, out: Path, env: dict, log) -> dict:
    """The CLI's JSON prediction of the shipped case, or ``{"error": last stderr line}``."""
    path = out / "prediction.json"
    res = run([python, "-m", "HER2RadiomicsLib", *shipped_args("predict"), "--out", path],
              env=env, log=log)
    if res.returncode:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(path.read_text())


def compare_prediction(ref: dict, got: dict, tol: float = 1e-6) -> dict:
    """Same class; probabilities, Rad-score, contributions and nomogram within ``tol``."""
    if "error" in got or "error" in ref:
        return {"ok": False, "problem": got.get("error") or f"reference: {ref.get('error')}"}
    if got["predicted_class"] != ref["predicted_class"]:
        return {"ok": False, "problem": f"class {got['predicted_class']} != "
                f"{ref['predicted_class']}"}
    flat = lambda p: {**{f"P({k})": v for k, v in p["probabilities"].items()},  # noqa: E731
                      "rad_score": p["rad_score"],
                      "nomogram_probability": p["nomogram_probability"],
                      **{c["feature"]: c["contribution"] for c in p["contributions"] or []}}
    res = compare_numbers(flat(ref), flat(got), tol)
    return {"predicted_class": got["predicted_class"], **res,
            "probabilities": got["probabilities"]}


def compare_numbers(ref: dict, got: dict, tol: float = 1e-6) -> dict:
    """Largest absolute difference over the keys of two flat dicts of numbers (None allowed)."""
    if "error" in got or "error" in ref:
        return {"ok": False, "problem": got.get("error") or f"reference: {ref.get('error')}"}
    if set(ref) != set(got):
        return {"ok": False, "problem": f"keys differ: {sorted(set(ref) ^ set(got))[:5]}"}
    worst, where = 0.0, None
    for k, x in ref.items():
        y = got[k]
        if x is None or y is None:
            if x is not y:
                return {"ok": False, "problem": f"{k}: {x} vs {y}"}
            continue
        d = abs(float(x) - float(y))
        if math.isnan(d):           # NaN on one side only, or both: never "equal"
            return {"ok": False, "problem": f"{k}: {x} vs {y}"}
        if d > worst:
            worst, where = d, k
    return {"ok": worst <= tol, "values": len(ref), "worst_abs_diff": worst, "worst_at": where}


# statsmodels is used only in fits (calibration slope/intercept, the nomogram's logistic
# regression); deterministic inputs (no RNG: its streams may change between numpy versions)
FITS = """
import json
import numpy as np, pandas as pd
from HER2RadiomicsLib.modelling.evaluation import calibration
from HER2RadiomicsLib.modelling.nomogram import NomogramModel
i = np.arange(80)
a, b = 2 * np.sin(0.7 * i), np.cos(1.3 * i)
y = (a + 0.5 * b + 1.5 * np.sin(2.9 * i) > 0).astype(int)
cal = calibration(y, 1 / (1 + np.exp(-(0.8 * a + 0.3))))
nomo = NomogramModel(predictors=("a", "b")).fit(pd.DataFrame({"a": a, "b": b}), y)
out = {"brier": cal["brier"], "slope": cal["slope"], "intercept": cal["intercept"],
       "nomogram_intercept": nomo.intercept_}
out.update({f"nomogram_coef{k}": float(c) for k, c in enumerate(nomo.coef_)})
out.update({f"nomogram_bse{k}": float(c) for k, c in enumerate(nomo.bse_)})
print(json.dumps(out))
"""


def run_fits(python: Path, env: dict, log) -> dict:
    res = run([python, "-c", FITS], env=env, log=log)
    if res.returncode:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


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
    ap.add_argument("--floors", action="store_true",
                    help="install every requirement at exactly its declared floor")
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
    t0 = time.perf_counter()
    with open(work / "log-reference.txt", "w") as log:
        reference = extract_all(Path(sys.executable), cohort, ref_out, env, log)
        reference["prediction"] = predict_shipped(Path(sys.executable), ref_out, env, log)
        reference["fits"] = run_fits(Path(sys.executable), env, log)
    import sklearn
    summary = {"mode": "floors" if a.floors else "current",
               "reference_python": sys.version.split()[0],
               "reference_scikit_learn": sklearn.__version__, "cases": a.cases,
               "presets": list(PRESETS), "rings_mm": RINGS,
               "targets": [check_target(v, work, cohort, reference, a.keep, a.floors)
                           for v in a.targets]}
    summary["ok"] = all(t["ok"] for t in summary["targets"])
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(summary, indent=1, default=str)
    (work / ("summary-floors.json" if a.floors else "summary.json")).write_text(text + "\n")
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
