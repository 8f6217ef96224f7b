"""Native engine against pyradiomics 3.0.1 on real breast ultrasound (BUS-BRA), every preset.

For N images of ``../shared/datasets/busbra`` (every 16th image in the dataset's order, so all
scanners and sizes are represented), spacing 0.1 mm, the tumour and the 3/5/8 mm rings as
annuli (tumour, 0-3, 3-5, 5-8 mm) or, with ``--nested``, nested (0-3, 0-5, 0-8 mm): extracts
every feature of each shipped preset with both engines and reports the worst relative
difference per feature class and image type
(``|a - b| / max(|a|, |b|)``, 0 where ``|a - b| <= 1e-12``) and where it occurs.

Usage: python scripts/busbra_parity.py [--root ../shared/datasets/busbra] [--n 100]
       [--presets cui2023 default yin2024 zhao2025] [--out parity.json]
Prints JSON. Needs the pyradiomics extra (the reference engine).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rel(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    d = abs(a - b)
    return 0.0 if d <= 1e-12 else d / max(abs(a), abs(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT.parent / "shared" / "datasets" / "busbra"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--presets", nargs="+", default=["cui2023", "default", "yin2024",
                                                     "zhao2025"])
    ap.add_argument("--nested", action="store_true",
                    help="nested rings (0-3, 0-5, 0-8 mm) instead of annuli: the native "
                         "engine then joins runs and zones across the ring borders")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    from HER2RadiomicsLib.segmentation.training import busbra_pairs
    pairs = list(busbra_pairs(a.root))
    step = max(1, len(pairs) // a.n)
    pairs = pairs[::step][:a.n]
    res = {"images": len(pairs), "spacing_mm": 0.1,
           "rings_mm": "3,5,8 (%s)" % ("nested" if a.nested else "annuli"), "presets": {}}
    for preset in a.presets:
        ref = FeatureExtractor(preset, engine="pyradiomics")
        nat = FeatureExtractor(preset, engine="native")
        worst, n_values, failed = {}, 0, []
        t = {"pyradiomics": 0.0, "native": 0.0}
        for img, msk, stem, _ in pairs:
            try:
                li, mask = load_case(img, msk, spacing_mm=(0.1, 0.1))
                regs = build_regions(li.image, mask, "3,5,8", fov=None, annuli=not a.nested)
            except InputError as exc:
                failed.append(f"{stem}: {exc}")
                continue
            t0 = time.perf_counter()
            fa, _ = ref.extract(li.image, regs.masks)
            t1 = time.perf_counter()
            fb, _ = nat.extract(li.image, regs.masks)
            t["pyradiomics"] += t1 - t0
            t["native"] += time.perf_counter() - t1
            if list(fa) != list(fb):
                failed.append(f"{stem}: keys differ")
                continue
            for k, v in fa.items():
                region, key = k.split("__", 1)
                image_type, cls = key.split("_")[:2]
                group = f"{cls} ({'filtered' if image_type != 'original' else 'original'})"
                d = _rel(v, fb[k])
                n_values += 1
                if d > worst.get(group, (-1.0,))[0]:
                    worst[group] = (d, f"{stem}:{k}")
        res["presets"][preset] = {
            "values": n_values, "failed": failed,
            "seconds": {e: round(s, 1) for e, s in t.items()},
            "worst_rel_diff": {g: {"rel": float(f"{d:.3g}"), "at": at}
                               for g, (d, at) in sorted(worst.items())},
            "overall": float(f"{max((d for d, _ in worst.values()), default=0.0):.3g}")}
        print(json.dumps({preset: res["presets"][preset]["overall"]}), file=sys.stderr)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if all(p["overall"] <= 1e-9 and not p["failed"]
                    for p in res["presets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
