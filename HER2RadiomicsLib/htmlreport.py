"""Self-contained HTML pages (figures embedded as base64 PNG) shared by every report."""
from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

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
figure img{width:100%;border:1px solid #e3e7eb;border-radius:4px}
figcaption{font-size:12px;color:#5a6877}
.kpi{display:flex;gap:14px;flex-wrap:wrap}
.kpi div{background:#eef2f6;border-radius:6px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:20px;color:#16324f}
.muted{color:#5a6877;font-size:12px}
footer{font-size:11.5px;color:#5a6877;padding:0 32px 24px}
"""


def fig_to_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure to an embedded PNG data URI (and close it)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure(uri: str, caption: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
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


def kpis(items) -> str:
    return '<div class="kpi">' + "".join(
        f"<div><b>{html.escape(str(v))}</b>{html.escape(str(k))}</div>" for k, v in items) + "</div>"


def page(title: str, subtitle: str, sections, footer: str = "") -> str:
    """A complete self-contained HTML page; ``sections`` = list of (heading, inner html)."""
    from . import __version__
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{inner}</section>" for h, inner in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
            f"<div class='ruo'><b>{html.escape(DISCLAIMER)}</b></div><main>{body}</main>"
            f"<footer>HER2Radiomics {__version__} · generated {now} · "
            f"{html.escape(footer)}</footer></body></html>")
