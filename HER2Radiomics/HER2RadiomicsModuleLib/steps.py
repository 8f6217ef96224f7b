"""The panel's CNN, prediction and report steps, in process and through the scripted CLI.

A mixin of :class:`~HER2RadiomicsModuleLib.core.HER2RadiomicsCoreLogic` (which supplies
``loadedImage``, ``tumourMask``, ``maskSource``, ``memory`` and the temporary-node helpers).

* ``autoSegment`` / ``predict`` / ``saveReport`` run in process (the tests; the self-test);
* ``startAutoSegment`` / ``startPrediction`` hand the long work to the CLI's process and are
  finished on the GUI thread by ``finishAutoSegment`` / ``finishPrediction``; a prediction or
  an HTML report whose features were just extracted for the same pixels is made at once in
  process, without a second extraction (:class:`~HER2RadiomicsModuleLib.background.
  FeatureMemory`).

Library names come from its public face (``from HER2RadiomicsLib import ...``) inside the
methods: Slicer loads this module before the library's dependencies (numpy, SimpleITK,
scikit-learn) are installed on first use (:mod:`HER2RadiomicsModuleLib.dependencies`).
"""
from .background import CliJob, bundleRegions, readJson, removeFiles, temporaryFile

#: segment tag recording how the tumour segment was made (CNN, reader)
SOURCE_TAG = "HER2Radiomics.source"


class _Finished:
    """A job that was done at once (in process, from features already extracted)."""

    done, progress, message, kind = True, 1.0, "", "instant"

    def __init__(self, name, result):
        self.name, self.result = name, result

    def cancel(self):
        pass

    def wait(self, timeout=None):
        return True


