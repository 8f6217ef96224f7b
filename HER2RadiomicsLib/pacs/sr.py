"""DICOM SR (Comprehensive 3D SR, TID 1500 Measurement Report) of one case's features and
prediction.

One measurement group per region (TID 1411) referencing its segment in the case's DICOM SEG,
holding every feature value of that region (coded as :mod:`.codes` says; a value that is not a
number, an empty cell in features.csv, is left out); with a model, one more group
(TID 1501) holding the prediction: the predicted class (qualitative evaluation), one probability
per class, the Rad-score when the model has one, and the model's name, version and digest as
its algorithm identification. Values are stored as Floating Point Value (FD) beside the
Numeric Value string, so they read back exactly as features.csv holds them.

No network code here; built by highdicom, nothing hand-encoded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError
from . import codes as fc
from .seg import _code, _source_for_highdicom, _uid_of, derived_uid

SR_SERIES_DESCRIPTION = "HER2Radiomics features and prediction"
#: Private codes of the prediction group (scheme 99H2R, documented in docs/pacs.md).
PREDICTION = ("prediction", fc.PRIVATE, "HER2Radiomics prediction")
PREDICTED_CLASS = ("predicted-class", fc.PRIVATE, "Predicted class")
RAD_SCORE = ("rad-score", fc.PRIVATE, "Rad-score")


@dataclass
class ModelPrediction:
    """What the SR records of a prediction (plain values; no dependency on the model code).

    Attributes
    ----------
    predicted_class : str
    probabilities : dict
        ``{class: probability}``.
    model_name, model_version, model_digest : str
        The bundle's recipe name, the library version that trained it and its integrity
        digest (sha256).
    rad_score : float, optional
    """

    predicted_class: str
    probabilities: dict
    model_name: str
    model_version: str
    model_digest: str
    rad_score: float | None = None


@dataclass
class SRContent:
    """What :func:`read_sr` finds in a report."""

    features: dict = field(default_factory=dict)      # column -> value
    segments: dict = field(default_factory=dict)      # region -> (SEG SOP UID, segment number)
    prediction: dict | None = None


def _hd():
    from .seg import _hd as hd
    hd = hd()
    import highdicom.coding_schemes  # noqa: F401  (not imported by highdicom's __init__)
    return hd


def _class_code(name: str):
    return _code(fc.private_value(f"class:{name}"), fc.PRIVATE, str(name)[:64])


def _probability_code(name: str):
    return _code(fc.private_value(f"probability:{name}"), fc.PRIVATE,
                 f"Probability of {name}"[:64])


def _region_groups(hd, image, seg, features: dict, uid_root: str, limit=None):
    groups = []
    src = hd.sr.SourceImageForSegmentation.from_source_image(image)
    for item in seg.SegmentSequence:
        region = str(item.SegmentLabel)
        number = int(item.SegmentNumber)
        measurements = []
        for column, value in features.items():
            reg, _, key = column.partition("__")
            if reg != region or value is None or not math.isfinite(float(value)):
                continue
            (cv, cs, cm), (mv, ms, mm), (uv, um) = fc.feature_code(key)
            measurements.append(hd.sr.Measurement(
                name=_code(cv, cs, cm), value=float(value), unit=_code(uv, "UCUM", um),
                method=_code(mv, ms, mm[:64])))
            if limit and len(measurements) >= limit:
                break
        if not measurements:
            continue
        # TID 1411 with a Referenced Segment (segment number, no frame number), as
        # QuantitativeReporting reads it; TID 1410's Referenced Segmentation Frame would carry
        # both, which the SOP reference macro forbids (dciodvfy: "Shall not be present when
        # ReferencedFrameNumber is present")
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
            segment_number=number, source_images=[src])
        finding = item.SegmentedPropertyTypeCodeSequence[0]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derived_uid(uid_root, "region", region), identifier=region),
            referenced_segment=ref, measurements=measurements,
            finding_type=_code(finding.CodeValue, finding.CodingSchemeDesignator,
                               finding.CodeMeaning)))
    return groups


def _prediction_group(hd, pred: ModelPrediction, uid_root: str):
    measurements = [hd.sr.Measurement(name=_probability_code(c), value=float(p),
                                      unit=_code(*fc.NO_UNITS[:1], "UCUM", fc.NO_UNITS[1]))
                    for c, p in pred.probabilities.items()]
    if pred.rad_score is not None and math.isfinite(float(pred.rad_score)):
        measurements.append(hd.sr.Measurement(name=_code(*RAD_SCORE), value=float(pred.rad_score),
                                              unit=_code("1", "UCUM", "no units")))
    algorithm = hd.sr.AlgorithmIdentification(
        name=str(pred.model_name)[:64] or "model", version=str(pred.model_version)[:64] or "0",
        parameters=[f"sha256:{pred.model_digest}"])
    evaluation = hd.sr.QualitativeEvaluation(name=_code(*PREDICTED_CLASS),
                                             value=_class_code(pred.predicted_class))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(uid_root, "prediction"), identifier="prediction"),
        finding_type=_code(*PREDICTION), algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=[evaluation])


def measurement_report(image, seg, features: dict, *, uid_root: str,
                       prediction: ModelPrediction | None = None, software_version: str = "0",
                       limit: int | None = None):
    """The TID 1500 content tree of :func:`build_sr` (``limit``: at most that many values per
    region group)."""
    hd = _hd()
    groups = _region_groups(hd, image, seg, features, uid_root, limit)
    if prediction is not None:
        groups.append(_prediction_group(hd, prediction, uid_root))
    if not groups:
        raise InputError(f"image {_uid_of(image)}: no feature names a region of SEG "
                         f"{_uid_of(seg)}; nothing to report")
    observer = hd.sr.ObserverContext(
        observer_type=_code("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("HER2RadiomicsLib", software_version), name="HER2RadiomicsLib",
            manufacturer_name="HER2Radiomics", model_name="HER2RadiomicsLib"))
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups)


def coding_schemes(hd) -> list:
    return [
        hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=fc.IBSI_SCHEME, name="Image Biomarker Standardisation Initiative",
            responsible_organization="IBSI"),
        hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=fc.PRIVATE, name="HER2Radiomics features and predictions",
            responsible_organization="HER2Radiomics")]


def build_sr(image, seg, features: dict, *, series_uid: str, sop_uid: str,
             prediction: ModelPrediction | None = None, series_number: int = 901,
             software_version: str = "0"):
    """A TID 1500 measurement report of one case.

    Parameters
    ----------
    image : pydicom.Dataset
        The ultrasound image the features were extracted from.
    seg : pydicom.Dataset
        The case's SEG (from :func:`.seg.build_seg`); each segment's label names its region.
    features : dict
        ``{"<region>__<feature key>": value}``, as one row of features.csv.
    series_uid, sop_uid : str
        The report's UIDs (the caller derives them from the content to stay idempotent).
    prediction : ModelPrediction, optional

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        A pydicom Dataset; ``.save_as(path)`` writes it.
    """
    hd = _hd()
    kw = {"uid_root": sop_uid, "prediction": prediction, "software_version": software_version}
    full = measurement_report(image, seg, features, **kw)
    # highdicom's document constructor deep-copies the content tree and searches all of it for
    # the instances it references: 12 of 19 s for the default params' 4,518 values. The same
    # document is built around a tree with one value per group (the same groups, so the same
    # references and evidence) and the full tree put in its place: 19 s -> 6 s per case
    # (Testing/test_pacs_sr.py checks the result equals the constructor's own).
    light = measurement_report(image, seg, features, limit=1, **kw)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[_source_for_highdicom(image), seg], content=light[0],
        series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=sop_uid,
        instance_number=1, manufacturer="HER2Radiomics",
        series_description=SR_SERIES_DESCRIPTION, coding_schemes=coding_schemes(hd))
    sr.ContentSequence = full[0].ContentSequence
    return sr


def _code_of(item):
    c = item.ConceptNameCodeSequence[0]
    value = getattr(c, "CodeValue", None) or getattr(c, "LongCodeValue", "")
    return str(value), str(c.CodingSchemeDesignator), str(c.CodeMeaning)


def _items(seq, concept: str):
    return [it for it in seq or []
            if getattr(it, "ConceptNameCodeSequence", None) and _code_of(it)[0] == concept]


def _value_code(item):
    c = item.ConceptCodeSequence[0]
    return str(getattr(c, "CodeValue", None) or getattr(c, "LongCodeValue", "")), \
        str(c.CodeMeaning)


def _num(item) -> float:
    mv = item.MeasuredValueSequence[0]
    fp = getattr(mv, "FloatingPointValue", None)
    return float(fp) if fp is not None else float(mv.NumericValue)


def read_sr(ds) -> SRContent:
    """Features, segment references and prediction of a report :func:`build_sr` wrote,
    read from the content tree with pydicom (not through highdicom)."""
    out = SRContent()
    containers = _items(ds.ContentSequence, "126010")          # Imaging Measurements
    for group in (containers[0].ContentSequence if containers else []):
        tid = _items(group.ContentSequence, "112039")           # Tracking Identifier
        name = str(tid[0].TextValue) if tid else ""
        if name == "prediction":
            out.prediction = _read_prediction(group)
            continue
        for ref in _items(group.ContentSequence, "121191"):     # Referenced Segment
            sop = ref.ReferencedSOPSequence[0]
            out.segments[name] = (str(sop.ReferencedSOPInstanceUID),
                                  int(sop.ReferencedSegmentNumber))
        for item in group.ContentSequence:
            if getattr(item, "ValueType", "") != "NUM":
                continue
            method = _items(getattr(item, "ContentSequence", []), "370129005")
            image_type = _value_code(method[0])[1] if method else "original image"
            out.features[f"{name}__{fc.feature_key(_code_of(item), image_type)}"] = _num(item)
    return out


def _read_prediction(group) -> dict:
    probs, rad = {}, None
    for item in group.ContentSequence:
        if getattr(item, "ValueType", "") != "NUM":
            continue
        value, _, meaning = _code_of(item)
        if meaning.startswith("Probability of "):
            probs[meaning[len("Probability of "):]] = _num(item)
        elif value == RAD_SCORE[0]:
            rad = _num(item)
    cls = _items(group.ContentSequence, PREDICTED_CLASS[0])
    model = {}                     # TID 4019: name, version, parameters are siblings
    for alg in _items(group.ContentSequence, "111001"):          # Algorithm Name
        model["name"] = str(alg.TextValue)
    for ver in _items(group.ContentSequence, "111003"):          # Algorithm Version
        model["version"] = str(ver.TextValue)
    for par in _items(group.ContentSequence, "111002"):          # Algorithm Parameters
        if str(par.TextValue).startswith("sha256:"):
            model["digest"] = str(par.TextValue)[len("sha256:"):]
    return {"predicted_class": _value_code(cls[0])[1] if cls else None,
            "probabilities": probs, "rad_score": rad, "model": model}
