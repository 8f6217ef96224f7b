"""Slicer-side MRML conversions on real MRML classes (slicer-core), no Slicer application."""
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core provides MRML for these tests")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HER2Radiomics"))
from HER2RadiomicsModuleLib import mrml as M  # noqa: E402


def _rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.mark.parametrize("direction", [np.eye(3), _rotation(30), np.diag([-1.0, 1.0, -1.0]),
                                       _rotation(-75) @ np.diag([1.0, -1.0, 1.0])])
def test_volume_round_trip_oblique_and_flipped(direction):
    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(size=(4, 7, 9)).astype(np.float32))
    img.SetSpacing((0.3, 0.45, 2.0))
    img.SetOrigin((10.0, -5.0, 3.5))
    img.SetDirection([float(v) for v in direction.ravel()])
    node = M.sitkToVolumeNode(img, scene, "v")
    back = M.volumeNodeToSitk(node)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert np.allclose(back.GetSpacing(), img.GetSpacing())
    assert np.allclose(back.GetOrigin(), img.GetOrigin())
    assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-12)
    # RAS convention: the node's origin is the LPS origin with x and y negated
    assert np.allclose(node.GetOrigin(), (-10.0, 5.0, 3.5))


@pytest.mark.parametrize("direction", [_rotation(20), _rotation(20) @ np.diag([1.0, -1.0, 1.0])])
def test_matches_a_file_round_trip(tmp_path, direction):
    """Our in-memory conversion agrees with Slicer's own NRRD reader.

    Slicer makes left-handed orientations right-handed by reversing the slice axis, so the
    comparison is physical: the file-loaded volume resampled onto our grid has identical voxels;
    for a right-handed direction the IJK-to-RAS matrices are identical too.
    """
    import vtk
    scene = slicer.vtkMRMLScene()
    img = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7))
    img.SetSpacing((0.5, 0.7, 1.5))
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetDirection([float(v) for v in direction.ravel()])
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(img, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fromFile")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    fromFile = M.volumeNodeToSitk(node)
    onOurGrid = sitk.Resample(fromFile, img, sitk.Transform(), sitk.sitkNearestNeighbor, -1)
    assert np.array_equal(sitk.GetArrayFromImage(onOurGrid), sitk.GetArrayFromImage(img))
    if np.linalg.det(direction) > 0:
        ours = M.sitkToVolumeNode(img, scene, "ours")
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(a)
        ours.GetIJKToRASMatrix(b)
        assert np.allclose([a.GetElement(r, c) for r in range(4) for c in range(4)],
                           [b.GetElement(r, c) for r in range(4) for c in range(4)], atol=1e-6)


def test_single_slice_volume_is_true_2d():
    scene = slicer.vtkMRMLScene()
    img2d = sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(20, 30)))
    img2d.SetSpacing((0.1, 0.2))
    img2d.SetOrigin((4.0, 5.0))
    node = M.sitkToVolumeNode(img2d, scene, "us")
    assert node.GetImageData().GetDimensions() == (30, 20, 1)
    back = M.volumeNodeToSitk(node)
    assert back.GetDimension() == 2
    assert np.allclose(back.GetSpacing(), (0.1, 0.2)) and np.allclose(back.GetOrigin(), (4, 5))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img2d))
    lab = M.sitkToVolumeNode(sitk.Cast(img2d > 0, sitk.sitkUInt8), scene, "m", labelmap=True)
    assert lab.IsA("vtkMRMLLabelMapVolumeNode")


def test_segment_editor_node_is_one_tagged_singleton():
    """Tagged before it is added, found by its tag afterwards: one node, however often the
    module sets up (issue 15, item 7)."""
    scene = slicer.vtkMRMLScene()
    # slicer-core has no Segment Editor node class; the singleton logic is the same for any
    # node class, so it is checked on the scripted-module node
    cls = "vtkMRMLSegmentEditorNode"
    probe = scene.CreateNodeByClass(cls)
    if probe is None:
        cls = "vtkMRMLScriptedModuleNode"
    else:
        probe.UnRegister(None)
    first = M.singletonSegmentEditorNode(scene, className=cls)
    again = M.singletonSegmentEditorNode(scene, className=cls)
    assert first is not None and again.GetID() == first.GetID()
    assert first.GetSingletonTag() == "HER2Radiomics"
    assert scene.GetNumberOfNodesByClass(cls) == 1
    other = M.singletonSegmentEditorNode(scene, tag="Other", className=cls)
    assert other.GetID() != first.GetID()
