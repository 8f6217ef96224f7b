"""The HER2Radiomics panel's behaviour on MRML nodes: needs MRML classes only, never Qt.

``HER2RadiomicsLogic`` (in ``HER2Radiomics.py``) inherits from :class:`HER2RadiomicsCoreLogic`;
all computation is in HER2RadiomicsLib, and the node conversions are in
:mod:`HER2RadiomicsModuleLib.mrml`. The same class runs in Slicer and, in the tests, on the PyPI
package ``slicer-core`` (``slicer.mrmlScene`` set by the caller; no ``slicer.app``).

Example (Slicer's Python console)::

    from HER2RadiomicsModuleLib.core import HER2RadiomicsCoreLogic
    logic = HER2RadiomicsCoreLogic()
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    logic.autoSegment(getNode("US"), seg)                 # CNN -> "tumour" segment
    logic.buildRings(getNode("US"), seg, [3, 5, 8])       # ring segments + clipping QC
    bundle = logic.loadBundle("model_bundle.zip")
    prediction = logic.predict(bundle, getNode("US"), seg, site="A")

Library names come from its public face (``from HER2RadiomicsLib import ...``) inside the
methods: Slicer loads this module before the library's dependencies (numpy, SimpleITK,
scikit-learn) are installed on first use (:mod:`HER2RadiomicsModuleLib.dependencies`).
"""
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class _OnFirstUse:
    """The MRML conversions (which need numpy and SimpleITK), imported the first time one is
    used: Slicer imports this module at start-up, and a panel nobody opens should cost no
    numpy/SimpleITK import."""

    def __getattr__(self, name):
        from . import mrml
        return getattr(mrml, name)


M = _OnFirstUse()

from .background import CliJob, FeatureMemory, Job  # noqa: E402  (re-exported: C.Job, C.CliJob)
from .steps import SOURCE_TAG, LongSteps  # noqa: E402

# Installed extension: HER2RadiomicsLib is a sibling scripted-module package and importable.
# Source tree (--additional-module-paths HER2Radiomics): it sits two folders up
# (HER2Radiomics/HER2RadiomicsModuleLib/core.py -> repository root).
if importlib.util.find_spec("HER2RadiomicsLib") is None:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

