"""DICOM Segmentation (SEG) objects of a 2D ultrasound image: read a lesion contour, write the
lesion and its peritumoral rings.

No network code here (see :mod:`.dicomweb`); everything DICOM is built and parsed by highdicom
and pydicom, nothing is hand-encoded.

Segments written
----------------
* the lesion (``tumor``): category *Morphologically abnormal structure* (SCT 49755003), type
  *Mass* (SCT 4147007); algorithm type ``MANUAL`` for a reader's contour, ``AUTOMATIC`` or
  ``SEMIAUTOMATIC`` for the CNN's, with the algorithm named (family *Artificial
  Intelligence*);
* each other region (``peri_0-3mm``, ``tumor+peri_5mm``, ...): category and type *Tissue*
  (SCT 85756007), anatomic region *Breast* (SCT 76752008), algorithm type ``AUTOMATIC``,
  family *Morphological operations*, named ``HER2Radiomics rings`` with the region's
  distances as a parameter.

Patient geometry of the SEG
---------------------------
A 2D ultrasound image has no patient geometry (no Frame of Reference, no Image Position or
Orientation (Patient)), and a SEG of it needs none in DICOM: it is tied to the image by its
source-image references, and our reader (:func:`read_contour`, :func:`read_segments`) goes by
those. dcmqi, which 3D Slicer's QuantitativeReporting uses to load a SEG
(``segimage2itkimage``), refuses a SEG without plane orientation and position. So
:func:`build_seg` gives the SEG a *nominal* geometry, the one 3D Slicer gives the image when it
loads it: origin (0, 0, 0), identity orientation (a row runs along +x, a column along +y; LPS),
pixel spacing from the image's calibration (:func:`nominal_spacing`: Pixel Spacing, else the one
calibration of its Sequence of Ultrasound Regions, cm -> mm, else 1 mm, Slicer's placeholder)
and a slice thickness of :data:`NOMINAL_SLICE_THICKNESS_MM`. The label images dcmqi makes then
overlay the image in Slicer pixel for pixel. The geometry is written through highdicom (on the
copy of the image's header it is given), with a Frame of Reference of the SEG's own
(:func:`frame_of_reference_uid`: derived from the image's SOP Instance UID, so a rerun writes
the same geometry) and an empty Position Reference Indicator (no anatomical reference). DICOM
(PS3.3, Segmentation IOD) allows this: the Frame of Reference module is conditional, and with it
present the SEG carries the Plane Position and Plane Orientation (Patient) and Pixel Measures
functional groups, as here (dciodvfy: no error). The positions are nominal, not anatomical: they
place the SEG on its image, nothing more. SEGs written before (no geometry) still read.

Example
-------
>>> from HER2RadiomicsLib.pacs import seg as dseg                              # doctest: +SKIP
>>> ds = dseg.build_seg(image_ds, {"tumor": mask, "peri_0-3mm": ring},         # doctest: +SKIP
...                     dseg.Algorithm("MANUAL"), series_uid=s, sop_uid=u)
>>> contour = dseg.read_contour(ds, image_ds)        # the lesion, pixel for pixel  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
import math
import uuid
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: The region name of the lesion segment (the library's region name for the tumour).
LESION = "tumor"
#: Algorithm types a segment may carry (DICOM's Segment Algorithm Type, 0062,0008).
ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Segmented property types read as "the lesion" in a SEG from another tool (SNOMED CT):
#: Mass, Neoplasm, Lesion.
LESION_TYPE_CODES = {"4147007", "108369006", "52988006"}
#: Type-2 Patient and General Study attributes highdicom copies from the source image: an
#: image that lacks one (the synthetic cohort's, many exports) gets it empty on a copy, which
#: DICOM allows for an unknown type-2 value; the image itself is never changed.
_TYPE2_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                 "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                 "ReferringPhysicianName")
#: Slice thickness (mm) of the nominal geometry: a 2D image has none, and 1 mm is the third
#: spacing ITK (and so 3D Slicer) gives a single slice, so dcmqi's label image matches it.
NOMINAL_SLICE_THICKNESS_MM = 1.0
#: Pixel spacing (mm) when the image states no calibration: 3D Slicer's placeholder then.
UNKNOWN_SPACING_MM = 1.0
#: Identity orientation (LPS): a row runs along +x, a column along +y, as Slicer places the image.
_IDENTITY_ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@dataclass(frozen=True)
class Algorithm:
    """Who or what drew a segment.

    Attributes
    ----------
    kind : {"MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"}
        DICOM's Segment Algorithm Type: a reader's contour is MANUAL; the CNN's is AUTOMATIC,
        or SEMIAUTOMATIC when a reader prompted it (box, click) or edited it.
    name : str
        The algorithm's name (required unless MANUAL), e.g. ``"HER2Radiomics CNN busbra_unet"``.
    version : str
        Its version (for a model: the weights' digest prefix, say).
    """

    kind: str = "MANUAL"
    name: str = ""
    version: str = ""

    def __post_init__(self):
        if self.kind not in ALGORITHM_TYPES:
            raise InputError(f"segment algorithm type {self.kind!r}: must be one of "
                             f"{', '.join(ALGORITHM_TYPES)}")
        if self.kind != "MANUAL" and not self.name:
            raise InputError(f"a {self.kind} segment needs its algorithm's name")


@dataclass
class SegContour:
    """The lesion contour a SEG holds for one image.

    Attributes
    ----------
    mask : numpy.ndarray
        bool, (rows, columns) of the image: True inside the lesion.
    label : str
        The segment's label.
    segment_number : int
    algorithm : Algorithm
        Who drew it (read from the segment).
    sop_uid, series_uid : str
        The SEG's SOP Instance UID and Series Instance UID.
    content : str
        The SEG's ContentDate + ContentTime (``YYYYMMDDHHMMSS...``; '' when absent), which
        orders the SEGs of an image (the newest is used).
    """

    mask: np.ndarray
    label: str
    segment_number: int
    algorithm: Algorithm
    sop_uid: str
    series_uid: str
    content: str = ""


def _hd():
    # highdicom is the optional [pacs] extra: a clear line instead of an ImportError
    try:
        import highdicom
    except ImportError as exc:
        raise InputError("DICOM SEG/SR needs highdicom: pip install "
                         "'HER2RadiomicsLib[pacs]'") from exc
    return highdicom


def derived_uid(*parts) -> str:
    """A UID that depends only on ``parts``: ``2.25.`` + a name-based (version 5) UUID as an
    integer (DICOM PS3.5 B.2). pydicom's ``generate_uid(prefix=None)`` ignores its entropy
    sources and is random, so it cannot make a second run find the first one's objects."""
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'her2radiomics:' + name).int}"


