"""The native engine against committed pyradiomics 3.0.1 values, without pyradiomics.

``Testing/data/engine_reference`` holds small 2D cases (phantoms aimed at the edge cases and
cut-down ultrasound-like cases, with overlapping and nested regions) and the values
pyradiomics 3.0.1 gave for them under 13 params configurations: every feature class, every
image filter the engine implements (LoG, wavelet, square, square root, logarithm,
exponential, gradient, LBP), fixed bin width and bin count, asymmetrical GLCM, several
distances, every weighting norm, GLDM alpha, voxel shift, normalisation with resampling, and
the shipped presets. ``scripts/make_engine_reference.py`` wrote them.

Each case is extracted with every region at once (the shared multi-region pass) and region
by region (the one-region path); both must give pyradiomics' keys, in its order, and its
values to a relative 1e-11 (absolute 1e-12 near zero). Why not exact: the engine sums in
another order than pyradiomics' C code, and a few features (Imc2, MCC's eigenvalues, sums of
terms that cancel) amplify the last-bit differences. Measured: 83 % of the 59,712 values are
bit-identical, the worst differs by 8e-14 relative; 1e-11 leaves a hundredfold margin for
other numpy and LAPACK builds and still catches any change of a formula. The live comparison
with pyradiomics itself stays in test_engine_parity.py (skipped without pyradiomics).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from HER2RadiomicsLib.extraction.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "engine_reference"
REF = json.loads((DATA / "reference.json").read_text())
RTOL, ATOL = 1e-11, 1e-12


sys.path.insert(0, str(ROOT / "scripts"))
# the script that wrote the files reads them back the same way (it needs pyradiomics only to
# write them)
from make_engine_reference import load_cases  # noqa: E402

CASES = load_cases(DATA / "cases.npz", REF["cases"])


def _expected(config: str, case: str, region: str) -> dict:
    rec = REF["values"][config][case][region]
    keys = rec.get("keys") or REF["keys"][config]
    return dict(zip(keys, rec["values"]))


def _mismatches(got: dict, want: dict, where: str) -> list:
    """Every difference between ``got`` and the reference ``want``: keys, order, values."""
    if list(got) != list(want):
        return [f"{where}: keys differ: {sorted(set(got) ^ set(want))[:5]} "
                f"(or their order)"]
    bad = []
    for k, w in want.items():
        g = got[k]
        if math.isnan(w) or math.isnan(g):
            if not (math.isnan(w) and math.isnan(g)):
                bad.append(f"{where}: {k} native {g!r} pyradiomics {w!r}")
        elif abs(g - w) > max(RTOL * abs(w), ATOL):
            bad.append(f"{where}: {k} native {g!r} pyradiomics {w!r}")
    return bad


def _extractor(config: str, tmp_path) -> FeatureExtractor:
    path = tmp_path / f"{config}.yaml"
    path.write_text(json.dumps(REF["configs"][config]["params"]))     # JSON is YAML
    return FeatureExtractor(str(path), engine="native")


@pytest.mark.parametrize("config", list(REF["configs"]))
def test_native_engine_equals_committed_pyradiomics_values(config, tmp_path):
    fx = _extractor(config, tmp_path)
    bad, n = [], 0
    for case, regions in REF["values"][config].items():
        img, masks = CASES[case]
        together, _ = fx.extract(img, masks)           # every region in one pass
        for region in regions:
            want = _expected(config, case, region)
            got = {k.split("__", 1)[1]: v for k, v in together.items()
                   if k.split("__", 1)[0] == region}
            bad += _mismatches(got, want, f"{case}/{region} (together)")
            alone, _ = fx.extract(img, {region: masks[region]})
            got = {k.split("__", 1)[1]: v for k, v in alone.items()}
            bad += _mismatches(got, want, f"{case}/{region} (alone)")
            n += len(want)
    assert not bad, "\n".join(bad[:20])
    assert n > 0


def test_the_reference_covers_every_class_and_filter():
    """The committed set is what the module docstring promises: a shrunken set would pass
    silently."""
    keys = {k for ks in REF["keys"].values() for k in ks}
    classes = {k.split("_")[1] for k in keys}
    assert classes == {"shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    prefixes = {k.split("_")[0].split("-")[0].rstrip("0123456789") for k in keys}
    assert prefixes == {"original", "log", "wavelet", "square", "squareroot", "logarithm",
                        "exponential", "gradient", "lbp"}
    settings = [c["params"].get("setting", {}) for c in REF["configs"].values()]
    assert any("binCount" in s for s in settings) and any("binWidth" in s for s in settings)
    assert {s.get("weightingNorm") for s in settings} >= {"manhattan", "euclidean",
                                                          "infinity"}
    assert len(REF["cases"]) >= 8
    assert sum(len(r) for r in REF["values"]["width25"].values()) >= 18     # regions


def test_a_perturbed_value_is_caught():
    """The comparison can fail: one value off by 1e-10 relative (ten times the tolerance)."""
    want = _expected("width25", "speckle_disk", "disk")
    key = "original_glcm_Imc2"
    got = dict(want)
    got[key] = want[key] * (1 + 1e-10)
    assert _mismatches(got, want, "x") == [
        f"x: {key} native {got[key]!r} pyradiomics {want[key]!r}"]
    assert _mismatches(dict(reversed(list(want.items()))), want, "x")     # order counts
    assert not _mismatches(dict(want), want, "x")


def test_passes_with_pyradiomics_unimportable():
    """The same test in a Python where ``import radiomics`` fails (a ``None`` entry in
    ``sys.modules`` makes every import of it raise ImportError)."""
    code = ("import sys; sys.modules['radiomics'] = None\n"
            "try:\n    import radiomics\nexcept ImportError:\n    pass\n"
            "else:\n    sys.exit('radiomics still importable')\n"
            "import pytest\n"
            f"sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', {__file__!r}, "
            "'-k', 'committed and (width25 or count16 or default)']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "3 passed" in r.stdout, r.stdout[-500:]
