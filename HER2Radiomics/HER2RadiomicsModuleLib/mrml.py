"""MRML <-> HER2RadiomicsLib conversions for the Slicer module (needs MRML classes only).

No ``slicer.app``, ``qt``, ``ctk`` or ``sitkUtils`` here, so the same code runs in Slicer and in
plain Python with the PyPI package ``slicer-core`` (the Logic tests). The module's
``HER2RadiomicsLogic`` delegates to these functions.

Coordinates: MRML volumes are defined in RAS, SimpleITK/ITK images in LPS. A volume's
IJK-to-RAS matrix becomes spacing, origin and direction of the SimpleITK image with the first two
physical axes negated (RAS -> LPS); the pixel buffer is shared in (k, j, i) order on both sides.
Slicer volumes are always 3D: a single-slice volume maps to a true 2D SimpleITK image (what
pyradiomics needs, see HER2RadiomicsLib.extraction.features), and back to a one-slice volume.

Example (in Slicer's Python console)::

    from HER2RadiomicsModuleLib import mrml as M
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


# -- segmentations ------------------------------------------------------------------------------

#: segment colours (RGB 0-1): tumour red, then rings from warm to cool, readable on grey speckle
REGION_COLORS = [(0.93, 0.20, 0.12), (0.94, 0.89, 0.26), (0.34, 0.71, 0.91),
                 (0.0, 0.75, 0.55), (0.80, 0.47, 0.65), (0.90, 0.62, 0.0), (0.0, 0.45, 0.70)]
#: segment tag recording which library region a segment holds (feature column prefix)
REGION_TAG = "HER2Radiomics.region"


def regionColor(index):
    return REGION_COLORS[index % len(REGION_COLORS)]


def regionDisplayName(region):
    """A readable segment name for a library region name (``peri_3-5mm`` -> ``ring 3-5 mm``)."""
    if region == "tumor":
        return "tumour"
    if region.startswith("tumor+peri_"):
        return "tumour + " + region[len("tumor+peri_"):-2] + " mm"
    if region.startswith("peri_"):
        return "ring " + region[len("peri_"):-2] + " mm"
    return region


def ensureSegmentationConverters():
    """Register the labelmap <-> surface conversion rules if nobody has.

    Slicer's Segmentations module registers them at start-up; bare MRML (``slicer-core``, a
    scripted CLI) has none, and then even an empty labelmap segment cannot be created.
    """
    import slicer
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def segmentTag(segment, key):
    """A segment tag's value, or None (vtkSegment.GetTag returns it through a reference)."""
    import vtk
    value = vtk.reference("")
    return str(value) if segment is not None and segment.GetTag(key, value) else None


def findSegmentId(segmentationNode, name=None, region=None):
    """Id of the first segment with this name (or region tag), or None."""
    seg = segmentationNode.GetSegmentation()
    for i in range(seg.GetNumberOfSegments()):
        s = seg.GetNthSegment(i)
        if region is not None and segmentTag(s, REGION_TAG) == region:
            return seg.GetNthSegmentID(i)
        if name is not None and s.GetName() == name:
            return seg.GetNthSegmentID(i)
    return None


def segmentIds(segmentationNode):
    seg = segmentationNode.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def segmentToSitk(segmentationNode, segmentId, referenceVolumeNode, keep3D=False):
    """One segment as a binary uint8 SimpleITK image on the reference volume's grid (LPS).

    The segment is resampled to the reference geometry by Slicer's own export, so masks drawn
    on another grid (a reader's segmentation) still line up with the image.
    """
    import slicer
    import vtk
    scene = segmentationNode.GetScene()
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise ValueError(f"segmentation '{segmentationNode.GetName()}' has no segment "
                         f"{segmentId!r}")
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "_her2_export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, ids, labelNode, referenceVolumeNode)
        if not ok:
            raise ValueError(f"segment {segmentId!r} could not be exported on the grid of "
                             f"'{referenceVolumeNode.GetName()}'")
        img = volumeNodeToSitk(labelNode, keep3D=keep3D)
    finally:
        # the export gives the label map a new colour table ("<segmentation>_ColorTable_N");
        # left behind, every extraction would add one per region to the user's scene
        display = labelNode.GetDisplayNode()
        colorNode = display.GetColorNode() if display is not None else None
        _removeNode(scene, labelNode)
        if colorNode is not None and colorNode.IsA("vtkMRMLColorTableNode") and \
                colorNode.GetName().startswith(segmentationNode.GetName() + "_ColorTable"):
            scene.RemoveNode(colorNode)
    mask = sitk.Cast(img > 0, sitk.sitkUInt8)
    return mask


