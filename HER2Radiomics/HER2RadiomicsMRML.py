"""MRML <-> HER2RadiomicsLib conversions for the Slicer module (needs MRML classes only).

No ``slicer.app``, ``qt``, ``ctk`` or ``sitkUtils`` here, so the same code runs in Slicer and in
plain Python with the PyPI package ``slicer-core`` (the Logic tests). The module's
``HER2RadiomicsLogic`` delegates to these functions.

Coordinates: MRML volumes are defined in RAS, SimpleITK/ITK images in LPS. A volume's
IJK-to-RAS matrix becomes spacing, origin and direction of the SimpleITK image with the first two
physical axes negated (RAS -> LPS); the pixel buffer is shared in (k, j, i) order on both sides.
Slicer volumes are always 3D: a single-slice volume maps to a true 2D SimpleITK image (what
pyradiomics needs, see HER2RadiomicsLib.features), and back to a one-slice volume.

Example (in Slicer's Python console)::

    import HER2RadiomicsMRML as M
    image = M.volumeNodeToSitk(getNode("US"))
    node = M.sitkToVolumeNode(mask, slicer.mrmlScene, name="lesion", labelmap=True)
"""
import numpy as np
import SimpleITK as sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _ijkToRasMatrix(node) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volumeNodeToSitk(node, keep3D=False) -> sitk.Image:
    """A scalar volume node as a SimpleITK image (LPS geometry, pixel data copied).

    Parameters
    ----------
    node : vtkMRMLScalarVolumeNode (or label map)
    keep3D : bool
        Keep a single-slice volume 3D (default: return a true 2D image).
    """
    from vtk.util import numpy_support
    imageData = node.GetImageData()
    if imageData is None:
        raise ValueError(f"volume '{node.GetName()}' has no image data")
    dims = imageData.GetDimensions()                                   # (i, j, k)
    scalars = imageData.GetPointData().GetScalars()
    comps = scalars.GetNumberOfComponents()
    arr = numpy_support.vtk_to_numpy(scalars).reshape(dims[::-1] + ((comps,) if comps > 1
                                                                   else ()))
    ijkToRas = _ijkToRasMatrix(node)
    spacing = np.linalg.norm(ijkToRas[:3, :3], axis=0)
    directionRas = ijkToRas[:3, :3] / spacing
    directionLps = RAS_TO_LPS @ directionRas
    originLps = RAS_TO_LPS @ ijkToRas[:3, 3]
    img = sitk.GetImageFromArray(arr.copy(), isVector=comps > 1)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in originLps])
    img.SetDirection([float(d) for d in directionLps.ravel()])
    if dims[2] == 1 and not keep3D:
        size = list(img.GetSize())
        size[2] = 0
        img = sitk.Extract(img, size, [0, 0, 0])
    return img


def _as3D(img: sitk.Image) -> sitk.Image:
    if img.GetDimension() == 3:
        return img
    if img.GetDimension() != 2:
        raise ValueError(f"{img.GetDimension()}D images cannot be shown as a volume")
    vol = sitk.JoinSeries(img)                 # adds a unit third axis
    d2 = np.array(img.GetDirection()).reshape(2, 2)
    d3 = np.eye(3)
    d3[:2, :2] = d2
    vol.SetDirection([float(v) for v in d3.ravel()])
    vol.SetOrigin(list(img.GetOrigin()) + [0.0])
    vol.SetSpacing(list(img.GetSpacing()) + [1.0])
    return vol


def sitkToVolumeNode(img: sitk.Image, scene, name="volume", labelmap=False, node=None):
    """Put a SimpleITK image (2D or 3D, LPS) into a new or given volume node (RAS)."""
    import vtk
    from vtk.util import numpy_support
    vol = _as3D(img)
    arr = sitk.GetArrayFromImage(vol)
    if node is None:
        cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(cls, name)
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*vol.GetSize())
    flat = np.ascontiguousarray(arr).reshape(-1)
    vtkArr = numpy_support.numpy_to_vtk(flat, deep=True)
    imageData.GetPointData().SetScalars(vtkArr)
    node.SetAndObserveImageData(imageData)
    spacing = np.array(vol.GetSpacing())
    directionRas = RAS_TO_LPS @ np.array(vol.GetDirection()).reshape(3, 3)
    originRas = RAS_TO_LPS @ np.array(vol.GetOrigin())
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, directionRas[r, c] * spacing[c])
        m.SetElement(r, 3, originRas[r])
    node.SetIJKToRASMatrix(m)
    return node
