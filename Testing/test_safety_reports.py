"""Reports as an attacker would feed them: every value from a bundle's metadata, a manifest or a
recipe is shown as text, never run; every page forbids script; Chromium renders with
JavaScript off.

Hostile bundles are the shipped test bundle with metadata edited and its integrity digest
recomputed, as anyone who knows the format can do; the HTML is checked by parsing it (no
element, attribute or script can come from the payloads), not by looking for substrings.
"""
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from HER2RadiomicsLib.reports import html as H

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "HER2Radiomics" / "Resources" / "Testing"

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=alert(1)>"
SVG = '"><svg onload=alert(1)>'
PAYLOADS = (SCRIPT, IMG, SVG)

# every element a report is built from; anything else came from data
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
                "p", "div", "b", "main", "section", "figure", "img", "figcaption", "table",
                "thead", "tbody", "tr", "th", "td", "code", "ul", "li", "nav", "a", "footer",
                "script"}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.scripts, self._in = [], [], [], None
        self.styles = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        {"script": self.scripts, "style": self.styles}.get(self._in, self.text).append(data)


def assert_inert(page: str, shown=PAYLOADS, csp: bool = True) -> _Page:
    """No element, attribute or script in ``page`` comes from data, the payloads in ``shown``
    are visible as text, and (``csp``) the page carries a policy that allows no script."""
    p = _Page()
    p.feed(page)
    p.close()
    for tag, attrs in p.tags:
        assert tag in ALLOWED_TAGS, f"unexpected element <{tag} {attrs}>"
        handlers = [a for a in attrs if a.lower().startswith("on")]
        assert not handlers, f"<{tag}> has event handler(s) {handlers}"
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:80]
        if tag == "a":
            assert not attrs.get("href", "").strip().lower().startswith("javascript:")
        if tag == "script":        # only the machine-readable data block, and it is pure JSON
            assert attrs == {"type": "application/json", "class": "prediction"}, attrs
    for block in p.scripts:
        json.loads(block)
    text = " ".join(p.text)
    for s in shown:
        assert s in text, f"payload {s!r} is not shown as text"
    # the code's own markup is never shown as text (escaped twice, or escaped by mistake)
    rest = text
    for s in sorted({*PAYLOADS, *shown}, key=len, reverse=True):
        rest = rest.replace(s, "")
    assert not re.search(r"</?[a-z][a-z0-9]*[ >/]|&[a-z]+;|&#", rest), \
        f"markup shown as text: {re.search(r'.{0,40}(</?[a-z]|&[a-z#]).{0,40}', rest)}"
    if csp:
        pol = [a["content"] for t, a in p.tags if t == "meta"
               and a.get("http-equiv", "").lower() == "content-security-policy"]
        assert len(pol) == 1, "no Content-Security-Policy"
        directives = dict((d.split() + [""])[:2] for d in pol[0].split(";") if d.strip())
        assert directives["default-src"] == "'none'"
        assert directives.get("script-src", "'none'") == "'none'"
        head = page.split("<body", 1)[0]
        assert "Content-Security-Policy" in head           # before any content
    return p


def _evil_bundle(out: Path, numbers_and_classes: bool = False) -> Path:
    """The shipped bundle with payloads in its descriptive metadata, digest recomputed;
    ``numbers_and_classes`` also puts text where numbers go and payloads in the class names."""
    from HER2RadiomicsLib.modelling.bundle import integrity_record
    with zipfile.ZipFile(DATA / "model_bundle.zip") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    doc = json.loads(entries["bundle.json"])
    doc["metrics"]["test"].update(unit=SCRIPT, n=IMG)            # the reported injection
    doc["metrics"]["external"].update(unit=SVG, n=SCRIPT)
    doc["name"], doc["recipe"], doc["created"] = SVG, SCRIPT, SVG
    doc["versions"]["numpy"] = IMG                              # becomes a warning on the card
    doc["params_hash"], doc["label_col"] = "0" * 12 + IMG, IMG   # the card shows 12 chars
    doc["training"].update(primary=SCRIPT, unit=SVG)
    if numbers_and_classes:
        doc["metrics"]["external"].update(auc=IMG, auc_delong_ci_low=SVG)
        doc["metrics"]["test"].update(brier=SCRIPT, sensitivity=IMG)
        doc["classes"] = ["zero" + SCRIPT, "low" + SVG]
        doc["positive_class"] = doc["classes"][1]
    doc.pop("integrity")
    doc["integrity"] = integrity_record(doc)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bundle.json", json.dumps(doc))
        z.writestr("model.skops", entries["model.skops"])
    return out


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=300)


