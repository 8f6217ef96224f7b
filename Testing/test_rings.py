"""Peritumoral rings: analytic areas, anisotropic spacing, clipping QC, FOV detection, CLI."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.errors import InputError, SpacingUnknownError
from HER2RadiomicsLib.imaging.rings import (RingSpec, build_regions, detect_fov, parse_rings,
                                            ring_specs)

from conftest import disk_mask, make_image


def disk_scene(spacing, radius_mm=10.0, half_width_mm=25.0, center_mm=(0.0, 0.0)):
    sx, sy = spacing
    nx, ny = int(round(2 * half_width_mm / sx)), int(round(2 * half_width_mm / sy))
    cx = (half_width_mm + center_mm[0]) / sx - 0.5 + 0.137   # off-grid centre: no symmetry luck
    cy = (half_width_mm + center_mm[1]) / sy - 0.5 + 0.071
    m = disk_mask((ny, nx), (cx, cy), radius_mm, spacing)
    img = make_image(np.full((ny, nx), 100.0), spacing)
    mask = sitk.GetImageFromArray(m)
    mask.CopyInformation(img)
    return img, mask


def ring_area(spacing, ring="peri_0-5mm", **kw):
    img, mask = disk_scene(spacing, **kw)
    regs = build_regions(img, mask, "3,5,8", fov=None)
    return regs.qc[ring]["area_mm2"], regs


@pytest.mark.parametrize("spacing,tol", [((0.1, 0.1), 0.02), ((0.5, 0.5), 0.04)])
def test_disk_ring_area_matches_analytic(spacing, tol):
    area, _ = ring_area(spacing)
    expected = math.pi * (15 ** 2 - 10 ** 2)
    assert abs(area / expected - 1) < tol


def test_annulus_area_and_partition():
    area, regs = ring_area((0.1, 0.1), ring="peri_3-5mm")
    assert abs(area / (math.pi * (15 ** 2 - 13 ** 2)) - 1) < 0.03
    a = {k: sitk.GetArrayFromImage(v) > 0 for k, v in regs.masks.items()}
    # expansions are nested, annuli partition them, nothing overlaps the tumour
    assert not (a["tumor"] & a["peri_0-8mm"]).any()
    assert np.array_equal(a["peri_0-5mm"], a["peri_0-3mm"] | a["peri_3-5mm"])
    assert not (a["peri_0-3mm"] & a["peri_3-5mm"]).any()
    lm = sitk.GetArrayFromImage(regs.label_map)
    assert np.array_equal(lm == regs.labels["peri_5-8mm"], a["peri_5-8mm"])


def test_anisotropic_equals_isotropic_scene():
    iso, _ = ring_area((0.2, 0.2))
    aniso, _ = ring_area((0.2, 0.45))
    assert abs(aniso / iso - 1) < 0.03


def test_clipping_at_image_border_reported():
    # disk centred 12 mm from the right border of a 50 mm wide image: the 0-8 mm ring
    # (outer radius 18 mm) is cut by the border; compare with the analytic lost fraction.
    spacing = (0.1, 0.1)
    img, mask = disk_scene(spacing, center_mm=(13.0, 0.0))
    regs = build_regions(img, mask, "8", fov=None, max_clip_fraction=0.05)
    q = regs.qc["peri_0-8mm"]
    # circular-segment areas beyond x = 12 mm from centre, for r = 18 mm (tumour r=10 is inside)
    r, d = 18.0, 12.0
    seg = r * r * math.acos(d / r) - d * math.sqrt(r * r - d * d)
    lost = seg / (math.pi * (18 ** 2 - 10 ** 2))
    assert q["clipped_fraction"] == pytest.approx(lost, abs=0.01)
    assert q["flagged"] and "peri_0-8mm" in regs.flagged
    assert q["unclipped_area_mm2"] == pytest.approx(math.pi * (18 ** 2 - 10 ** 2), rel=0.03)


def test_combined_region_and_names():
    img, mask = disk_scene((0.2, 0.2))
    regs = build_regions(img, mask, "3,5,8", combined=[5], fov=None)
    assert regs.names == ["tumor", "peri_0-3mm", "peri_0-5mm", "peri_0-8mm", "peri_3-5mm",
                          "peri_5-8mm", "tumor+peri_5mm"]
    a = {k: sitk.GetArrayFromImage(v) > 0 for k, v in regs.masks.items()}
    assert np.array_equal(a["tumor+peri_5mm"], a["tumor"] | a["peri_0-5mm"])
    regs2 = build_regions(img, mask, "3,5,8", annuli=False, fov=None)
    assert "peri_3-5mm" not in regs2.names
    with pytest.raises(InputError, match="needs 4"):
        build_regions(img, mask, "3,5", combined=[4], fov=None)


def test_ring_spec_validation():
    assert RingSpec(2.5, 5).name == "peri_2.5-5mm"
    assert [s.name for s in ring_specs("5,3")] == ["peri_0-3mm", "peri_0-5mm", "peri_3-5mm"]
    with pytest.raises(InputError):
        RingSpec(5, 3)
    with pytest.raises(InputError):
        parse_rings("3,x")
    with pytest.raises(InputError):
        parse_rings("-1")


def test_unknown_spacing_refuses():
    from HER2RadiomicsLib.imaging.io import LoadedImage
    img, mask = disk_scene((0.2, 0.2))
    with pytest.raises(SpacingUnknownError, match="--spacing-mm"):
        build_regions(LoadedImage(img, "x.png", "unknown"), mask, "3")
    # tumour only needs no mm
    assert build_regions(LoadedImage(img, "x.png", "unknown"), mask, "").names == ["tumor"]


def test_fov_detection_on_synthetic_scans(cohort):
    import csv
    from HER2RadiomicsLib.imaging.io import load_case
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    for r in rows[:4]:
        li, mask = load_case(cohort / r["image"], cohort / r["mask"])
        fov = sitk.GetArrayFromImage(detect_fov(li.image)) > 0
        img = sitk.GetArrayFromImage(li.image)
        # the detected FOV excludes the black background and the annotation text above it
        truth = img > 0
        inter = (fov & truth).sum() / truth.sum()
        assert inter > 0.97, r["case_id"]
        assert (fov & ~truth).sum() / fov.sum() < 0.03, r["case_id"]
        assert not fov[:5].any()        # annotation rows at the top are outside


def test_rings_clipped_to_fov(cohort):
    import csv
    from HER2RadiomicsLib.imaging.io import load_case
    r = next(csv.DictReader(open(cohort / "cohort.csv")))
    li, mask = load_case(cohort / r["image"], cohort / r["mask"])
    regs = build_regions(li.image, mask, "3,5,8")
    fov = sitk.GetArrayFromImage(regs.fov) > 0
    for name in regs.names:
        assert not ((sitk.GetArrayFromImage(regs.masks[name]) > 0) & ~fov).any(), name
    assert regs.fov_source == "detected"


def test_cli_rings_writes_outputs(cohort, tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["rings", "--image", str(cohort / "images" / "P0002-1.dcm"),
               "--mask", str(cohort / "masks" / "P0002-1.png"), "--rings", "3,5,8",
               "--combined", "5", "--out-dir", str(out)])
    assert rc == 0
    doc = json.loads((out / "rings.json").read_text())
    assert set(doc["regions"]) >= {"tumor", "peri_0-3mm", "peri_0-5mm", "peri_0-8mm",
                                   "peri_3-5mm", "peri_5-8mm", "tumor+peri_5mm"}
    assert doc["spacing_source"] == "dicom-us-region"
    for name in doc["regions"]:
        m = sitk.ReadImage(str(out / f"{name}.nrrd"))
        assert m.GetSpacing() == pytest.approx(doc["spacing_mm"])
        area = sitk.GetArrayFromImage(m).sum() * np.prod(m.GetSpacing())
        assert area == pytest.approx(doc["regions"][name]["area_mm2"])
    assert (out / "labels.nrrd").exists()


def test_cli_rings_png_without_spacing_exits_2(cohort, tmp_path, capsys):
    img = cohort / "images" / "P0001-1.png"
    side = tmp_path / "x.png"
    side.write_bytes(img.read_bytes())              # copy without its spacing sidecar
    rc = main(["rings", "--image", str(side), "--mask", str(cohort / "masks" / "P0001-1.png"),
               "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "pixel spacing is unknown" in err and str(side) in err
    assert len(err.strip().splitlines()) == 1
    rc = main(["rings", "--image", str(side), "--mask", str(cohort / "masks" / "P0001-1.png"),
               "--spacing-mm", "0.12", "0.12", "--out-dir", str(tmp_path / "o")])
    assert rc == 0
