"""Write the engine's committed reference values: pyradiomics 3.0.1 on small images.

Run from the repository root, in an environment with the pyradiomics extra::

    python scripts/make_engine_reference.py [--out Testing/data/engine_reference]

It makes a fixed set of small 2D cases (synthetic phantoms aimed at the edge cases, and
breast-ultrasound-like cases from :mod:`HER2RadiomicsLib.imaging.synth` cut down to the lesion
and its rings), extracts them with pyradiomics through ``FeatureExtractor(engine=
"pyradiomics")`` under every params configuration below (every feature class, every image
filter the engine implements, fixed bin width and fixed bin count, weighting norms,
distances, the shipped presets), and writes

- ``cases.npz``: each case's image (its own dtype), region masks (one bit per region) and
  spacing (x, y) in mm;
- ``reference.json``: the configurations (params as pyradiomics reads them), the cases'
  region names and, per configuration, case and region, the feature keys and values.

``Testing/test_engine_reference.py`` checks the native engine against these values without
pyradiomics. Everything is deterministic (fixed seeds): rerunning gives the same files.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL_CLASSES = {"shape2D": None, "firstorder": None, "glcm": None, "glrlm": None,
               "glszm": None, "gldm": None, "ngtdm": None}
FIRSTORDER_ALL = ["10Percentile", "90Percentile", "Energy", "Entropy", "InterquartileRange",
                  "Kurtosis", "Maximum", "MeanAbsoluteDeviation", "Mean", "Median", "Minimum",
                  "Range", "RobustMeanAbsoluteDeviation", "RootMeanSquared", "Skewness",
                  "StandardDeviation", "TotalEnergy", "Uniformity", "Variance"]
# minimumROIDimensions 1: the one-pixel-wide cases are part of the set
EDGE = {"minimumROIDimensions": 1, "label": 1}
FILTERS = {"Original": {}, "LoG": {"sigma": [0.5, 1.5]}, "Wavelet": {}, "Square": {},
           "SquareRoot": {}, "Logarithm": {}, "Exponential": {}, "Gradient": {}, "LBP2D": {}}

# which cases a configuration runs on: every case for the original image, fewer for the
# filters and presets (a dozen filtered images each), so the values stay under 1.5 MB
ALL = "all"
FEW = ["speckle_disk", "lobulated_anisotropic", "thin", "us_P0001-1"]
US2 = ["us_P0001-1", "us_P0002-1"]
#: name -> (params, the cases it runs on)
CONFIGS = {
    "width25": ({"setting": {**EDGE, "binWidth": 25}, "imageType": {"Original": {}},
                 "featureClass": {**ALL_CLASSES, "firstorder": FIRSTORDER_ALL}}, ALL),
    "width5_shift300": ({"setting": {**EDGE, "binWidth": 5, "voxelArrayShift": 300},
                         "imageType": {"Original": {}}, "featureClass": ALL_CLASSES}, ALL),
    "count16": ({"setting": {**EDGE, "binCount": 16}, "imageType": {"Original": {}},
                 "featureClass": ALL_CLASSES}, ALL),
    "asymmetric_d123": ({"setting": {**EDGE, "binWidth": 10, "symmetricalGLCM": False,
                                     "distances": [1, 2, 3]},
                         "imageType": {"Original": {}}, "featureClass": ALL_CLASSES}, ALL),
    "manhattan_gldm_a2": ({"setting": {**EDGE, "binWidth": 10, "weightingNorm": "manhattan",
                                       "gldm_a": 2},
                           "imageType": {"Original": {}}, "featureClass": ALL_CLASSES}, ALL),
    "euclidean_d12": ({"setting": {**EDGE, "binWidth": 10, "weightingNorm": "euclidean",
                                   "distances": [1, 2]},
                       "imageType": {"Original": {}}, "featureClass": ALL_CLASSES}, ALL),
    "infinity": ({"setting": {**EDGE, "binWidth": 10, "weightingNorm": "infinity"},
                  "imageType": {"Original": {}}, "featureClass": ALL_CLASSES}, ALL),
    # every image filter, with a fixed bin width, then with a fixed bin count
    "filters_width": ({"setting": {**EDGE, "binWidth": 5},
                       "imageType": {**FILTERS, "Wavelet": {"binWidth": 2},
                                     "LBP2D": {"binWidth": 1}},
                       "featureClass": ALL_CLASSES}, FEW),
    "filters_count": ({"setting": {**EDGE, "binCount": 12},
                       "imageType": {**FILTERS, "Wavelet": {"level": 2, "start_level": 1}},
                       "featureClass": ALL_CLASSES}, US2),
    # normalisation and resampling around each region (as the yin2024 preset does)
    "normalise_resample": ({"setting": {**EDGE, "binWidth": 5, "normalize": True,
                                        "normalizeScale": 100, "removeOutliers": 3,
                                        "voxelArrayShift": 300,
                                        "resampledPixelSpacing": [0.5, 0.5],
                                        "interpolator": "sitkBSpline", "padDistance": 4},
                            "imageType": {"Original": {}, "Wavelet": {}},
                            "featureClass": ALL_CLASSES}, US2),
}
# the shipped presets, on ultrasound-like cases (zhao2025's image types are a subset of
# yin2024's and default's)
PRESETS = ("cui2023", "default", "yin2024")


def phantom_cases() -> dict:
    """Small synthetic cases aimed at the engine's edge cases: name -> (image, {region: mask},
    spacing (x, y) mm). Regions of a case overlap or nest, as tumour and rings do."""
    rng = np.random.default_rng(2029)
    out = {}
    h, w = 48, 56
    yy, xx = np.indices((h, w))
    speckle = rng.rayleigh(40, (h, w)).round(2)
    disk = (yy - 24) ** 2 + (xx - 28) ** 2 < 10 ** 2
    big = (yy - 24) ** 2 + (xx - 28) ** 2 < 16 ** 2
    out["speckle_disk"] = (speckle, {"disk": disk, "ring": big & ~disk, "both": big},
                           (0.1, 0.1))
    h, w = 60, 72
    yy, xx = np.indices((h, w))
    theta = np.arctan2(yy - 30, xx - 36)
    lobed = np.hypot(yy - 30, (xx - 36) * 0.7) < 13 + 4 * np.sin(5 * theta)
    out["lobulated_anisotropic"] = (rng.normal(120, 35, (h, w)),
                                    {"lesion": lobed, "box": (yy > 8) & (yy < 52) & (xx > 6)},
                                    (0.2, 0.1))
    h, w = 40, 44
    yy, xx = np.indices((h, w))
    line = np.zeros((h, w), bool)
    line[5:35, 20] = True
    diag = np.eye(h, w, dtype=bool) | np.eye(h, w, k=1, dtype=bool)
    out["thin"] = (rng.rayleigh(30, (h, w)).round(1), {"line": line, "diagonal": diag},
                   (0.15, 0.15))
    h, w = 50, 64
    yy, xx = np.indices((h, w))
    steps = np.where(xx < 30, 10.0, 200.0) + rng.integers(0, 3, (h, w))
    disk = (yy - 25) ** 2 + (xx - 30) ** 2 < 12 ** 2
    out["plateaus_border"] = (steps, {"disk": disk, "border": (yy < 9) | (xx > w - 7)},
                              (0.1, 0.3))
    h, w = 44, 44
    yy, xx = np.indices((h, w))
    disk = (yy - 22) ** 2 + (xx - 22) ** 2 < 9 ** 2
    flat = np.full((h, w), 77.0)
    flat[:, :6] = 20.0
    out["constant"] = (flat, {"disk": disk, "wide": (yy > 4) & (yy < 40)}, (0.1, 0.1))
    h, w = 90, 80
    yy, xx = np.indices((h, w))
    img = (60 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 8, (h, w))).round(3)
    core = (yy - 45) ** 2 / 400 + (xx - 40) ** 2 / 225 < 1
    shell = ((yy - 45) ** 2 / 900 + (xx - 40) ** 2 / 625 < 1) & ~core
    out["smooth_texture"] = (img, {"core": core, "shell": shell, "all": core | shell},
                             (0.25, 0.25))
    return out


def ultrasound_cases(n: int = 3) -> dict:
    """Breast-ultrasound-like cases from the synthetic cohort: the lesion and its 0-3 and
    3-5 mm rings, subsampled (every ``k``-th pixel, spacing times k) and cut to the regions'
    box plus a margin, so each image is at most about 90 pixels a side."""
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        generate_cohort(d, n_cases=n, seed=29, reader_fraction=0, second_view_fraction=0)
        with open(d / "cohort.csv") as f:
            rows = list(csv.DictReader(f))[:n]
        for r in rows:
            li, mask = load_case(d / r["image"], d / r["mask"])
            regs = build_regions(li.image, mask, "3,5", annuli=True)
            img = sitk.GetArrayFromImage(li.image)
            masks = {k: sitk.GetArrayFromImage(m) > 0 for k, m in regs.masks.items()}
            union = np.logical_or.reduce(list(masks.values()))
            ys, xs = np.nonzero(union)
            k = max(1, math.ceil(max(np.ptp(ys), np.ptp(xs)) / 80))
            y0, y1 = max(ys.min() - 3 * k, 0), ys.max() + 3 * k + 1
            x0, x1 = max(xs.min() - 3 * k, 0), xs.max() + 3 * k + 1
            cut = (slice(y0, y1, k), slice(x0, x1, k))
            sp = li.image.GetSpacing()
            out[f"us_{r['case_id']}"] = (img[cut], {n_: m[cut] for n_, m in masks.items()},
                                         (sp[0] * k, sp[1] * k))
    return out


def save_cases(cases: dict, path: Path) -> dict:
    """Write the cases to ``path`` (npz) and return their region names."""
    arrays, names = {}, {}
    for name, (img, masks, spacing) in cases.items():
        bits = np.zeros(img.shape, np.uint8)
        for r, m in enumerate(masks.values()):
            bits |= (m.astype(np.uint8) << r)
        arrays[f"{name}__image"] = img
        arrays[f"{name}__regions"] = bits
        arrays[f"{name}__spacing"] = np.array(spacing, np.float64)
        names[name] = list(masks)
    np.savez_compressed(path, **arrays)
    return names


def load_cases(path: Path, names: dict) -> dict:
    """name -> (SimpleITK image, {region: SimpleITK mask}): what both engines read."""
    data = np.load(path)
    out = {}
    for name, regions in names.items():
        img = sitk.GetImageFromArray(data[f"{name}__image"])
        img.SetSpacing(tuple(float(v) for v in data[f"{name}__spacing"]))
        bits = data[f"{name}__regions"]
        masks = {}
        for r, region in enumerate(regions):
            m = sitk.GetImageFromArray(((bits >> r) & 1).astype(np.uint8))
            m.CopyInformation(img)
            masks[region] = m
        out[name] = (img, masks)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "Testing" / "data" / "engine_reference"))
    a = ap.parse_args(argv)
    import radiomics
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.extraction.features import FeatureExtractor, load_params
    assert radiomics.__version__.lstrip("v").startswith("3.0.1"), radiomics.__version__
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = {**phantom_cases(), **ultrasound_cases()}
    names = save_cases(cases, out / "cases.npz")
    loaded = load_cases(out / "cases.npz", names)       # the saved arrays, as the test reads
    configs = {k: {"params": p, "cases": which} for k, (p, which) in CONFIGS.items()}
    for preset in PRESETS:
        # yin2024 filters 17 images per region: one case is enough
        configs[preset] = {"params": load_params(preset)[0],
                           "cases": US2[:1] if preset == "yin2024" else US2}
    ref = {"pyradiomics": radiomics.__version__, "made_by": "scripts/make_engine_reference.py",
           "cases": names, "configs": configs, "values": {}}
    n = 0
    with tempfile.TemporaryDirectory() as d:
        for cname, cfg in configs.items():
            path = Path(d) / f"{cname}.yaml"
            path.write_text(json.dumps(cfg["params"]))          # JSON is YAML
            fx = FeatureExtractor(str(path), engine="pyradiomics")
            got = ref["values"][cname] = {}
            for case, (img, masks) in loaded.items():
                if cfg["cases"] != ALL and case not in cfg["cases"]:
                    continue
                got[case] = {}
                for region, m in masks.items():
                    try:
                        feats, _ = fx.extract(img, {region: m})
                    except InputError as exc:      # too small for this config: recorded
                        got[case][region] = {"error": str(exc)}
                        continue
                    keys = [k.split("__", 1)[1] for k in feats]
                    got[case][region] = {"keys": keys, "values": [float(v) for v in
                                                                  feats.values()]}
                    n += len(keys)
            print(cname, n, file=sys.stderr)
    # one list of keys per configuration where every region has the same (the usual case)
    for cname, per_case in ref["values"].items():
        lists = {tuple(r["keys"]) for c in per_case.values() for r in c.values() if "keys" in r}
        if len(lists) == 1:
            ref["keys"] = ref.get("keys", {})
            ref["keys"][cname] = list(lists.pop())
            for c in per_case.values():
                for r in c.values():
                    r.pop("keys", None)
    (out / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
    print(json.dumps({"values": n, "cases": len(cases), "configs": len(configs),
                      "bytes": {p.name: p.stat().st_size for p in out.iterdir()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
