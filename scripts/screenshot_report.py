"""Render an HTML report to a PNG with headless Chromium, for visual review and the docs.

    python scripts/screenshot_report.py demo-output/report.html report.png --height 1800

Reviewing the rendered page (not the HTML source) is how layout problems are found: figures
too small to read, tables that overflow, legends hiding the lesion.
"""
import argparse
import sys

from HER2RadiomicsLib.errors import HER2Error
from HER2RadiomicsLib.reports.html import screenshot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html")
    p.add_argument("png")
    p.add_argument("--width", type=int, default=1280, help="viewport width (px)")
    p.add_argument("--height", type=int, default=2400, help="viewport height (px)")
    a = p.parse_args(argv)
    try:
        print(screenshot(a.html, a.png, a.width, a.height))
    except HER2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