def _uid_of(ds) -> str:
    return str(getattr(ds, "SOPInstanceUID", "") or "")


def referenced_images(seg) -> set:
    """SOP Instance UIDs of the images a SEG was derived from (per-frame source references
    and the Referenced Series Sequence)."""
    out = set()
    for item in getattr(seg, "ReferencedSeriesSequence", []) or []:
        for ref in getattr(item, "ReferencedInstanceSequence", []) or []:
            out.add(str(ref.ReferencedSOPInstanceUID))
    for fg in getattr(seg, "PerFrameFunctionalGroupsSequence", []) or []:
        for der in getattr(fg, "DerivationImageSequence", []) or []:
            for src in getattr(der, "SourceImageSequence", []) or []:
                out.add(str(src.ReferencedSOPInstanceUID))
    return out


def is_seg(ds) -> bool:
    return str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS


#: The Content Label of a SEG holding the lesion and its rings (a result of this library);
#: a SEG of the lesion alone (a reader's contour) is labelled LESION.
DERIVED_LABEL = "LESION_RINGS"


def is_derived(ds) -> bool:
    """Whether ``ds`` is a SEG of a lesion and its rings that this library wrote (not a
    contour someone drew)."""
    return (is_seg(ds) and str(getattr(ds, "Manufacturer", "")) == "HER2Radiomics"
            and str(getattr(ds, "ContentLabel", "")) == DERIVED_LABEL)


