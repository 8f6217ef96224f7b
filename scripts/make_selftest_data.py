"""Build the module self-test's shipped data: a tiny model bundle and one case.

The Slicer self-test must run on Slicer's test machines without pip-installing packages and
without training a model, so it ships what it needs in
``HER2Radiomics/Resources/Testing/``:

- ``case.nrrd`` / ``case_mask.nrrd``: one synthetic ultrasound case (0.1 mm spacing) and its
  reference tumour mask (NRRD, which Slicer reads with no extra package);
- ``case.json``: its case id, scanner site and clinical values;
- ``model_bundle.zip``: a peritumoral2025 bundle (cui2023 original-image features, tumour +
  0-3 mm ring, ComBat over the sites, clinical nomogram) trained on a 60-patient synthetic
  cohort that does not contain the case.

Usage::

    python scripts/make_selftest_data.py [--out HER2Radiomics/Resources/Testing]

Deterministic for a given library version; rerun it when the bundle format changes (a test
checks that the shipped bundle still loads and predicts).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "HER2Radiomics"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "HER2Radiomics" / "Resources" / "Testing"))
    args = ap.parse_args(argv)
    import pandas as pd
    import SimpleITK as sitk
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    from HER2RadiomicsModuleLib.core import exampleBundle

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="h2r_selftest_") as tmp:
        bundle, _cohort = exampleBundle(Path(tmp) / "train", nPatients=60, seed=5)
        shutil.copyfile(bundle, out / "model_bundle.zip")
        # the case comes from another cohort (another seed): never seen in training
        cases = Path(tmp) / "cases"
        generate_cohort(cases, n_cases=4, seed=11, reader_fraction=0, second_view_fraction=0)
        table = pd.read_csv(cases / "cohort.csv")
        row = table[table.site != "C"].iloc[0]
        loaded, mask = load_case(cases / row["image"], cases / row["mask"])
        sitk.WriteImage(loaded.image, str(out / "case.nrrd"), True)
        sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(out / "case_mask.nrrd"), True)
        from HER2RadiomicsLib.modelling.bundle import load_bundle
        names = load_bundle(out / "model_bundle.zip").meta.get("clinical") or []
        meta = {"case_id": str(row.case_id), "site": str(row.site),
                "clinical": {k: float(row[k]) for k in names},
                "spacing_mm": list(loaded.image.GetSpacing()),
                "made_by": "scripts/make_selftest_data.py"}
        (out / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    print(json.dumps({"out": str(out), "bytes": sizes}))


if __name__ == "__main__":
    main()
