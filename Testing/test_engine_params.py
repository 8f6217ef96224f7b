"""The native engine is the default and needs no pyradiomics; params are validated without it.

- our params validator gives pyradiomics 3.0.1's schema verdict on 65 good and bad files;
- with pyradiomics made unimportable, extraction, training and prediction work, and
  ``--engine pyradiomics`` answers with one line and the install hint;
- a bundle trained on features of one engine predicts with the other and says so.
"""
from __future__ import annotations

import copy
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from HER2RadiomicsLib.errors import InputError
from HER2RadiomicsLib.extraction.params import FEATURE_NAMES, validate_params

ROOT = Path(__file__).resolve().parents[1]

_BASE = {"imageType": {"Original": {}}, "featureClass": {"glcm": None}}
_SETTINGS = [
    dict(binWidth=25), dict(binWidth=0), dict(binWidth=-1), dict(binWidth=2.5),
    dict(binWidth="a"), dict(binWidth=True), dict(binCount=32), dict(binCount=3.5),
    dict(binCount=0), dict(label=0), dict(label=True), dict(label=2), dict(distances=[1, 2]),
    dict(distances=1), dict(distances=[0]), dict(distances=[1.5]),
    dict(interpolator="sitkBSpline"), dict(interpolator="bspline"), dict(interpolator=3),
    dict(interpolator=11), dict(interpolator=None), dict(weightingNorm=None),
    dict(weightingNorm="manhattan"), dict(weightingNorm="l2"), dict(wavelet="coif1"),
    dict(wavelet="nope"), dict(resampledPixelSpacing=[0.1, 0.1]),
    dict(resampledPixelSpacing=[0, 0]), dict(resampledPixelSpacing=[-1, 1]),
    dict(binwidth=25), dict(normalize=1), dict(normalize=True), dict(minimumROIDimensions=4),
    dict(minimumROIDimensions=1), dict(force2Ddimension=3), dict(voxelArrayShift=-5),
    dict(voxelArrayShift=1.5), dict(gldm_a=0), dict(gldm_a=-1), dict(sigma=[1.0, 2]),
    dict(sigma=[0]), dict(lbp2DMethod="uniform"), dict(lbp2DMethod="x"),
    dict(resegmentMode="sigma"), dict(resegmentRange=[-3, 3]), dict(removeOutliers=3),
    dict(removeOutliers=0), dict(level=0), dict(start_level=0), dict(lbp2DSamples=0)]
_OTHERS = [
    {"imageType": {"Foo": {}}}, {"imageType": {"LoG": {"sigma": [1.0]}}},
    {"imageType": {"LoG": {"sigmas": [1.0]}}}, {"imageType": {"Wavelet": {"binWidth": 0}}},
    {"featureClass": {"glcm": ["Contrast"]}}, {"featureClass": {"glcm": ["contrast"]}},
    {"featureClass": {"texture": None}}, {"featureClass": {"glcm": "Contrast"}},
    {"featureClass": {"shape2D": ["SphericalDisproportion"]}},
    {"voxelSetting": {"kernelRadius": 1}}, {"voxelSetting": {"kernelRadius": 0}},
    {"voxelSetting": {"radius": 1}}, {"imageType": {"Original": None}}, {"setting": None},
    {"featureClass": {"glcm": []}}]
CASES = [{**_BASE, "setting": s} for s in _SETTINGS] + _OTHERS


@pytest.mark.parametrize("params", CASES, ids=[str(c)[:60] for c in CASES])
def test_params_validator_agrees_with_pyradiomics_schema(params):
    radiomics = pytest.importorskip("radiomics")
    from radiomics import featureextractor
    radiomics.setVerbosity(logging.CRITICAL)
    try:
        featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(params))
        theirs = True
    except Exception:
        theirs = False
    try:
        validate_params(params, "p.yaml")
        ours = True
    except InputError as exc:
        ours = False
        assert str(exc).startswith("p.yaml: ")              # one line, naming the file
        assert "\n" not in str(exc)
    assert ours == theirs