def _check_single_frame(image) -> None:
    frames = int(getattr(image, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"image {_uid_of(image)}: a multi-frame (cine) image of {frames} "
                         "frames; DICOM SEG of one frame of a cine loop is not supported yet")


def _segment_algorithm(item) -> Algorithm:
    import pydicom
    # a vendor's over-long name (LO holds 64 characters) is cut to 64 once, here, instead of
    # pydicom warning at each element it is read from and copied into
    with pydicom.config.disable_value_validation():
        kind = str(getattr(item, "SegmentAlgorithmType", "MANUAL") or "MANUAL")
        kind = kind if kind in ALGORITHM_TYPES else "MANUAL"
        name = str(getattr(item, "SegmentAlgorithmName", "") or "")
        version = ""
        for alg in getattr(item, "SegmentationAlgorithmIdentificationSequence", []) or []:
            name = name or str(getattr(alg, "AlgorithmName", "") or "")
            version = str(getattr(alg, "AlgorithmVersion", "") or "")
    if kind != "MANUAL" and not name:
        name = "unnamed algorithm"
    return Algorithm(kind, name[:64], version[:64])


def _without_partial_measures(ds):
    """A copy of ``ds`` without Pixel Measures items that lack Slice Thickness.

    highdicom writes such an item itself for a 2D image that has Pixel Spacing (dciodvfy
    accepts it: the thickness is type 1C), yet its own reader refuses it. The lesion is read by
    source image, not by position, so the measures are not needed to read it back.
    """
    ds = copy.deepcopy(ds)          # a plain pydicom Dataset: the caller's stays as it was
    groups = list(getattr(ds, "SharedFunctionalGroupsSequence", []) or [])
    groups += list(getattr(ds, "PerFrameFunctionalGroupsSequence", []) or [])
    for item in groups:
        measures = getattr(item, "PixelMeasuresSequence", None)
        if measures and any("SliceThickness" not in m for m in measures):
            del item.PixelMeasuresSequence
    return ds


def _segment_pixels(seg, image, numbers) -> dict:
    """``{segment number: bool (rows, cols)}`` of ``seg`` for ``image`` (highdicom decodes)."""
    hd = _hd()
    uid = _uid_of(image)
    if uid not in referenced_images(seg):
        raise InputError(f"SEG {_uid_of(seg)}: references image(s) "
                         f"{', '.join(sorted(referenced_images(seg))) or 'none'}, not image "
                         f"{uid}")
    _check_single_frame(image)
    try:
        # one highdicom built is used as it is (highdicom 0.22 cannot deep-copy it)
        parsed = (seg if isinstance(seg, hd.seg.Segmentation)
                  else hd.seg.Segmentation.from_dataset(_without_partial_measures(seg),
                                                        copy=False))
        arr = parsed.get_pixels_by_source_instance(
            [uid], segment_numbers=list(numbers), combine_segments=False,
            ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    except (ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise InputError(f"SEG {_uid_of(seg)}: cannot decode its segments for image {uid}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from exc
    shape = (int(image.Rows), int(image.Columns))
    if tuple(arr.shape[1:3]) != shape:
        raise InputError(f"SEG {_uid_of(seg)}: its frames are {arr.shape[1]}x{arr.shape[2]} "
                         f"pixels, image {uid} is {shape[0]}x{shape[1]}")
    return {n: arr[0, :, :, i] > 0 for i, n in enumerate(numbers)}


def _segments(seg) -> list:
    items = list(getattr(seg, "SegmentSequence", []) or [])
    if not items:
        raise InputError(f"SEG {_uid_of(seg)}: has no segments")
    return items


def _lesion_item(seg):
    """The lesion segment: ours (label ``tumor``), else one coded Mass/Neoplasm/Lesion, else
    the only segment."""
    items = _segments(seg)
    for it in items:
        if str(getattr(it, "SegmentLabel", "")) == LESION:
            return it
    coded = [it for it in items
             if any(str(getattr(c, "CodeValue", "")) in LESION_TYPE_CODES
                    for c in getattr(it, "SegmentedPropertyTypeCodeSequence", []) or [])]
    if coded:
        return coded[0]
    if len(items) == 1:
        return items[0]
    raise InputError(f"SEG {_uid_of(seg)}: {len(items)} segments and none is a lesion (no "
                     f"segment labelled '{LESION}' or coded Mass, Neoplasm or Lesion)")


def content_stamp(ds) -> str:
    """``ContentDate + ContentTime`` (falls back to the series' date and time), for ordering."""
    date = str(getattr(ds, "ContentDate", "") or getattr(ds, "SeriesDate", "") or "")
    time = str(getattr(ds, "ContentTime", "") or getattr(ds, "SeriesTime", "") or "")
    return date + time


def read_contour(seg, image, min_pixels: int = 1) -> SegContour:
    """The lesion contour a SEG holds for one ultrasound image.

    Parameters
    ----------
    seg : pydicom.Dataset
        A DICOM Segmentation (binary or fractional; fractional is thresholded at 0.5).
    image : pydicom.Dataset
        The image it must reference (single frame; header enough, pixels not used).
    min_pixels : int
        Smallest accepted lesion in pixels.

    Returns
    -------
    SegContour

    Raises
    ------
    InputError
        Not a SEG, the SEG does not reference this image, its frames are another size, no
        lesion segment, an empty lesion.
    """
    if not is_seg(seg):
        raise InputError(f"{_uid_of(seg)}: not a DICOM Segmentation (SOP class "
                         f"{getattr(seg, 'SOPClassUID', '?')})")
    item = _lesion_item(seg)
    n = int(item.SegmentNumber)
    mask = _segment_pixels(seg, image, [n])[n]
    if int(mask.sum()) < min_pixels:
        raise InputError(f"SEG {_uid_of(seg)}: lesion segment {n} has {int(mask.sum())} pixels "
                         f"on image {_uid_of(image)} (fewer than {min_pixels})")
    return SegContour(mask=mask, label=str(getattr(item, "SegmentLabel", "")),
                      segment_number=n, algorithm=_segment_algorithm(item),
                      sop_uid=_uid_of(seg), series_uid=str(getattr(seg, "SeriesInstanceUID", "")),
                      content=content_stamp(seg))


def read_segments(seg, image) -> dict:
    """Every segment of ``seg`` on ``image``: ``{label: bool (rows, cols)}``, in segment order
    (a label used twice gets ``#<number>`` appended)."""
    items = _segments(seg)
    numbers = [int(it.SegmentNumber) for it in items]
    pix = _segment_pixels(seg, image, numbers)
    out = {}
    for it, n in zip(items, numbers):
        label = str(getattr(it, "SegmentLabel", "") or f"segment {n}")
        out[label if label not in out else f"{label}#{n}"] = pix[n]
    return out


def _source_for_highdicom(image):
    """A copy of ``image``'s header that highdicom accepts (missing type-2 attributes empty)."""
    from pydicom import Dataset
    # a new Dataset holding the same elements (pixel data shared): adding to it leaves the
    # image unchanged (copy.copy and Dataset(image) share the element dict itself)
    src = Dataset()
    for elem in image:
        src.add(elem)
    for kw in _TYPE2_SOURCE:
        if kw not in src:
            setattr(src, kw, None)
    return src


def nominal_spacing(image) -> tuple:
    """The image's pixel spacing, as 3D Slicer places it: ``((row, column) mm, source)``.

    Pixel Spacing (DICOM order: between rows, between columns) when it holds two positive
    finite numbers; else the Sequence of Ultrasound Regions when its calibrated 2D regions agree
    on one spacing (PhysicalDeltaY, PhysicalDeltaX, cm -> mm, read as
    :func:`HER2RadiomicsLib.imaging.io.parse_us_regions` does); else
    :data:`UNKNOWN_SPACING_MM` (source ``"unknown"``, logged).
    """
    from ..imaging.io import parse_us_regions
    val = image.get("PixelSpacing", None)
    try:
        spacing = [float(v) for v in val] if val is not None else []
    except (TypeError, ValueError):
        spacing = []
    if len(spacing) == 2 and all(math.isfinite(v) and v > 0 for v in spacing):
        return (spacing[0], spacing[1]), "PixelSpacing"
    regions = parse_us_regions(image)
    if regions and all(np.allclose(r.spacing_mm, regions[0].spacing_mm, rtol=1e-6)
                       for r in regions):
        dx_mm, dy_mm = regions[0].spacing_mm
        return (dy_mm, dx_mm), "SequenceOfUltrasoundRegions"
    log.info("image %s: no pixel calibration; the SEG's nominal pixel spacing is %g mm",
             _uid_of(image), UNKNOWN_SPACING_MM)
    return (UNKNOWN_SPACING_MM, UNKNOWN_SPACING_MM), "unknown"


def frame_of_reference_uid(image) -> str:
    """The Frame of Reference UID of the nominal geometry of a SEG of ``image``: derived from
    the image's SOP Instance UID alone, so every SEG of one image shares it (they overlay) and a
    rerun writes the same one."""
    return derived_uid("seg-frame-of-reference", _uid_of(image))


def _add_nominal_geometry(src, image) -> None:
    """Give ``src`` (highdicom's copy of ``image``'s header) the nominal patient geometry, so
    highdicom writes the Frame of Reference and the plane and pixel-measures functional groups
    (see the module's docstring). An image with a geometry of its own keeps it."""
    if all(k in image for k in ("FrameOfReferenceUID", "ImagePositionPatient",
                                "ImageOrientationPatient")):
        return
    (row_mm, col_mm), _ = nominal_spacing(image)
    # the SEG's own frame: an image's Frame of Reference without positions is not the one the
    # nominal positions are in
    src.FrameOfReferenceUID = frame_of_reference_uid(image)
    src.PositionReferenceIndicator = ""      # type 2: no anatomical reference point
    src.ImagePositionPatient = [0.0, 0.0, 0.0]
    src.ImageOrientationPatient = list(_IDENTITY_ORIENTATION)
    src.PixelSpacing = [row_mm, col_mm]
    src.SliceThickness = NOMINAL_SLICE_THICKNESS_MM


def _code(value: str, scheme: str, meaning: str):
    from pydicom.sr.coding import Code
    return Code(value, scheme, meaning)


# Spelled out rather than looked up in pydicom's code dictionary: pydicom 2.4's holds two
# "Mass" codes (SCT 118538004, the quantity, and 4147007) and refuses the name.
MASS = ("4147007", "SCT", "Mass")
ABNORMAL = ("49755003", "SCT", "Morphologically Abnormal Structure")
TISSUE = ("85756007", "SCT", "Tissue")
BREAST = ("76752008", "SCT", "Breast")
AI_FAMILY = ("123110", "DCM", "Artificial Intelligence")
MORPHOLOGY_FAMILY = ("123104", "DCM", "Morphological Operations")


def _description(hd, number: int, name: str, algorithm: Algorithm, parameters=None):
    ident = None
    if algorithm.kind != "MANUAL":
        family = _code(*(MORPHOLOGY_FAMILY if name != LESION else AI_FAMILY))
        ident = hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64], family=family, version=(algorithm.version or "1")[:64],
            parameters=parameters or None)
    if name == LESION:
        return hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=_code(*ABNORMAL),
            segmented_property_type=_code(*MASS), algorithm_type=algorithm.kind,
            algorithm_identification=ident)
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=_code(*TISSUE), segmented_property_type=_code(*TISSUE),
        algorithm_type=algorithm.kind, algorithm_identification=ident,
        anatomic_regions=[_code(*BREAST)])


