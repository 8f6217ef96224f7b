"""Rings from the distance map of the tumour's window equal those of the whole padded grid.

``build_regions`` computes the exact distance map only on the tumour's bounding box grown by
the largest ring. The reference below is the whole-grid computation written out (the image
padded by the largest ring on every side), on tumours in the middle, at the border and in a
corner, split in pieces, with anisotropic pixels, and on the synthetic scans.
"""
import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from HER2RadiomicsLib.imaging.rings import build_regions, ring_specs


def _reference(tum, fov, spacing, distances):
    """``{ring name: (clipped mask, unclipped pixel count)}`` from the whole padded grid."""
    sx, sy = spacing
    h, w = tum.shape
    pad_x = int(math.ceil(max(distances) / sx)) + 1
    pad_y = int(math.ceil(max(distances) / sy)) + 1
    tp = np.pad(tum, ((pad_y, pad_y), (pad_x, pad_x)))
    dist = ndi.distance_transform_edt(~tp, sampling=(sy, sx))
    out = {}
    for spec in ring_specs(distances):
        band = (~tp) & (dist > spec.inner_mm) & (dist <= spec.outer_mm)
        out[spec.name] = (band[pad_y:pad_y + h, pad_x:pad_x + w] & fov, int(band.sum()))
    return out


def _image(arr, spacing):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    return img


def _check(tum, spacing, fov=None, distances=(3.0, 5.0, 8.0)):
    fov = np.ones_like(tum) if fov is None else fov
    img = _image(np.full(tum.shape, 100), spacing)
    regs = build_regions(img, _image(tum, spacing), list(distances), fov=_image(fov, spacing))
    ref = _reference(tum, fov, spacing, list(distances))
    assert set(ref) <= set(regs.masks)
    px = spacing[0] * spacing[1]
    for name, (mask, full) in ref.items():
        np.testing.assert_array_equal(sitk.GetArrayFromImage(regs.masks[name]) > 0, mask,
                                      err_msg=name)
        assert regs.qc[name]["unclipped_area_mm2"] == full * px, name
        assert regs.qc[name]["area_px"] == int(mask.sum()), name


def _blob(shape, centre, radii):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return ((y - centre[0]) / radii[0]) ** 2 + ((x - centre[1]) / radii[1]) ** 2 <= 1


@pytest.mark.parametrize("centre", [(100, 120), (3, 120), (100, 2), (197, 237), (0, 0)])
@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.07, 0.11), (0.2, 0.15)])
def test_window_equals_whole_grid(centre, spacing):
    _check(_blob((200, 240), centre, (25, 35)), spacing)


def test_tumour_in_pieces_and_a_clipping_fov():
    tum = _blob((180, 220), (60, 50), (12, 20)) | _blob((180, 220), (130, 170), (20, 10))
    tum[90, 110] = True                                   # a single-pixel piece
    fov = _blob((180, 220), (90, 110), (85, 100))
    _check(tum, (0.1, 0.1), fov)
    _check(tum, (0.13, 0.09), fov, distances=(1.0, 2.5))


def test_tumour_filling_the_image():
    tum = np.ones((40, 50), bool)
    tum[0] = False
    _check(tum, (0.1, 0.1))


def test_rings_on_synthetic_scans(cohort):
    from HER2RadiomicsLib.imaging.io import load_case
    for r in list(csv.DictReader(open(cohort / "cohort.csv")))[:6]:
        li, mask = load_case(cohort / r["image"], cohort / r["mask"])
        regs = build_regions(li, mask, "3,5,8", fov="auto")
        tum = sitk.GetArrayFromImage(mask) > 0
        fov = sitk.GetArrayFromImage(regs.fov) > 0
        for name, (ref, full) in _reference(tum, fov, mask.GetSpacing(), [3, 5, 8]).items():
            np.testing.assert_array_equal(sitk.GetArrayFromImage(regs.masks[name]) > 0, ref,
                                          err_msg=f"{r['case_id']} {name}")
            assert regs.qc[name]["area_px"] == int(ref.sum())
            sx, sy = mask.GetSpacing()
            assert regs.qc[name]["unclipped_area_mm2"] == full * (sx * sy)
