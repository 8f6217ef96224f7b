"""The field of view's hull and morphology, computed faster: the same pixels.

``rings._convex_hull_mask`` replaces scikit-image's ``convex_hull_image`` (whose import pulls
scipy's spatial package into every extract), ``rings._disk_morphology`` scipy's binary
closing and opening by a disk. The references are scikit-image and scipy themselves, and
the whole detection is checked against the previous implementation written out below (scipy's
morphology, ``ndi.sum`` sizes, scikit-image's hull) on the synthetic scans.
"""
import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.imaging.rings import (_convex_hull_mask, _disk, _disk_morphology,
                                            build_regions, detect_fov)

convex_hull_image = pytest.importorskip("skimage.morphology").convex_hull_image


def _random_masks(n, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        if k % 4 == 0:                       # one pixel, and thin lines: degenerate hulls
            m = np.zeros((h, w), bool)
            m[rng.integers(h), :rng.integers(1, w + 1)] = True
        else:
            m = rng.random((h, w)) < rng.uniform(0.01, 0.3)
        if m.any():
            yield m


def test_hull_equals_scikit_image_on_random_pixel_sets():
    n = 0
    for m in _random_masks(600):
        np.testing.assert_array_equal(_convex_hull_mask(m), convex_hull_image(m))
        n += 1
    assert n > 500


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (5, 5)])
def test_hull_of_lines_and_blocks(shape):
    m = np.ones(shape, bool)
    np.testing.assert_array_equal(_convex_hull_mask(np.pad(m, 3)),
                                  convex_hull_image(np.pad(m, 3)))


def test_hull_of_sector_shapes():
    # sector (curved-array) and trapezoid fields of view, the shapes the detection meets
    y, x = np.mgrid[0:180, 0:220]
    r, a = np.hypot(x - 110, y + 40), np.arctan2(x - 110, y + 40)
    for m in ((r > 60) & (r < 210) & (np.abs(a) < 0.6),
              (y > 10) & (y < 170) & (np.abs(x - 110) < 40 + 0.4 * y)):
        np.testing.assert_array_equal(_convex_hull_mask(m), convex_hull_image(m))


def test_disk_morphology_equals_scipy():
    from scipy import ndimage as ndi
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        r = int(rng.integers(1, 9))
        a = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        se = _disk(r)
        np.testing.assert_array_equal(_disk_morphology(a, r, dilate=True),
                                      ndi.binary_dilation(a, structure=se, border_value=0))
        np.testing.assert_array_equal(_disk_morphology(a, r, dilate=False),
                                      ndi.binary_erosion(a, structure=se, border_value=0))
        np.testing.assert_array_equal(
            _disk_morphology(_disk_morphology(a, r, dilate=True), r, dilate=False),
            ndi.binary_closing(a, structure=se, iterations=1, border_value=0))
        np.testing.assert_array_equal(
            _disk_morphology(_disk_morphology(a, r, dilate=False), r, dilate=True),
            ndi.binary_opening(a, structure=se))


def _previous_detect_fov(image, threshold_fraction=0.03):
    """The detection as it was before (scipy sizes, scikit-image hull)."""
    from scipy import ndimage as ndi
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    h, w = arr.shape
    f = max(1, int(math.ceil(max(h, w) / 256)))
    small = arr[::f, ::f]
    hi = float(np.percentile(small, 99))
    fg = small > max(threshold_fraction * hi, 1e-6)
    r = max(1, round(min(small.shape) * 0.015))
    fg = ndi.binary_closing(fg, structure=_disk(r), iterations=1, border_value=0)
    fg = ndi.binary_fill_holes(fg)
    fg = ndi.binary_opening(fg, structure=_disk(2 * r))
    lab, n = ndi.label(fg)
    if n == 0:
        return np.ones_like(arr, dtype=np.uint8)
    sizes = ndi.sum(fg, lab, index=np.arange(1, n + 1))
    keep = lab == (1 + int(np.argmax(sizes)))
    hull = convex_hull_image(keep)
    return np.repeat(np.repeat(hull, f, axis=0), f, axis=1)[:h, :w].astype(np.uint8)


def test_detected_fov_and_rings_unchanged_on_synthetic_scans(cohort):
    from HER2RadiomicsLib.imaging.io import load_case
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    for r in rows[:6]:
        li, mask = load_case(cohort / r["image"], cohort / r["mask"])
        before = _previous_detect_fov(li.image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(detect_fov(li.image)), before)
        regs = build_regions(li, mask, "3,5,8", fov="auto")
        # every ring is the previous FOV's clipping of the unclipped ring from the same call
        fov = sitk.GetArrayFromImage(regs.fov)
        np.testing.assert_array_equal(fov, before)
        for name in regs.names:
            assert not ((sitk.GetArrayFromImage(regs.masks[name]) > 0) & (fov == 0)).any()
