"""Self-contained HTML pages (figures embedded as base64 PNG) shared by every report.

Everything a report shows that comes from data or metadata (bundle metadata, case ids, file
names, feature and reader names, clinical values, warnings, recipe titles, notes, CSV cells) is
text, and text is escaped by default: the builders here (:func:`fmt`, :func:`el`, :func:`table`,
:func:`kv_table`, :func:`kpis`, :func:`page`) escape every ``str`` they are given and pass
through only :class:`Html`, the markup the code itself builds.  A number expected from
metadata that turns out to be text is shown as escaped text, never formatted into markup.
Every page carries a Content-Security-Policy that allows no script, and Chromium renders PDFs
and PNGs with JavaScript switched off, so a payload that got through would still not run.

Usage
-----
>>> from HER2RadiomicsLib.reports import html as H
>>> H.fmt("<p>n = {n} {unit}</p>", n=12, unit="<script>")
'<p>n = 12 &lt;script&gt;</p>'
>>> H.fmt("<b>{v:.2f}</b>", v="0.5<img src=x onerror=alert(1)>")
'<b>0.5&lt;img src=x onerror=alert(1)&gt;</b>'
"""
from __future__ import annotations

import base64
import html
import io
import json
import numbers
import os
import shutil
import string
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ..errors import HER2Error

DISCLAIMER = ("Research use only. Not a diagnostic device. HER2 status must be determined by "
              "immunohistochemistry / in-situ hybridisation.")

# What a report may load: nothing but its own inline styles and embedded (data:) images. No
# script of any kind, no fonts, frames, forms or network; <base> cannot re-point links.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'")


class Html(str):
    """Markup the code itself built; the only ``str`` a report passes through unescaped.

    ``Html + str`` and ``str + Html`` escape the plain side (and so does :meth:`join`), so
    text can never become markup by being concatenated to it.  An f-string or ``"".join``
    gives a plain ``str``, which the builders escape: a mistake shows as visible tags in the
    page, never as live markup.
    """
    __slots__ = ()

    def __add__(self, other):
        return Html(str.__add__(self, esc(other)))

    def __radd__(self, other):
        return Html(str.__add__(esc(other), self))

    def join(self, parts):
        return Html(str.join(self, (esc(p) for p in parts)))


def esc(value) -> Html:
    """``value`` as HTML text: :class:`Html` unchanged, anything else ``str()``-ed and escaped
    (quotes too, so the result is safe inside an attribute)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def is_number(value) -> bool:
    """A real number (numpy's included); ``bool`` and text are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def text_num(value, spec: str = ".3f") -> str:
    """A number formatted with ``spec`` as plain text (e.g. a DataFrame cell, which
    :func:`table` escapes); anything else, such as text where a bundle's metadata should hold
    a number, is ``str()``-ed instead of being formatted."""
    return format(value, spec) if is_number(value) else str(value)


def num(value, spec: str = ".3f") -> Html:
    """:func:`text_num`, escaped: a number ready to put in markup."""
    return esc(text_num(value, spec))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value, format_spec):
        if isinstance(value, Html):
            return value
        return num(value, format_spec) if format_spec else esc(value)


_FORMATTER = _EscapingFormatter()


def fmt(template: str, *args, **kwargs) -> Html:
    """``str.format`` for markup: ``template`` is the code's own markup, every ``{field}`` is
    formatted (numbers by their spec, see :func:`num`) and then escaped unless it is
    :class:`Html`."""
    return Html(_FORMATTER.vformat(template, args, kwargs))


def el(tag: str, *children, **attrs) -> Html:
    """One element: ``children`` escaped unless :class:`Html`, attribute values always
    escaped (``class_`` is written ``class``; ``None`` leaves the attribute out)."""
    at = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"'
                 for k, v in attrs.items() if v is not None)
    return Html(f"<{tag}{at}>{cat(*children)}</{tag}>")


def cat(*parts) -> Html:
    """Concatenate fragments, escaping every one that is not :class:`Html`."""
    return Html("").join(parts)


