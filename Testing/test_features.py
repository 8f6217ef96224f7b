"""Feature extraction: presets, 2D handling, both engines against direct pyradiomics, aggregation.

The reference engine must equal direct pyradiomics exactly (it is pyradiomics); the native
engine to relative 1e-9 (Testing/test_engine_parity.py covers it case by case).
"""
import logging

import numpy as np
import pandas as pd
import pytest
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from HER2RadiomicsLib.errors import InputError, SpacingUnknownError
from HER2RadiomicsLib.extraction.features import (FeatureExtractor, aggregate_patients,
                                                  list_presets, load_params)

radiomics.setVerbosity(logging.ERROR)


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(5)
    arr = rng.rayleigh(40, (90, 110)).astype(np.float32)
    yy, xx = np.indices(arr.shape)
    m = (((xx - 55) / 22.0) ** 2 + ((yy - 45) / 15.0) ** 2 <= 1).astype(np.uint8)
    arr[m > 0] *= 0.55
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.25, 0.25))
    msk = sitk.GetImageFromArray(m)
    msk.CopyInformation(img)
    return img, msk


def test_presets_shipped():
    assert set(list_presets()) >= {"default", "cui2023", "yin2024", "zhao2025"}


@pytest.mark.parametrize("preset", ["default", "cui2023", "yin2024", "zhao2025"])
def test_every_preset_runs(preset, phantom):
    img, msk = phantom
    feats, diags = FeatureExtractor(preset).extract(img, {"tumor": msk})
    assert len(feats) > 50
    assert all(k.startswith("tumor__") for k in feats)
    assert np.isfinite(list(feats.values())).mean() > 0.99
    assert any(k.startswith("tumor__diagnostics_") for k in diags)


def test_cui2023_is_exactly_the_86(phantom):
    img, msk = phantom
    feats, _ = FeatureExtractor("cui2023").extract(img, {"tumor": msk})
    classes = pd.Series([k.split("_")[-2] for k in feats]).value_counts().to_dict()
    assert classes == {"firstorder": 18, "glcm": 22, "gldm": 14, "glrlm": 16, "glszm": 16}
    assert all("_original_" in f"_{k.split('__')[1]}" for k in feats)
    assert "tumor__original_glcm_MCC" not in feats


def test_zhao_image_types(phantom):
    img, msk = phantom
    feats, _ = FeatureExtractor("zhao2025").extract(img, {"tumor": msk})
    types = {k.split("__")[1].split("_")[0] for k in feats}
    assert types == {"original", "wavelet-LL", "wavelet-LH", "wavelet-HL", "wavelet-HH",
                     "log-sigma-1-0-mm-3D", "log-sigma-2-0-mm-3D", "log-sigma-3-0-mm-3D",
                     "logarithm", "lbp-2D"}


def _same(a, b, engine):
    if engine == "pyradiomics":
        return a == b
    return np.isclose(a, b, rtol=1e-9, atol=1e-12) or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("engine", ["native", "pyradiomics"])
def test_true_2d_keeps_log_and_matches_single_slice_force2d(phantom, tmp_path, engine):
    """Our 2D path equals pyradiomics' 1-slice-3D + force2D path, and keeps LoG."""
    img, msk = phantom
    params = {"setting": {"binWidth": 5, "label": 1, "force2D": True},
              "imageType": {"Original": {}, "Wavelet": {}, "LBP2D": {}, "LoG": {"sigma": [1.0]}},
              "featureClass": {"firstorder": [], "glcm": [], "glszm": [], "shape2D": []}}
    pf = tmp_path / "p.yaml"
    import yaml
    pf.write_text(yaml.safe_dump(params))
    ours, _ = FeatureExtractor(str(pf), engine=engine).extract(img, {"tumor": msk})
    ref = featureextractor.RadiomicsFeatureExtractor(params).execute(
        sitk.JoinSeries(img), sitk.JoinSeries(msk))
    ref = {k: float(v) for k, v in ref.items() if not k.startswith("diagnostics_")}
    ours = {k.split("__", 1)[1]: v for k, v in ours.items()}
    assert any(k.startswith("log-sigma") for k in ours)
    assert not any(k.startswith("log-sigma") for k in ref)     # the pyradiomics trap
    common = set(ref) & set(ours)
    assert {k.split("_")[0] for k in common} == {"original", "wavelet-LL", "wavelet-LH",
                                                 "wavelet-HL", "wavelet-HH", "lbp-2D"}
    assert len(common) == len(ref)
    for k in common:
        assert _same(ours[k], ref[k], engine), k


@pytest.mark.parametrize("engine", ["native", "pyradiomics"])
def test_parity_with_direct_pyradiomics(phantom, engine):
    img, msk = phantom
    fx = FeatureExtractor("default", engine=engine)
    ours, _ = fx.extract(img, {"tumor": msk})
    direct = featureextractor.RadiomicsFeatureExtractor(load_params("default")[0]).execute(img, msk)
    direct = {f"tumor__{k}": float(v) for k, v in direct.items()
              if not k.startswith("diagnostics_")}
    assert list(ours) == list(direct)
    assert all(_same(ours[k], direct[k], engine) for k in ours)


