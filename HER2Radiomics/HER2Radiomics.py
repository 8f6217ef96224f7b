"""HER2Radiomics: the 3D Slicer panel (Module / Widget / Logic / Test).

A thin shell: the Widget only binds the .ui to a typed parameter node and displays what the
controller (:mod:`HER2RadiomicsModuleLib.controller`) says can run; the Logic inherits every
behaviour from :class:`HER2RadiomicsModuleLib.core.HER2RadiomicsCoreLogic` (MRML only, tested on
``slicer-core``); all computation is in ``HER2RadiomicsLib``.

Library names come from its public face (``from HER2RadiomicsLib import ...``) inside the
methods: Slicer loads this module before the library's dependencies (numpy, SimpleITK,
scikit-learn) are installed on first use (:mod:`HER2RadiomicsModuleLib.dependencies`).
"""
import os
from pathlib import Path
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import (vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode,
                    vtkMRMLSegmentationNode, vtkMRMLTableNode, vtkMRMLVectorVolumeNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from HER2RadiomicsModuleLib.controller import PanelState, chosenPath, parseRingsText, stepStatus
from HER2RadiomicsModuleLib.core import HER2RadiomicsCoreLogic, isImageNode

#: shipped params presets (HER2RadiomicsLib/params); listed here so the panel loads before the
#: library's dependencies are installed
PRESETS = ["default", "cui2023", "yin2024", "zhao2025"]
#: how often the widget polls a background job (ms): smooth progress, negligible load
POLL_MS = 200


class HER2Radiomics(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HER2Radiomics")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        # what the panel embeds: the Segment Editor widget (Segmentations, whose editor uses
        # SubjectHierarchy, as Slicer's own Segment Editor module lists) and prompt markups
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy", "Markups"]
        self.parent.contributors = [
            "Library and feature-engine maintainers (HER2Radiomics project)",
            "Slicer module maintainers (HER2Radiomics project)"]
        self.parent.helpText = _(
            "Breast-ultrasound radiomics for HER2 status (positive / low / zero): CNN auto-mask, "
            "peritumoral rings in mm, radiomics features, model bundles, reports. "
            "<b>Research use only. Not a diagnostic device.</b> "
            "See the <a href='https://github.com/HER2Radiomics/SlicerHER2Radiomics#readme'>"
            "documentation</a>.")
        self.parent.acknowledgementText = _(
            "Feature definitions follow pyradiomics (van Griethuysen et al., Cancer Res 2017), "
            "computed by HER2Radiomics' own engine. The auto-mask CNN was "
            "trained on BUS-BRA (Gomez-Flores et al., Med Phys 2024).")


@parameterNodeWrapper
class HER2RadiomicsParameterNode:
    """Panel state, saved with the scene."""

    # grey (scalar) or colour (vector: RGB PNG/JPEG, colour ultrasound DICOM); the selector
    # lists exactly these two classes (no label maps or tensors, which are subclasses too)
    inputVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode]
    spacingX_mm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    spacingY_mm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    segmentation: vtkMRMLSegmentationNode
    promptMarkups: vtkMRMLMarkupsFiducialNode
    rings_mm: str = "3,5,8"
    annuli: bool = False
    preset: Annotated[str, Choice(PRESETS)] = "default"
    paramsFile: Path
    featureTable: vtkMRMLTableNode
    bundleFile: Path
    site: str = ""
    clinicalText: str = ""
    predictionTable: vtkMRMLTableNode
    readerTable: vtkMRMLTableNode
    reportFile: Path


class HER2RadiomicsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node; never computes."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._bundle = None
        self._prediction = None
        self._job = None
        self._jobFinish = None
        self._timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HER2Radiomics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = HER2RadiomicsLogic()
        # a volume loaded from the DICOM browser has no file of its own: its instance's file
        # holds the ultrasound calibration
        self.logic.dicomFileForInstance = dicomFileForInstance

        # presetComboBox is filled by the parameter node's Choice annotation (connectGui)
        self.ui.reportPathLineEdit.filters = ctkPathFilters()
        from HER2RadiomicsModuleLib.mrml import singletonSegmentEditorNode
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(
            singletonSegmentEditorNode(slicer.mrmlScene))

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndClose)

        self.ui.setSpacingButton.connect("clicked(bool)", self.onSetSpacingButton)
        self.ui.autoSegmentButton.connect("clicked(bool)", self.onAutoSegmentButton)
        self.ui.buildRingsButton.connect("clicked(bool)", self.onBuildRingsButton)
        self.ui.extractButton.connect("clicked(bool)", self.onExtractButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.loadBundleButton.connect("clicked(bool)", self.onLoadBundleButton)
        self.ui.predictButton.connect("clicked(bool)", self.onPredictButton)
        self.ui.compareReadersButton.connect("clicked(bool)", self.onCompareReadersButton)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReportButton)
        self.ui.siteComboBox.connect("currentTextChanged(QString)", self.onSiteChanged)
        self.ui.readerSegmentationsSelector.connect("checkedNodesChanged()", self.updateGUI)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self.onPollJob)
        self.initializeParameterNode()

    def cleanup(self):
        """Module unloaded or reloaded: nothing of this widget may keep running."""
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()      # it would go on calling the old widget after a reload
        if self._job is not None:
            self._job.cancel()
            self._job = None

    def onReload(self):
        """Reload the helper package too (Slicer's reload re-runs only this file), as
        Slicer's WebServer module does, with importlib (``imp`` is gone in Python 3.12)."""
        import importlib.util
        import sys
        packageName = "HER2RadiomicsModuleLib"
        # dependency order: a module is re-executed after the ones it imports
        submoduleNames = ["controller", "mrml", "background", "steps", "core", "dependencies"]
        spec = importlib.util.find_spec(packageName)
        package = importlib.util.module_from_spec(spec)
        sys.modules[packageName] = package
        spec.loader.exec_module(package)
        for submoduleName in submoduleNames:
            fullName = f"{packageName}.{submoduleName}"
            subSpec = importlib.util.find_spec(fullName)
            submodule = importlib.util.module_from_spec(subSpec)
            sys.modules[fullName] = submodule
            subSpec.loader.exec_module(submodule)
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        # as Slicer's Segment Editor module does: shortcuts only while the module is shown
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self):
        # leave no effect active, no shortcut installed and no view observed (they would act
        # on the views while another module is shown)
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.ui.segmentEditorWidget.removeViewObservations()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def onSceneStartClose(self, caller, event):
        # a job working on the closing scene's nodes must stop (its results have nowhere to go)
        if self._job is not None:
            self._job.cancel()
            self._job = None
            self._timer.stop()
            self.ui.progressBar.visible = False
            self.ui.cancelButton.enabled = False
        self._bundle = self._prediction = None
        self.setParameterNode(None)
        # as Slicer's Segment Editor module: forget the segmentation and the views
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()

    def onSceneEndClose(self, caller, event):
        # the singleton segment editor node is new after a close or an import
        from HER2RadiomicsModuleLib.mrml import singletonSegmentEditorNode
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(
            singletonSegmentEditorNode(slicer.mrmlScene))
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # GetFirstNodeByClass("vtkMRMLScalarVolumeNode") may return a label map (a
            # subclass), which the selector does not list: take the first image
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if isImageNode(node):
                    self._parameterNode.inputVolume = node
                    break

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    # -- state -> GUI (the controller decides, the widget displays) ------------------------------

    def panelState(self):
        p = self._parameterNode
        volume, seg = p.inputVolume, p.segmentation
        state = PanelState(volumeSelected=volume is not None,
                           ringsText=p.rings_mm, site=p.site,
                           busy=self._job.name if self._job is not None else "")
        if volume is not None:
            state.spacingKnown = self.logic.spacingInfo(volume).known
        ok, why = self.logic.segmenterAvailable()
        state.segmenterAvailable, state.segmenterProblem = ok, why
        state.torchMissing = not self.logic.torchInstalled()
        state.tumourSegment = seg is not None and self.logic.tumourSegmentId(seg) is not None
        if chosenPath(p.paramsFile) and not Path(p.paramsFile).exists():
            state.paramsValid, state.paramsProblem = False, f"{p.paramsFile} does not exist."
        if self._bundle is not None:
            needs = self.logic.bundleNeeds(self._bundle)
            state.bundleLoaded = True
            state.bundleNeedsRings, state.bundleNeedsSite = needs["rings"], needs["site"]
        state.predictionDone = self._prediction is not None
        state.readerSegmentations = len(self.ui.readerSegmentationsSelector.checkedNodes())
        return state

    def updateGUI(self, caller=None, event=None):
        if self._parameterNode is None:
            return
        state = self.panelState()
        status = stepStatus(state)
        for step, button in (("autoSegment", self.ui.autoSegmentButton),
                             ("rings", self.ui.buildRingsButton),
                             ("features", self.ui.extractButton),
                             ("predict", self.ui.predictButton),
                             ("readerStudy", self.ui.compareReadersButton),
                             ("report", self.ui.saveReportButton)):
            button.enabled = status[step].enabled
            button.toolTip = status[step].reason
        volume = self._parameterNode.inputVolume
        self.ui.setSpacingButton.enabled = volume is not None and not state.busy
        self.ui.loadBundleButton.enabled = bool(chosenPath(self._parameterNode.bundleFile)) \
            and not state.busy
        if volume is not None:
            info = self.logic.spacingInfo(volume)
            self.ui.spacingLabel.text = (
                f"{info.spacing_mm[0]:.4g} x {info.spacing_mm[1]:.4g} mm ({info.source})"
                if info.known else _("unknown: enter it below")) + (
                f"<br><i>{info.note}</i>" if info.note else "")
        else:
            self.ui.spacingLabel.text = _("select an image")
        seg = self._parameterNode.segmentation
        self.ui.segmentEditorWidget.setSegmentationNode(seg)
        self.ui.segmentEditorWidget.setSourceVolumeNode(volume)
        blocked = [f"{k}: {v.reason}" for k, v in status.items() if not v.enabled]
        self.ui.statusLabel.text = blocked[0] if blocked and not state.volumeSelected else ""

    # -- actions ----------------------------------------------------------------------------------

    def _ensureDependencies(self, includeTorch=False):
        """Ask once for the missing packages; PyTorch (several GB) only for the CNN."""
        from HER2RadiomicsModuleLib import dependencies as D
        missing = bool(D.missingRequirements(includeTorch))
        ok = D.ensureDependencies(
            confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, "HER2Radiomics"),
            includeTorch=includeTorch)
        if missing and ok:
            # spacings read (or not) before the install are stale: a calibrated DICOM could
            # not be read then
            self.logic.clearSpacingCache()
            self.updateGUI()
        return ok

    def _outputNode(self, attribute, className, name):
        node = getattr(self._parameterNode, attribute)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass(className, name)
            setattr(self._parameterNode, attribute, node)
        return node

    def onSetSpacingButton(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to set the spacing."), waitCursor=True):
            p = self._parameterNode
            self.logic.setUserSpacing(p.inputVolume, p.spacingX_mm, p.spacingY_mm)
            self.updateGUI()

    def onAutoSegmentButton(self):
        with slicer.util.tryWithErrorDisplay(_("Auto-segmentation failed."), waitCursor=True):
            if not self._ensureDependencies(includeTorch=True):
                return
            p = self._parameterNode
            seg = self._outputNode("segmentation", "vtkMRMLSegmentationNode", "HER2 segmentation")
            seg.CreateDefaultDisplayNodes()
            # the CNN runs in the CLI's process: the GUI stays responsive, Cancel works
            self._startJob(self.logic.startAutoSegment(p.inputVolume, seg, p.promptMarkups,
                                                       runCli=cliRunner()),
                           self._finishAutoSegment)

    def _finishAutoSegment(self, job):
        self.logic.finishAutoSegment(job)
        flags = self.logic.lastSegmentationFlags
        if flags:   # low confidence, colour overlay, noise: say so before anyone uses it
            slicer.util.warningDisplay("\n".join(flags), windowTitle=_("Check the mask"))

    def onBuildRingsButton(self):
        with slicer.util.tryWithErrorDisplay(_("Creating the rings failed."), waitCursor=True):
            if not self._ensureDependencies():
                return
            p = self._parameterNode
            rings = parseRingsText(p.rings_mm)
            _regs, qc = self.logic.buildRings(p.inputVolume, p.segmentation, rings, p.annuli)
            lines = [f"{r.region}: {r.area_mm2:.1f} mm², {r.clipped_pct:.0f}% clipped"
                     + (" ⚠ flagged" if r.flagged else "") for r in qc.itertuples()]
            self.ui.ringsQcLabel.text = "<br>".join(lines)
            self.updateGUI()

    def onExtractButton(self):
        with slicer.util.tryWithErrorDisplay(_("Feature extraction failed."), waitCursor=True):
            if not self._ensureDependencies():
                return
            p = self._parameterNode
            params = chosenPath(p.paramsFile) if chosenPath(p.paramsFile) \
                else p.preset
            table = self._outputNode("featureTable", "vtkMRMLTableNode", "HER2 features")
            self._startJob(self.logic.startFeatureExtraction(p.inputVolume, p.segmentation,
                                                             params, table, runCli=cliRunner()),
                           self._finishExtraction)

    def _finishExtraction(self, job):
        feats = self.logic.finishFeatureExtraction(job)
        slicer.util.showStatusMessage(f"{len(feats)} features extracted", 3000)
        table = self._parameterNode.featureTable
        if table is not None:
            slicer.app.layoutManager().setLayout(
                slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()

    def _startJob(self, job, finish):
        """Poll a background job; ``finish(job)`` runs on the GUI thread when it is done."""
        self._job, self._jobFinish = job, finish
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.cancelButton.enabled = True
        self._timer.start()
        self.updateGUI()
        if job.done:            # made at once (e.g. from features extracted already)
            self.onPollJob()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()

    def onPollJob(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        self.ui.progressBar.value = int(100 * job.progress)
        self.ui.progressBar.format = f"%p% {job.message}"
        if not job.done:
            return
        self._timer.stop()
        finish, self._job, self._jobFinish = self._jobFinish, None, None
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        from HER2RadiomicsLib import Cancelled
        try:
            finish(job)
        except Cancelled:
            slicer.util.showStatusMessage(_("Cancelled: ") + job.name, 3000)
        except Exception as exc:  # noqa: BLE001 -- shown to the user as one line, not a traceback
            slicer.util.errorDisplay(_("Failed: ") + f"{job.name}: {exc}")
        self.updateGUI()

    def onLoadBundleButton(self):
        with slicer.util.tryWithErrorDisplay(_("Loading the model failed."), waitCursor=True):
            if not self._ensureDependencies():
                return
            p = self._parameterNode
            if not chosenPath(p.bundleFile):
                raise RuntimeError("choose a model bundle file first")
            self._bundle = self.logic.loadBundle(chosenPath(p.bundleFile))
            self._prediction = None
            card = self.logic.modelCardText(self._bundle)
            warnings = self.logic.bundleWarnings(self._bundle, p.inputVolume, p.preset)
            self.ui.modelCardLabel.text = card.replace("\n", "<br>") + "".join(
                f"<br><span style='color:#a05a00'>⚠ {w}</span>" for w in warnings)
            sites = self.logic.bundleNeeds(self._bundle)["sites"]
            saved = p.site
            # clearing would report "" as the new site and wipe the saved one: refill silently
            wasBlocked = self.ui.siteComboBox.blockSignals(True)
            try:
                self.ui.siteComboBox.clear()
                for s in [""] + sites:
                    self.ui.siteComboBox.addItem(s)
                self.ui.siteComboBox.currentText = saved if saved in sites else ""
            finally:
                self.ui.siteComboBox.blockSignals(wasBlocked)
            p.site = saved if saved in sites else ""
            self.updateGUI()

    def onSiteChanged(self, text):
        if self._parameterNode is not None:
            self._parameterNode.site = text

    def _clinical(self):
        from HER2RadiomicsLib import parse_clinical
        return parse_clinical(self._parameterNode.clinicalText, "clinical value")

    def onPredictButton(self):
        with slicer.util.tryWithErrorDisplay(_("Prediction failed."), waitCursor=True):
            p = self._parameterNode
            table = self._outputNode("predictionTable", "vtkMRMLTableNode", "HER2 prediction")
            # from the features just extracted (at once), else one extraction in the CLI
            self._startJob(self.logic.startPrediction(
                self._bundle, chosenPath(p.bundleFile), p.inputVolume, p.segmentation, p.site,
                p.clinicalText, table, runCli=cliRunner()), self._finishPrediction)

    def _finishPrediction(self, job):
        pred, report = self.logic.finishPrediction(job)
        self._prediction = pred
        self.ui.predictionLabel.text = predictionHtml(pred)
        self.ui.warningsLabel.text = "<br>".join(f"⚠ {w}" for w in pred.warnings)
        if report:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(report)))

    def onCompareReadersButton(self):
        with slicer.util.tryWithErrorDisplay(_("Reader comparison failed."), waitCursor=True):
            if not self._ensureDependencies():     # the agreement table needs pandas/scipy
                return
            p = self._parameterNode
            table = self._outputNode("readerTable", "vtkMRMLTableNode", "HER2 reader agreement")
            nodes = list(self.ui.readerSegmentationsSelector.checkedNodes())
            self.logic.readerAgreement(p.inputVolume, nodes, table)
            slicer.util.showStatusMessage(_("Reader agreement written to the table"), 3000)

    def onSaveReportButton(self):
        with slicer.util.tryWithErrorDisplay(_("Saving the report failed."), waitCursor=True):
            p = self._parameterNode
            path = chosenPath(p.reportFile) if chosenPath(p.reportFile) \
                else os.path.join(slicer.app.temporaryPath, "HER2Radiomics-report.html")
            table = self._outputNode("predictionTable", "vtkMRMLTableNode", "HER2 prediction")
            self._startJob(self.logic.startPrediction(
                self._bundle, chosenPath(p.bundleFile), p.inputVolume, p.segmentation, p.site,
                p.clinicalText, table, reportPath=path, runCli=cliRunner()),
                self._finishPrediction)


def dicomFileForInstance(uid):
    """The file of a DICOM instance in Slicer's DICOM database (None without a database)."""
    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not database.isOpen:
        return None
    return database.fileForInstance(uid) or None


def cliRunner(waitForCompletion=False):
    """Runs the scripted CLI in its own process (the GUI stays responsive, Cancel works); None
    when the CLI module is not loaded (the Logic then uses a worker thread)."""
    module = getattr(slicer.modules, "her2radiomicscli", None)
    if module is None:
        return None
    return lambda parameters: slicer.cli.run(module, None, parameters,
                                             wait_for_completion=waitForCompletion,
                                             update_display=False)


def ctkPathFilters():
    """ctkPathLineEdit filter for a file to write (any name, writable)."""
    import ctk
    return ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Writable


def predictionHtml(pred):
    """Class, per-class probability bars (text), Rad-score and top contributions."""
    rows = []
    for k, v in pred.probabilities.items():
        bar = "█" * int(round(20 * v)) + "░" * (20 - int(round(20 * v)))
        bold = ("<b>", "</b>") if k == pred.predicted_class else ("", "")
        rows.append(f"{bold[0]}{k}{bold[1]} <tt>{bar}</tt> {v:.2f}")
    text = f"<b>Predicted: {pred.predicted_class}</b><br>" + "<br>".join(rows)
    if pred.rad_score is not None:
        text += f"<br>Rad-score {pred.rad_score:+.3f}"
    for k, v in (getattr(pred, "class_rad_scores", None) or {}).items():
        text += f"<br>Rad-score {k} vs rest {v:+.3f}"
    if pred.nomogram_probability is not None:
        text += f"; nomogram probability {pred.nomogram_probability:.2f}"
    for c in pred.contributions:
        text += f"<br><tt>{c['contribution']:+.3f}</tt> {c['feature']}"
    return text + "<br><i>Research use only. Not a diagnostic device.</i>"


class HER2RadiomicsLogic(ScriptedLoadableModuleLogic, HER2RadiomicsCoreLogic):
    """Slicer's logic class: parameter node handling; every step from HER2RadiomicsCoreLogic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        HER2RadiomicsCoreLogic.__init__(self)

    def getParameterNode(self):
        return HER2RadiomicsParameterNode(super().getParameterNode())


class HER2RadiomicsTest(ScriptedLoadableModuleTest):
    """Self-test on the shipped case and model (``Resources/Testing``, made by
    ``scripts/make_selftest_data.py``): nothing is pip-installed and nothing is trained, so it
    runs on Slicer's test machines.

    The panel part needs only Slicer: the module's GUI, loading, spacing, segments, the step
    rules. The library part (rings, features through the scripted CLI, prediction, report)
    needs the library's packages, which the panel installs on first use; auto-segment needs
    PyTorch too. Where they are missing the test says which steps it did not run and why.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_HER2Radiomics_Panel()
        self.setUp()
        self.test_HER2Radiomics_Library()

    @staticmethod
    def _data():
        return Path(os.path.dirname(os.path.abspath(__file__))) / "Resources" / "Testing"

    def _loadCase(self):
        import json
        data = self._data()
        meta = json.loads((data / "case.json").read_text())
        volume = slicer.util.loadVolume(str(data / "case.nrrd"))
        label = slicer.util.loadLabelVolume(str(data / "case_mask.nrrd"))
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
        seg.CreateDefaultDisplayNodes()
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(label, seg)
        seg.GetSegmentation().GetNthSegment(0).SetName("tumour")
        slicer.mrmlScene.RemoveNode(label)
        return volume, seg, meta

    def test_HER2Radiomics_Panel(self):
        """Slicer only: the GUI, the parameter node, spacing, the tumour segment, step rules."""
        from HER2RadiomicsModuleLib.controller import PanelState, stepStatus
        self.delayDisplay("Panel: loading the shipped case")
        slicer.util.selectModule("HER2Radiomics")
        widget = slicer.modules.her2radiomics.widgetRepresentation().self()
        volume, seg, meta = self._loadCase()
        logic = HER2RadiomicsLogic()
        info = logic.spacingInfo(volume)
        self.assertTrue(info.known)
        for got, want in zip(info.spacing_mm, meta["spacing_mm"]):
            self.assertAlmostEqual(got, want, places=6)
        self.assertIsNotNone(logic.tumourSegmentId(seg))
        node = logic.getParameterNode()
        node.inputVolume, node.segmentation, node.rings_mm = volume, seg, "3,5,8"
        # the widget shows the same (singleton) parameter node
        self.assertEqual(widget._parameterNode.inputVolume.GetID(), volume.GetID())
        status = stepStatus(PanelState(volumeSelected=True, spacingKnown=True,
                                       tumourSegment=True, ringsText="3,5,8"))
        self.assertTrue(status["rings"].enabled and status["features"].enabled)
        self.assertFalse(status["predict"].enabled)                # no model loaded yet
        self.assertFalse(chosenPath(node.bundleFile))              # "." is no choice
        self.delayDisplay("Panel test passed")

    def test_HER2Radiomics_Library(self):
        """Rings, features through the CLI, prediction and report with the shipped bundle.

        On a stock Slicer the library's packages are missing: the test installs them as the
        panel would on first use (wheels only, Slicer's numpy/scipy/SimpleITK pinned), so it
        runs everywhere Slicer can reach PyPI, and fails, naming the package, where it cannot.
        PyTorch (several GB) is not installed by the test: auto-segment runs when it is there.
        """
        from HER2RadiomicsModuleLib import dependencies as D
        missing = D.missingRequirements(includeTorch=False)
        if missing:
            self.delayDisplay("Installing the library's packages: "
                              + ", ".join(sorted(e[0] for e in missing)))
            self.assertTrue(D.ensureDependencies(confirm=lambda text: True))
            self.assertEqual(D.missingRequirements(includeTorch=False), [])
        volume, seg, meta = self._loadCase()
        logic = HER2RadiomicsLogic()
        if logic.torchInstalled():
            self.delayDisplay("Auto-segment (scripted CLI in its own process)")
            cnn = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CNN")
            cnn.CreateDefaultDisplayNodes()
            job = logic.startAutoSegment(volume, cnn, runCli=cliRunner(waitForCompletion=True))
            self.assertTrue(job.wait(300))
            logic.finishAutoSegment(job)
            self.assertIsNotNone(logic.tumourSegmentId(cnn))
        else:
            self.delayDisplay("Auto-segment not run: PyTorch is not installed")
        self.delayDisplay("Rings")
        _regs, qc = logic.buildRings(volume, seg, [3, 5, 8])
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 4)
        self.assertTrue((qc.area_mm2 > 0).all())
        self.delayDisplay("Features (scripted CLI in its own process)")
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode")
        job = logic.startFeatureExtraction(volume, seg, "cui2023", table,
                                           runCli=cliRunner(waitForCompletion=True))
        self.assertTrue(job.wait(300))
        feats = logic.finishFeatureExtraction(job)
        self.assertEqual(table.GetNumberOfRows(), len(feats))
        direct = logic.extractFeatures(volume, seg, "cui2023")       # same regions in process
        for key, value in direct.items():
            self.assertAlmostEqual(feats[key], value, delta=1e-9 * max(1.0, abs(value)))
        self.delayDisplay("Predict with the shipped bundle (scripted CLI)")
        bundlePath = self._data() / "model_bundle.zip"
        bundle = logic.loadBundle(str(bundlePath))
        clinicalText = ", ".join(f"{k}={v}" for k, v in meta["clinical"].items())
        job = logic.startPrediction(bundle, bundlePath, volume, seg, meta["site"], clinicalText,
                                    runCli=cliRunner(waitForCompletion=True))
        self.assertTrue(job.wait(300))
        pred, _ = logic.finishPrediction(job)
        self.assertAlmostEqual(sum(pred.probabilities.values()), 1.0, places=6)
        direct = logic.predict(bundle, volume, seg, site=meta["site"], clinical=meta["clinical"])
        for k, v in direct.probabilities.items():
            self.assertAlmostEqual(pred.probabilities[k], v, places=9)
        self.delayDisplay("Report (from the prediction's features: no second extraction)")
        import tempfile
        with tempfile.TemporaryDirectory(prefix="HER2Radiomics-") as folder:   # removed after
            out = logic.saveReport(bundle, volume, seg, Path(folder) / "case.html",
                                   meta["site"], meta["clinical"])
            self.assertIn("Research use only", Path(out).read_text())
        self.delayDisplay("Library test passed")
