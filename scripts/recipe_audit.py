"""Every recipe on one cohort, scored per patient from its ``predictions.csv``.

Used to report the effect of the patient-level evaluation (issue 14): whatever unit a run
evaluated in, this script averages each patient's image probabilities and computes the test
and external AUC over patients with DeLong's 95% CI, beside the AUC the run itself reported.

Usage::

    python scripts/recipe_audit.py FEATURES.csv COHORT.csv OUT_DIR [--icc ICC.csv]
        [--params cui2023] [--recipes cui2023 yin2024 zhao2025 peritumoral2025]

Prints one JSON document (also written to ``OUT_DIR/audit.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def patient_level(pred: pd.DataFrame, cohort: pd.DataFrame, split: str):
    """(y, score) per patient: the mean of the patient's image scores."""
    from HER2RadiomicsLib.modelling.evaluation import auc_delong_ci
    d = pred[pred["split"] == split]
    if d.empty:
        return None
    pid = cohort.set_index("case_id")["patient_id"].astype(str)
    # aggregated recipes already predict per patient (case_id is the patient id)
    d = d.assign(patient=[pid.get(c, c) for c in d["case_id"].astype(str)])
    cols = [c for c in d.columns if c == "probability" or c.startswith("p_")]
    g = d.groupby("patient")
    y = g["label"].first()
    if "probability" in cols:
        s = g["probability"].mean()
        if y.nunique() < 2:
            return None
        r = auc_delong_ci(y.to_numpy().astype(int), s.to_numpy())
        return {"patients": int(len(y)), "images": int(len(d)), "auc": r["auc"],
                "ci": [r["ci_low"], r["ci_high"]]}
    from sklearn.metrics import roc_auc_score
    P = g[cols].mean()
    classes = [c[2:] for c in cols]
    aucs = {c: float(roc_auc_score((y.astype(str) == c).astype(int), P[f"p_{c}"]))
            for c in classes if (y.astype(str) == c).any()}
    per = {c: auc_delong_ci((y.astype(str) == c).astype(int).to_numpy(),
                            P[f"p_{c}"].to_numpy()) for c in aucs}
    return {"patients": int(len(y)), "images": int(len(d)),
            "auc_macro": float(np.mean(list(aucs.values()))),
            "per_class": {c: {"auc": v["auc"], "ci": [v["ci_low"], v["ci_high"]]}
                          for c, v in per.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("cohort")
    ap.add_argument("out")
    ap.add_argument("--icc")
    ap.add_argument("--params", default="cui2023",
                    help="the params the feature table was extracted with")
    ap.add_argument("--recipes", nargs="+",
                    default=["cui2023", "yin2024", "zhao2025", "peritumoral2025"])
    ap.add_argument("--repeats", type=int, default=0)
    args = ap.parse_args(argv)
    from HER2RadiomicsLib.modelling.study import StudyOptions, load_recipe, run
    cohort = pd.read_csv(args.cohort)
    cohort["case_id"] = cohort["case_id"].astype(str)
    out = Path(args.out)
    doc = {}
    for name in args.recipes:
        t = time.time()
        r = load_recipe(name)
        r["params"] = args.params
        r["evaluation"] = {**r.get("evaluation", {}), "repeats": args.repeats}
        s = run(r, args.features, args.cohort, out / name,
                StudyOptions(icc=args.icc, progress=False, make_bundle=False)).summary
        # the per-image scores (runs before the patient-level change wrote them to
        # predictions.csv; later runs to predictions_images.csv)
        images = out / name / "predictions_images.csv"
        pred = pd.read_csv(images if images.exists() else out / name / "predictions.csv")
        m = s["models"][s["primary"]]
        reported = m["test"].get("auc", m["test"].get("auc_macro"))
        doc[name] = {"primary": s["primary"], "unit_reported": s.get("unit", "images"),
                     "reported_test_auc": reported,
                     "reported_test_n": s["n"]["test"],
                     "test_per_patient": patient_level(pred, cohort, "test"),
                     "external_per_patient": patient_level(pred, cohort, "external"),
                     "seconds": round(time.time() - t, 1)}
    text = json.dumps(doc, indent=2)
    (out / "audit.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
