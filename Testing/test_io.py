"""Image/mask I/O: spacing precedence, DICOM ultrasound calibration, grey conversion, errors."""
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from HER2RadiomicsLib.errors import InputError, SpacingUnknownError
from HER2RadiomicsLib.imaging.io import load_case, read_image, read_mask


def write_us_dicom(path, arr, regions=(), pixel_spacing=None, frames=1, imager=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    items = []
    for (x0, y0, x1, y1, dx_cm, dy_cm) in regions:
        r = Dataset()
        r.RegionSpatialFormat = 1
        r.RegionDataType = 1
        r.RegionFlags = 0
        r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
        items.append(r)
    if items:
        ds.SequenceOfUltrasoundRegions = items
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if imager:
        ds.ImagerPixelSpacing = list(imager)
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def grey():
    return (np.arange(60 * 80).reshape(60, 80) % 251).astype(np.uint8)


def test_png_has_unknown_spacing_and_mm_operations_refuse(tmp_path, grey):
    p = tmp_path / "a.png"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(p))
    li = read_image(p)
    assert li.spacing_source == "unknown" and not li.spacing_known
    with pytest.raises(SpacingUnknownError, match="--spacing-mm"):
        li.require_spacing("peritumoral rings")


def test_user_spacing_beats_sidecar_and_dicom(tmp_path, grey):
    p = tmp_path / "a.png"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(p))
    (tmp_path / "a.png.json").write_text(json.dumps({"spacing_mm": [0.3, 0.4]}))
    assert read_image(p).spacing_mm == (0.3, 0.4)
    assert read_image(p).spacing_source == "sidecar"
    li = read_image(p, spacing_mm=(0.1, 0.2))
    assert li.spacing_mm == (0.1, 0.2) and li.spacing_source == "user"
    d = write_us_dicom(tmp_path / "u.dcm", grey, regions=[(0, 0, 79, 59, 0.012, 0.013)])
    assert read_image(d, spacing_mm=(0.5, 0.5)).spacing_source == "user"


@pytest.mark.parametrize("bad", [(0, 1), (-1, 1), (float("nan"), 1)])
def test_invalid_user_spacing(tmp_path, grey, bad):
    p = tmp_path / "a.png"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(p))
    with pytest.raises(InputError, match="positive"):
        read_image(p, spacing_mm=bad)


def test_dicom_us_region_cm_to_mm(tmp_path, grey):
    d = write_us_dicom(tmp_path / "u.dcm", grey, regions=[(2, 3, 70, 55, 0.0125, 0.015)])
    li = read_image(d)
    assert li.spacing_source == "dicom-us-region"
    assert li.spacing_mm == pytest.approx((0.125, 0.15))
    assert np.array_equal(sitk.GetArrayFromImage(li.image), grey.astype(np.float32))


def test_dicom_several_regions_chosen_by_mask(tmp_path, grey):
    regions = [(0, 0, 39, 59, 0.01, 0.01), (40, 0, 79, 59, 0.02, 0.02)]
    d = write_us_dicom(tmp_path / "u.dcm", grey, regions=regions)
    assert read_image(d).spacing_source == "unknown"      # ambiguous until the mask is known
    m = np.zeros_like(grey)
    m[20:30, 50:60] = 1                                     # inside the right-hand region
    mp = tmp_path / "m.png"
    sitk.WriteImage(sitk.GetImageFromArray(m), str(mp))
    li, mask = load_case(d, mp)
    assert li.spacing_source == "dicom-us-region" and li.spacing_mm == pytest.approx((0.2, 0.2))
    assert mask.GetSpacing() == pytest.approx((0.2, 0.2))
    m[:] = 0
    m[20:30, 30:50] = 1                                     # straddles both: ambiguous
    sitk.WriteImage(sitk.GetImageFromArray(m), str(mp))
    with pytest.raises(InputError, match="not inside any calibrated"):
        load_case(d, mp)


def test_dicom_pixel_spacing_row_col_order(tmp_path, grey):
    d = write_us_dicom(tmp_path / "mg.dcm", grey, pixel_spacing=(0.07, 0.05))
    li = read_image(d)
    assert li.spacing_source == "dicom-pixel-spacing"
    assert li.spacing_mm == pytest.approx((0.05, 0.07))   # DICOM is (row, column)
    d2 = write_us_dicom(tmp_path / "mg2.dcm", grey, imager=(0.1, 0.1))
    assert read_image(d2).spacing_source == "dicom-imager-pixel-spacing"


def test_multiframe_dicom_needs_frame(tmp_path):
    arr = np.stack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30)])
    d = write_us_dicom(tmp_path / "cine.dcm", arr, frames=3,
                       regions=[(0, 0, 29, 19, 0.01, 0.01)])
    with pytest.raises(InputError, match="--frame"):
        read_image(d)
    li = read_image(d, frame=2)
    assert float(sitk.GetArrayFromImage(li.image).mean()) == 30.0
    assert li.provenance["frame"] == 2