class LongSteps:
    """CNN, prediction and report for the panel (see the module docstring)."""

    # -- CNN -----------------------------------------------------------------------------------

    def autoSegment(self, volumeNode, segmentationNode, markupsNode=None, segmenter=None):
        """CNN auto-mask into the ``tumour`` segment (created or replaced); returns its id.
        In process: the panel runs :meth:`startAutoSegment` instead."""
        from HER2RadiomicsLib import HER2Error, auto_mask, check_ultrasound
        from . import mrml as M
        loaded = self.loadedImage(volumeNode)
        try:
            flags = check_ultrasound(loaded)
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        kind, values = M.markupsToPrompt(markupsNode, volumeNode)
        try:
            res = auto_mask(loaded, segmenter=segmenter or self.segmenter(),
                            box=values if kind == "box" else None,
                            click=values if kind == "click" else None,
                            no_lesion="the CNN found no lesion: place a point inside it (or two "
                                      "points around it) in the prompt markups, or draw it")
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        return self._cnnSegment(res.mask, segmentationNode, volumeNode, kind,
                                res.info.get("confidence"),
                                flags + list(res.info.get("flags", [])))

    def _cnnSegment(self, mask, segmentationNode, volumeNode, kind, confidence, flags):
        from . import mrml as M
        segmentId = M.sitkToSegment(mask, segmentationNode, volumeNode, "tumour",
                                    M.regionColor(0), region="tumor")
        segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(
            SOURCE_TAG, "CNN auto-mask" + (f" ({kind} prompt)" if kind else "")
            + (f", confidence {confidence:.2f}" if confidence is not None else ""))
        self.lastSegmentationFlags = list(flags)
        return segmentId

    def startAutoSegment(self, volumeNode, segmentationNode, markupsNode=None, runCli=None):
        """The CNN in the CLI's process (progress, Cancel); finished by
        :meth:`finishAutoSegment`. Without ``runCli`` it runs here, at once."""
        from . import mrml as M
        if runCli is None:
            return _Finished("auto-segmentation", self.autoSegment(
                volumeNode, segmentationNode, markupsNode))
        loaded = self.loadedImage(volumeNode)
        kind, values = M.markupsToPrompt(markupsNode, volumeNode)
        temporary = self._temporaryVolumes(volumeNode, ((loaded.image, "image", False),))
        scene = volumeNode.GetScene()
        maskNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode",
                                           "HER2Radiomics CLI mask")
        maskNode.SetHideFromEditors(True)
        temporary.append(maskNode)
        details = temporaryFile(".json")
        parameters = {"inputVolume": temporary[0], "outputMask": maskNode,
                      "outputJson": details,
                      "prompt": f"{kind}:{','.join(f'{v:.2f}' for v in values)}" if kind else ""}
        cliNode = self._runCli(runCli, parameters, temporary)
        return CliJob("auto-segmentation", cliNode, temporaryNodes=temporary, kind="segment",
                      files=[details], context={"volume": volumeNode, "kind": kind,
                                                "segmentation": segmentationNode,
                                                "mask": maskNode, "details": details})

    def finishAutoSegment(self, job):
        """On the GUI thread: the CLI's mask becomes the ``tumour`` segment; returns its id."""
        from . import mrml as M
        if isinstance(job, _Finished):
            return job.result
        ctx = job.context
        try:
            job.check("auto-segmentation")
            info = readJson(ctx["details"]).get("cnn") or {}
            mask = M.volumeNodeToSitk(ctx["mask"])
            return self._cnnSegment(mask, ctx["segmentation"], ctx["volume"], ctx["kind"],
                                    info.get("confidence"), info.get("flags", []))
        finally:
            self._removeNodes(job.temporaryNodes + [job.cliNode])
            removeFiles(job.files)

    # -- prediction and report ---------------------------------------------------------------

    def _extracted(self, bundle, loaded, mask):
        """The bundle's features for these pixels if extracted already, else None."""
        from HER2RadiomicsLib import HER2Error
        try:
            regions = bundleRegions(bundle, loaded, mask)
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        return regions, self.memory.recall(loaded, regions, bundle.meta["params_yaml"])

    def canPredictNow(self, bundle, volumeNode, segmentationNode):
        """True when the bundle's features of this tumour were extracted already (by the
        panel's extraction or an earlier prediction): the prediction takes milliseconds."""
        loaded = self.loadedImage(volumeNode)
        mask = self.tumourMask(volumeNode, segmentationNode)
        return self._extracted(bundle, loaded, mask)[1] is not None

    def predictCase(self, bundle, volumeNode, segmentationNode, site=None, clinical=None):
        """The bundle's prediction for the tumour segment, with the image, regions and features
        it was made from (what a report draws). Features extracted already for these pixels
        are used, not extracted again; the ones extracted here are remembered."""
        from HER2RadiomicsLib import HER2Error, predict_case
        loaded = self.loadedImage(volumeNode)
        mask = self.tumourMask(volumeNode, segmentationNode)
        regions, feats = self._extracted(bundle, loaded, mask)
        try:
            result = predict_case(bundle, loaded, mask, site=site or None,
                                  clinical=clinical or None, case_id=volumeNode.GetName(),
                                  features=feats)
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        self.memory.remember(loaded, regions, bundle.meta["params_yaml"], result.features)
        return result

    def predict(self, bundle, volumeNode, segmentationNode, site=None, clinical=None,
                tableNode=None, result=None):
        """Predict with the bundle from the tumour segment; fills ``tableNode`` if given.
        ``result`` (from :meth:`predictCase`) shows a prediction made already."""
        import copy
        result = result or self.predictCase(bundle, volumeNode, segmentationNode, site,
                                            clinical)
        pred = copy.deepcopy(result.prediction)
        pred.qc = {"mask_source": self.maskSource(segmentationNode), **pred.qc}
        self.predictionTable(pred, tableNode)
        return pred

    @staticmethod
    def predictionTable(pred, tableNode):
        """The prediction as an item/value table (class, probabilities, Rad-score, QC)."""
        if tableNode is None:
            return
        import pandas as pd
        from . import mrml as M
        rows = [{"item": "predicted class", "value": pred.predicted_class}]
        rows += [{"item": f"P({k})", "value": f"{v:.4f}"} for k, v in pred.probabilities.items()]
        if pred.rad_score is not None:
            rows.append({"item": "Rad-score", "value": f"{pred.rad_score:+.4f}"})
        if pred.nomogram_probability is not None:
            rows.append({"item": "nomogram probability",
                         "value": f"{pred.nomogram_probability:.4f}"})
        rows += [{"item": f"contribution: {c['feature']}", "value": f"{c['contribution']:+.4f}"}
                 for c in pred.contributions]
        rows += [{"item": f"QC: {k}", "value": str(v)} for k, v in pred.qc.items()]
        rows += [{"item": "warning", "value": w} for w in pred.warnings]
        M.dataFrameToTableNode(pd.DataFrame(rows), tableNode)

    def saveReport(self, bundle, volumeNode, segmentationNode, path, site=None, clinical=None,
                   result=None):
        """Write the per-patient HTML or PDF report (same code as ``her2radiomics report``).
        ``result`` (from :meth:`predictCase`) is drawn as is; without it the prediction is made
        from features extracted already when there are some for these pixels."""
        from HER2RadiomicsLib import HER2Error, write_case_report
        result = result or self.predictCase(bundle, volumeNode, segmentationNode, site,
                                            clinical)
        try:
            out, _ = write_case_report(bundle, result, path,
                                       mask_source=self.maskSource(segmentationNode))
        except HER2Error as exc:
            raise ValueError(str(exc)) from None
        return out

    def startPrediction(self, bundle, bundlePath, volumeNode, segmentationNode, site=None,
                        clinicalText="", tableNode=None, reportPath=None, runCli=None):
        """Predict (and, with ``reportPath``, write the report) off the GUI thread.

        When the bundle's features of this tumour were extracted already, the prediction (and
        an HTML report) is made at once in process; otherwise the CLI extracts them once in
        its own process for the prediction, the features and the report together. Finished by
        :meth:`finishPrediction`.
        """
        from HER2RadiomicsLib import parse_clinical
        clinical = parse_clinical(clinicalText, "clinical value") if clinicalText else None
        html = reportPath is not None and str(reportPath).lower().endswith((".html", ".htm"))
        if runCli is None or (self.canPredictNow(bundle, volumeNode, segmentationNode)
                              and (reportPath is None or html)):
            # one result for the prediction and the report: nothing is extracted twice
            result = self.predictCase(bundle, volumeNode, segmentationNode, site, clinical)
            pred = self.predict(bundle, volumeNode, segmentationNode, tableNode=tableNode,
                                result=result)
            out = self.saveReport(bundle, volumeNode, segmentationNode, reportPath,
                                  result=result) if reportPath else None
            return _Finished("prediction", (pred, out))
        loaded = self.loadedImage(volumeNode)
        mask = self.tumourMask(volumeNode, segmentationNode)
        temporary = self._temporaryVolumes(volumeNode, ((loaded.image, "image", False),
                                                        (mask, "tumour", True)))
        details = temporaryFile(".json")
        parameters = {"inputVolume": temporary[0], "inputLabel": temporary[1],
                      "bundle": str(bundlePath), "site": site or "",
                      "clinical": clinicalText or "", "caseId": volumeNode.GetName(),
                      "spacingUnknown": not loaded.spacing_known, "outputJson": details}
        if reportPath:
            parameters["outputReport"] = str(reportPath)
        cliNode = self._runCli(runCli, parameters, temporary)
        return CliJob("prediction", cliNode, temporaryNodes=temporary, kind="predict",
                      files=[details], context={
                          "bundle": bundle, "loaded": loaded, "mask": mask,
                          "details": details, "table": tableNode, "report": reportPath,
                          "source": self.maskSource(segmentationNode)})

    def finishPrediction(self, job):
        """On the GUI thread: ``(prediction, report path or None)``; the features the CLI
        extracted are kept for the next prediction or report on the same pixels."""
        from HER2RadiomicsLib import Prediction
        if isinstance(job, _Finished):
            return job.result
        ctx = job.context
        try:
            job.check("prediction")
            details = readJson(ctx["details"])
        finally:
            self._removeNodes(job.temporaryNodes + [job.cliNode])
            removeFiles(job.files)
        bundle = ctx["bundle"]
        regions, _ = self._extracted(bundle, ctx["loaded"], ctx["mask"])
        self.memory.remember(ctx["loaded"], regions, bundle.meta["params_yaml"],
                             details.get("features") or {})
        pred = Prediction(**details["prediction"])
        pred.qc = {"mask_source": ctx["source"], **pred.qc}
        self.predictionTable(pred, ctx["table"])
        return pred, ctx["report"]
