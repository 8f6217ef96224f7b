"""Several regions in one pass (extraction.multi) against one region at a time.

The one-region functions of ``extraction.engine`` are checked against pyradiomics in
test_engine_parity.py; here the shared pass must give the same values (relative 1e-11) for
regions that overlap, nest, touch the border, are one pixel wide or diagonal, with every
setting the parity suite uses, and hand back the regions it cannot share.
"""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from HER2RadiomicsLib.extraction import engine as E
from HER2RadiomicsLib.extraction.multi import texture_many

CLASSES = {"firstorder": list(E.FIRSTORDER + E.FIRSTORDER_OPTIONAL), "glcm": list(E.GLCM),
           "glrlm": list(E.GLRLM), "glszm": list(E.GLSZM), "gldm": list(E.GLDM),
           "ngtdm": list(E.NGTDM)}
SETTINGS = [
    {"binWidth": 25},
    {"binWidth": 5, "voxelArrayShift": 300},
    {"binWidth": 10, "symmetricalGLCM": False},
    {"binWidth": 10, "distances": [1, 2, 3]},
    {"binWidth": 10, "weightingNorm": "manhattan"},
    {"binWidth": 10, "weightingNorm": "euclidean", "distances": [1, 2]},
    {"binWidth": 10, "weightingNorm": "infinity"},
    {"binWidth": 10, "gldm_a": 2},
]


def _scene():
    rng = np.random.default_rng(11)
    h, w = 64, 80
    yy, xx = np.indices((h, w))
    speckle = rng.rayleigh(40, (h, w)).round(2)
    plateaus = np.where(xx < 40, 10.0, 200.0) + rng.integers(0, 3, (h, w))
    disk = (yy - 32) ** 2 + (xx - 40) ** 2 < 12 ** 2
    rings = [ndimage.binary_dilation(disk, iterations=k) & ~disk for k in (3, 6, 9)]
    line = np.zeros((h, w), bool)
    line[10:50, 40] = True                       # crosses the disk and every ring
    diag = np.eye(h, w, dtype=bool)
    border = (yy < 15) | (xx > w - 10)
    masks = [disk] + rings + [line, diag, border]
    return [speckle, plateaus], masks


def _one_region(img, m, sp, s):
    st = E.Settings.from_params(s)
    region = E.Region.of(img, m, sp, st)
    out = {}
    for cls, names in CLASSES.items():
        vals = E.CLASS_FUNCTIONS[cls](region, st, names if cls == "firstorder" else None)
        out.update({f"{cls}_{k}": v for k, v in vals.items()})
    return out


def _same(a, b):
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= max(1e-11 * abs(b), 1e-13)


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_shared_pass_equals_one_region_at_a_time(s):
    images, masks = _scene()
    n = 0
    for img in images:
        got = texture_many(img, masks, (0.1, 0.2), CLASSES, s)
        for m, g in zip(masks, got):
            assert g is not None                  # every region shared on this image
            ref = _one_region(img, m, (0.1, 0.2), s)
            assert list(g) == list(ref)            # same keys, same order
            bad = [k for k in ref if not _same(g[k], ref[k])]
            assert not bad, [(k, g[k], ref[k]) for k in bad[:5]]
            n += len(ref)
    assert n == 2 * len(masks) * (19 + 24 + 16 + 16 + 14 + 5)


def test_runs_and_zones_join_across_region_borders():
    """A flat image: every run and zone of the 0-8 mm ring crosses the 3 and 5 mm borders, so
    each region's single zone and its runs exist only once joined."""
    img = np.full((40, 40), 50.0)
    yy, xx = np.indices(img.shape)
    disk = (yy - 20) ** 2 + (xx - 20) ** 2 < 6 ** 2
    rings = [ndimage.binary_dilation(disk, iterations=k) & ~disk for k in (2, 4, 8)]
    got = texture_many(img, [disk] + rings, (1.0, 1.0), {"glszm": None, "glrlm": None},
                       {"binWidth": 25})
    for m, g in zip([disk] + rings, got):
        # one zone holding the whole region: ZonePercentage = 1 / pixels
        assert g["glszm_ZonePercentage"] == pytest.approx(1 / m.sum(), rel=1e-12)
        assert g["glszm_LargeAreaEmphasis"] == pytest.approx(m.sum() ** 2, rel=1e-12)
        ref = E.glrlm(E.Region.of(img, m))
        for k, v in ref.items():
            assert _same(g[f"glrlm_{k}"], v), k


