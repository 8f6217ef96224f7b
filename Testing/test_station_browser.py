"""The browser reader station end to end: real station processes (trame-slicer on Slicer's
core) driven by Playwright in Debian's Chromium.

Runs whenever ``/usr/bin/chromium``, Playwright and trame-slicer are present (``.ci/run``
installs Chromium when it runs as root). Covered: two readers contour the same case with
different strokes and save; the files hold the image's geometry; Save right after a stroke
includes the stroke; the coordinator shows the Dice an independent computation gives; a
restarted reader process resumes the queue; a reader cannot open the coordinator view or
another reader's station.
"""
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium not installed"),
    pytest.mark.slow,
]
pytest.importorskip("playwright.sync_api")
pytest.importorskip("trame_slicer")

from HER2RadiomicsLib.station.commands import start_processes, stop_processes  # noqa: E402
from HER2RadiomicsLib.station.store import StudyStore  # noqa: E402


def _free_base_port(n):
    """A base port with ``n`` consecutive free ports after it."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


def _new_study(root, cohort_seed, study_seed):
    """Four synthetic cases, readers R1 and R2 from an empty start, three free ports."""
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    generate_cohort(root / "cohort", n_cases=4, seed=cohort_seed, second_view_fraction=0.0)
    store, tokens = StudyStore.create(root / "study", root / "cohort" / "cohort.csv",
                                      ["R1", "R2"], start="empty", seed=study_seed)
    return store, tokens, _free_base_port(3)


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    root = tmp_path_factory.mktemp("station")
    store, tokens, port = _new_study(root, cohort_seed=5, study_seed=4)
    # the test has two cases that both readers contour: the reader study's floor lowered to 2
    procs = start_processes(root / "study", "127.0.0.1", port,
                            options={"min_icc_cases": 2, "warn_icc_cases": 10})
    info = {"store": store, "tokens": tokens, "port": port, "procs": procs, "root": root,
            "ports": {(r or "coordinator"): p for _, r, p, _ in procs}}
    yield info
    stop_processes(info["procs"])


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, port, token, selector="#st-case", timeout_ms=30000):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    url = f"http://127.0.0.1:{port}/" + (f"?secret={token}" if token else "")
    page.goto(url)
    if selector:
        page.wait_for_selector(selector, timeout=timeout_ms)
        page.wait_for_timeout(800)                 # first frame of the view
    return page


def _stroke(page, fx, fy, length_px=60):
    """A Paint stroke at (fx, fy) as fractions of the view, ``length_px`` long."""
    page.locator("button:has(i.mdi-brush)").last.click()     # the toolbar's Paint
    page.wait_for_timeout(300)
    box = page.locator("img").first.bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 16):
        page.mouse.move(x + length_px * k / 15, y)
        page.wait_for_timeout(15)
    page.mouse.up()


def _wait_text(page, selector, needle, timeout_s=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        text = page.inner_text(selector)
        if needle in text:
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector}: {needle!r} not in {page.inner_text(selector)!r}")


def _saved(store, reader, case):
    path = store.root / "contours" / reader / f"{case}.nrrd"
    assert path.exists() and path.with_suffix(".json").exists()
    return sitk.ReadImage(str(path))


def test_two_readers_contour_the_same_case_and_save_right_after_the_stroke(station, browser):
    store, tok, ports = station["store"], station["tokens"], station["ports"]
    case = store.next_case("R1")
    p1 = _open(browser, ports["R1"], tok["R1"])
    assert p1.inner_text("#st-case") == case
    _stroke(p1, 0.45, 0.5)
    p1.click("#st-save")                           # no wait: Save must include the stroke
    _wait_text(p1, "#st-message", f"Saved {case}")
    # R2 works on the same case: skip until it is current (its queue has its own order)
    p2 = _open(browser, ports["R2"], tok["R2"])
    while p2.inner_text("#st-case") != case:
        before = p2.inner_text("#st-case")
        p2.click("#st-skip")
        _wait_text(p2, "#st-message", f"Skipped {before}")
    _stroke(p2, 0.47, 0.53)
    p2.click("#st-save")
    _wait_text(p2, "#st-message", f"Saved {case}")

    image = store.load_image(case).image
    m1, m2 = _saved(store, "R1", case), _saved(store, "R2", case)
    for m in (m1, m2):                             # the image's own geometry
        assert m.GetSize() == image.GetSize()
        assert np.allclose(m.GetSpacing(), image.GetSpacing())
        assert np.allclose(m.GetOrigin(), image.GetOrigin())
        assert np.allclose(m.GetDirection(), image.GetDirection())
    a1, a2 = sitk.GetArrayFromImage(m1) > 0, sitk.GetArrayFromImage(m2) > 0
    # the case started empty: what is saved is the stroke, a 3 mm brush about 60 px long
    for a in (a1, a2):
        ys, xs = np.nonzero(a)
        height_mm = (ys.max() - ys.min() + 1) * image.GetSpacing()[1]
        assert 2.5 <= height_mm <= 4.0, height_mm
        assert xs.max() - xs.min() > ys.max() - ys.min()     # a horizontal stroke
    assert not np.array_equal(a1, a2)             # different strokes
    station["case"] = case
    p1.close()
    p2.close()


def test_coordinator_shows_the_dice_an_independent_computation_gives(station, browser):
    store, tok, ports = station["store"], station["tokens"], station["ports"]
    case = station["case"]
    a1 = sitk.GetArrayFromImage(_saved(store, "R1", case)) > 0
    a2 = sitk.GetArrayFromImage(_saved(store, "R2", case)) > 0
    dice = 2.0 * np.logical_and(a1, a2).sum() / (a1.sum() + a2.sum())
    page = _open(browser, ports["coordinator"], tok["coordinator"], "#co-progress")
    page.click("#co-refresh")
    text = _wait_text(page, "#co-agreement", case)
    row = [line for line in text.splitlines() if case in line][0]
    assert f"{dice:.4f}" in row, (row, dice)
    progress = page.inner_text("#co-progress")
    assert "R1" in progress and "R2" in progress
    page.close()


def test_save_applies_a_draw_stroke_still_in_progress(station, browser):
    """Save (from the keyboard) while the Draw outline is still held: the outline is closed,
    filled and saved, as a reader expects what is on screen to be saved."""
    store, tok, ports = station["store"], station["tokens"], station["ports"]
    page = _open(browser, ports["R2"], tok["R2"])
    case = page.inner_text("#st-case")
    page.locator("button:has(i.mdi-draw)").last.click()
    page.wait_for_timeout(300)
    box = page.locator("img").first.bounding_box()
    corners = [(0.40, 0.40), (0.60, 0.40), (0.60, 0.60), (0.40, 0.60), (0.40, 0.41)]
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.40)
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(corners[:-1], corners[1:]):
        for t in np.linspace(0, 1, 8)[1:]:
            page.mouse.move(box["x"] + box["width"] * (ax + t * (bx - ax)),
                            box["y"] + box["height"] * (ay + t * (by - ay)))
            page.wait_for_timeout(15)
    page.focus("#st-save")
    page.keyboard.press("Enter")                    # Save while the button is still held
    _wait_text(page, "#st-message", f"Saved {case}")
    page.mouse.up()
    a = sitk.GetArrayFromImage(_saved(store, "R2", case)) > 0
    h, w = a.shape
    # the view is centred on the image: the drawn square's centre is the image's centre, so a
    # filled outline covers it (an unclosed outline would leave it empty, and nothing drawn
    # leaves the file unsaved)
    assert a[h // 2, w // 2]
    assert a[h // 2 - 5:h // 2 + 6, w // 2 - 5:w // 2 + 6].all()
    page.close()


def test_coordinator_runs_the_reader_study_on_the_finished_cases(station, browser):
    store, tok, ports = station["store"], station["tokens"], station["ports"]
    # R1 contours the case R2 outlined with Draw: two cases then have both readers
    target = [c for c in store.queue("R2") if store.is_done("R2", c) and c != station["case"]][0]
    page = _open(browser, ports["R1"], tok["R1"])
    while page.inner_text("#st-case") != target:
        before = page.inner_text("#st-case")
        page.click("#st-skip")
        _wait_text(page, "#st-message", f"Skipped {before}")
    _stroke(page, 0.45, 0.5, length_px=80)
    page.click("#st-save")
    _wait_text(page, "#st-message", f"Saved {target}")
    page.close()
    page = _open(browser, ports["coordinator"], tok["coordinator"], "#co-progress")
    page.click("#co-run")
    text = _wait_text(page, "#co-summary", "2 cases, 2 readers", timeout_s=240)
    assert "stable" in text and "fewer than 10" in text      # said plainly, with the numbers
    out = store.root / "reader_study"
    assert (out / "icc.csv").exists() and (out / "summary.html").exists()
    import pandas as pd
    icc = pd.read_csv(out / "icc.csv")
    first = icc.iloc[0]
    row = _wait_text(page, "#co-icc", first["feature"])
    assert f"{first['ICC2']:.3f}" in [line for line in row.splitlines()
                                      if line.startswith(first["feature"])][0]
    with page.context.expect_page() as opened:          # the report opens from the page
        page.click("#co-report")
    report = opened.value
    report.wait_for_load_state()
    assert "Reader study" in report.title() or "reader study" in report.content().lower()
    report.close()
    page.close()


def test_a_reader_cannot_open_another_station_or_the_coordinator(station, browser):
    tok, ports = station["tokens"], station["ports"]
    for port, token in [(ports["R2"], tok["R1"]), (ports["coordinator"], tok["R1"]),
                        (ports["R1"], None), (ports["R1"], "not-a-token")]:
        page = _open(browser, port, token, selector=None)
        page.wait_for_timeout(4000)
        html = page.content()
        assert page.locator("#st-case").count() == 0 and page.locator("#co-progress").count() == 0
        assert station["case"] not in html
        page.close()


def test_a_restarted_reader_process_resumes_the_queue(station, browser):
    store, tok = station["store"], station["tokens"]
    procs = station["procs"]
    idx = [i for i, (_, r, _, _) in enumerate(procs) if r == "R1"][0]
    role, reader, port, proc = procs[idx]
    stop_processes([procs[idx]])
    ready = station["root"] / "r1-again.ready"
    cmd = [sys.executable, "-m", "HER2RadiomicsLib", "station", "one", "--study",
           str(store.root), "--role", "reader", "--reader", "R1", "--port", str(port),
           "--ready-file", str(ready)]
    new = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs[idx] = (role, reader, port, new)
    t0 = time.monotonic()
    while not ready.exists():
        assert new.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.2)
    expected = StudyStore(store.root).next_case("R1")
    assert expected is not None and expected != station["case"]
    page = _open(browser, port, tok["R1"])
    assert page.inner_text("#st-case") == expected
    done = sum(store.is_done("R1", c) for c in store.queue("R1"))
    assert f"({done} done)" in page.inner_text("#st-position")
    page.close()
