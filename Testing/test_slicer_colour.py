"""Colour images and DICOM-browser volumes in the panel's Logic, on real MRML (slicer-core).

Slicer loads an RGB image (PNG/JPEG, or an ultrasound DICOM that is not MONOCHROME) as a
``vtkMRMLVectorVolumeNode``; the panel must accept it and convert it to grey with the library's
documented rule. A volume loaded from Slicer's DICOM database has no storage file: its
calibration is read from the DICOM instance the volume names (issue 26, D3 and D8).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HER2Radiomics"))
from HER2RadiomicsModuleLib import core as C  # noqa: E402


def _rgb_ultrasound_dicom(src, dst):
    """The fixture's grey ultrasound DICOM turned into an RGB one (as many scanners export
    it), each channel different so that the grey rule matters."""
    import pydicom
    ds = pydicom.dcmread(str(src))
    g = ds.pixel_array.astype(np.float64)
    rgb = np.stack([np.clip(g * 1.25, 0, 255), g, np.clip(g * 0.6 + 20, 0, 255)], -1)
    rgb = rgb.round().astype(np.uint8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(str(dst), enforce_file_format=True)
    return rgb


def test_an_rgb_ultrasound_dicom_loads_as_a_vector_volume_and_is_converted_to_grey(cohort,
                                                                                    tmp_path):
    rgb = _rgb_ultrasound_dicom(cohort / "images" / "P0001-1.dcm", tmp_path / "rgb.dcm")
    scene = slicer.vtkMRMLScene()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    node = volumes.AddArchetypeVolume(str(tmp_path / "rgb.dcm"), "RGB US")
    assert node is not None and node.IsA("vtkMRMLVectorVolumeNode")    # what Slicer makes
    assert C.isImageNode(node)
    logic = C.HER2RadiomicsCoreLogic()
    loaded = logic.loadedImage(node)
    import SimpleITK as sitk
    got = sitk.GetArrayFromImage(loaded.image)
    want = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])    # by hand: BT.601
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-3)
    assert "0.299 R + 0.587 G + 0.114 B" in loaded.provenance["grey_conversion"]
    # the calibration comes from the file's ultrasound region, not Slicer's placeholder
    from HER2RadiomicsLib.imaging.io import read_image
    ref = read_image(cohort / "images" / "P0001-1.dcm")
    info = logic.spacingInfo(node)
    assert info.known and info.source == "dicom-us-region"
    assert np.allclose(info.spacing_mm, ref.spacing_mm)


def test_label_maps_and_tensors_are_not_images():
    scene = slicer.vtkMRMLScene()
    for cls, ok in (("vtkMRMLScalarVolumeNode", True), ("vtkMRMLVectorVolumeNode", True),
                    ("vtkMRMLLabelMapVolumeNode", False),
                    ("vtkMRMLDiffusionTensorVolumeNode", False),
                    ("vtkMRMLDiffusionWeightedVolumeNode", False)):
        assert C.isImageNode(scene.AddNewNodeByClass(cls)) is ok, cls
    logic = C.HER2RadiomicsCoreLogic()
    with pytest.raises(ValueError, match="not a grey or colour image"):
        logic.loadedImage(scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask"))


def test_a_volume_from_the_dicom_browser_is_calibrated_from_its_instance(cohort):
    """Slicer's DICOM plugins leave no storage file but name the instance; with several or no
    calibrated regions Slicer keeps a placeholder spacing, which must not be taken as mm."""
    import pydicom
    from HER2RadiomicsModuleLib import mrml as M
    from HER2RadiomicsLib.imaging.io import read_image
    path = cohort / "images" / "P0002-1.dcm"
    uid = str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)
    scene = slicer.vtkMRMLScene()
    ref = read_image(path)
    node = M.sitkToVolumeNode(ref.image, scene, "from DICOM browser")
    node.SetSpacing(1.0, 1.0, 1.0)                       # Slicer's placeholder
    node.SetAttribute("DICOM.instanceUIDs", uid)
    logic = C.HER2RadiomicsCoreLogic()
    assert logic.spacingInfo(node).source == "volume"    # no database known: as loaded
    logic.dicomFileForInstance = {uid: str(path)}.get    # what Slicer's database answers
    info = logic.spacingInfo(node)
    assert info.known and info.source == "dicom-us-region"
    assert np.allclose(info.spacing_mm, ref.spacing_mm)
    assert "replaces the volume's 1 x 1 mm" in info.note


def test_the_panel_modules_import_no_numpy_or_simpleitk_at_start():
    """Slicer imports the module at start-up for every user; numpy and SimpleITK come on
    first use."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import HER2RadiomicsModuleLib.core, HER2RadiomicsModuleLib.controller, "
            "HER2RadiomicsModuleLib.dependencies\n"
            "print(sorted(m for m in ('numpy', 'SimpleITK', 'pandas') if m in sys.modules))"
            % str(ROOT / "HER2Radiomics"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
