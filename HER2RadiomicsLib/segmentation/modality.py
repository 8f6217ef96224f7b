"""Is this image ultrasound? The CNN runs only on images whose header agrees: a DICOM storage
class of another modality (mammography, radiography, CT, MR, ...) is refused whatever
``Modality`` says; a non-US ``Modality`` with no ultrasound sign is refused; a missing, vague or
contradictory one is a flag on the mask (see docs/pacs.md, "Is it ultrasound?")."""
from __future__ import annotations

import pydicom
from pydicom.uid import UID

from ..errors import InputError


# DICOM storage classes (PS3.4 B.5) of ultrasound images: US Image and US Multi-frame Image
# (current and retired UIDs) and Enhanced US Volume.
US_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.6.2"})
# Storage classes that are certainly something else: computed/digital radiography, mammography,
# intra-oral, CT, MR, X-ray angiography/fluoroscopy, breast tomosynthesis and projection, NM, PET.
# Secondary Capture and private classes are in neither set: screenshots of ultrasound are common.
NON_US_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3", "1.2.840.10008.5.1.4.1.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.13.1.3",
    "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5",
    "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128"})
# Modality values that name no modality ("other", "secondary capture"): like a missing tag.
VAGUE_MODALITIES = frozenset({"", "OT", "SC"})


def _sop_name(uid: str) -> str:
    try:
        name = UID(uid).name
    except Exception:  # noqa: BLE001 - a malformed UID is shown as written
        name = uid
    return name or uid


def _dicom_evidence(loaded) -> dict:
    """Modality, SOP class, ultrasound regions and photometry of a DICOM ``LoadedImage``."""
    prov = loaded.provenance
    ev = {"modality": str(prov.get("modality", "")).strip().upper(), "sop": "",
          "regions": bool(prov.get("us_regions")),
          "photometric": str(prov.get("photometric", "")).strip().upper()}
    try:
        ds = pydicom.dcmread(str(loaded.path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - header already read once by read_image; keep what it kept
        return ev
    meta = getattr(ds, "file_meta", None)
    ev["sop"] = str(getattr(ds, "SOPClassUID", "") or
                    getattr(meta, "MediaStorageSOPClassUID", "") or "").strip()
    ev["modality"] = str(getattr(ds, "Modality", "") or "").strip().upper()
    ev["regions"] = ev["regions"] or bool(getattr(ds, "SequenceOfUltrasoundRegions", None))
    ev["photometric"] = str(getattr(ds, "PhotometricInterpretation", "") or "").strip().upper()
    return ev


def check_ultrasound(loaded) -> list:
    """Refuse images the ultrasound CNN must not segment; return flags for doubtful ones.

    A DICOM is judged by its whole header, not by the Modality tag alone:

    * ultrasound marks: an ultrasound SOP class (:data:`US_SOP_CLASSES`) or a
      SequenceOfUltrasoundRegions (a module only ultrasound has);
    * refused: a SOP class that is certainly another kind of image (:data:`NON_US_SOP_CLASSES`:
      mammography, radiographs, CT, MR, ...), whatever the Modality says; a specific
      Modality other than US (MG, CR, CT, ...) with no ultrasound mark;
    * passed with a flag: a specific non-US Modality contradicted by an ultrasound mark
      (mislabelled export); a missing or vague Modality (empty, OT, SC) -- with the mark named
      when there is one, else saying that nothing in the header shows ultrasound;
      MONOCHROME1 (inverted grey, used by radiographs; ultrasound images are never stored so);
    * passed: Modality US with nothing that contradicts it.

    Images without a DICOM header (PNG, NRRD, ... or an image from a Slicer volume) are not
    judged here; :func:`plausibility_flags` (speckle statistics) flags non-ultrasound content
    in every auto-mask.  Colour (Doppler boxes, coloured overlays) over more than 1% of the
    pixels is flagged for every format.

    Raises
    ------
    InputError
        The DICOM is another kind of image (see above).
    """
    prov = loaded.provenance
    flags = []
    if prov.get("format") == "dicom":
        flags += _judge_dicom(loaded.path, _dicom_evidence(loaded))
    colour = float(prov.get("colour_fraction", 0.0))
    if colour > 0.01:
        flags.append(f"colour in {100 * colour:.0f}% of the image (Doppler box or overlay): "
                     "check that the mask outlines the lesion, not the flow")
    return flags


def _judge_dicom(path, ev: dict) -> list:
    mod, sop = ev["modality"], ev["sop"]
    marks = ([f"SOP class ({_sop_name(sop)})"] if sop in US_SOP_CLASSES else []) + (
        ["ultrasound regions (SequenceOfUltrasoundRegions)"] if ev["regions"] else [])
    other_modality = mod != "US" and mod not in VAGUE_MODALITIES     # MG, CR, CT, ...
    advice = "the CNN segments B-mode ultrasound only; draw the lesion mask instead"
    if sop in NON_US_SOP_CLASSES:
        what = f"DICOM modality {mod}, not ultrasound (US)" if other_modality \
            else f"DICOM Modality {mod or 'missing'}"
        raise InputError(f"{path}: {what}, and its SOP class is {_sop_name(sop)}: not an "
                         f"ultrasound image; {advice}")
    if other_modality and not marks:
        raise InputError(f"{path}: DICOM modality {mod}, not ultrasound (US), and nothing in "
                         f"the header says ultrasound: {advice}")
    flags = []
    if other_modality:
        flags.append(f"DICOM Modality {mod} but {' and '.join(marks)}: treated as ultrasound "
                     "(mislabelled export?); check that this is a B-mode image")
    elif mod != "US":
        label = f"DICOM Modality {mod}" if mod else "no DICOM Modality"
        flags.append(f"{label}: treated as ultrasound because of its {' and '.join(marks)}"
                     if marks else
                     f"{label}, SOP class {_sop_name(sop) if sop else 'missing'}, no ultrasound "
                     "regions: nothing in the header says ultrasound; check that this is a "
                     "B-mode image")
    if ev["photometric"] == "MONOCHROME1":
        flags.append("MONOCHROME1 grey (inverted, as radiographs are stored; ultrasound never "
                     "is): check that this is a B-mode image")
    return flags
