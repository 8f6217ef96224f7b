"""What a reader sees of a case in the station: the contour's look, the image's window, the
3/5/8 mm ring overlay, the brush in mm, and the contour read back from Slicer's segmentation
(a part of :class:`.web.ReaderStation`, which mixes it in; Slicer's core comes with the
``station`` extra)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.rings import build_regions

#: ring distances shown by the overlay (mm), the peritumoral design of the studies
OVERLAY_RINGS_MM = (3.0, 5.0, 8.0)
#: the overlay's colour per ring (RGB 0-1): distinct hues, legend on the page
RING_COLOURS = {"0-3 mm": (0.95, 0.75, 0.10), "3-5 mm": (0.20, 0.80, 0.90),
                "5-8 mm": (0.85, 0.35, 0.85)}
#: the contour's look on every case: full outline, light fill (the image stays readable)
CONTOUR_FILL_OPACITY = 0.4
#: the brush's range (mm): a lesion's detail to a whole lesion; anything a browser sends
#: outside it is clamped (1e6 mm would allocate 347 TB)
BRUSH_MM = (0.5, 20.0)


class ReaderView:
    """The case's display in a reader's station (mixed into :class:`.web.ReaderStation`,
    whose ``slicer``, ``state``, ``image``, nodes and ``_say`` it uses)."""

    def _style_contour(self):
        """The same look on every case: outline and a light fill (never opaque)."""
        node = self.segmentation_node
        display = node.GetDisplayNode() if node is not None else None
        if display is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
        display.SetVisibility2DOutline(True)
        display.SetVisibility2DFill(True)
        display.SetOpacity2DOutline(1.0)
        display.SetOpacity2DFill(CONTOUR_FILL_OPACITY)
        display.SetOpacity(1.0)

    def _segmentation_from(self, mask):
        """A segmentation node holding ``mask`` (or nothing) in the volume's geometry."""
        editor = self.slicer.segmentation_editor
        if mask is None:
            return editor.create_empty_segmentation_node()
        node = self._labelmap_node(np.squeeze(sitk.GetArrayFromImage(mask)) > 0, "lesion")
        seg = editor.create_segmentation_node_from_labelmap(node)
        self.slicer.scene.RemoveNode(node)
        return seg

    def _mask_image(self, arr) -> sitk.Image:
        """A 2D array as a uint8 image in the case image's geometry."""
        img = sitk.GetImageFromArray(np.asarray(arr).astype(np.uint8))
        img.CopyInformation(self.image)
        return img

    def _labelmap_node(self, arr, name):
        """A label-map node of ``arr`` in the image's geometry, read through Slicer's own
        volume reader (it converts the file's LPS geometry to the scene's RAS)."""
        path = Path(self._tmp.name) / f"{name}.nrrd"
        sitk.WriteImage(self._mask_image(arr), str(path))
        scene = self.slicer.scene
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        node.SetName(name)
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        storage.ReadData(node)
        scene.RemoveNode(storage)
        return node

    def _set_brush_mm(self, diameter_mm):
        """Paint and Erase brushes in mm of the image (Slicer's default is a share of the
        screen, which changes with zoom; readers think in mm)."""
        from trame_slicer.app.logic.segmentation.brush_effect_logic import BrushEffectLogic
        from trame_slicer.app.ui import SliderState
        from trame_slicer.segmentation import BrushDiameterMode
        for logic in self.editor_logic._effect_logic:
            if isinstance(logic, BrushEffectLogic):
                data = logic._brush_state.data
                data.brush_diameter_mode = BrushDiameterMode.Absolute
                data.brush_diameter_slider = SliderState(
                    min_value=BRUSH_MM[0], max_value=BRUSH_MM[1], step=0.5,
                    value=float(diameter_mm))
                data.use_sphere_brush = False

    def current_mask(self) -> np.ndarray:
        """The reader's contour on the image grid (2D uint8).

        Exported in the volume's reference geometry, so voxel (j, i) of the label map is pixel
        (y, x) of the image as SimpleITK reads it (both keep the file's index order).
        """
        from vtkmodules.util.numpy_support import vtk_to_numpy
        shape = sitk.GetArrayViewFromImage(self.image).shape
        editor = self.slicer.segmentation_editor
        node = editor.export_segmentation_to_labelmap(self.segmentation_node)
        try:
            data = node.GetImageData()
            scalars = data.GetPointData().GetScalars() if data is not None else None
            if scalars is None or data.GetNumberOfPoints() == 0:
                return np.zeros(shape, np.uint8)                # nothing drawn yet
            dims = data.GetDimensions()
            arr = vtk_to_numpy(scalars).reshape(dims[::-1])
            arr = np.squeeze(arr, axis=0) if arr.ndim == 3 else arr
        finally:
            self.slicer.scene.RemoveNode(node)
        if arr.shape != shape:
            raise RuntimeError(f"contour grid {arr.shape} differs from the image's {shape}")
        return (arr > 0).astype(np.uint8)


    def _display(self):
        return self.volume_node.GetScalarVolumeDisplayNode() if self.volume_node else None

    def auto_window(self):
        """Slicer's automatic window/level for the image, shown on the slider."""
        d = self._display()
        if d is None:
            return
        d.AutoWindowLevelOn()
        with self.state:
            self.state.st_wl = [d.GetWindowLevelMin(), d.GetWindowLevelMax()]

    def _on_window(self, st_wl=None, **_):
        d = self._display()
        try:
            lo, hi = (float(v) for v in st_wl)
        except (TypeError, ValueError):
            return
        if d is None or not (math.isfinite(lo) and math.isfinite(hi)):
            return
        lo, hi = min(lo, hi), max(lo, hi)
        if (lo, hi) == (d.GetWindowLevelMin(), d.GetWindowLevelMax()):
            return
        d.AutoWindowLevelOff()
        d.SetWindowLevelMinMax(lo, max(hi, lo + 1e-3))
        for view in self.slicer.view_manager.get_slice_views():
            view.schedule_render()

    def _ring_colours(self, labels: dict):
        """A colour table giving each ring label its legend colour."""
        scene = self.slicer.scene
        table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "station rings")
        table.SetTypeToUser()
        n = max(labels.values()) + 1 if labels else 1
        table.SetNumberOfColors(n)
        table.SetColor(0, "background", 0, 0, 0, 0)
        for name, value in labels.items():
            key = name.replace("peri_", "").replace("mm", " mm")
            r, g, b = RING_COLOURS.get(key, (1.0, 1.0, 1.0))
            table.SetColor(int(value), name, r, g, b, 1.0)
        return table

    def _on_rings(self, st_rings=False, **_):
        scene = self.slicer.scene
        if self.rings_node is not None:
            display = self.rings_node.GetDisplayNode()
            colours = display.GetColorNode() if display is not None else None
            scene.RemoveNode(self.rings_node)
            if colours is not None and colours.GetName() == "station rings":
                scene.RemoveNode(colours)
            self.rings_node = None
        views = self.slicer.view_manager.get_slice_views()
        if st_rings and self.case_id is not None:
            mask = self.current_mask()
            if not mask.any():
                self._say(error="Draw the lesion first: the rings grow from it.")
                with self.state:
                    self.state.st_rings = False
                return
            regions = build_regions(self.image, self._mask_image(mask), OVERLAY_RINGS_MM,
                                    annuli=True)
            arr = sitk.GetArrayFromImage(regions.label_map).astype(np.uint8)
            arr[arr == regions.labels.get("tumor", 1)] = 0     # the reader's contour shows it
            self.rings_node = self._labelmap_node(arr, "rings")
            self.rings_node.CreateDefaultDisplayNodes()
            rings = {k: v for k, v in regions.labels.items() if k != "tumor"}
            self.rings_node.GetDisplayNode().SetAndObserveColorNodeID(
                self._ring_colours(rings).GetID())
        for view in views:
            logic = view._logic                         # trame-slicer keeps the slice logic here
            logic.GetSliceCompositeNode().SetLabelVolumeID(
                self.rings_node.GetID() if self.rings_node else None)
            logic.GetSliceNode().SetUseLabelOutline(True)      # outlines keep the image visible
            view.schedule_render()
