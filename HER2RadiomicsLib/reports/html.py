"""Self-contained HTML pages (figures embedded as base64 PNG) shared by every report."""
from __future__ import annotations

import base64
import html
import io
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..errors import HER2Error

DISCLAIMER = ("Research use only. Not a diagnostic device. HER2 status must be determined by "
              "immunohistochemistry / in-situ hybridisation.")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;
background:#f4f6f8;line-height:1.45}
header{background:#16324f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
.ruo{background:#fff4d6;border-left:4px solid #e0a100;padding:8px 32px;font-size:13px}
main{padding:8px 32px 32px;max-width:1200px}
section{background:#fff;border-radius:6px;padding:14px 20px;margin:16px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:4px 0 10px;color:#16324f}
h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e3e7eb;padding:4px 10px;text-align:right}
th{background:#eef2f6;text-align:center}
td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px}
.figs figure{margin:0;flex:1 1 360px;max-width:560px}
.figs figure.wide{flex:1 1 100%;max-width:900px}
figure img{width:100%;border:1px solid #e3e7eb;border-radius:4px}
figcaption{font-size:12px;color:#5a6877}
.kpi{display:flex;gap:14px;flex-wrap:wrap}
.kpi div{background:#eef2f6;border-radius:6px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:20px;color:#16324f}
.muted{color:#5a6877;font-size:12px}
footer{font-size:11.5px;color:#5a6877;padding:0 32px 24px}
ul.flags li{color:#8a4b00}
table.kv th{text-align:left;background:none;font-weight:600;color:#394b5e;white-space:nowrap}
table.kv td{text-align:left}
nav{font-size:13px;margin:10px 0 0}
nav a{margin-right:14px;color:#16324f}
@media print{body{background:#fff}section{box-shadow:none;border:1px solid #e3e7eb;
break-inside:avoid}header,.ruo{-webkit-print-color-adjust:exact;print-color-adjust:exact}
nav{display:none}}
"""

# Flags for a headless Chromium that never touches the network or a profile on disk.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--hide-scrollbars")
# Chromium takes ~1-3 s to print a page; a hang (broken install) must not stall a batch.
BROWSER_TIMEOUT_S = 120


def fig_to_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure to an embedded PNG data URI (and close it)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_file_uri(path) -> str | None:
    """A PNG file as an embedded data URI (None when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()


def figure(uri: str, caption: str, wide: bool = False) -> str:
    """An embedded image with caption; ``wide`` spans the whole row (e.g. a nomogram)."""
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table(df, float_fmt: str = "{:.3f}", max_rows: int = 60, index: bool = False) -> str:
    """An HTML table from a DataFrame (numbers formatted, at most ``max_rows`` rows)."""
    import pandas as pd
    d = df.head(max_rows).copy()
    for c in d.columns:
        if pd.api.types.is_float_dtype(d[c]):
            d[c] = d[c].map(lambda v: "" if v != v else float_fmt.format(v))
    more = f'<p class="muted">{len(df) - max_rows} more rows in the CSV.</p>' \
        if len(df) > max_rows else ""
    return d.to_html(index=index, border=0, escape=True) + more


def kv_table(rows) -> str:
    """A two-column key/value table (left-aligned values) from (key, value) pairs."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def kpis(items) -> str:
    return '<div class="kpi">' + "".join(
        f"<div><b>{html.escape(str(v))}</b>{html.escape(str(k))}</div>" for k, v in items) + "</div>"


def page(title: str, subtitle: str, sections, footer: str = "", anchors=None) -> str:
    """A complete self-contained HTML page; ``sections`` = list of (heading, inner html).

    ``anchors`` optionally gives each section an ``id`` (empty string: none) for navigation.
    """
    from .. import __version__
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ids = list(anchors or []) + [""] * len(sections)
    body = ""
    for (h, inner), a in zip(sections, ids):
        attr = f' id="{html.escape(a)}"' if a else ""
        body += f"<section{attr}><h2>{html.escape(h)}</h2>{inner}</section>"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
            f"<div class='ruo'><b>{html.escape(DISCLAIMER)}</b></div><main>{body}</main>"
            f"<footer>HER2Radiomics {__version__} · generated {now} · "
            f"{html.escape(footer)}</footer></body></html>")


def find_browser() -> str | None:
    """Path of a Chromium/Chrome executable (``HER2RADIOMICS_BROWSER`` overrides), or None."""
    env = os.environ.get("HER2RADIOMICS_BROWSER")
    if env:
        return env if shutil.which(env) or Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _run_browser(args, html_path, out) -> None:
    exe = find_browser()
    if exe is None:
        raise HER2Error(f"{out}: PDF/PNG rendering needs Chromium (Debian package 'chromium'; "
                        "or set HER2RADIOMICS_BROWSER); the HTML report is complete without it")
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # Chromium picks the format by suffix
    with tempfile.TemporaryDirectory(prefix="h2r_chromium_") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args(tmp),
               Path(html_path).resolve().as_uri()]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise HER2Error(f"{out}: Chromium did not finish in {BROWSER_TIMEOUT_S} s") from None
    if not tmp.exists() or tmp.stat().st_size == 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise HER2Error(f"{out}: Chromium failed to render {html_path} ({last})")
    os.replace(tmp, out)


def html_to_pdf(html_path, pdf_path) -> Path:
    """Print an HTML file to PDF with headless Chromium (written atomically)."""
    _run_browser(lambda t: ["--no-pdf-header-footer", f"--print-to-pdf={t}"], html_path,
                 pdf_path)
    return Path(pdf_path)


def screenshot(html_path, png_path, width: int = 1280, height: int = 2400) -> Path:
    """Render an HTML file to a PNG screenshot with headless Chromium."""
    _run_browser(lambda t: [f"--window-size={width},{height}", f"--screenshot={t}"],
                 html_path, png_path)
    return Path(png_path)