def json_block(data, cls: str) -> Html:
    """A machine-readable JSON data block (``type='application/json'``: never executed).

    ``<``, ``>`` and ``&`` become JSON escapes, so no value can close the block or open a
    comment; the block is still plain JSON to a parser."""
    text = (json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return Html(f"<script type='application/json' class='{esc(cls)}'>{text}</script>")


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
# JavaScript is switched off in the throw-away profile (PROFILE_PREFERENCES), not by a flag:
# --blink-settings=scriptEnabled=false makes headless --print-to-pdf/--screenshot write nothing
# (Chromium 156), and --disable-javascript is not a Chromium switch (the script still runs).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--hide-scrollbars")
# The profile's content settings: JavaScript blocked (2 = CONTENT_SETTING_BLOCK) for every page.
PROFILE_PREFERENCES = {"profile": {"default_content_setting_values": {"javascript": 2}}}
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


def figure(uri: str, caption, wide: bool = False) -> Html:
    """An embedded image with caption; ``wide`` spans the whole row (e.g. a nomogram)."""
    return el("figure", Html(f'<img src="{esc(uri)}" alt="{esc(caption)}">'),
              el("figcaption", caption), class_="wide" if wide else None)


def table(df, float_fmt: str = "{:.3f}", max_rows: int = 60, index: bool = False) -> Html:
    """An HTML table from a DataFrame (numbers formatted, at most ``max_rows`` rows).

    pandas escapes every cell, column and index name (``escape=True``)."""
    import pandas as pd
    d = df.head(max_rows).copy()
    for c in d.columns:
        if pd.api.types.is_float_dtype(d[c]):
            d[c] = d[c].map(lambda v: "" if v != v else float_fmt.format(v))
    more = fmt('<p class="muted">{} more rows in the CSV.</p>', len(df) - max_rows) \
        if len(df) > max_rows else Html("")
    return Html(d.to_html(index=index, border=0, escape=True)) + more


def kv_table(rows) -> Html:
    """A two-column key/value table (left-aligned values) from (key, value) pairs."""
    return el("table", *(el("tr", el("th", k), el("td", v)) for k, v in rows), class_="kv")


def kpis(items) -> Html:
    """Key figures as tiles, from (label, value) pairs."""
    return el("div", *(el("div", el("b", v), k) for k, v in items), class_="kpi")


def page(title, subtitle, sections, footer="", anchors=None) -> Html:
    """A complete self-contained HTML page; ``sections`` = list of (heading, inner html).

    ``inner`` must be :class:`Html` (a plain ``str`` is shown as text). ``anchors`` optionally
    gives each section an ``id`` (empty string: none) for navigation. The page carries the
    script-free Content-Security-Policy :data:`CSP`.
    """
    from .. import __version__
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ids = list(anchors or []) + [""] * len(sections)
    body = cat(*(el("section", el("h2", h), inner, id=a or None)
                 for (h, inner), a in zip(sections, ids)))
    return fmt("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
               "<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
               "<meta name='viewport' content='width=device-width,initial-scale=1'>"
               "<title>{title}</title><style>{css}</style></head><body>"
               "<header><h1>{title}</h1><p>{subtitle}</p></header>"
               "<div class='ruo'><b>{ruo}</b></div><main>{body}</main>"
               "<footer>HER2Radiomics {version} · generated {now} · {footer}</footer>"
               "</body></html>", csp=CSP, title=title, css=Html(_CSS), subtitle=subtitle,
               ruo=DISCLAIMER, body=body, version=__version__, now=now, footer=footer)


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
        (Path(profile) / "Default").mkdir()
        (Path(profile) / "Default" / "Preferences").write_text(json.dumps(PROFILE_PREFERENCES))
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
    """Print an HTML file to PDF with headless Chromium, JavaScript off (written atomically)."""
    _run_browser(lambda t: ["--no-pdf-header-footer", f"--print-to-pdf={t}"], html_path,
                 pdf_path)
    return Path(pdf_path)


def screenshot(html_path, png_path, width: int = 1280, height: int = 2400) -> Path:
    """Render an HTML file to a PNG screenshot with headless Chromium, JavaScript off."""
    _run_browser(lambda t: [f"--window-size={width},{height}", f"--screenshot={t}"],
                 html_path, png_path)
    return Path(png_path)
