"""LBP2D computed on the regions' box (extraction.native.lbp_image) equals the whole image's.

scikit-image samples each pixel's circle by bilinear interpolation at absolute coordinates,
so a crop that moved the image's origin would round some near-tie samples differently. A
ramp of equal slopes puts the diagonal samples exactly on the centre's value at every pixel
(every sample a tie, decided by rounding): the strictest case.
"""
import numpy as np
import pytest

from HER2RadiomicsLib.extraction.native import lbp_image

pytest.importorskip("skimage")


@pytest.mark.parametrize("radius,samples", [(1, 8), (2, 16), (1.5, 12)])
def test_box_equals_whole_image_on_ties(radius, samples):
    yy, xx = np.indices((180, 150))
    rng = np.random.default_rng(3)
    images = [(yy + xx).astype(np.float32) * np.float32(0.37),
              rng.normal(100, 20, (180, 150)).astype(np.float32)]
    st = {"lbp2DRadius": radius, "lbp2DSamples": samples}
    for arr in images:
        whole = lbp_image(arr, st)
        for box in [(slice(97, 163), slice(41, 140)), (slice(0, 30), slice(120, 150)),
                    (slice(5, 180), slice(3, 9))]:
            part = lbp_image(arr, st, box)
            np.testing.assert_array_equal(part[box], whole[box])
            outside = np.ones(arr.shape, bool)
            outside[box] = False
            assert np.isnan(part[outside]).all()      # never read: marked, not wrong
