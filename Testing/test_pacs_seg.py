"""DICOM SEG of a 2D ultrasound image (HER2RadiomicsLib.pacs.seg): written by highdicom, checked
with an independent validator (dciodvfy, Debian's dicom3tools) and read back pixel for pixel.

The expected masks are the arrays given to the writer; the references read back are decoded by
highdicom (not by our writer) and the header checks read pydicom attributes directly.
"""
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")

from HER2RadiomicsLib.errors import InputError  # noqa: E402
from HER2RadiomicsLib.pacs import seg as dseg  # noqa: E402

DCIODVFY = shutil.which("dciodvfy")


def dciodvfy_errors(path) -> list:
    """The lines dciodvfy reports as errors (it prints to stderr)."""
    res = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def _image(tmp_path, name="us", rows=64, cols=80, seed=0, drop=()):
    """A minimal single-frame Ultrasound Image Storage file, as a scanner's export might be
    (some type-2 attributes missing: ``drop``)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / f"{name}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "US", "P1", "TEST^ONE"
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "F", "20260101", "1200"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "1", ""
    for kw in drop:
        delattr(ds, kw)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 255, (rows, cols), dtype=np.uint8).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
    else:                                 # pydicom 2.4 (Python 3.9, Slicer 5.8)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(tmp_path / f"{name}.dcm", write_like_original=False)
    return pydicom.dcmread(tmp_path / f"{name}.dcm")


def _masks(rows=64, cols=80):
    yy, xx = np.mgrid[:rows, :cols]
    tumor = (yy - 30) ** 2 / 100 + (xx - 40) ** 2 / 200 <= 1
    ring = ((yy - 30) ** 2 / 196 + (xx - 40) ** 2 / 324 <= 1) & ~tumor
    return tumor, ring


def _uids():
    from pydicom.uid import generate_uid
    return {"series_uid": generate_uid(), "sop_uid": generate_uid()}


def test_lesion_and_rings_round_trip_pixel_for_pixel(tmp_path):
    image = _image(tmp_path)
    tumor, ring = _masks()
    empty = np.zeros_like(tumor)                # a ring clipped away keeps its segment
    ds = dseg.build_seg(image, {"tumor": tumor, "peri_0-3mm": ring, "peri_3-5mm": empty},
                        dseg.Algorithm("AUTOMATIC", "HER2Radiomics CNN busbra_unet", "abc123"),
                        software_version="0.1.0", **_uids())
    ds.save_as(tmp_path / "seg.dcm")
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert back.Modality == "SEG" and back.StudyInstanceUID == image.StudyInstanceUID
    contour = dseg.read_contour(back, image)
    assert np.array_equal(contour.mask, tumor)
    assert contour.algorithm == dseg.Algorithm("AUTOMATIC", "HER2Radiomics CNN busbra_unet",
                                               "abc123")
    segs = dseg.read_segments(back, image)
    assert list(segs) == ["tumor", "peri_0-3mm", "peri_3-5mm"]
    assert np.array_equal(segs["peri_0-3mm"], ring) and not segs["peri_3-5mm"].any()
    # the coding, read from the header as any DICOM viewer would
    first, second = back.SegmentSequence[0], back.SegmentSequence[1]
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "4147007"        # Mass
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"      # Tissue
    assert second.SegmentAlgorithmType == "AUTOMATIC"
    assert dseg.referenced_images(back) == {image.SOPInstanceUID}


def test_a_readers_contour_is_manual_with_its_creator(tmp_path):
    image = _image(tmp_path)
    tumor, _ = _masks()
    ds = dseg.build_seg(image, {"tumor": tumor}, dseg.Algorithm("MANUAL"),
                        content_creator="Reader^A", **_uids())
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert "SegmentationAlgorithmIdentificationSequence" not in ds.SegmentSequence[0]
    assert str(ds.ContentCreatorName) == "Reader^A"
    assert dseg.read_contour(ds, image).algorithm.kind == "MANUAL"


def test_a_vendors_over_long_algorithm_name_reads_as_64_characters_without_warnings(tmp_path):
    import io
    import warnings
    import pydicom
    image = _image(tmp_path)
    tumor, _ = _masks()
    ds = dseg.build_seg(image, {"tumor": tumor}, dseg.Algorithm("AUTOMATIC", "VendorAI", "1"),
                        **_uids())
    name = "VendorAI " + "x" * 70                 # LO holds 64: as a vendor's SEG may hold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SegmentSequence[0].SegmentAlgorithmName = name
        buf = io.BytesIO()
        ds.save_as(buf)
    stored = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # pydicom's over-length warning fails here
        contour = dseg.read_contour(stored, image)
        again = dseg.build_seg(image, {"tumor": contour.mask}, contour.algorithm, **_uids())
    assert contour.algorithm.name == name[:64]
    assert again.SegmentSequence[0].SegmentAlgorithmName == name[:64]


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian's dicom3tools) is not installed")
def test_dciodvfy_reports_no_error_even_for_an_image_missing_type2_attributes(tmp_path):
    image = _image(tmp_path, drop=("PatientBirthDate", "StudyDate", "StudyTime", "StudyID",
                                   "AccessionNumber", "ReferringPhysicianName"))
    tumor, ring = _masks()
    ds = dseg.build_seg(image, {"tumor": tumor, "peri_0-3mm": ring}, dseg.Algorithm("MANUAL"),
                        **_uids())
    ds.save_as(tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert "StudyDate" not in image                      # the source itself was not changed


def test_a_seg_of_another_image_is_refused_in_one_line(tmp_path):
    image, other = _image(tmp_path, "a"), _image(tmp_path, "b", seed=1)
    tumor, _ = _masks()
    ds = dseg.build_seg(image, {"tumor": tumor}, dseg.Algorithm("MANUAL"), **_uids())
    with pytest.raises(InputError, match=f"not image {other.SOPInstanceUID}") as e:
        dseg.read_contour(ds, other)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        dseg.read_contour(image, image)


def test_a_foreign_single_segment_seg_is_read_as_the_lesion(tmp_path):
    """A SEG from another tool: one segment, not labelled 'tumor', coded Neoplasm."""
    import highdicom as hd
    from pydicom.sr.coding import Code
    image = _image(tmp_path)
    tumor, _ = _masks()
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Lesion 1",
        segmented_property_category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
        segmented_property_type=Code("108369006", "SCT", "Neoplasm"), algorithm_type="MANUAL")
    src = dseg._source_for_highdicom(image)
    ds = hd.seg.Segmentation([src], tumor[None, :, :, None].astype(np.uint8), "BINARY", [desc],
                             series_number=5, instance_number=1, manufacturer="Other",
                             manufacturer_model_name="x", software_versions="1",
                             device_serial_number="1", **{
                                 "series_instance_uid": _uids()["series_uid"],
                                 "sop_instance_uid": _uids()["sop_uid"]})
    contour = dseg.read_contour(ds, image)
    assert contour.label == "Lesion 1" and np.array_equal(contour.mask, tumor)


def test_bad_requests_are_one_line_errors(tmp_path):
    image = _image(tmp_path)
    tumor, _ = _masks()
    with pytest.raises(InputError, match="needs its algorithm's name"):
        dseg.Algorithm("AUTOMATIC")
    with pytest.raises(InputError, match="must be one of"):
        dseg.Algorithm("ROBOT", "x")
    with pytest.raises(InputError, match="no 'tumor'"):
        dseg.build_seg(image, {"peri_0-3mm": tumor}, dseg.Algorithm(), **_uids())
    with pytest.raises(InputError, match="region tumor is"):
        dseg.build_seg(image, {"tumor": tumor[:10]}, dseg.Algorithm(), **_uids())
    with pytest.raises(InputError, match="lesion mask is empty"):
        dseg.build_seg(image, {"tumor": np.zeros_like(tumor)}, dseg.Algorithm(), **_uids())


def test_an_older_seg_without_geometry_of_an_image_with_pixel_spacing_reads_back(
        tmp_path, monkeypatch):
    """SEGs written before the nominal geometry have none, and for an image with Pixel Spacing
    highdicom wrote a Pixel Measures item without Slice Thickness, which its own reader
    refuses: our reader must still give the lesion and rings back, pixel for pixel, from the
    file as written (and leave the dataset as read)."""
    from us_dicom import lesion, us_image
    image = pydicom.dcmread(us_image(tmp_path / "spaced.dcm"))
    assert "PixelSpacing" in image                      # the case this test is about
    tumor = lesion()
    ring = lesion(grow=4) & ~tumor
    # the writer as it was: highdicom given the image's header without a geometry
    monkeypatch.setattr(dseg, "_add_nominal_geometry", lambda src, image: None)
    ds = dseg.build_seg(image, {"tumor": tumor, "peri_0-3mm": ring}, dseg.Algorithm("MANUAL"),
                        content_creator="Reader^One", **_uids())
    ds.save_as(tmp_path / "seg.dcm")
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert "FrameOfReferenceUID" not in back            # an older SEG
    shared = back.SharedFunctionalGroupsSequence[0]
    assert "SliceThickness" not in shared.PixelMeasuresSequence[0]   # what highdicom wrote
    contour = dseg.read_contour(back, image)
    assert np.array_equal(contour.mask, tumor)
    segments = dseg.read_segments(back, image)
    assert np.array_equal(segments["peri_0-3mm"], ring)
    assert "PixelMeasuresSequence" in back.SharedFunctionalGroupsSequence[0]   # not altered


def _calibrated(tmp_path, name, pixel_spacing=None, delta_cm=None):
    """A test image with Pixel Spacing ``pixel_spacing`` (row, column mm), or else one
    calibrated 2D ultrasound region of ``delta_cm`` (x, y cm), or neither."""
    from pydicom.dataset import Dataset
    from us_dicom import us_image
    image = pydicom.dcmread(us_image(tmp_path / f"{name}.dcm"))
    del image.PixelSpacing
    if pixel_spacing is not None:
        image.PixelSpacing = list(pixel_spacing)
    if delta_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1 = int(image.Columns) - 1
        region.RegionLocationMaxY1 = int(image.Rows) - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3      # cm
        region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm
        image.SequenceOfUltrasoundRegions = [region]
    return image


@pytest.mark.parametrize("calibration, spacing", [
    ({"pixel_spacing": (0.15, 0.1)}, [0.15, 0.1]),        # DICOM order: rows, columns
    ({"delta_cm": (0.02, 0.03)}, [0.3, 0.2]),             # x, y cm -> rows (y), columns (x) mm
    ({}, [1.0, 1.0])])                                    # none: Slicer's 1 mm placeholder
def test_a_seg_has_the_nominal_geometry_of_slicers_placement_of_its_image(
        tmp_path, calibration, spacing):
    from us_dicom import lesion
    image = _calibrated(tmp_path, "us", **calibration)
    assert "FrameOfReferenceUID" not in image and "ImagePositionPatient" not in image
    ds = dseg.build_seg(image, {"tumor": lesion()}, dseg.Algorithm("MANUAL"), **_uids())
    ds.save_as(tmp_path / "seg.dcm")
    back = pydicom.dcmread(tmp_path / "seg.dcm")
    assert back.PositionReferenceIndicator in ("", None)
    shared = back.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == \
        [1, 0, 0, 0, 1, 0]
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx(spacing, rel=1e-9)
    assert float(measures.SliceThickness) == 1.0
    frame = back.PerFrameFunctionalGroupsSequence[0]
    assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == [0, 0, 0]
    assert np.array_equal(dseg.read_contour(back, image).mask, lesion())
    if DCIODVFY:
        assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_the_frame_of_reference_depends_on_the_image_alone(tmp_path):
    """A rerun (new UIDs given, same image) writes the same Frame of Reference; another
    image gets another one; neither is a UID of the image."""
    from us_dicom import lesion
    image = _calibrated(tmp_path, "a", pixel_spacing=(0.1, 0.1))
    other = _calibrated(tmp_path, "b", pixel_spacing=(0.1, 0.1))
    first = dseg.build_seg(image, {"tumor": lesion()}, dseg.Algorithm(), **_uids())
    again = dseg.build_seg(image, {"tumor": lesion(grow=2)}, dseg.Algorithm(), **_uids())
    elsewhere = dseg.build_seg(other, {"tumor": lesion()}, dseg.Algorithm(), **_uids())
    assert first.FrameOfReferenceUID == again.FrameOfReferenceUID
    assert first.FrameOfReferenceUID != elsewhere.FrameOfReferenceUID
    assert first.FrameOfReferenceUID not in (image.SOPInstanceUID, image.StudyInstanceUID,
                                             image.SeriesInstanceUID)
    assert pydicom.uid.UID(first.FrameOfReferenceUID).is_valid