def test_regions_it_cannot_share_are_handed_back():
    images, masks = _scene()
    # a fixed bin count: each region's edges depend on its own range
    assert texture_many(images[0], masks, (1, 1), CLASSES, {"binCount": 16}) == \
        [None] * len(masks)
    # bin edges that differ in rounding: 0.05 % 0.1 and 0.3 % 0.1 give edges that are not
    # the same floats, so the 0.3.. region is not shared, the others are
    img = np.zeros((20, 20))
    a = np.zeros_like(img, bool)
    a[2:8, 2:8] = True
    b = np.zeros_like(img, bool)
    b[10:16, 10:16] = True
    img[a] = np.linspace(0.05, 0.5, a.sum())
    img[b] = np.linspace(0.3, 0.9, b.sum())
    both = a | b
    got = texture_many(img, [a, both, b], (1, 1), CLASSES, {"binWidth": 0.1})
    assert got[2] is None and got[0] is not None and got[1] is not None
    for m, g in zip([a, both], got[:2]):
        ref = _one_region(img, m, (1, 1), {"binWidth": 0.1})
        assert all(_same(g[k], ref[k]) for k in ref)


def test_driver_computes_regions_together_and_alone_alike(tmp_path):
    """execute_many (the default for several regions) equals execute per region, keys and
    order included, and a region that fails validation fails alone."""
    from HER2RadiomicsLib.extraction.native import NativeExtractor
    images, masks = _scene()
    img = sitk.GetImageFromArray(images[0])
    img.SetSpacing((0.1, 0.15))
    sm = {}
    for i, m in enumerate(masks):
        s = sitk.GetImageFromArray(m.astype(np.uint8))
        s.CopyInformation(img)
        sm[f"r{i}"] = s
    tiny = np.zeros_like(masks[0])
    tiny[3:5, 3:5] = True
    s = sitk.GetImageFromArray(tiny.astype(np.uint8))
    s.CopyInformation(img)
    sm["tiny"] = s
    params = {"setting": {"binWidth": 10, "minimumROISize": 5, "minimumROIDimensions": 1},
              "imageType": {"Original": {}, "LoG": {"sigma": [0.3]}, "Square": {}},
              "featureClass": {"shape2D": None, "firstorder": None, "glcm": None,
                               "glrlm": None, "glszm": None, "gldm": None, "ngtdm": None}}
    nx = NativeExtractor(params)
    many = nx.execute_many(img, sm)
    assert list(many) == list(sm)
    assert isinstance(many["tiny"], Exception) and "too small" in str(many["tiny"])
    for name, mask in sm.items():
        if name == "tiny":
            continue
        one = NativeExtractor(params).execute(img, mask)
        assert list(many[name]) == list(one)
        for k, v in one.items():
            if isinstance(v, float):
                assert _same(many[name][k], v), (name, k)
            else:
                assert many[name][k] == v, (name, k)


@pytest.mark.parametrize("direction", [(0, 1), (1, 0), (1, 1), (1, -1)])
def test_grid_laid_out_line_by_line(direction):
    """Runs are read from the grid laid out line by line: every line of the direction, in
    the direction's order, each line one chunk of the layout (checked by walking the grid
    pixel by pixel)."""
    from HER2RadiomicsLib.extraction.multi import _lines
    rng = np.random.default_rng(3)
    g = np.zeros((7, 11), np.int16)
    g[1:-1, 1:-1] = rng.integers(1, 9, (5, 9))        # padded by one outside pixel
    dy, dx = direction
    flat, length = _lines(g, dy, dx)
    chunks = flat.reshape(-1, length)
    H, W = g.shape
    # the lines, walked from their first pixel (no predecessor inside the grid)
    lines = []
    for y in range(H):
        for x in range(W):
            py, px = y - dy, x - dx
            if 0 <= py < H and 0 <= px < W:
                continue
            seq = []
            while 0 <= y < H and 0 <= x < W:
                seq.append(int(g[y, x]))
                y, x = y + dy, x + dx
            lines.append(seq)
            y, x = py + dy, px + dx                   # restore the loop's position
    got = []
    for c in chunks:
        nz = np.flatnonzero(c)
        assert c[0] == 0 and c[-1] == 0               # no run crosses to the next line
        if nz.size:
            # one line per chunk, contiguous (the zeros inside are the line's own padding)
            got.append([int(v) for v in c[nz[0]:nz[-1] + 1]])
    want = []
    for seq in lines:
        nz = [i for i, v in enumerate(seq) if v]
        if nz:
            want.append(seq[nz[0]:nz[-1] + 1])
    assert sorted(got) == sorted(want)
    assert sum(len(s) for s in got) == sum(len(s) for s in want)


def test_many_regions_take_the_wide_code_path():
    """18 nested rings: region bits pass 16 (atoms found by sorting, not a lookup table) and
    the packed dependence counts need two words; every region still equals one at a time."""
    rng = np.random.default_rng(1)
    img = rng.rayleigh(40, (50, 60)).round(1)
    yy, xx = np.indices(img.shape)
    disk = (yy - 25) ** 2 + (xx - 30) ** 2 < 8 ** 2
    masks = [disk] + [ndimage.binary_dilation(disk, iterations=k) & ~disk for k in range(1, 18)]
    got = texture_many(img, masks, (1.0, 1.0), CLASSES, {"binWidth": 25})
    for m, g in zip(masks, got):
        assert g is not None
        ref = _one_region(img, m, (1.0, 1.0), {"binWidth": 25})
        bad = [k for k in ref if not _same(g[k], ref[k])]
        assert not bad, bad[:5]