def test_native_diagnostics_equal_pyradiomics(phantom):
    """The provenance entries the native engine writes carry pyradiomics' names and values."""
    img, msk = phantom
    from HER2RadiomicsLib.extraction.features import _jsonable
    from HER2RadiomicsLib.imaging.rings import build_regions
    regs = build_regions(img, msk, "3", fov=None)
    _, diags = FeatureExtractor("cui2023").extract(img, regs.masks)
    ex = featureextractor.RadiomicsFeatureExtractor(load_params("cui2023")[0])
    for region, m in regs.masks.items():
        ref = {k: v for k, v in ex.execute(img, m).items()
               if k.startswith(("diagnostics_Image-original", "diagnostics_Mask-original"))}
        assert len(ref) == 15
        for k, v in ref.items():
            ours = diags[f"{region}__{k}"]
            want = _jsonable(v)
            if isinstance(want, float) or (isinstance(want, list)
                                           and isinstance(want[0], float)):
                assert ours == pytest.approx(want, rel=1e-12), k
            else:
                assert str(ours) == str(want), k


def test_multi_region_columns(phantom):
    img, msk = phantom
    from HER2RadiomicsLib.imaging.rings import build_regions
    regs = build_regions(img, msk, "2", fov=None)
    feats, _ = FeatureExtractor("cui2023").extract(img, regs.masks)
    assert len(feats) == 2 * 86
    assert "peri_0-2mm__original_glszm_ZoneEntropy" in feats


def test_failed_ring_region_gives_nan_not_crash(phantom):
    img, msk = phantom
    empty = sitk.Image(msk.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(msk)
    feats, diags = FeatureExtractor("cui2023").extract(img, {"tumor": msk, "peri_0-3mm": empty})
    assert np.isnan(feats["peri_0-3mm__original_firstorder_Mean"])
    assert "peri_0-3mm__diagnostics_error" in diags
    with pytest.raises(InputError, match="region 'tumor'"):
        FeatureExtractor("cui2023").extract(img, {"tumor": empty})


def msk_sum(m):
    return sitk.GetArrayViewFromImage(m).astype(bool).sum()


def test_unknown_spacing_and_pixel_units(phantom):
    img, msk = phantom
    with pytest.raises(SpacingUnknownError, match="LoG"):
        FeatureExtractor("default").extract(img, {"tumor": msk}, spacing_known=False)
    feats, _ = FeatureExtractor("cui2023").extract(img, {"tumor": msk}, spacing_known=False)
    assert len(feats) == 86                                   # pixel-based: fine
    feats, _ = FeatureExtractor("default", pixel_units=True).extract(
        img, {"tumor": msk}, spacing_known=False)
    # as documented, one pixel counts as 1 mm: the same as the image declared 1 x 1 mm
    one, one_m = sitk.Image(img), sitk.Image(msk)
    one.SetSpacing((1.0, 1.0))
    one_m.SetSpacing((1.0, 1.0))
    ref, _ = FeatureExtractor("default").extract(one, {"tumor": one_m})
    assert feats.keys() == ref.keys()
    np.testing.assert_allclose([feats[k] for k in ref], list(ref.values()), rtol=1e-12)
    assert feats["tumor__original_shape2D_PixelSurface"] == float(msk_sum(msk))


def test_bad_params_are_clear(tmp_path):
    with pytest.raises(InputError, match="neither a params file nor a preset"):
        load_params("nonexistent")
    p = tmp_path / "bad.yaml"
    p.write_text("setting: {binWidth: 5}\nfeatureClass: {nosuchclass: }\n")
    with pytest.raises(InputError, match="bad.yaml"):
        load_params(str(p))
    p.write_text("a: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_params(str(p))


@pytest.mark.parametrize("how", ["mean", "median", "first"])
def test_aggregate_patients(how):
    df = pd.DataFrame({"case_id": ["a1", "a2", "b1", "a3"], "f": [1.0, 2.0, 5.0, 6.0],
                       "g": [0.0, 1.0, 1.0, 8.0]})
    out = aggregate_patients(df, ["A", "A", "B", "A"], how)
    a = out.set_index("case_id").loc["A"]
    expected = {"mean": (3.0, 3.0), "median": (2.0, 1.0), "first": (1.0, 0.0)}[how]
    assert (a["f"], a["g"]) == expected
    assert a["n_images"] == 3 and list(out.columns[:2]) == ["case_id", "n_images"]


@pytest.mark.parametrize("preset", ["default", "zhao2025", "yin2024"])
def test_shared_filter_path_equals_separate_execute(preset, phantom):
    """Regions share filtered images; values must equal one pyradiomics execute per region."""
    img, msk = phantom
    from HER2RadiomicsLib.imaging.rings import build_regions
    regs = build_regions(img, msk, "2,4", fov=None)
    fx = FeatureExtractor(preset, engine="pyradiomics")
    ours, diags = fx.extract(img, regs.masks)
    ex = featureextractor.RadiomicsFeatureExtractor(fx.effective_params(2))
    for region, m in regs.masks.items():
        ref = ex.execute(img, m)
        for k, v in ref.items():
            if k.startswith("diagnostics_"):
                if "Versions" not in k and "Configuration" not in k:
                    features = __import__("HER2RadiomicsLib.extraction.features",
                                          fromlist=["x"])
                    assert str(diags[f"{region}__{k}"]) == str(features._jsonable(v)), k
            else:
                assert ours[f"{region}__{k}"] == float(v), (region, k)