def sitkToSegment(mask, segmentationNode, referenceVolumeNode, name, color=None, region=None,
                  segmentId=None):
    """Create or replace a segment from a binary SimpleITK mask on the reference grid.

    An existing segment with the same region tag (or name) is updated in place, so manual
    edits elsewhere and the segment's id survive a re-run. Returns the segment id.
    """
    import slicer
    ensureSegmentationConverters()
    scene = segmentationNode.GetScene()
    if segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    segmentId = segmentId or findSegmentId(segmentationNode, region=region) \
        or findSegmentId(segmentationNode, name=name)
    seg = segmentationNode.GetSegmentation()
    if segmentId is None:
        segmentId = seg.AddEmptySegment("", name, list(color) if color else [0.5, 0.5, 0.5])
    else:
        seg.GetSegment(segmentId).SetName(name)
        if color:
            seg.GetSegment(segmentId).SetColor(*color)
    if region is not None:
        seg.GetSegment(segmentId).SetTag(REGION_TAG, region)
    binary = sitk.Cast(mask > 0, sitk.sitkUInt8)
    labelNode = sitkToVolumeNode(binary, scene, "_her2_import", labelmap=True)
    try:
        oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(
            labelNode)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            oriented, segmentationNode, segmentId,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        if not ok:
            raise ValueError(f"could not write segment '{name}'")
    finally:
        _removeNode(scene, labelNode)
    return segmentId


def addRegionSegments(regionSet, segmentationNode, referenceVolumeNode, skipTumour=True):
    """Write a library RegionSet's rings as named, coloured segments; returns region -> id."""
    out = {}
    for i, (region, mask) in enumerate(regionSet.masks.items()):
        if region == "tumor" and skipTumour:
            continue
        out[region] = sitkToSegment(mask, segmentationNode, referenceVolumeNode,
                                    regionDisplayName(region), regionColor(i), region=region)
    return out


def _removeNode(scene, node):
    for i in range(node.GetNumberOfDisplayNodes()):
        dn = node.GetNthDisplayNode(i)
        if dn is not None:
            scene.RemoveNode(dn)
    storage = node.GetStorageNode()
    if storage is not None:
        scene.RemoveNode(storage)
    scene.RemoveNode(node)


# -- tables -------------------------------------------------------------------------------------

def dataFrameToTableNode(df, tableNode):
    """Fill a table node from a pandas DataFrame (numbers as double columns, others as text)."""
    import pandas as pd
    import vtk
    table = tableNode.GetTable()
    table.Initialize()
    for col in df.columns:
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            arr = vtk.vtkDoubleArray()
            arr.SetName(str(col))
            for v in values.to_numpy(dtype=float):
                arr.InsertNextValue(float(v))
        else:
            arr = vtk.vtkStringArray()
            arr.SetName(str(col))
            for v in values:
                arr.InsertNextValue("" if v is None or (isinstance(v, float) and v != v)
                                    else str(v))
        table.AddColumn(arr)
    tableNode.Modified()
    return tableNode


def tableNodeToDataFrame(tableNode):
    """A table node as a pandas DataFrame (double columns become floats)."""
    import pandas as pd
    table = tableNode.GetTable()
    data = {}
    for c in range(table.GetNumberOfColumns()):
        arr = table.GetColumn(c)
        n = arr.GetNumberOfTuples()
        if arr.IsA("vtkStringArray"):
            data[arr.GetName()] = [arr.GetValue(i) for i in range(n)]
        else:
            data[arr.GetName()] = [arr.GetTuple1(i) for i in range(n)]
    return pd.DataFrame(data)


def featuresToLongFrame(features: dict):
    """``{column: value}`` of one case -> rows ``region, feature, value`` (readable in a table)."""
    import pandas as pd
    rows = []
    for key, value in features.items():
        region, _, name = key.partition("__")
        rows.append({"region": region, "feature": name, "value": float(value)})
    return pd.DataFrame(rows, columns=["region", "feature", "value"])


# -- markups prompts ----------------------------------------------------------------------------

def markupsToPrompt(markupsNode, volumeNode):
    """CNN prompt from a markups node: one point -> click, two points -> box corners.

    Returns ``(kind, values)`` with ``kind`` in ``{"click", "box", None}`` and pixel (column,
    row) coordinates on the volume's grid.
    """
    import vtk
    if markupsNode is None or markupsNode.GetNumberOfControlPoints() == 0:
        return None, None
    m = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(m)
    ras2ijk = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    pts = []
    for i in range(min(markupsNode.GetNumberOfControlPoints(), 2)):
        ras = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(i, ras)
        ijk = ras2ijk @ np.array(list(ras) + [1.0])
        pts.append((float(ijk[0]), float(ijk[1])))
    if len(pts) == 1:
        return "click", pts[0]
    (x0, y0), (x1, y1) = pts
    return "box", (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def singletonSegmentEditorNode(scene, tag="HER2Radiomics", className="vtkMRMLSegmentEditorNode"):
    """The module's own Segment Editor node: found by its singleton tag, or created, tagged
    and only then added (tagging after adding would let a second node with the same tag in,
    and a reloaded scene would then hold two)."""
    node = scene.GetSingletonNode(tag, className)
    if node is None:
        node = scene.CreateNodeByClass(className)
        node.UnRegister(None)          # CreateNodeByClass hands over a reference
        node.SetSingletonTag(tag)
        node = scene.AddNode(node)
    return node
