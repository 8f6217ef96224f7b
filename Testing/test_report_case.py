"""Per-patient report pieces: the overlay geometry, the HTML card, PDF/PNG rendering."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import disk_mask, make_image
from HER2RadiomicsLib.reports import html as H
from HER2RadiomicsLib.reports.case import overlay_figure, prediction_card_html, task_text


def _disk(spacing=(0.2, 0.3), radius=4.0, centre=(60, 40), shape=(90, 130)):
    m = disk_mask(shape, centre, radius, spacing)
    img = make_image(np.random.default_rng(0).rayleigh(40, shape), spacing)
    mask = sitk.GetImageFromArray(m)
    mask.CopyInformation(img)
    return img, mask


def test_overlay_contour_is_the_physical_circle():
    """Contour vertices lie on the disk's radius in mm, on an anisotropic grid."""
    spacing, radius, centre = (0.2, 0.3), 4.0, (60, 40)
    img, mask = _disk(spacing, radius, centre)
    fig = overlay_figure(img, {"tumor": mask}, margin_mm=3.0)
    ax = fig.axes[0]
    left, right, bottom, top = ax.images[0].get_extent()
    verts = np.vstack([p.vertices for c in ax.collections for p in c.get_paths()])
    # crop origin in pixels: bounding box minus the margin
    ys, xs = np.nonzero(sitk.GetArrayFromImage(mask))
    x0 = xs.min() - int(np.ceil(3.0 / spacing[0]))
    y0 = ys.min() - int(np.ceil(3.0 / spacing[1]))
    cx = (centre[0] - x0 + 0.5) * spacing[0]
    cy = (centre[1] - y0 + 0.5) * spacing[1]
    r = np.hypot(verts[:, 0] - cx, verts[:, 1] - cy)
    assert np.abs(r - radius).max() < max(spacing)       # within one pixel of the true circle
    # the axes span the crop in millimetres (physical aspect)
    assert right - left == pytest.approx((xs.max() - xs.min() + 1) * 0.2 + 2 * 15 * 0.2)
    assert bottom - top == pytest.approx((ys.max() - ys.min() + 1) * 0.3 + 2 * 10 * 0.3)


def test_overlay_refuses_empty_regions():
    from HER2RadiomicsLib.errors import InputError
    img, mask = _disk()
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(InputError, match="empty"):
        overlay_figure(img, {"tumor": empty})


def _pred(**kw):
    base = dict(case_id="P1</script>", predicted_class="low",
                probabilities={"zero": 0.3, "low": 0.7}, rad_score=0.85,
                contributions=[{"feature": "tumor__a", "contribution": 0.6},
                               {"feature": "peri_0-3mm__b", "contribution": -0.2}],
                nomogram_probability=None, nomogram_points=None,
                qc={"spacing_source": "unknown", "peri_0-3mm_clipped": "61%",
                    "flagged_rings": "peri_0-3mm"}, warnings=["bundle made with numpy 1.0"])
    base.update(kw)
    return SimpleNamespace(**base)


META = {"recipe": "r", "classes": ["zero", "low"], "positive_class": "low", "label_col": "her2",
        "threshold": 0.6, "regions": ["tumor", "peri_0-3mm"],
        "metrics": {"test": {"n": 30, "auc": 0.8, "auc_delong_ci_low": 0.7,
                             "auc_delong_ci_high": 0.9, "brier": 0.2,
                             "calibration_slope": 0.9, "calibration_intercept": 0.1,
                             "sensitivity": 0.7, "specificity": 0.8}}}


def test_card_shows_prediction_flags_and_machine_readable_copy():
    html = prediction_card_html(_pred(), META)
    data = json.loads(re.search(r"class='prediction'>(.*?)</script>", html).group(1))
    assert data["case_id"] == "P1</script>" and data["probabilities"]["low"] == 0.7
    assert html.count("</script>") == 1               # the case id cannot close the block
    assert "her2: low vs zero" in html
    assert "0.700" in html and "Brier 0.200" in html
    assert "pixel spacing from unknown" in html       # QC flag for a placeholder spacing
    assert "peri_0-3mm loses 61%" in html             # QC flag for a clipped ring
    assert "bundle made with numpy 1.0" in html       # version warnings are carried
    # the contribution bars have the sign of the contribution
    assert html.index("#c0392b") < html.index("#2471a3")


def test_task_text_multiclass():
    assert task_text({"classes": ["zero", "low", "positive"], "label_col": "her2"}) == \
        "her2: zero / low / positive"


def test_page_is_self_contained_and_carries_ruo():
    page = H.page("t", "s", [("A", H.Html("<p>x</p>"))], anchors=["a"])
    assert H.DISCLAIMER in page and '<section id="a"><h2>A</h2><p>x</p>' in page
    assert "http" not in page.split("<footer>")[0].replace("http-equiv", "")


@pytest.mark.skipif(H.find_browser() is None, reason="Chromium not installed")
def test_pdf_and_screenshot(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(H.page("PDF test", "sub", [("Section", H.Html("<p>hello</p>"))]))
    pdf = H.html_to_pdf(page, tmp_path / "p.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    png = H.screenshot(page, tmp_path / "p.png", 400, 300)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))           # no temporary files left


def test_missing_browser_is_a_clear_error(tmp_path, monkeypatch):
    from HER2RadiomicsLib.errors import HER2Error
    monkeypatch.setenv("HER2RADIOMICS_BROWSER", str(tmp_path / "no-such-chromium"))
    page = tmp_path / "p.html"
    page.write_text("<p>x</p>")
    with pytest.raises(HER2Error, match="needs Chromium"):
        H.html_to_pdf(page, tmp_path / "p.pdf")
    assert not (tmp_path / "p.pdf").exists()
