"""Shared fixtures: small deterministic phantoms and a tiny synthetic cohort (no ../shared)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk


def make_image(arr, spacing=(1.0, 1.0)):
    img = sitk.GetImageFromArray(np.asarray(arr, dtype=np.float32))
    img.SetSpacing(spacing)
    return img


def disk_mask(shape, center_px, radius_mm, spacing):
    """Binary disk by pixel-centre inclusion, for a given physical radius."""
    sx, sy = spacing
    yy, xx = np.indices(shape)
    d = np.hypot((xx - center_px[0]) * sx, (yy - center_px[1]) * sy)
    return (d <= radius_mm).astype(np.uint8)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """8-patient synthetic cohort (some second views, 4 multi-reader cases)."""
    from HER2RadiomicsLib.imaging.synth import generate_cohort
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, n_cases=8, seed=3, reader_fraction=0.5, second_view_fraction=0.3)
    return out


@pytest.fixture
def speckle_case(tmp_path):
    """A 2D Rayleigh-speckle phantom with a darker disk lesion, written as NRRD pair."""
    rng = np.random.default_rng(0)
    arr = rng.rayleigh(40, (120, 150)).astype(np.float32)
    m = disk_mask(arr.shape, (75, 60), 4.0, (0.2, 0.2))
    arr[m > 0] *= 0.5
    img = make_image(arr, (0.2, 0.2))
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    ip, mp = tmp_path / "img.nrrd", tmp_path / "mask.nrrd"
    sitk.WriteImage(img, str(ip))
    sitk.WriteImage(msk, str(mp))
    return ip, mp


def interrupt_at_call(monkeypatch, n: int):
    """Make the batch engine's n-th case raise KeyboardInterrupt (Ctrl-C mid-run); returns
    the real worker function so a test can put it back."""
    import HER2RadiomicsLib.extraction.batch as batch
    real, calls = batch._safe_case, {"n": 0}

    def flaky(row, cfg, gs=None):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(row, cfg, gs)
    monkeypatch.setattr(batch, "_safe_case", flaky)
    return real


@pytest.fixture
def scene():
    """A fresh MRML scene (slicer-core) set as ``slicer.mrmlScene``, cleared afterwards."""
    slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)