def test_rgb_to_grey_bt601(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    p = tmp_path / "c.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(p))
    li = read_image(p)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.allclose(sitk.GetArrayFromImage(li.image), expected, atol=1e-3)
    assert "0.299" in li.provenance["grey_conversion"]


def test_header_spacing_and_single_slice_3d(tmp_path, grey):
    vol = sitk.GetImageFromArray(grey[None].astype(np.float32))
    vol.SetSpacing((0.2, 0.3, 1.0))
    vol.SetOrigin((5.0, 6.0, 7.0))
    p = tmp_path / "v.nrrd"
    sitk.WriteImage(vol, str(p))
    li = read_image(p)
    assert li.image.GetDimension() == 2
    assert li.spacing_source == "header" and li.spacing_mm == pytest.approx((0.2, 0.3))
    assert li.image.GetOrigin() == pytest.approx((5.0, 6.0))


def test_mask_errors_name_files(tmp_path, grey, speckle_case):
    ip, mp = speckle_case
    li = read_image(ip)
    # geometry mismatch (header mask with other spacing) names both files
    m = sitk.ReadImage(str(mp))
    m.SetSpacing((0.25, 0.2))
    bad = tmp_path / "bad.nrrd"
    sitk.WriteImage(m, str(bad))
    with pytest.raises(InputError) as e:
        read_mask(bad, li)
    assert str(bad) in str(e.value) and str(ip) in str(e.value)
    # raster mask of a different size
    small = tmp_path / "small.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 10), np.uint8)), str(small))
    with pytest.raises(InputError, match="differs from image"):
        read_mask(small, li)
    # empty, too small, wrong label
    z = np.zeros((120, 150), np.uint8)
    e1 = tmp_path / "empty.png"
    sitk.WriteImage(sitk.GetImageFromArray(z), str(e1))
    with pytest.raises(InputError, match="empty"):
        read_mask(e1, li)
    z[5:8, 5:8] = 2
    sitk.WriteImage(sitk.GetImageFromArray(z), str(e1))
    with pytest.raises(InputError, match="fewer than the minimum 16"):
        read_mask(e1, li)
    with pytest.raises(InputError, match=r"no pixel with label 1 \(labels present: \[2\]\)"):
        read_mask(e1, li, label=1)
    assert int(sitk.GetArrayFromImage(read_mask(e1, li, label=2, min_pixels=4)).sum()) == 9


def test_mask_outside_image(tmp_path, speckle_case):
    ip, mp = speckle_case
    li = read_image(ip)
    m = sitk.Image(20, 20, sitk.sitkUInt8) + 1
    m.SetSpacing((0.2, 0.2))
    m.SetOrigin((500.0, 500.0))
    p = tmp_path / "far.nrrd"
    sitk.WriteImage(m, str(p))
    with pytest.raises(InputError, match="outside the image"):
        read_mask(p, li)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"not a dicom at all" * 10)
    with pytest.raises(InputError, match="junk.dcm"):
        read_image(bad)
    bad2 = tmp_path / "junk.png"
    bad2.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="cannot read image"):
        read_image(bad2)


def test_raster_mask_adopts_image_geometry(cohort):
    li, mask = load_case(cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png")
    assert mask.GetSpacing() == li.image.GetSpacing()
    assert li.spacing_source == "dicom-us-region"
    # the PNG twin with its sidecar gives the same spacing
    li2 = read_image(cohort / "images" / "P0001-1.png")
    assert li2.spacing_source == "sidecar" and li2.spacing_mm == pytest.approx(li.spacing_mm)
    assert pydicom.dcmread(str(cohort / "images" / "P0001-1.dcm")).Modality == "US"


def _mono(path, photo, arr, bits=8):
    write_us_dicom(path, np.zeros(arr.shape, np.uint8))
    ds = pydicom.dcmread(str(path))
    ds.PhotometricInterpretation = photo
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_monochrome1_inversion_and_intensity_range_are_recorded(tmp_path):
    arr = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (6, 1))
    m1 = read_image(_mono(tmp_path / "m1.dcm", "MONOCHROME1", arr))
    m2 = read_image(_mono(tmp_path / "m2.dcm", "MONOCHROME2", arr))
    a1 = sitk.GetArrayFromImage(m1.image)
    # the reader turned the stored values around: brightest stored -> darkest shown
    assert np.array_equal(a1[0], 255 - arr[0].astype(np.float32))
    assert m1.provenance["grey_conversion"].startswith("MONOCHROME1 inverted")
    assert m2.provenance["grey_conversion"] == "none"
    assert m2.provenance["intensity_range"] == [0.0, 190.0]
    assert m2.provenance["photometric"] == "MONOCHROME2" and "intensity_note" not in m2.provenance


def test_16_bit_dicom_is_noted_against_8_bit_exports(tmp_path):
    arr = np.tile(np.arange(0, 60000, 3000, dtype=np.uint16), (6, 1))
    ld = read_image(_mono(tmp_path / "w.dcm", "MONOCHROME2", arr, bits=16))
    assert ld.provenance["intensity_range"] == [0.0, 57000.0]
    assert "0-255" in ld.provenance["intensity_note"]


def test_area_is_named_px2_when_spacing_is_unknown(cohort, tmp_path):
    import csv
    from HER2RadiomicsLib.extraction.batch import ExtractConfig, process_case
    import shutil
    r = next(csv.DictReader(open(cohort / "cohort.csv")))
    shutil.copy(cohort / "images" / (r["case_id"] + ".png"), tmp_path / "x.png")  # no sidecar
    png = {"case_id": "x", "image": str(tmp_path / "x.png"), "mask": str(cohort / r["mask"])}
    prov = process_case(png, ExtractConfig(params="cui2023"))["provenance"]
    assert "tumor__area_px2" in prov and "tumor__area_mm2" not in prov
    m = sitk.GetArrayFromImage(sitk.ReadImage(png["mask"])) > 0
    assert prov["tumor__area_px2"] == int(m.sum())
    dcm = dict(png, image=str(cohort / r["image"]))
    prov = process_case(dcm, ExtractConfig(params="cui2023"))["provenance"]
    sx, sy = prov["spacing_x_mm"], prov["spacing_y_mm"]
    assert prov["tumor__area_mm2"] == pytest.approx(m.sum() * sx * sy)
