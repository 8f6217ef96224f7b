"""A reader's saved contour as a DICOM SEG, beside the saved label map (offline first).

When a case's image is DICOM, every Save also writes ``contours/<reader>/<case>.seg.dcm``: a
DICOM Segmentation of the lesion (:func:`HER2RadiomicsLib.pacs.seg.build_seg`, algorithm type
``MANUAL``), whose content creator is the reader (a DICOM person name) and whose series
description names the reader. Nothing here talks to a network: a study on an archive stores
these files with STOW-RS afterwards (:mod:`.archive`), so a store that fails never touches the
reader's Save.

The replace rule
----------------
* The **series** is one per (station study, case, reader): its Series Instance UID is derived
  from those three (``2.25`` + a SHA-256), so every save of that contour lands in the same
  series, on this disk and in the archive.
* Every **save** is a new instance of that series: a new SOP Instance UID (derived from the
  series, the save time and the mask), the next Instance Number, and the save's Content
  Date/Time. Locally the file is replaced (one SEG per reader and case); an archive keeps
  what it was sent (a PACS does not delete on STOW-RS), and the contour that counts is the
  newest instance of the series (the highest Content Date/Time, then Instance Number), which
  is what ``reader-study --seg-dir`` takes.

The reader's process imports highdicom (about 22 MB, 0.4 s) at its first Save of a DICOM case
only; a study of PNG or NRRD images never loads it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imaging.files import atomic_write_bytes, atomic_write_text
from ..pacs.reader_segs import is_dicom_file, person_name, reader_of  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

#: reader i (study order) gets series number BASE + i: the readers' SEG series sort together,
#: apart from the scanner's (1, 2, ...) and those of ``pacs run`` (900, 901)
SERIES_NUMBER_BASE = 910
#: DICOM limits a Series Description (LO) to 64 characters
DESCRIPTION_PREFIX = "HER2Radiomics reader contour: "
SEG_SUFFIX = ".seg.dcm"
STORED_SUFFIX = ".seg.stored.json"


def _uid(*parts) -> str:
    """A UID under ``2.25`` (ISO/IEC 9834-8: a UUID as a decimal integer) from a SHA-256 of
    ``parts``: the same parts give the same UID in every process, on every machine."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    # 2.25 UIDs carry a 128-bit number; at most 39 digits keep the UID within 64 characters
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def study_key(meta: dict) -> str:
    """The station study's identity in UIDs: its recorded ``uid_key`` (new studies), else
    the creation time and seed it has always recorded."""
    return str(meta.get("uid_key") or f"{meta.get('created')}:{meta.get('seed')}")


def series_uid(meta: dict, case_id: str, reader: str) -> str:
    """The Series Instance UID of a reader's contour of a case (see the replace rule)."""
    return _uid("her2radiomics-station-seg", study_key(meta), case_id, reader)


_warm = threading.Lock()
_warmed = []


def warm_up() -> None:
    """Import what a SEG needs (pydicom, highdicom: about 1 s) in a background thread, once
    per process, so that a reader's first Save of a DICOM case is as quick as the next."""
    with _warm:
        if _warmed:
            return
        _warmed.append(True)

    def load():
        try:
            from ..pacs import seg
            seg._hd()
        except Exception:  # noqa: BLE001 -- the Save will say what is missing
            pass
    threading.Thread(target=load, name="seg-warm-up", daemon=True).start()


def paths(contour_path: Path) -> tuple:
    """``(seg file, stored mark)`` beside a saved contour ``<case>.nrrd``."""
    stem = Path(contour_path).with_suffix("")
    return stem.with_name(stem.name + SEG_SUFFIX), stem.with_name(stem.name + STORED_SUFFIX)


def write_reader_seg(meta: dict, image_path, reader: str, case_id: str, mask, contour_path,
                     readers=()) -> dict:
    """Write the DICOM SEG of a reader's saved contour beside ``contour_path``.

    Parameters
    ----------
    meta : dict
        The station study's ``study.json`` (its UID key).
    image_path : path
        The case's DICOM image (single frame); the SEG references its SOP Instance UID.
    reader, case_id : str
    mask : numpy.ndarray
        The contour on the image's pixel grid, (rows, columns), non-zero inside.
    contour_path : path
        The saved label map; the SEG goes to ``<case>.seg.dcm`` beside it.
    readers : sequence of str
        The study's readers, for the series number (reader i gets 910 + i).

    Returns
    -------
    dict
        ``{"seg": file name, "series_uid", "sop_uid", "instance": n}`` for the sidecar.

    Raises
    ------
    InputError
        The image is not a readable single-frame DICOM of the mask's size, or the [pacs]
        extra is missing.
    """
    import pydicom
    from ..pacs.seg import Algorithm, build_seg
    try:
        image = pydicom.dcmread(str(image_path), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises several types for a bad file
        raise InputError(f"{image_path}: not a readable DICOM file ({exc})") from None
    seg_path, _ = paths(contour_path)
    series = series_uid(meta, case_id, reader)
    previous = _previous_instance(seg_path, series)
    arr = np.asarray(mask) != 0
    stamp = time.strftime("%Y%m%d%H%M%S")
    sop = _uid("her2radiomics-station-seg-instance", series, stamp, previous + 1,
               hashlib.sha256(np.packbits(arr).tobytes()).hexdigest())
    number = SERIES_NUMBER_BASE + (list(readers).index(reader) + 1 if reader in readers else 0)
    from .. import __version__
    ds = build_seg(image, {"tumor": arr}, Algorithm("MANUAL"), series_uid=series, sop_uid=sop,
                   series_number=number,
                   series_description=(DESCRIPTION_PREFIX + reader)[:64],
                   content_creator=person_name(reader), software_version=__version__)
    ds.InstanceNumber = previous + 1
    buf = io.BytesIO()
    ds.save_as(buf)
    atomic_write_bytes(seg_path, buf.getvalue())
    return {"seg": seg_path.name, "series_uid": series, "sop_uid": sop,
            "instance": previous + 1}


def _previous_instance(seg_path: Path, series: str) -> int:
    """The Instance Number of the SEG saved before in this series (0 when none)."""
    if not seg_path.exists():
        return 0
    try:
        import pydicom
        old = pydicom.dcmread(str(seg_path), stop_before_pixels=True)
        if str(old.SeriesInstanceUID) == series:
            return int(getattr(old, "InstanceNumber", 0) or 0)
    except Exception:  # noqa: BLE001 -- an unreadable old file is replaced, numbering restarts
        log.warning("%s: unreadable previous SEG; numbering restarts", seg_path)
    return 0


def pending(sidecar: dict, contour_path) -> bool:
    """Whether a saved contour's SEG has yet to be stored in the archive (its sidecar names a
    SEG instance the stored mark does not)."""
    seg = (sidecar or {}).get("dicom_seg") or {}
    if not seg.get("sop_uid"):
        return False
    _, mark = paths(contour_path)
    try:
        return json.loads(mark.read_text()).get("sop_uid") != seg["sop_uid"]
    except (OSError, ValueError):
        return True


def mark_stored(contour_path, sop_uid: str, url: str) -> Path:
    """Record that the SEG instance ``sop_uid`` is in the archive at ``url``."""
    _, mark = paths(contour_path)
    return atomic_write_text(mark, json.dumps({"sop_uid": sop_uid, "url": url, "stored":
                                               time.strftime("%Y-%m-%dT%H:%M:%S")}))
