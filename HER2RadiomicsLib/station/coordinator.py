"""The coordinator's station: progress per reader (pushed live), flags, Dice / HD95 as soon as
two readers saved a case, the readers' DICOM SEGs (written, stored in the archive, waiting),
the reader manifest and the reader-study report (ICC per feature, stable features) on the
finished cases, opened from the page."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pandas as pd

from ..readers.study import ReaderStudyConfig, run_reader_study
from ..reports.reader_study import render_reader_study
from . import archive, dicom_seg, gate
from .store import StudyStore

# trame and aiohttp are imported inside the methods that build and serve the page: they come
# with the optional [station] extra, which the study logic here does not need

log = logging.getLogger(__name__)

#: how often the page's progress is brought up to date (s): a reader saves every minute or so
PROGRESS_S = 2.0
#: fewer cases with two readers' contours than this: the reader study is refused (an ICC of
#: two cases has no degrees of freedom worth the name)
MIN_ICC_CASES = 3
#: fewer than this: the study runs, with a warning (Koo & Li 2016 ask for at least 30 for a
#: reliability study; 10 already gives confidence intervals wider than the bands)
WARN_ICC_CASES = 10


class CoordinatorStation:
    """The coordinator's web app (see the module docstring).

    Parameters
    ----------
    min_cases, warn_cases : int
        Cases with two readers' contours below which the reader study is refused, or runs
        with a warning (:data:`MIN_ICC_CASES`, :data:`WARN_ICC_CASES`).
    """

    def __init__(self, store: StudyStore, server=None, params="cui2023", rings="3,5,8",
                 min_cases=MIN_ICC_CASES, warn_cases=WARN_ICC_CASES):
        from trame.app import get_server
        self.store = store
        self.min_cases, self.warn_cases = int(min_cases), int(warn_cases)
        self.server = get_server(server, client_type="vue3")
        self.server.enable_module({"serve": {"h2r_station": str(Path(__file__).with_name(
            "static"))}, "scripts": ["h2r_station/station.js"]})
        self.state, self.ctrl = self.server.state, self.server.controller
        s = self.state
        s.trame__title = "HER2Radiomics station: coordinator"
        s.co_progress, s.co_agreement, s.co_flags, s.co_icc = [], [], [], []
        s.co_params, s.co_rings = params, rings
        s.co_message, s.co_error, s.co_running, s.co_summary = "", "", False, None
        s.co_report, s.co_archive = "", ""
        self._saved = None
        # the DICOM SEG line is shown for a study on an archive or of DICOM images only
        self._segs = bool(store.meta.get("archive")) or any(
            dicom_seg.is_dicom_file(c["image"]) for c in store.cases.values())
        self._build_ui()
        self.refresh()
        self.gate = gate.install(
            self.server, gate.Sessions(store, "coordinator"),
            {(lambda k: k.startswith("co_")): _read_only},
            routes={("GET", "/h2r/report/"): self._report_file})
        self.ctrl.on_server_ready.add(self._start_live_progress)

    def _build_ui(self):
        from trame.ui.vuetify3 import SinglePageLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        def table(rows_var, cols, table_id):
            with v.VTable(density="compact", id=table_id):
                with html.Thead(), html.Tr():
                    for c in cols:
                        html.Th(c)
                with html.Tbody():
                    with html.Tr(v_for=f"row in {rows_var}", key="row.key"):
                        for c in cols:
                            html.Td(f"{{{{ row['{c}'] }}}}")

        with SinglePageLayout(self.server) as layout:
            layout.title.set_text("HER2Radiomics reader study: coordinator")
            with layout.toolbar:
                v.VSpacer()
                v.VBtn("Refresh", id="co-refresh", click=self.ctrl.co_refresh, classes="mx-1")
                v.VBtn("Export reader manifest", id="co-export", click=self.ctrl.co_export,
                       classes="mx-1")
                v.VBtn("Run reader study", id="co-run", click=self.ctrl.co_run,
                       loading=("co_running",), classes="mx-1", color="primary")
            with layout.content, v.VContainer(fluid=True):
                with html.Div(style=(
                        "position: fixed; top: 72px; left: 50%; transform: translateX(-50%); "
                        "z-index: 5000; max-width: 60vw;")):
                    v.VAlert("{{ co_message }}", v_show=("co_message",), type="success",
                             density="compact", id="co-message", classes="mb-1")
                    v.VAlert("{{ co_error }}", v_show=("co_error",), type="error",
                             density="compact", id="co-error")
                html.H3("Progress per reader (live)")
                table("co_progress", ["reader", "done", "skipped", "flagged", "left", "total"],
                      "co-progress")
                html.Div("{{ co_archive }}", v_if=("co_archive",), id="co-archive",
                         classes="text-body-2 mt-1")
                html.H3("Contour agreement (cases two readers saved)", classes="mt-4")
                table("co_agreement", ["case_id", "reader_a", "reader_b", "dice", "hd95_mm",
                                       "area_diff_pct"], "co-agreement")
                html.H3("Flags", classes="mt-4")
                table("co_flags", ["reader", "case_id", "note"], "co-flags")
                html.H3("Reader study (ICC per feature)", classes="mt-4")
                html.Div("{{ co_summary }}", id="co-summary")
                html.A("Open the reader-study report", href=("co_report",), target="_blank",
                       v_if=("co_report",), id="co-report", rel="noopener")
                table("co_icc", ["feature", "ICC", "CI95", "band"], "co-icc")
        self.ctrl.co_refresh = self.refresh
        self.ctrl.co_export = self.export
        self.ctrl.co_run = self.run_study

    # -- live progress -------------------------------------------------------------------------

    def refresh(self):
        """Progress and flags (cheap: the queue files); agreement when a reader saved since."""
        prog = self.store.progress()
        flags = [{"key": f"{r}:{c}", "reader": r, "case_id": c, "note": n}
                 for r, c, n in self.store.flags()]
        saved = int(prog["done"].sum()) if len(prog) else 0
        with self.state:
            self.state.co_progress = [dict(row, key=row["reader"])
                                      for row in prog.to_dict("records")]
            self.state.co_flags = flags
            if self._segs:          # stored, waiting, the last error (see .archive)
                self.state.co_archive = archive.status_line(self.store)
        if saved != self._saved:
            self._saved = saved
            agree = self.store.agreement()
            with self.state:
                self.state.co_agreement = [
                    {"key": f"{r.case_id}:{r.reader_a}:{r.reader_b}", "case_id": r.case_id,
                     "reader_a": r.reader_a, "reader_b": r.reader_b, "dice": f"{r.dice:.4f}",
                     "hd95_mm": f"{r.hd95_mm:.2f}", "area_diff_pct": f"{r.area_diff_pct:.1f}"}
                    for r in agree.itertuples()]

    def _start_live_progress(self, **_):

        async def loop():
            while True:
                await asyncio.sleep(PROGRESS_S)
                try:
                    self.refresh()
                except Exception:                    # a torn file: next time
                    log.exception("progress refresh failed")
        from trame_server.utils.asynchronous import create_task
        create_task(loop())

    # -- exports and the reader study ------------------------------------------------------------

    def export(self):
        path = self.store.root / "reader_manifest.csv"
        self.store.export_reader_manifest(path)
        with self.state:
            self.state.co_message = f"Wrote {path}"
        return path

    async def run_study(self):
        """Export the manifest and run the reader-study engine on it (in a worker thread, so
        the page stays live); show the ICC table and a link to the report."""


        if self.state.co_running:
            return
        with self.state:
            self.state.co_running, self.state.co_error = True, ""
        try:
            manifest = self.export()
            n = pd.read_csv(manifest)["case_id"].nunique()
            if n < self.min_cases:
                raise RuntimeError(
                    f"{n} case(s) have two readers' contours; the reader study needs at least "
                    f"{self.min_cases} (and {self.warn_cases} or more for an ICC whose "
                    "confidence interval means something)")
            out = self.store.root / "reader_study"
            doc = await asyncio.get_running_loop().run_in_executor(
                None, lambda: run_reader_study(
                    manifest, out, ReaderStudyConfig(params=self.state.co_params,
                                                     rings=self.state.co_rings),
                    progress=False, render=render_reader_study))
            icc = pd.read_csv(out / "icc.csv")
            form = doc.get("form", "ICC2")
            rows = [{"key": r["feature"], "feature": r["feature"], "ICC": f"{r[form]:.3f}",
                     "CI95": f"{r[form + '_ci_low']:.2f} to {r[form + '_ci_high']:.2f}",
                     "band": str(r.get("band", ""))}
                    for r in icc.to_dict("records")]
            few = (f" Only {n} cases: fewer than {self.warn_cases}, so the ICCs' confidence "
                   "intervals are wide; read the bands with care." if n < self.warn_cases
                   else "")
            with self.state:
                self.state.co_icc = rows
                self.state.co_summary = (
                    f"{doc['n_cases']} cases, {doc['n_readers']} readers, "
                    f"{doc['n_stable']} of {doc['n_features']} features stable "
                    f"({form} >= {doc['threshold']}); mean Dice {doc['mean_dice']:.3f}.{few}")
                self.state.co_report = "/h2r/report/summary.html"
                self.state.co_message = "Reader study done" + (" (few cases)" if few else "")
        except Exception as exc:                      # noqa: BLE001 (shown to the coordinator)
            with self.state:
                self.state.co_error = f"Reader study not run: {exc}"
        finally:
            with self.state:
                self.state.co_running = False
            self.refresh()

    async def _report_file(self, request):
        """A file of the reader-study report folder (signed-in coordinator only)."""
        from aiohttp import web
        base = (self.store.root / "reader_study").resolve()
        rel = request.path[len("/h2r/report/"):]
        target = (base / rel).resolve()
        if base not in target.parents or not target.is_file():
            return web.Response(status=404, text="no such report file\n")
        return web.FileResponse(target, headers={"Cache-Control": "no-store"})


def _read_only(value):
    raise ValueError("set by the station, not by the browser")