def build_seg(image, regions: dict, lesion_algorithm: Algorithm, *, series_uid: str,
              sop_uid: str, ring_algorithm: Algorithm | None = None,
              ring_parameters: dict | None = None, series_number: int = 900,
              series_description: str = "HER2Radiomics lesion and rings",
              content_creator: str | None = None, software_version: str = "",
              content_label: str | None = None):
    """A DICOM SEG (binary) of a lesion and its rings on one 2D ultrasound image.

    Parameters
    ----------
    image : pydicom.Dataset
        The source image (single frame); the SEG references it, copies its patient and study,
        and gets the nominal geometry of Slicer's placement of it when it has none (see the
        module's docstring).
    regions : dict
        ``{region name: bool or 0/1 array (rows, columns)}``; must hold ``"tumor"`` (written as
        segment 1); the other regions follow in the dict's order.
    lesion_algorithm : Algorithm
        Who drew the lesion (MANUAL for a reader, AUTOMATIC/SEMIAUTOMATIC for the CNN).
    series_uid, sop_uid : str
        The SEG's UIDs (the caller derives them from the content to stay idempotent).
    ring_algorithm : Algorithm, optional
        Default: AUTOMATIC ``HER2Radiomics rings`` at ``software_version``.
    ring_parameters : dict, optional
        ``{region name: {parameter: value}}`` recorded with each ring's algorithm.
    content_creator : str, optional
        The reader's name (DICOM person name, ``Family^Given``) for a reader's contour.
    content_label : str, optional
        Default: ``LESION_RINGS`` (:data:`DERIVED_LABEL`, a result) when there are rings,
        ``LESION`` (a contour) when the lesion is alone.

    Returns
    -------
    highdicom.seg.Segmentation
        A pydicom Dataset; ``.save_as(path)`` writes it.

    Raises
    ------
    InputError
        No lesion, a region of another size than the image, a multi-frame image.
    """
    hd = _hd()
    _check_single_frame(image)
    if LESION not in regions:
        raise InputError(f"image {_uid_of(image)}: the regions hold no '{LESION}' (the lesion)")
    shape = (int(image.Rows), int(image.Columns))
    names = [LESION] + [n for n in regions if n != LESION]
    planes = []
    for n in names:
        a = np.asarray(regions[n])
        if a.shape != shape:
            raise InputError(f"image {_uid_of(image)}: region {n} is {a.shape}, the image "
                             f"{shape}")
        planes.append(a != 0)
    if not planes[0].any():
        raise InputError(f"image {_uid_of(image)}: the lesion mask is empty")
    ring_algorithm = ring_algorithm or Algorithm("AUTOMATIC", "HER2Radiomics rings",
                                                 software_version or "1")
    descs = [_description(hd, i + 1, n, lesion_algorithm if n == LESION else ring_algorithm,
                          None if n == LESION else
                          {k: str(v) for k, v in ((ring_parameters or {}).get(n) or {}).items()})
             for i, n in enumerate(names)]
    pixels = np.stack(planes, axis=-1)[None].astype(np.uint8)   # (frames, rows, cols, segs)
    kw = {}
    if content_creator:
        kw["content_creator_name"] = content_creator
    src = _source_for_highdicom(image)
    _add_nominal_geometry(src, image)
    seg = hd.seg.Segmentation(
        source_images=[src], pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs,
        series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=sop_uid,
        instance_number=1, manufacturer="HER2Radiomics",
        manufacturer_model_name="HER2RadiomicsLib", software_versions=software_version or "0",
        device_serial_number="none", series_description=series_description[:64],
        content_label=content_label or (DERIVED_LABEL if len(names) > 1 else "LESION"),
        content_description="lesion contour and rings" if len(names) > 1 else "lesion contour",
        # an empty ring (clipped away) stays a segment with an empty frame, so every region
        # the features name has its segment
        omit_empty_frames=False, **kw)
    # General Image's PatientOrientation (type 2C) is not required: every SEG written here has
    # an Image Orientation (Patient), the image's own or the nominal one
    # Series Date/Time (type 3) as the content's: a series listing (`pacs query`, a PACS
    # viewer) shows when it was made instead of nothing
    seg.SeriesDate, seg.SeriesTime = seg.ContentDate, seg.ContentTime
    return seg
