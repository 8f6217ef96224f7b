"""Benchmark of the browser reader station (prints JSON).

A synthetic study starting from the CNN's proposal (made once at creation, as `station create`
does) is served by real station processes and driven by Playwright in Debian's Chromium, as a
reader would:
- ``server_start_s``: launch of the coordinator + one reader process until both serve;
- ``first_image_s``: page load (navigation start) to the first frame of the view; target <= 2 s;
- ``stroke_to_mask_s``: mouse release of a Paint stroke to the last new frame of the view within
  1.5 s (the mask drawn), median over ``--strokes`` strokes (>= 20); target <= 0.5 s;
- ``save_s``: click on Save to the confirmation on the page (contour written, next case open
  with its CNN proposal), median of the cases; target <= 0.5 s;
- ``rss_mb``: resident memory of the reader process after the strokes and saves; target <= 700 MB;
  ``private_mb``: the part no other process shares (the cost of one more reader session).

Usage: python benchmarks/bench_station.py [--strokes 20] [--out results.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# print the JSON, save it with --out (the same for every benchmark)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

# Records the time of every new frame of the view (the remote view is an <img> whose src
# changes per frame).
OBSERVE = """() => {
  window.__frames = [];
  const img = document.querySelector('img');
  new MutationObserver(() => window.__frames.push(performance.now()))
      .observe(img, {attributes: true, attributeFilter: ['src']});
}"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _private_mb(pid: int) -> float:
    """Memory only this process holds (what one more reader session costs: the libraries'
    pages are shared between the station's processes)."""
    kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=20)
    ap.add_argument("--port", type=int, default=8760)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from HER2RadiomicsLib.imaging.synth import generate_cohort
    from HER2RadiomicsLib.station.commands import (make_proposals, start_processes,
                                                   stop_processes)
    from HER2RadiomicsLib.station.store import StudyStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "cohort", n_cases=6, seed=2, second_view_fraction=0.0)
        store, tokens = StudyStore.create(tmp / "study", tmp / "cohort" / "cohort.csv",
                                          ["R1"], start="cnn", seed=1)
        t0 = time.perf_counter()
        n_prop = make_proposals(store, progress=False)
        proposals_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        procs = start_processes(tmp / "study", "127.0.0.1", a.port)
        server_start = time.perf_counter() - t0
        reader_pid = [p.pid for _, r, _, p in procs if r == "R1"][0]
        port = [p for _, r, p, _ in procs if r == "R1"][0]
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/?secret={tokens['R1']}")
                page.wait_for_function(
                    "() => { const i = document.querySelector('img');"
                    " return i && i.complete && i.naturalWidth > 0; }", timeout=60000)
                first_image = page.evaluate("() => performance.now()") / 1000.0
                page.evaluate(OBSERVE)
                page.locator("button:has(i.mdi-brush)").last.click()
                page.wait_for_timeout(500)
                box = page.locator("img").first.bounding_box()
                lat = []
                for k in range(a.strokes):
                    fx = 0.3 + 0.4 * (k % 5) / 4
                    fy = 0.3 + 0.4 * (k // 5 % 4) / 3
                    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
                    page.mouse.move(x, y)
                    page.mouse.down()
                    for j in range(1, 9):
                        page.mouse.move(x + 4 * j, y)
                        page.wait_for_timeout(15)
                    page.mouse.up()
                    t_up = page.evaluate("() => performance.now()")
                    page.wait_for_timeout(1500)
                    frames = [f for f in page.evaluate("() => window.__frames") if f > t_up]
                    lat.append((max(frames) - t_up) / 1000.0 if frames else float("nan"))
                    page.evaluate("() => { window.__frames = []; }")
                saves = []
                for _ in range(4):
                    case = page.inner_text("#st-case")
                    t0 = time.perf_counter()
                    page.click("#st-save")
                    page.wait_for_function(
                        "(c) => document.querySelector('#st-message').innerText"
                        ".startsWith('Saved ' + c)", arg=case, timeout=30000)
                    saves.append(time.perf_counter() - t0)
                    page.wait_for_timeout(300)
                save = statistics.median(saves)
                rss, private = _rss_mb(reader_pid), _private_mb(reader_pid)
                torch_loaded = "torch" in Path(f"/proc/{reader_pid}/maps").read_text()
                browser.close()
        finally:
            stop_processes(procs)

    ok = [v for v in lat if v == v]
    med = statistics.median(ok) if ok else float("nan")
    res = {
        "machine": "CPU only (Mesa software rendering), JPEG frames, multisampling off",
        "server_start_s": round(server_start, 2),
        "first_image_s": round(first_image, 3),
        "stroke_to_mask_s": {"median": round(med, 3), "n": len(ok),
                             "max": round(max(ok), 3) if ok else None},
        "save_s": {"median": round(save, 3), "all": [round(v, 3) for v in saves]},
        "rss_mb": round(rss, 1),
        "private_mb": round(private, 1),
        "start": "cnn",
        "cnn_in_reader_process": torch_loaded,
        "proposals": {"cases": n_prop, "seconds": round(proposals_s, 2)},
        "targets": {"first_image_s": 2.0, "stroke_to_mask_s": 0.5, "save_s": 0.5,
                    "rss_mb": 700},
        "met": {"first_image_s": first_image <= 2.0, "stroke_to_mask_s": med <= 0.5,
                "save_s": save <= 0.5, "rss_mb": rss <= 700},
    }
    return emit(res, a.out)


if __name__ == "__main__":
    sys.exit(main())
