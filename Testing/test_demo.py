"""The demo at a reduced size: every artefact exists and is consistent, and a rerun reuses
the cached stages instead of recomputing them."""
import json
from types import SimpleNamespace

import pytest


@pytest.mark.slow
def test_demo_reduced(tmp_path):
    from HER2RadiomicsLib.bundle import load_bundle
    from HER2RadiomicsLib.demo import run_demo
    from HER2RadiomicsLib.predict import predict_case
    args = SimpleNamespace(out=str(tmp_path / "demo"), n=60, jobs=2, seed=42, no_progress=True)
    assert run_demo(args) == 0
    out = tmp_path / "demo"
    for rel in ("index.html", "features.csv", "segmentation_metrics.csv",
                "reader_study/summary.html", "reader_study/icc.csv",
                "models/yin2024/report.html", "models/peritumoral2025/model_bundle.zip",
                "new_patient/prediction.json", "timings.json"):
        assert (out / rel).exists(), rel
    card = json.loads((out / "new_patient" / "prediction.json").read_text())
    b = load_bundle(out / "models" / "peritumoral2025" / "model_bundle.zip")
    import pandas as pd
    row = pd.read_csv(out / "new_patient" / "cohort.csv").iloc[0]
    again = predict_case(b, out / "new_patient" / row.image, card["mask"], site=row.site,
                         clinical={k: float(row[k]) for k in b.meta["clinical"]},
                         case_id=str(row.case_id))
    for k, v in card["probabilities"].items():
        assert again.probabilities[k] == pytest.approx(v, abs=1e-12)
    html = (out / "index.html").read_text()
    assert "Research use only" in html and "reader_study/summary.html" in html
    # rerun: cached stages are reused (files not rewritten)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "models" / "yin2024" / "metrics.json",
                                                 out / "segmentation_metrics.csv",
                                                 out / "reader_study" / "summary.json")}
    assert run_demo(args) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
