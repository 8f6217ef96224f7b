"""The SEG and SR of HER2RadiomicsLib.pacs read by dcmqi, the converter 3D Slicer's
QuantitativeReporting loads DICOM SEG and TID 1500 SR with (``segimage2itkimage``,
``tid1500reader``).

The binaries come from the ``dcmqi`` wheel (the ``dev`` extra) or a folder named by
``HER2RADIOMICS_DCMQI_BIN``; without them the tests are skipped. The references are the masks
and feature values given to the writers and the image's geometry as ITK (Slicer's DICOM reader)
reads it from the file, not anything our readers decode.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from HER2RadiomicsLib.pacs import seg as dseg  # noqa: E402
from HER2RadiomicsLib.pacs import sr as dsr  # noqa: E402

from test_pacs_seg import _calibrated  # noqa: E402
from test_pacs_sr import FEATURES, _case  # noqa: E402


def _dcmqi(name):
    """The binary from HER2RADIOMICS_DCMQI_BIN's folder if set, else from the running Python's
    scripts folder (the wheel's, when the venv is not activated) or PATH."""
    folder = os.environ.get("HER2RADIOMICS_DCMQI_BIN")
    if folder:
        return shutil.which(name, path=folder)
    return shutil.which(name, path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


SEG2ITK = _dcmqi("segimage2itkimage")
TID1500READER = _dcmqi("tid1500reader")
needs_seg2itk = pytest.mark.skipif(
    SEG2ITK is None, reason="dcmqi's segimage2itkimage not found (pip install dcmqi, or set "
    "HER2RADIOMICS_DCMQI_BIN to the folder holding it)")
needs_tid1500reader = pytest.mark.skipif(
    TID1500READER is None, reason="dcmqi's tid1500reader not found (pip install dcmqi, or set "
    "HER2RADIOMICS_DCMQI_BIN to the folder holding it)")


def _run(args):
    # dcmqi reports a failure by its exit status and a message; show both when it fails
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    return res


def _labels(seg_path, out):
    """``{segment label: (label image, label value)}`` from segimage2itkimage's output."""
    out.mkdir()
    _run([SEG2ITK, "--inputDICOM", seg_path, "--outputDirectory", out])
    meta = json.loads((out / "meta.json").read_text())
    labels = {}
    # one label image per segment group (segments not merged), numbered from 1
    for i, group in enumerate(meta["segmentAttributes"], start=1):
        for attrs in group:
            labels[attrs["SegmentLabel"]] = (sitk.ReadImage(str(out / f"{i}.nrrd")),
                                            int(attrs["labelID"]))
    return labels


@needs_seg2itk
@pytest.mark.parametrize("calibration, spacing_xy", [
    ({"pixel_spacing": (0.15, 0.1)}, (0.1, 0.15)),       # DICOM rows, columns -> ITK x, y
    ({"delta_cm": (0.02, 0.03)}, (0.2, 0.3)),            # the ultrasound region, cm -> mm
    ({}, (1.0, 1.0))])                                   # no calibration: 1 mm, as Slicer
def test_segimage2itkimage_gives_the_lesion_and_rings_on_the_image(tmp_path, calibration,
                                                                   spacing_xy):
    from us_dicom import lesion
    image = _calibrated(tmp_path, "us", **calibration)
    image.save_as(tmp_path / "us.dcm")
    tumor = lesion()
    ring = lesion(grow=4) & ~tumor
    empty = np.zeros_like(tumor)                          # a ring clipped away stays a segment
    ds = dseg.build_seg(image, {"tumor": tumor, "peri_0-3mm": ring, "peri_9-12mm": empty},
                        dseg.Algorithm("MANUAL"), series_uid=dsr.derived_uid("s"),
                        sop_uid=dsr.derived_uid("seg"))
    ds.save_as(tmp_path / "seg.dcm")
    labels = _labels(tmp_path / "seg.dcm", tmp_path / "out")
    assert set(labels) == {"tumor", "peri_0-3mm", "peri_9-12mm"}
    # Slicer's placement of the image: ITK's reading of the file (origin 0, identity) with the
    # calibration Slicer applies (Pixel Spacing; Slicer 5.8+ the one ultrasound region)
    placed = sitk.ReadImage(str(tmp_path / "us.dcm"))
    for name, expected in (("tumor", tumor), ("peri_0-3mm", ring), ("peri_9-12mm", empty)):
        img, value = labels[name]
        assert img.GetSize() == (80, 64, 1)
        assert img.GetSpacing() == pytest.approx((*spacing_xy, 1.0), rel=1e-9)
        assert img.GetOrigin() == pytest.approx(placed.GetOrigin(), abs=1e-9)
        assert img.GetDirection() == pytest.approx(placed.GetDirection(), abs=1e-9)
        if "pixel_spacing" in calibration:               # ITK itself reads Pixel Spacing
            assert img.GetSpacing() == pytest.approx(placed.GetSpacing(), rel=1e-9)
        arr = sitk.GetArrayFromImage(img)[0]             # (rows, columns)
        assert np.array_equal(arr == value, expected), name
        assert np.array_equal(arr != 0, expected), name  # nothing else in its image


@needs_tid1500reader
def test_tid1500reader_reads_every_feature_and_the_prediction(tmp_path):
    _, seg, sr = _case(tmp_path)
    sr.save_as(tmp_path / "sr.dcm")
    _run([TID1500READER, "--inputDICOM", tmp_path / "sr.dcm",
          "--outputMetadata", tmp_path / "sr.json"])
    report = json.loads((tmp_path / "sr.json").read_text())
    groups = {g["TrackingIdentifier"]: g for g in report["Measurements"]}
    assert set(groups) == {"tumor", "peri_0-3mm", "prediction"}
    assert report["compositeContext"] == [seg.SOPInstanceUID]
    for number, region in enumerate(("tumor", "peri_0-3mm"), start=1):
        group = groups[region]
        assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
        assert group["ReferencedSegment"] == number
        # dcmqi reads the Numeric Value (DS, at most 16 characters), not the exact double
        got = sorted(float(m["value"]) for m in group["measurementItems"])
        want = sorted(v for k, v in FEATURES.items()
                      if k.startswith(region + "__") and math.isfinite(v))
        assert got == pytest.approx(want, rel=1e-14)
    items = {(m["quantity"]["CodingSchemeDesignator"], m["quantity"]["CodeValue"]):
             (float(m["value"]), m["units"]["CodeValue"])
             for m in groups["tumor"]["measurementItems"]}
    assert items[("IBSI", "ACUI")] == pytest.approx((12.345678901234567, "1"))  # GLCM contrast
    by_meaning = {m["quantity"]["CodeMeaning"]: m["units"]["CodeValue"]
                  for m in groups["tumor"]["measurementItems"]}
    assert by_meaning["shape2D MaximumDiameter"] == "mm"
    pred = {m["quantity"]["CodeMeaning"]: float(m["value"])
            for m in groups["prediction"]["measurementItems"]}
    assert pred == {"Probability of zero": 0.25, "Probability of HER2-low": 0.75,
                    "Rad-score": 1.5}
    (evaluation,) = groups["prediction"]["qualitativeEvaluations"]
    assert evaluation["conceptValue"]["CodeMeaning"] == "HER2-low"


@needs_seg2itk
def test_segimage2itkimage_converts_the_seg_an_sr_references(tmp_path):
    """The SR's SEG (its image without calibration): both load in Slicer together."""
    _, seg, _ = _case(tmp_path)
    seg.save_as(tmp_path / "seg.dcm")
    from test_pacs_seg import _masks
    tumor, ring = _masks()
    labels = _labels(tmp_path / "seg.dcm", tmp_path / "out")
    for name, expected in (("tumor", tumor), ("peri_0-3mm", ring)):
        img, value = labels[name]
        assert np.array_equal(sitk.GetArrayFromImage(img)[0] == value, expected)