@pytest.mark.parametrize("more", [False, True], ids=["metadata", "numbers+class-names"])
def test_case_report_shows_hostile_bundle_metadata_as_text(tmp_path, more):
    """`her2radiomics report` with a bundle whose metrics, names and versions (and metrics
    where numbers go, and class names) carry script/markup payloads, a hostile case id and
    image file name."""
    bundle = _evil_bundle(tmp_path / "evil.zip", more)
    image = tmp_path / f"{IMG}.nrrd"              # the file name reaches the page's footer
    shutil.copy(DATA / "case.nrrd", image)
    out = tmp_path / "case.html"
    r = _cli("report", "--bundle", bundle, "--image", image, "--mask", DATA / "case_mask.nrrd",
             "--site", "A", "--case-id", SVG, "--out", out)
    if more and r.returncode == 2:   # validating class names against the recipe is fine too
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "unexpected" not in err[0]
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    page = assert_inert(out.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert f"n = {IMG} {SCRIPT}" in text           # metrics.test.n / unit, shown verbatim
    assert f"image {IMG}.nrrd" in text and f"case {SVG}" in text


def test_case_card_escapes_every_prediction_field():
    """The card (also used by the demo and the Slicer panel) with payloads in the case id,
    class names, warnings, QC, feature and nomogram predictor names and the bundle's metadata,
    and text where the metadata should hold numbers."""
    from HER2RadiomicsLib.reports.case import case_report_html
    pred = SimpleNamespace(
        case_id=SCRIPT, predicted_class=SVG, probabilities={IMG: 0.25, SVG: 0.75},
        rad_score=0.5, class_rad_scores={IMG: -0.5}, nomogram_probability=0.6,
        nomogram_points={SCRIPT: 12.0}, contributions=[{"feature": IMG, "contribution": 0.4}],
        qc={"spacing_source": SVG, IMG: SCRIPT, "flagged_rings": SVG, SVG + "_clipped": IMG},
        warnings=[SCRIPT])
    meta = {"recipe": SCRIPT, "classes": [IMG, SVG], "positive_class": SVG, "label_col": IMG,
            "threshold": 0.5, "regions": [SVG], "sites": [IMG], "clinical": [SCRIPT],
            "versions": {IMG: SVG}, "params_name": SCRIPT, "params_hash": "0" * 12 + SVG,
            "created": IMG,
            "training": {"n": {"train": IMG, "test": 1, "external": SVG}, "unit": SCRIPT,
                         "primary": IMG},
            "metrics": {"test": {"n": IMG, "unit": SCRIPT, "auc": SVG, "auc_delong_ci_low": IMG,
                                 "auc_delong_ci_high": 0.9, "brier": SCRIPT,
                                 "calibration_slope": IMG, "calibration_intercept": SVG,
                                 "sensitivity": SCRIPT, "specificity": IMG},
                        "external": {"n": 3, "unit": SVG, "auc_macro": IMG}}}
    assert_inert(case_report_html(pred, meta, true_label=IMG, source=SVG))


def _summary():
    """A training run's summary (as modelling.study writes it) with hostile recipe text."""
    d = {"n": 20, "unit": SCRIPT, "auc": 0.8, "auc_delong_ci_low": 0.7, "auc_delong_ci_high": 0.9,
         "auc_boot_ci_low": IMG, "auc_boot_ci_high": 0.95, "sensitivity": 0.7,
         "sensitivity_ci_low": 0.5, "sensitivity_ci_high": SVG, "specificity": 0.8,
         "brier": IMG, "calibration_slope": 1.0, "calibration_intercept": SCRIPT}
    return {"positive": SVG, "primary": IMG, "title": SCRIPT, "task": IMG, "label_col": SVG,
            "external_site": SCRIPT, "recipe": IMG, "seconds": SVG, "unit": "patients",
            "n_images": {"train": IMG, "test": 2, "external": 3},
            "n": {"train": SCRIPT, "test": 20, "external": 5},
            "models": {IMG: {"n_selected": SVG, "test": d, "external": d, "threshold": SCRIPT},
                       SVG: {"n_selected": 3, "test": d}},
            "repeated_splits": {"n": 3, "median": IMG},
            "class_counts": {SVG: {IMG: 3, "b": 4}},
            "comparisons": [{"model_a": IMG, "model_b": SVG, "auc_a": 0.8, "auc_b": 0.7,
                             "z": 1.0, "p": SCRIPT}],
            "selected_features": {"features": [SCRIPT, IMG], "coef": [0.5, SVG],
                                  "intercept": SCRIPT},
            "nomogram": {"odds_ratios": [{"predictor": SVG, "OR": 1.2}],
                         "test": {"auc": IMG, "auc_delong_ci_low": 0.1,
                                  "auc_delong_ci_high": 0.9},
                         "delong_vs_radiomics": {"p": SVG}},
            "notes": [SCRIPT, IMG], "features_note": SVG}


def test_study_and_demo_reports_escape_recipe_text(tmp_path):
    """The training report and the demo's model and cohort sections, with payloads in every
    name a recipe or a cohort table can carry, and text where numbers are expected."""
    from HER2RadiomicsLib.reports.demo import _cohort_section, _model_section
    from HER2RadiomicsLib.reports.study import write_report
    s = _summary()
    assert_inert(write_report(tmp_path, s, {}, {}).read_text(encoding="utf-8"))
    cohort = pd.DataFrame({"site": [SCRIPT, IMG], "her2": ["zero", "low"],
                           "patient_id": [SVG, "p2"], "scanner": [IMG, SVG],
                           "case_id": [SCRIPT, SVG], "age": [50.0, 60.0], "er": [1, 0],
                           "ki67": [10.0, 20.0], "lesion_size_mm": [12.0, 15.0]})
    sections = [("cohort", _cohort_section(cohort, {"label_noise": IMG})),
                (SVG, _model_section(tmp_path, SVG, {**s, "task": "low_vs_zero"}))]
    assert_inert(H.page(SCRIPT, IMG, sections, footer=SVG))


def test_reader_study_summary_shows_hostile_names_as_text(cohort, tmp_path):
    """`her2radiomics reader-study` on a manifest whose reader names and case ids are
    payloads (no '/' in them: they also name consensus files)."""
    readers = {"R1": "<img src=x onerror=alert(1)>", "R2": '"><svg onload=alert(1)>',
               "R3": "<script>alert(1)"}
    solo = "<script>alert(2)"
    m = pd.read_csv(cohort / "readers.csv")
    m["image"] = [str(cohort / p) for p in m["image"]]
    m["mask"] = [str(cohort / p) for p in m["mask"]]
    m["reader"] = m["reader"].map(readers)
    extra = pd.DataFrame([{"case_id": solo, "image": m["image"][0], "reader": readers["R1"],
                           "mask": m["mask"][0]}])       # one reader: named in Problems
    man = tmp_path / "readers.csv"
    pd.concat([m, extra]).to_csv(man, index=False)
    r = _cli("reader-study", "--manifest", man, "--params", "cui2023", "--out",
             tmp_path / "rs", "--no-progress")
    assert r.returncode in (0, 1), r.stderr              # 1: problems listed, work done
    page = (tmp_path / "rs" / "summary.html").read_text(encoding="utf-8")
    # a case id with < > " cannot name a file on Windows: that row is left out and the
    # problem (naming it) is listed, as text
    assert_inert(page, shown=[*readers.values(), solo])


def _pixels(png):
    import matplotlib.image as mpimg
    a = mpimg.imread(str(png))[..., :3]
    red = (a[..., 0] > 0.9) & (a[..., 1] < 0.1) & (a[..., 2] < 0.1)
    green = (a[..., 0] < 0.1) & (a[..., 1] > 0.9) & (a[..., 2] < 0.1)
    return red.mean(), green.mean()


# A script that, if it ran, turns the page red and adds five printed pages.
_RUN_ME = ("<script>document.body.style.background='rgb(255,0,0)';for(let i=0;i<5;i++){"
           "const d=document.createElement('div');d.style.breakBefore='page';"
           "d.textContent='page '+i;document.body.appendChild(d)}</script>")


def _green_png_uri():
    import matplotlib.image as mpimg
    buf = io.BytesIO()
    mpimg.imsave(buf, np.tile(np.array([0, 1, 0], float), (40, 300, 1)), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.skipif(H.find_browser() is None, reason="Chromium not installed")
def test_rendering_runs_no_script(tmp_path):
    """PDF and PNG rendering never run a page's script (even a page without the policy), and
    a report's policy alone stops script in a browser that runs it, while its embedded
    images and inline styles still show."""
    raw = tmp_path / "raw.html"
    raw.write_text("<!DOCTYPE html><html><body style='margin:0;background:#fff'>"
                   "<div style='width:100px;height:40px;background:rgb(0,255,0)'></div>"
                   + _RUN_ME + "</body></html>")
    red, green = _pixels(H.screenshot(raw, tmp_path / "raw.png", 300, 200))
    assert green > 0.02, "the renderer drew nothing: the check would be vacuous"
    assert red == 0, "the screenshot ran the page's script"
    pdf = H.html_to_pdf(raw, tmp_path / "raw.pdf").read_bytes()
    assert [int(c) for c in re.findall(rb"/Count (\d+)", pdf)] == [1], \
        "printing ran the page's script (it adds pages)"
    # a report page with a script forced in (as if escaping failed) in a browser that runs
    # script: the policy blocks it, and the embedded image still loads
    rep = tmp_path / "report.html"
    rep.write_text(H.page("t", "s", [("Figures", H.figure(_green_png_uri(), "green")
                                      + H.Html(_RUN_ME))]))
    with tempfile.TemporaryDirectory(prefix="h2r_test_chromium_") as profile:
        subprocess.run([H.find_browser(), *H.CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        "--window-size=600,800", f"--screenshot={tmp_path / 'rep.png'}",
                        rep.resolve().as_uri()], capture_output=True, timeout=120)
    red, green = _pixels(tmp_path / "rep.png")
    assert green > 0.005, "the report's embedded image did not load under its policy"
    assert red == 0, "the report's policy let a script run"
