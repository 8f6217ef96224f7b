"""Real-label check of the modelling pipeline on BUS-BRA: benign vs malignant (NOT HER2).

Builds a manifest from ``../shared/datasets/busbra`` (patient = ``Case``, site = scanner
``Device``), extracts tumour features with the default preset in pixel units (BUS-BRA PNGs carry
no pixel spacing, so LoG sigmas are in pixels and no mm-based step is used), then runs the
``busbra_benign_malignant`` recipe (yin2024-style: ComBat across scanners, z-score, |r| > 0.8
clusters, LASSO, logistic; 70/30 split by patient).

Usage: python scripts/busbra_stand_in.py [--root ../shared/datasets/busbra] [--out busbra-run]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                          "datasets" / "busbra"))
    ap.add_argument("--out", default="busbra-run")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    root, out = Path(a.root), Path(a.out)
    if not (root / "bus_data.csv").exists():
        print(f"BUS-BRA not found at {root}; nothing to do")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(root / "bus_data.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append({"case_id": r["ID"], "patient_id": r["Case"],
                         "image": str(root / "images" / f"{r['ID']}.png"),
                         "mask": str(root / "masks" / f"{r['ID'].replace('bus_', 'mask_')}.png"),
                         "site": r["Device"].split(" @")[0], "Pathology": r["Pathology"]})
    man = out / "manifest.csv"
    with open(man, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from HER2RadiomicsLib.cli import main as cli
    rc = cli(["extract", "--manifest", str(man), "--params", "default", "--pixel-units",
              "--jobs", str(a.jobs), "--resume", "--out", str(out / "features.csv")])
    if rc not in (0, 1):
        return rc
    return cli(["train", "--recipe", "busbra_benign_malignant", "--features",
                str(out / "features.csv"), "--labels", str(man), "--out", str(out / "model")])


if __name__ == "__main__":
    sys.exit(main())
