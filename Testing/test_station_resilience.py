"""The reader station under the accidents of a real study, in Debian's Chromium (issue 27):
a reader's process killed (-9) while the others work, an edit just before the kill, reload and
bookmark, a failed Save's message, a brush of 1e6 mm sent by hand, two tabs on one station.

Real station processes under the launcher's supervisor (it restarts the dead one), driven by
Playwright as readers would. Skipped without Chromium, Playwright or trame-slicer.
"""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

pytest.importorskip("playwright.sync_api")
pytest.importorskip("trame_slicer")

from HER2RadiomicsLib.station.commands import Supervisor, start_processes
from test_station_browser import (_new_study, _stroke, _wait_text, browser,  # noqa: F401
                                  pytestmark)

BRUSH = "PaintEffectState__brush_diameter_slider__SliderState__value"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("resilience")
    store, tokens, port = _new_study(root, cohort_seed=7, study_seed=3)
    procs = start_processes(root / "study", "127.0.0.1", port)
    sup = Supervisor(root / "study", "127.0.0.1", procs, out=open(os.devnull, "w"))
    stop = threading.Event()

    def supervise():
        while not stop.is_set():
            sup.step()
            time.sleep(0.2)
    t = threading.Thread(target=supervise, daemon=True)
    t.start()
    yield {"store": store, "tokens": tokens, "sup": sup,
           "ports": {(r or "coordinator"): p for _, r, p, _ in procs}}
    stop.set()
    t.join(5)
    sup.stop()