def test_feature_names_are_pyradiomics_names():
    radiomics = pytest.importorskip("radiomics")
    theirs = {c: sorted(k.getFeatureNames()) for c, k in radiomics.getFeatureClasses().items()}
    assert theirs == {c: sorted(v) for c, v in FEATURE_NAMES.items()}
    assert sorted(radiomics.getImageTypes()) == sorted(
        __import__("HER2RadiomicsLib.extraction.params", fromlist=["x"]).IMAGE_TYPES)


# Runs the CLI in a fresh interpreter where "import radiomics" fails, as in Slicer.
_NO_PYRADIOMICS = """
import sys
sys.modules["radiomics"] = None          # any import of pyradiomics now raises ImportError
from HER2RadiomicsLib.cli import main
rc = main(sys.argv[1:])
assert not any(m == "radiomics" or m.startswith("radiomics.") for m in sys.modules
               if sys.modules[m] is not None), "pyradiomics was imported"
sys.exit(rc)
"""


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-c", _NO_PYRADIOMICS, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_everything_works_without_pyradiomics(cohort, tmp_path):
    out = tmp_path / "f.csv"
    res = _cli(["extract", "--manifest", cohort / "cohort.csv", "--params", "cui2023",
                "--rings", "3", "--no-progress", "--out", out], tmp_path)
    assert res.returncode == 0, res.stderr
    import pandas as pd
    table = pd.read_csv(out)
    prov = pd.read_csv(tmp_path / "f_provenance.csv")
    assert len(table) == len(pd.read_csv(cohort / "cohort.csv"))
    assert table.shape[1] == 1 + 2 * 86                    # tumour and the 0-3 mm ring
    assert set(prov.engine) == {"native"} and "version_pyradiomics" not in prov
    assert prov["tumor__diagnostics_Mask-original_VoxelNum"].gt(0).all()
    # asking for the reference engine: one line with the install hint, exit 2, no table
    res = _cli(["extract", "--manifest", cohort / "cohort.csv", "--params", "cui2023",
                "--engine", "pyradiomics", "--no-progress", "--out", tmp_path / "g.csv"],
               tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "HER2RadiomicsLib[pyradiomics]" in lines[0]
    assert not (tmp_path / "g.csv").exists()


@pytest.mark.slow
def test_bundle_from_the_other_engine_predicts_and_says_so(cohort, tmp_path):
    """A bundle whose features came from pyradiomics predicts with the native engine (values
    are equal) in a Python without pyradiomics, and the result names both engines."""
    import json
    import numpy as np
    import pandas as pd
    sys.path.insert(0, str(Path(__file__).parent))
    from test_bundle_allowlist import _pipeline
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    from HER2RadiomicsLib.extraction.features import load_params
    res = _cli(["extract", "--manifest", cohort / "cohort.csv", "--params", "cui2023",
                "--no-progress", "--out", tmp_path / "f.csv"], tmp_path)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "f.csv")
    cols = [c for c in table.columns if c.startswith("tumor__original_firstorder")][:6]
    X = pd.concat([table[cols]] * 8, ignore_index=True)
    X += np.random.default_rng(0).normal(0, 1e-3, X.shape) * X.abs().to_numpy()
    y = (X[cols[0]] > X[cols[0]].median()).astype(int).to_numpy()
    _, text, _ = load_params("cui2023")
    bundle = save_bundle(tmp_path / "b.zip", {"pipeline": _pipeline(X, y), "nomogram": None},
                         {"name": "t", "classes": ["zero", "low"], "positive_class": "1",
                          "input_columns": cols, "threshold": 0.5, "regions": ["tumor"],
                          "rings": {}, "params_name": "cui2023", "params_yaml": text,
                          "batch_col": None,
                          "engine": {"name": "pyradiomics", "version": "3.0.1"}})
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    res = _cli(["predict", "--bundle", bundle, "--image", cohort / row.image, "--mask",
                cohort / row["mask"], "--out", tmp_path / "p.json"], tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["qc"]["engine"] == "native 1.0.0 (bundle trained with pyradiomics 3.0.1)"
    assert abs(sum(doc["probabilities"].values()) - 1) < 1e-9
