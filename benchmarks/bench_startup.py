"""Start-up benchmark of the command line (prints JSON).

Medians over ``--repeats`` runs, each a fresh process, measured in this run:
- ``her2radiomics --help``: target <= 0.3 s;
- ``her2radiomics extract`` on one synthetic case (cui2023, tumour only) against a plain Python
  process that does the same work through the library (read, validate, extract, write the CSV):
  target ratio <= 1.15. The two are interleaved so that machine load affects both alike.

Usage: python benchmarks/bench_startup.py [--repeats N] [--out results.json]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# print the JSON, save it with --out (the same for every benchmark)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit

PLAIN = """
import sys
from HER2RadiomicsLib.extraction.features import FeatureExtractor
from HER2RadiomicsLib.imaging.io import atomic_write_text, load_case
loaded, mask = load_case(sys.argv[1], sys.argv[2])
feats, _ = FeatureExtractor("cui2023").extract(loaded.image, {"tumor": mask},
                                                spacing_known=loaded.spacing_known)
atomic_write_text(sys.argv[3], "case_id," + ",".join(feats) + "\\n" + "x," +
                  ",".join(repr(v) for v in feats.values()) + "\\n")
"""


def _time(cmd) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    exe = Path(sys.executable).with_name("her2radiomics")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "HER2RadiomicsLib"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        generate_cohort(d / "c", n_cases=1, seed=5, reader_fraction=0)
        img = next((d / "c" / "images").glob("*.dcm"))
        mask = d / "c" / "masks" / (img.stem + ".png")
        helps, ours, plain = [], [], []
        for i in range(a.repeats):
            helps.append(_time(cli + ["--help"]))
            ours.append(_time(cli + ["extract", "--image", str(img), "--mask", str(mask),
                                     "--params", "cui2023", "--out", str(d / f"o{i}.csv"),
                                     "--no-progress"]))
            plain.append(_time([sys.executable, "-c", PLAIN, str(img), str(mask),
                                str(d / f"p{i}.csv")]))
    res = {
        "repeats": a.repeats,
        "help_s_median": round(statistics.median(helps), 4),
        "extract_cli_s_median": round(statistics.median(ours), 4),
        "extract_plain_python_s_median": round(statistics.median(plain), 4),
        "ratio_cli_over_plain": round(statistics.median(ours) / statistics.median(plain), 3),
        "targets": {"help_s": 0.3, "ratio_cli_over_plain": 1.15},
    }
    res["meets_targets"] = bool(res["help_s_median"] <= 0.3
                                and res["ratio_cli_over_plain"] <= 1.15)
    emit(res, a.out)


if __name__ == "__main__":
    main()