def _signed_in(browser, port, token, selector="#st-case"):
    """A browser context (its own cookie jar) signed in with the token link once."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(f"http://127.0.0.1:{port}/?secret={token}")
    page.wait_for_selector(selector, timeout=60000)
    page.wait_for_timeout(800)
    return ctx, page


def _pid(study, who):
    return [p.pid for r, rd, _, p in study["sup"].procs if (rd or "coordinator") == who][0]


def test_sign_in_survives_reload_and_bookmark_and_leaves_no_token(study, browser):
    port, tok = study["ports"]["R1"], study["tokens"]["R1"]
    ctx, page = _signed_in(browser, port, tok)
    assert tok not in page.url and "secret" not in page.url
    case = page.inner_text("#st-case")
    page.reload()
    page.wait_for_selector("#st-case", timeout=60000)
    assert _wait_text(page, "#st-case", case)
    cookies = ctx.cookies()
    assert cookies and all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
    assert all(tok not in c["value"] for c in cookies)
    book = ctx.new_page()                              # a bookmark of the clean address
    book.goto(f"http://127.0.0.1:{port}/")
    book.wait_for_selector("#st-case", timeout=60000)
    book.close()
    ctx.close()
    fresh = browser.new_context()                      # another browser: not signed in
    p2 = fresh.new_page()
    p2.goto(f"http://127.0.0.1:{port}/")
    assert p2.locator("#signin").count() == 1 and p2.locator("#st-case").count() == 0
    fresh.close()


def test_a_failed_save_says_so_on_top_of_everything(study, browser):
    ctx, page = _signed_in(browser, study["ports"]["R2"], study["tokens"]["R2"])
    page.click("#st-save")                     # nothing drawn: the study starts empty
    _wait_text(page, "#st-error", "Not saved")
    box = page.locator("#st-error").bounding_box()
    top = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y);"
                        " return e && e.closest('#st-error') !== null; }",
                        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
    assert top, "the error is hidden under something"
    assert box["y"] < 120                      # at the top, just under the app bar
    assert abs(box["x"] + box["width"] / 2 - 640) < 40          # centred
    ctx.close()


def test_a_brush_of_a_million_mm_is_refused_and_the_station_lives(study, browser):
    ctx, page = _signed_in(browser, study["ports"]["R2"], study["tokens"]["R2"])
    pid = _pid(study, "R2")
    page.evaluate(f"() => window.trame.state.set('{BRUSH}', 1e6)")
    page.wait_for_timeout(800)
    assert page.evaluate(f"() => window.trame.state.get('{BRUSH}')") == 20.0
    _stroke(page, 0.5, 0.5, length_px=20)
    page.wait_for_timeout(1500)
    assert _pid(study, "R2") == pid                   # the same process, still serving
    rss_mb = int([ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ln.startswith("VmRSS")][0].split()[1]) / 1024
    assert rss_mb < 1500, rss_mb                      # no 347 TB allocation attempted
    assert "mm" in page.inner_text("#st-brush") and "20" in page.inner_text("#st-brush")
    ctx.close()


def test_two_tabs_the_newer_takes_over(study, browser):
    ctx, first = _signed_in(browser, study["ports"]["R2"], study["tokens"]["R2"])
    second = ctx.new_page()
    second.set_viewport_size({"width": 900, "height": 700})
    second.goto(f"http://127.0.0.1:{study['ports']['R2']}/")
    second.wait_for_selector("#st-case", timeout=60000)
    _wait_text(first, "#h2r-banner", "another tab")
    second.wait_for_timeout(500)
    case = second.inner_text("#st-case")
    _stroke(second, 0.5, 0.5)
    second.click("#st-save")
    _wait_text(second, "#st-message", f"Saved {case}")
    assert study["store"].is_done("R2", case)
    ctx.close()


def test_a_killed_reader_is_back_where_it_was_and_the_others_never_noticed(study, browser):
    store, tok, ports = study["store"], study["tokens"], study["ports"]
    c1, p1 = _signed_in(browser, ports["R1"], tok["R1"])
    c2, p2 = _signed_in(browser, ports["R2"], tok["R2"])
    c3, p3 = _signed_in(browser, ports["coordinator"], tok["coordinator"], "#co-progress")
    case = p1.inner_text("#st-case")
    _stroke(p1, 0.45, 0.5, length_px=70)              # an edit ...
    p1.wait_for_timeout(2000)
    old = _pid(study, "R1")
    os.kill(old, signal.SIGKILL)                       # ... and kill -9 within 3 s
    t_kill = time.monotonic()
    # the others serve on: R2 skips a case, and the coordinator's progress shows it without
    # anyone pressing Refresh (pushed live)
    skipped = len(store._read_queue("R2")["skipped"])
    row = [ln for ln in p3.inner_text("#co-progress").splitlines() if ln.startswith("R2")][0]
    before = p2.inner_text("#st-case")
    p2.click("#st-skip")
    _wait_text(p2, "#st-message", f"Skipped {before}")
    t0 = time.monotonic()
    while True:
        now = [ln for ln in p3.inner_text("#co-progress").splitlines()
               if ln.startswith("R2")][0]
        if now != row:
            break
        assert time.monotonic() - t0 < 15, now
        p3.wait_for_timeout(200)
    assert str(skipped + 1) in now.split()
    # R1 comes back on its port and the page reconnects by itself, on the same case, with
    # the contour drawn before the kill and a notice that it was restored
    _wait_text(p1, "#h2r-banner", "Reconnected", timeout_s=90)
    assert _pid(study, "R1") != old
    _wait_text(p1, "#st-case", case)
    assert "Restored your contour" in p1.inner_text("#st-message")
    kept = store.autosaved("R1", case)
    assert kept is not None and sitk.GetArrayViewFromImage(kept).any()
    info = store.autosave_info("R1", case)
    assert info["start_source"] == "empty" and len(info["edits"]) == 1   # one stroke, one edit
    back_s = time.monotonic() - t_kill
    p1.click("#st-save")                               # and the restored contour saves
    _wait_text(p1, "#st-message", f"Saved {case}")
    side = __import__("json").loads(
        (store.root / "contours" / "R1" / f"{case}.json").read_text())
    assert side["start_source"].startswith("restored autosave")
    assert side["seconds"] > 0
    for c in (c1, c2, c3):
        c.close()
    assert back_s < 90


def test_nothing_reaches_wslink_without_a_sign_in(study):
    """A websocket upgrade without the session cookie (or from another origin) is answered
    403 by the HTTP gate: no socket, nothing buffered or logged by wslink."""
    import http.client
    port = study["ports"]["R1"]
    for headers in ({}, {"Origin": f"http://127.0.0.1:{port + 50}"}):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                            "Sec-WebSocket-Version": "13",
                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                            **headers})
        assert conn.getresponse().status == 403
        conn.close()


def test_message_caps_after_sign_in():
    from HER2RadiomicsLib.station import gate
    gate.CappedUnChunker.install()
    import wslink.protocol
    u = wslink.protocol.UnChunker()
    u.set_max_message_size(2 ** 32)                      # what wslink sets after sign-in
    with pytest.raises(ValueError):
        u.process_chunk((1).to_bytes(4, "little") + (0).to_bytes(4, "little")
                        + (gate.MAX_MESSAGE_BYTES + 1).to_bytes(4, "little") + b"x")
    for i in range(gate.MAX_PENDING_MESSAGES):           # partial messages in flight
        u.process_chunk(i.to_bytes(4, "little") + (0).to_bytes(4, "little")
                        + (100).to_bytes(4, "little") + b"x")
    with pytest.raises(ValueError, match="too many partial"):
        u.process_chunk((999).to_bytes(4, "little") + (0).to_bytes(4, "little")
                        + (100).to_bytes(4, "little") + b"x")