#: node attribute holding the pixel-spacing source the user confirmed or entered
SPACING_SOURCE_ATTRIBUTE = "HER2Radiomics.SpacingSource"
#: formats that carry no physical spacing (Slicer then shows 1 x 1 mm, a placeholder)
UNCALIBRATED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
#: the attribute Slicer's DICOM plugins set on a volume loaded from the DICOM database
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: volume classes the panel works on: grey (scalar) and colour (vector: RGB PNG/JPEG and
#: colour ultrasound DICOM load as vector volumes); label maps and tensors are not images
IMAGE_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")


@dataclass
class SpacingInfo:
    """Pixel spacing (mm) the panel uses, where it came from, and a note for the user."""

    spacing_mm: tuple
    source: str
    known: bool
    note: str = ""


def isImageNode(node) -> bool:
    """A grey or colour image volume (:data:`IMAGE_NODE_CLASSES`); not a label map, tensor or
    diffusion volume, which are subclasses of the scalar volume too."""
    if node is None:
        return False
    if node.IsA("vtkMRMLVectorVolumeNode"):
        return True
    return node.GetClassName() == "vtkMRMLScalarVolumeNode"


def _isDicom(path) -> bool:
    """A DICOM Part 10 file (the 'DICM' marker after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


class HER2RadiomicsCoreLogic(LongSteps):
    """Every step of the panel, on MRML nodes. Raises ``ValueError`` with a one-line message.

    The CNN, prediction and report steps (in process and through the CLI) come from
    :class:`~HER2RadiomicsModuleLib.steps.LongSteps`."""

    def __init__(self):
        # Slicer's ScriptedLoadableModuleLogic.__init__ calls super().__init__(), which reaches
        # this class in the Logic's MRO before the Logic calls it itself: initialise once
        if getattr(self, "_coreInitialised", False):
            return
        self._coreInitialised = True
        #: ``uid -> file path`` of a DICOM instance (the widget sets Slicer's DICOM database's
        #: ``fileForInstance``); finds the file of a volume loaded from the DICOM browser
        self.dicomFileForInstance = None
        self._segmenter = None
        self.lastSegmentationFlags = []   # doubts about the last auto-mask, for the panel
        self.memory = FeatureMemory()     # features extracted, keyed on their pixels
        self._fileSpacing = {}   # (path, mtime) -> (spacing, source): the GUI asks often

    # -- 1. input ----------------------------------------------------------------------------

    def _sourcePath(self, volumeNode):
        """The file the volume came from: its storage file, or for a volume loaded from
        Slicer's DICOM database (which has no storage file) the instance's file."""
        storage = volumeNode.GetStorageNode()
        name = storage.GetFileName() if storage is not None else None
        if name:
            return Path(name)
        uids = volumeNode.GetAttribute(DICOM_UIDS_ATTRIBUTE)
        if uids and self.dicomFileForInstance is not None:
            try:
                found = self.dicomFileForInstance(uids.split()[0])
            except Exception as exc:  # noqa: BLE001 -- a database that cannot answer: spacing as loaded
                log.info("%s: %s", uids, exc)
                return None
            return Path(found) if found else None
        return None

    _storagePath = _sourcePath        # the name earlier versions used

    def spacingInfo(self, volumeNode):
        """The spacing to use and its source: user > calibrated file > volume geometry.

        The image's file is re-read by the library, which resolves DICOM calibration the same
        way everywhere (one or several ultrasound regions, PixelSpacing). Slicer's own DICOM
        image-sequence loader (5.8 and later) applies the calibration of an ultrasound image
        with exactly one calibrated region; with several regions, or none, the volume keeps a
        placeholder spacing, which the file's reading exposes. A PNG/JPEG has no spacing:
        Slicer's 1 x 1 mm is a placeholder, reported as unknown.
        """
        import numpy as np
        spacing = tuple(float(s) for s in volumeNode.GetSpacing()[:2])
        source = volumeNode.GetAttribute(SPACING_SOURCE_ATTRIBUTE)
        if source:
            return SpacingInfo(spacing, source, source != "unknown")
        path = self._sourcePath(volumeNode)
        if path is not None and path.exists():
            key = (str(path), path.stat().st_mtime_ns)
            if key not in self._fileSpacing:
                try:
                    from HER2RadiomicsLib import read_image
                    loaded = read_image(path)
                    self._fileSpacing[key] = (tuple(float(s) for s in loaded.spacing_mm),
                                              loaded.spacing_source)
                except Exception as exc:  # noqa: BLE001 -- any read failure: see below
                    # never cached: the read may work once the dependencies are installed.
                    # A DICOM's calibration is then unknown, not Slicer's 1 x 1 mm placeholder
                    log.info("%s: %s", path, exc)
                    if _isDicom(path):
                        return SpacingInfo(spacing, "unknown", False,
                                           f"the calibration of {path.name} could not be read "
                                           f"({str(exc).splitlines()[0][:120]}); enter the "
                                           "pixel spacing or install the dependencies")
            cached = self._fileSpacing.get(key)
            if cached is not None:
                lib, libSource = cached
                if libSource != "unknown":
                    note = "" if np.allclose(lib, spacing, rtol=1e-3) else (
                        f"calibrated spacing {lib[0]:.4g} x {lib[1]:.4g} mm from the file "
                        f"replaces the volume's {spacing[0]:.4g} x {spacing[1]:.4g} mm")
                    return SpacingInfo(lib, libSource, True, note)
                return SpacingInfo(spacing, "unknown", False,
                                   f"{path.name} carries no pixel spacing; enter it")
            if path.suffix.lower() in UNCALIBRATED_SUFFIXES:
                return SpacingInfo(spacing, "unknown", False,
                                   f"{path.name} carries no pixel spacing; enter it")
        return SpacingInfo(spacing, "volume", True)

    def clearSpacingCache(self):
        """Forget the spacings read from files (after installing packages, say)."""
        self._fileSpacing.clear()

    def setUserSpacing(self, volumeNode, spacingX_mm, spacingY_mm):
        """Record a user-entered pixel spacing on the volume (saved with the scene)."""
        if not (spacingX_mm > 0 and spacingY_mm > 0):
            raise ValueError("pixel spacing must be two positive numbers in mm")
        z = volumeNode.GetSpacing()[2]
        volumeNode.SetSpacing(float(spacingX_mm), float(spacingY_mm), z)
        volumeNode.SetAttribute(SPACING_SOURCE_ATTRIBUTE, "user")

    def loadedImage(self, volumeNode):
        """The volume as the library's LoadedImage (2D grey float32, spacing resolved).

        A colour (vector) volume is converted to grey with the library's documented rule
        (:data:`HER2RadiomicsLib.imaging.io.GREY_FORMULA`, ITU-R BT.601 luma), as the command
        line converts a colour file; the conversion is recorded in the provenance.
        """
        from HER2RadiomicsLib import LoadedImage, to_grey
        if volumeNode is None:
            raise ValueError("select an image first")
        if not isImageNode(volumeNode):
            raise ValueError(f"'{volumeNode.GetName()}' is a {volumeNode.GetClassName()}, not "
                             "a grey or colour image")
        dims = volumeNode.GetImageData().GetDimensions() if volumeNode.GetImageData() else None
        if dims is None:
            raise ValueError(f"volume '{volumeNode.GetName()}' has no image data")
        if dims[2] != 1:
            raise ValueError(f"volume '{volumeNode.GetName()}' has {dims[2]} slices; "
                             "HER2Radiomics works on a single 2D image (pick one frame)")
        info = self.spacingInfo(volumeNode)
        prov = {"spacing_source": info.source}
        img = to_grey(M.volumeNodeToSitk(volumeNode), prov)
        img.SetSpacing(info.spacing_mm)
        return LoadedImage(img, volumeNode.GetName(), info.source, prov)

    # -- 2. segmentation ---------------------------------------------------------------------

    def segmenter(self):
        if self._segmenter is None:
            from HER2RadiomicsLib import get_segmenter
            self._segmenter = get_segmenter(None, "cpu")
        return self._segmenter

    @staticmethod
    def torchInstalled():
        import importlib.util
        return importlib.util.find_spec("torch") is not None

    def segmenterAvailable(self):
        """(bool, reason): the CNN needs the shipped weights. A missing PyTorch does not
        disable it: the first run asks to install PyTorch (see ``torchInstalled``)."""
        here = Path(__file__).resolve()
        # the library beside the module (installed extension) or at the source tree's top
        model = next((p / "HER2RadiomicsLib" / "models" / "busbra_unet.pt"
                      for p in (here.parents[1], here.parents[2])
                      if (p / "HER2RadiomicsLib").is_dir()), here)
        try:
            from HER2RadiomicsLib import DEFAULT_MODEL
            model = DEFAULT_MODEL
        except ImportError:     # the library's own dependencies are not installed yet
            pass
        if not model.exists():
            return False, f"The CNN model file is missing ({model.name})."
        return True, ""

    def tumourSegmentId(self, segmentationNode):
        """The tumour segment: tagged by us, else named tumour/tumor/lesion, else the only one."""
        if segmentationNode is None:
            return None
        sid = M.findSegmentId(segmentationNode, region="tumor")
        for name in ("tumour", "tumor", "lesion", "Tumour", "Tumor", "Lesion"):
            sid = sid or M.findSegmentId(segmentationNode, name=name)
        ids = M.segmentIds(segmentationNode)
        if sid is None and len(ids) == 1:
            sid = ids[0]
        return sid

    def tumourMask(self, volumeNode, segmentationNode):
        sid = self.tumourSegmentId(segmentationNode)
        if sid is None:
            raise ValueError("no tumour segment: run Auto-segment or draw a segment named "
                             "'tumour'")
        mask = M.segmentToSitk(segmentationNode, sid, volumeNode)
        import SimpleITK as sitk
        if sitk.GetArrayViewFromImage(mask).sum() == 0:
            raise ValueError(f"the tumour segment of '{segmentationNode.GetName()}' is empty")
        return mask

    def maskSource(self, segmentationNode):
        sid = self.tumourSegmentId(segmentationNode)
        s = segmentationNode.GetSegmentation().GetSegment(sid) if sid else None
        value = M.segmentTag(s, SOURCE_TAG)
        return value or f"segment '{s.GetName() if s else '?'}' of '{segmentationNode.GetName()}'"

    # -- 3. rings ----------------------------------------------------------------------------

    def buildRings(self, volumeNode, segmentationNode, rings_mm, annuli=False):
        """Peritumoral regions as segments; returns (RegionSet, QC DataFrame).

        ``annuli=False`` gives expansions (0-3, 0-5, 0-8 mm), ``True`` adds the bands between
        consecutive distances (3-5, 5-8 mm) as the peritumoral studies compare both.
        """
        import pandas as pd
        from HER2RadiomicsLib import build_regions, HER2Error
        loaded = self.loadedImage(volumeNode)
        if not loaded.spacing_known:
            raise ValueError(f"'{volumeNode.GetName()}': pixel spacing is unknown; rings are in "
                             "mm, so enter the spacing first")
        mask = self.tumourMask(volumeNode, segmentationNode)
        try:
            regs = build_regions(loaded.image, mask, list(rings_mm), annuli=bool(annuli),
                                 path=volumeNode.GetName())
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        M.addRegionSegments(regs, segmentationNode, volumeNode)
        qc = pd.DataFrame([{"region": r, "area_mm2": q["area_mm2"],
                            "clipped_pct": 100 * q["clipped_fraction"],
                            "flagged": bool(q.get("flagged"))}
                           for r, q in regs.qc.items()])
        return regs, qc

    def regionMasks(self, volumeNode, segmentationNode):
        """Tumour + every ring segment the panel made, as masks keyed by library region name."""
        masks = {"tumor": self.tumourMask(volumeNode, segmentationNode)}
        seg = segmentationNode.GetSegmentation()
        for sid in M.segmentIds(segmentationNode):
            region = M.segmentTag(seg.GetSegment(sid), M.REGION_TAG)
            if region and region != "tumor":
                masks[region] = M.segmentToSitk(segmentationNode, sid, volumeNode)
        return masks

    # -- 4. features -------------------------------------------------------------------------

    def _featureTask(self, loaded, masks, params, name):
        """``task(report) -> features`` on images read from MRML already.

        The task touches only SimpleITK images, so it may run on a worker thread (MRML is not
        thread-safe). ``report(fraction, message)`` returning False cancels (``Cancelled``).
        """
        from HER2RadiomicsLib import Cancelled, FeatureExtractor, HER2Error

        def task(report):
            def cb(done, total, region):
                return report(done / max(total, 1), f"region {region}" if region else "done")
            try:
                feats, _ = FeatureExtractor(params).extract(
                    loaded.image, masks, spacing_known=loaded.spacing_known, path=name,
                    progress=cb)
            except Cancelled:
                raise
            except HER2Error as exc:
                raise ValueError(str(exc)) from None
            return feats
        return task

    @staticmethod
    def _paramsText(params):
        from HER2RadiomicsLib import HER2Error, load_params
        try:
            return load_params(params)[1]
        except HER2Error as exc:
            raise ValueError(str(exc)) from None

    def extractFeatures(self, volumeNode, segmentationNode, params="default", tableNode=None,
                        progress=None):
        """Features of the tumour and ring segments; fills ``tableNode`` (region/feature/value).

        ``progress(fraction, message)`` returning False cancels (raises ``Cancelled``).
        """
        loaded = self.loadedImage(volumeNode)
        masks = self.regionMasks(volumeNode, segmentationNode)
        task = self._featureTask(loaded, masks, params, volumeNode.GetName())
        feats = task(progress or (lambda fraction, message: True))
        self.memory.remember(loaded, masks, self._paramsText(params), feats)
        if tableNode is not None:
            M.dataFrameToTableNode(M.featuresToLongFrame(feats), tableNode)
        return feats

    def featureCliParameters(self, volumeNode, segmentationNode, params="default", loaded=None,
                             masks=None):
        """Inputs of the scripted CLI for the panel's regions, as ``slicer.cli.run`` takes them.

        The CLI gets exactly what the in-process extraction would use: the grey image with the
        spacing the panel resolved (calibrated DICOM, user entry) as a temporary volume, and
        the tumour and ring segments (edits included) as one bit-coded label map on its grid
        (:func:`HER2RadiomicsLib.imaging.rings.encode_region_bits`; nested rings overlap).

        Returns
        -------
        (dict, list)
            CLI parameters (names as in ``HER2RadiomicsCLI.xml``) and the temporary nodes
            (hidden; removed by :meth:`finishFeatureExtraction`).
        """
        from HER2RadiomicsLib import encode_region_bits, HER2Error
        loaded = loaded or self.loadedImage(volumeNode)
        masks = masks or self.regionMasks(volumeNode, segmentationNode)
        try:
            bits, names = encode_region_bits(masks)
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        temporary = self._temporaryVolumes(volumeNode, ((loaded.image, "image", False),
                                                        (bits, "regions", True)))
        output = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLTableNode",
                                                         "HER2Radiomics CLI output")
        output.SetHideFromEditors(True)
        temporary.append(output)
        info = self.spacingInfo(volumeNode)
        parameters = {"inputVolume": temporary[0], "inputRegions": temporary[1],
                      "regionNames": ",".join(names), "spacingUnknown": not info.known,
                      "outputTable": output}
        if isinstance(params, (str, Path)) and str(params).lower().endswith((".yaml", ".yml")):
            parameters["paramsFile"] = str(params)
        else:
            parameters["preset"] = str(params)
        return parameters, temporary

    @staticmethod
    def _temporaryVolumes(volumeNode, images):
        """Hidden volume nodes for a CLI's inputs (removed when its job is finished)."""
        scene = volumeNode.GetScene()
        out = []
        for image, suffix, labelmap in images:
            node = M.sitkToVolumeNode(image, scene, f"{volumeNode.GetName()} ({suffix}, "
                                      "HER2Radiomics temporary)", labelmap=labelmap)
            node.SetHideFromEditors(True)
            out.append(node)
        return out

    def _runCli(self, runCli, parameters, temporary):
        try:
            cliNode = runCli(parameters)
        except Exception:
            self._removeNodes(temporary)
            raise
        if cliNode is None:
            self._removeNodes(temporary)
            raise ValueError("the HER2Radiomics CLI module could not be started")
        return cliNode

    def startFeatureExtraction(self, volumeNode, segmentationNode, params="default",
                               tableNode=None, runCli=None):
        """Start the extraction; returns a job to poll (``progress``, ``message``, ``done``,
        ``cancel()``), finished by :meth:`finishFeatureExtraction` on the GUI thread.

        ``runCli(parameters) -> vtkMRMLCommandLineModuleNode`` runs the scripted CLI; in
        Slicer the widget passes ``slicer.cli.run(slicer.modules.her2radiomicscli, None,
        parameters, wait_for_completion=False)``. Without it (no CLI module loaded, or the
        tests on slicer-core) the work runs on a worker thread (:class:`Job`).
        """
        loaded = self.loadedImage(volumeNode)
        masks = self.regionMasks(volumeNode, segmentationNode)
        context = {"loaded": loaded, "masks": masks, "paramsText": self._paramsText(params)}
        if runCli is not None:
            parameters, temporary = self.featureCliParameters(volumeNode, segmentationNode,
                                                              params, loaded, masks)
            cliNode = self._runCli(runCli, parameters, temporary)
            return CliJob("feature extraction", cliNode, parameters["outputTable"], tableNode,
                          temporary, context=context)
        task = self._featureTask(loaded, masks, params, volumeNode.GetName())
        job = Job("feature extraction", lambda job: task(job.report))
        job.tableNode, job.context = tableNode, context
        return job.start()

    @staticmethod
    def _removeNodes(nodes):
        for node in nodes:
            scene = node.GetScene() if node is not None else None
            if scene is not None:
                scene.RemoveNode(node)

    def finishFeatureExtraction(self, job):
        """On the GUI thread once ``job.done``: fill the table; returns the features or raises
        (:class:`~HER2RadiomicsLib.errors.Cancelled`, or ``ValueError`` with the one-line
        reason). The table is only written from a complete result."""
        if isinstance(job, CliJob):
            feats = self._finishCliJob(job)
        else:
            if job.error is not None:
                raise job.error
            feats = job.result
            if getattr(job, "tableNode", None) is not None:
                M.dataFrameToTableNode(M.featuresToLongFrame(feats), job.tableNode)
        ctx = getattr(job, "context", None) or {}
        if ctx:       # a prediction on these very pixels and params will not extract again
            self.memory.remember(ctx["loaded"], ctx["masks"], ctx["paramsText"], feats)
        return feats

    def _finishCliJob(self, job):
        node = job.cliNode
        try:
            job.check("feature extraction")
            frame = M.tableNodeToDataFrame(job.outputTableNode)
            if len(frame) != 1:
                raise ValueError(f"the CLI returned {len(frame)} rows instead of one")
            feats = {}
            for column in frame.columns:
                if "__" in column:              # <region>__<feature>; case_id etc. are not
                    value = frame[column].iloc[0]
                    feats[column] = float(value) if value not in ("", None) else float("nan")
            if not feats:
                raise ValueError("the CLI returned no feature")
        finally:
            self._removeNodes(job.temporaryNodes + [node])
        if job.tableNode is not None:
            M.dataFrameToTableNode(M.featuresToLongFrame(feats), job.tableNode)
        return feats

    # -- 5. prediction -----------------------------------------------------------------------

    def loadBundle(self, path, trust=False):
        from HER2RadiomicsLib import HER2Error, load_bundle
        try:
            return load_bundle(path, trust=trust)
        except HER2Error as exc:
            raise ValueError(str(exc)) from None

    @staticmethod
    def bundleNeeds(bundle):
        meta = bundle.meta
        return {"rings": bool((meta.get("rings") or {}).get("rings_mm")),
                "site": meta.get("batch_col", "site") in meta.get("input_columns", []),
                "sites": list(meta.get("sites") or []),
                "clinical": list(meta.get("clinical") or [])}

    @staticmethod
    def modelCardText(bundle):
        """A few plain lines for the panel (the report has the full card)."""
        from HER2RadiomicsLib import task_text
        meta = bundle.meta
        test = (meta.get("metrics") or {}).get("test") or {}
        lines = [f"Model: {meta.get('recipe')} — {task_text(meta)}"]
        if "auc" in test:
            lines.append(f"Test AUC {test['auc']:.3f} ({test['auc_delong_ci_low']:.2f}–"
                         f"{test['auc_delong_ci_high']:.2f}), n = {test['n']}")
        ext = (meta.get("metrics") or {}).get("external") or {}
        if "auc" in ext:
            lines.append(f"External AUC {ext['auc']:.3f}, n = {ext['n']}")
        lines.append("Regions: " + ", ".join(meta.get("regions", [])) + f"; params "
                     f"{meta.get('params_name')}")
        if meta.get("sites"):
            lines.append("Scanner sites: " + ", ".join(meta["sites"]))
        lines.append("Research use only. Not a diagnostic device.")
        return "\n".join(lines)

    def bundleWarnings(self, bundle, volumeNode=None, params=None):
        """Non-blocking mismatches between the bundle and the current input/settings."""
        out = list(bundle.warnings)
        if params and str(params) != str(bundle.meta.get("params_name")):
            out.append(f"the panel's feature params '{params}' differ from the model's "
                       f"'{bundle.meta.get('params_name')}'; prediction uses the model's own")
        if volumeNode is not None:
            info = self.spacingInfo(volumeNode)
            if not info.known and self.bundleNeeds(bundle)["rings"]:
                out.append("pixel spacing unknown: this model's rings are in mm")
            elif info.source in ("header", "volume", "user"):
                # not read from a calibrated file (a DICOM's calibration is read from the file
                # itself, also for volumes loaded from Slicer's DICOM browser)
                out.append(f"pixel spacing from '{info.source}', not from a calibrated file: "
                           "check it, the rings and texture scale depend on it")
        return out

    # -- 6. reader study ---------------------------------------------------------------------

    def readerAgreement(self, volumeNode, segmentationNodes, tableNode=None):
        """Dice / HD95 (mm) between every pair of readers' tumour segments."""
        import itertools

        import pandas as pd
        import SimpleITK as sitk
        from HER2RadiomicsLib import compare_masks
        if len(segmentationNodes) < 2:
            raise ValueError("pick at least two segmentations (one per reader)")
        info = self.spacingInfo(volumeNode)
        masks = {n.GetName(): sitk.GetArrayFromImage(self.tumourMask(volumeNode, n)) > 0
                 for n in segmentationNodes}
        if len(masks) < len(segmentationNodes):
            raise ValueError("two of the picked segmentations have the same name")
        rows = []
        for a, b in itertools.combinations(masks, 2):
            m = compare_masks(masks[a], masks[b], info.spacing_mm)
            rows.append({"reader A": a, "reader B": b, "dice": m["dice"],
                         "hd95_mm" if info.known else "hd95_px": m["hd95"],
                         "area_diff_pct": m["area_diff_pct"]})
        df = pd.DataFrame(rows)
        if tableNode is not None:
            M.dataFrameToTableNode(df, tableNode)
        return df

    # -- 7. report ---------------------------------------------------------------------------

def exampleBundle(workdir, nPatients=60, seed=5):
    """Train a small peritumoral2025 bundle on a synthetic cohort (for the self-test).

    Returns (bundle path, cohort folder). About 30 s on two cores.
    """
    from HER2RadiomicsLib import (ExtractConfig, StudyOptions, generate_cohort, load_recipe,
                                  read_manifest, run_batch, run_study)
    workdir = Path(workdir)
    cohort = workdir / "cohort"
    if not (cohort / "cohort.csv").exists():
        generate_cohort(cohort, n_cases=nPatients, seed=seed, reader_fraction=0.1,
                        second_view_fraction=0)
    features = workdir / "features.csv"
    run_batch(read_manifest(cohort / "cohort.csv"), features,
              ExtractConfig(params="cui2023", rings_mm=(3.0,), annuli=False), jobs=1,
              resume=True, progress=False)
    recipe = load_recipe("peritumoral2025")
    recipe["params"] = "cui2023"
    recipe["scenarios"] = {"intra+peri3mm": ["tumor", "peri_0-3mm"]}   # one scenario: fast
    recipe["evaluation"] = {**recipe.get("evaluation", {}), "repeats": 0, "bootstrap": 200}
    run_study(recipe, features, cohort / "cohort.csv", workdir / "model",
              StudyOptions(progress=False))
    return workdir / "model" / "model_bundle.zip", cohort
