"""The compiled GLRLM pass (extraction.fast, the [fast] extra) against the numpy path.

The numpy path is the reference (itself checked against pyradiomics in test_engine_parity.py
and test_engine_multi.py); with numba installed the shared pass must give the very same
floating-point values, bit for bit, on regions that nest, touch, are one pixel wide or
diagonal, with every setting the parity suite uses. Skipped where numba is not installed;
the numpy path (the default, also with numba installed) runs everywhere
(test_engine_multi.py).
"""
import numpy as np
import pytest

from HER2RadiomicsLib.extraction import fast
from HER2RadiomicsLib.extraction.multi import texture_many

from test_engine_multi import CLASSES, SETTINGS, _scene

pytest.importorskip("numba")


def _run(monkeypatch, compiled: bool, img, masks, st):
    monkeypatch.setenv("HER2RADIOMICS_NUMBA", "1" if compiled else "0")
    return texture_many(img, masks, (0.7, 0.5), CLASSES, st)


@pytest.mark.parametrize("st", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_compiled_glrlm_equals_numpy_bit_for_bit(monkeypatch, st):
    images, masks = _scene()
    calls = []
    real = fast.glrlm_matrices
    monkeypatch.setattr(fast, "glrlm_matrices", lambda *a: calls.append(1) or real(*a))
    for img in images:
        want = _run(monkeypatch, False, img, masks, st)
        assert not calls                       # the reference is the numpy path
        got = _run(monkeypatch, True, img, masks, st)
        assert calls                           # ... and this one the compiled pass
        calls.clear()
        assert [g is None for g in got] == [w is None for w in want]
        for g, w in zip(got, want):
            if w is None:
                continue
            assert list(g) == list(w)
            for k in w:
                assert g[k] == w[k] or (np.isnan(g[k]) and np.isnan(w[k])), k


def test_the_comparison_can_fail(monkeypatch):
    """A one-count difference in one run length changes the features: the test above would
    see it."""
    images, masks = _scene()
    st = SETTINGS[0]
    want = _run(monkeypatch, False, images[0], masks, st)
    real = fast.glrlm_matrices

    def off_by_one(u, regions, present, angles):
        Ps, jv = real(u, regions, present, angles)
        Ps[0][0, 0, 0] += 1
        return Ps, jv
    monkeypatch.setattr(fast, "glrlm_matrices", off_by_one)
    got = _run(monkeypatch, True, images[0], masks, st)
    assert got[0]["glrlm_ShortRunEmphasis"] != want[0]["glrlm_ShortRunEmphasis"]


def test_off_unless_asked_or_too_many_cells(monkeypatch):
    images, masks = _scene()
    monkeypatch.delenv("HER2RADIOMICS_NUMBA", raising=False)
    assert not fast.available()                # installed is not enough: opt-in
    monkeypatch.setenv("HER2RADIOMICS_NUMBA", "0")
    assert not fast.available()
    monkeypatch.setenv("HER2RADIOMICS_NUMBA", "1")
    assert fast.available()
    monkeypatch.setattr(fast, "MAX_CELLS", 0)
    monkeypatch.setattr(fast, "glrlm_matrices", lambda *a: pytest.fail("compiled pass ran"))
    assert texture_many(images[0], masks, (1.0, 1.0), CLASSES, SETTINGS[0])[0] is not None
