"""CNN auto-mask latency benchmark (prints JSON).

Median seconds per image for the whole ``Segmenter.predict`` call (FOV detection, normalisation,
letterbox, network with flip TTA, inverse mapping, post-processing) on synthetic ultrasound
images of about 300 x 400 px, on CPU with 1 and 2 torch threads, and on CUDA when available.
Reference measured in the same run: the bare network forward pass on one 160 x 160 input.

Usage: python benchmarks/bench_segment.py [--model PATH] [--repeats 30]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median(fn, n):
    fn()                                   # warm-up
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args(argv)
    import torch
    from HER2RadiomicsLib.imaging.io import read_image
    from HER2RadiomicsLib.segmentation.inference import DEFAULT_MODEL, Segmenter
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    tmp = Path(tempfile.mkdtemp(prefix="bench_seg_"))
    generate_cohort(tmp, n_cases=4, seed=3, reader_fraction=0, second_view_fraction=0)
    imgs = [read_image(p).image for p in sorted((tmp / "images").glob("*.dcm"))]
    res = {"model": str(a.model or DEFAULT_MODEL),
           "image_sizes": [list(i.GetSize()) for i in imgs], "repeats": a.repeats}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seg = Segmenter.load(a.model or DEFAULT_MODEL, device="cpu")
        k = iter(range(10 ** 9))
        res[f"cpu_{threads}_threads_predict_s_median"] = round(
            _median(lambda: seg.predict(imgs[next(k) % len(imgs)]), a.repeats), 4)
        x = torch.zeros(1, 1, seg.size, seg.size)
        with torch.inference_mode():
            res[f"cpu_{threads}_threads_forward_only_s_median"] = round(
                _median(lambda: seg.net(x), a.repeats), 4)
    res["target_cpu_2_threads_le_0_25_s"] = res["cpu_2_threads_predict_s_median"] <= 0.25
    if torch.cuda.is_available():
        seg = Segmenter.load(a.model or DEFAULT_MODEL, device="cuda")

        def run():
            seg.predict(imgs[0])
            torch.cuda.synchronize()
        res["cuda_predict_s_median"] = round(_median(run, a.repeats), 4)
        res["cuda_device"] = torch.cuda.get_device_name(0)
    else:
        res["cuda_predict_s_median"] = None
        res["cuda_note"] = "no CUDA device on this machine"
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
