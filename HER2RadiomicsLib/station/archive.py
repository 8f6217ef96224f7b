"""A reader station on the hospital's archive (DICOMweb): the case queue from archive studies,
the readers' DICOM SEGs stored back.

* :func:`retrieve_cases` — QIDO-RS finds the ultrasound images of the named studies (single
  frames: the station contours one image), WADO-RS copies them into the study folder and a
  manifest of them is written; ``station create --dicomweb URL --study-uid UID ...`` builds the
  study from it. A study without an ultrasound image is refused in one line.
* :func:`push_pending` — STOW-RS stores every saved contour's SEG (:mod:`.dicom_seg`) the
  archive does not hold yet. It runs in the launcher (``station serve``), in a thread of its
  own (:class:`ArchiveSync`), and on demand (``station push``): never in a reader's process.
  A Save is local first and always succeeds; a store that fails (archive down, credentials
  refused) leaves the SEG waiting and is retried after 5, 10, 20 ... 300 s; the coordinator's
  page shows what is stored, what waits and the last error (:func:`status_line`).

Credentials never come from the command line: the environment or a file
(:func:`HER2RadiomicsLib.pacs.dicomweb.auth_from`); the study records only the URL.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import threading
import time
from pathlib import Path

from ..errors import HER2Error, InputError
from ..imaging.files import atomic_write_bytes, atomic_write_text
from . import dicom_seg

log = logging.getLogger(__name__)

#: waits (s) before storing again after a failed store: an archive that is down for a
#: minute is retried within seconds, one down for hours is asked every 5 minutes
RETRY_S = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
#: how often the launcher looks for newly saved SEGs (s): a reader saves every minute or so
POLL_S = 5.0
STATUS_FILE = "archive_status.json"


def connect(url: str, auth_file=None, ca_bundle=None):
    """A DICOMweb client for ``url`` with the credentials of the environment or ``auth_file``
    (a request is tried 3 times within about 3 s; after that :class:`ArchiveSync` retries)."""
    from ..pacs.dicomweb import Pacs, auth_from
    return Pacs(url, auth=auth_from(auth_file=auth_file), ca_bundle=ca_bundle)


def _frames(meta: dict) -> int:
    try:
        return int(meta.get("NumberOfFrames") or 1)
    except ValueError:
        return 1


def find_images(pacs, study_uids, patient_id=None) -> list:
    """``[(study, series, sop)]`` of the single-frame ultrasound images of the studies named
    (or, with ``patient_id``, of that patient's studies that hold one).

    Raises
    ------
    InputError
        A study named that is unknown or holds no single-frame ultrasound image; a patient
        with none.
    """
    from ..pacs.dicomweb import is_ultrasound
    named = [str(u) for u in study_uids or []]
    queried = [] if not patient_id else [
        s["StudyInstanceUID"] for s in pacs.studies(patient_id) if s.get("StudyInstanceUID")]
    found = []
    for study in dict.fromkeys(named + queried):
        instances = pacs.instances(study)
        us = [m for m in instances if is_ultrasound(m)]
        single = [m for m in us if _frames(m) == 1]
        if not single and study in named:
            if not instances:
                raise InputError(f"{pacs.url}: study {study}: not found (no instances)")
            kinds = sorted({m.get("Modality") or m.get("SOPClassUID", "?") for m in instances})
            why = (f"only cine loops ({len(us)})" if us else
                   f"no ultrasound image ({len(instances)} instance(s): {', '.join(kinds)})")
            raise InputError(f"{pacs.url}: study {study}: {why}; the station contours "
                             "single-frame ultrasound images")
        found += [(study, m["SeriesInstanceUID"], m["SOPInstanceUID"]) for m in single]
    if not found:
        raise InputError(f"{pacs.url}: patient {patient_id}: no study with a single-frame "
                         "ultrasound image")
    return found


def case_id_of(sop_uid: str) -> str:
    """A case's id: short, stable across re-creation, and no patient data on the page."""
    return "us-" + hashlib.sha256(str(sop_uid).encode()).hexdigest()[:10]


def _dicom_bytes(ds) -> bytes:
    """A dataset as a DICOM file (Part 10), whatever pydicom (2.4 or 3) read it as."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:                                 # pydicom 2.4 (Python 3.9, Slicer 5.8)
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def retrieve_cases(pacs, images, folder) -> Path:
    """Copy ``images`` (from :func:`find_images`) into ``folder/images`` (WADO-RS) and write
    ``folder/archive_cases.csv`` (``case_id, image, study_uid, series_uid, sop_uid``): the
    manifest a study is created from. Returns the manifest's path."""
    import csv
    folder = Path(folder)
    rows = []
    for study, series, sop in images:
        path = folder / "images" / study / f"{sop}.dcm"      # UIDs: digits and dots only
        if not path.exists():
            atomic_write_bytes(path, _dicom_bytes(pacs.retrieve(study, series, sop)))
        rows.append({"case_id": case_id_of(sop), "image": str(path.resolve()),
                     "study_uid": study, "series_uid": series, "sop_uid": sop})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(folder / "archive_cases.csv", buf.getvalue())


# -- storing the readers' SEGs -------------------------------------------------------------------

def push_pending(store, pacs) -> dict:
    """Store every SEG the archive does not hold yet (STOW-RS), oldest reader order first;
    stops at the first failure (an archive that is down is not asked once per SEG).

    Returns
    -------
    dict
        ``{"stored": n stored now, "pending": n still waiting, "error": first line or ""}``;
        also written to the study's ``archive_status.json``.
    """
    import pydicom
    stored, error, failed = 0, "", ""
    # the SEG that failed last goes last: one the archive refuses must not hold up the rest
    last = _read_status(store).get("failed_sop", "")
    todo = sorted((i for i in store.dicom_segs() if i.get("pending")),
                  key=lambda i: i["sop_uid"] == last)
    for item in todo:
        failed = item["sop_uid"]
        try:
            ds = pydicom.dcmread(str(item["path"]))
            pacs.store([ds], str(ds.StudyInstanceUID))
        except HER2Error as exc:
            error = str(exc).splitlines()[0]
            break
        except Exception as exc:  # noqa: BLE001 -- a torn or unreadable SEG file
            error = f"{item['path']}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            break
        dicom_seg.mark_stored(item["contour"], item["sop_uid"], pacs.url)
        stored += 1
    left = sum(1 for i in store.dicom_segs() if i.get("pending"))
    doc = {"url": pacs.url, "stored_now": stored, "pending": left, "error": error,
           "failed_sop": failed if error else "",
           "attempt": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(store.root / STATUS_FILE, json.dumps(doc, indent=1))
    return {"stored": stored, "pending": left, "error": error}


def status_line(store) -> str:
    """One sentence for the coordinator: SEGs written, stored, waiting, the last error ('' for
    a study with neither an archive nor a DICOM image)."""
    segs = store.dicom_segs()
    url = (store.meta.get("archive") or {}).get("url")
    if not segs and not url:
        return ""
    ok = [s for s in segs if "error" not in s]
    failed = [s for s in segs if "error" in s]
    parts = [f"{len(ok)} contour(s) saved as DICOM SEG"]
    if url:
        waiting = sum(1 for s in ok if s["pending"])
        parts.append(f"{len(ok) - waiting} stored in the archive {url}, {waiting} waiting")
        last = _read_status(store)
        if waiting and last.get("error"):
            parts.append(f"last try {last.get('attempt', '')[11:16]}: {last['error']}")
    if failed:
        parts.append(f"{len(failed)} SEG(s) not written ({failed[0]['case_id']}, reader "
                     f"{failed[0]['reader']}: {failed[0]['error']})")
    return "; ".join(parts) + "."


def _read_status(store) -> dict:
    try:
        doc = json.loads((store.root / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class ArchiveSync(threading.Thread):
    """Stores the readers' SEGs in the archive while ``station serve`` runs (a daemon thread
    of the launcher: a slow or dead archive delays no restart and no reader).

    A failed store is tried again after :data:`RETRY_S`; one line on the terminal when the
    archive stops taking SEGs and when it takes them again.
    """

    def __init__(self, store, url, auth_file=None, ca_bundle=None, out=None):
        super().__init__(name="archive-sync", daemon=True)
        self.store, self.url = store, url
        self.auth_file, self.ca_bundle = auth_file, ca_bundle
        self.out = out or sys.stderr
        self.stopped = threading.Event()
        self.failures = 0
        self._pacs = None

    def step(self) -> dict:
        """One pass: store what waits. Returns :func:`push_pending`'s counts."""
        try:
            if self._pacs is None:
                self._pacs = connect(self.url, self.auth_file, self.ca_bundle)
            res = push_pending(self.store, self._pacs)
        except HER2Error as exc:                  # credentials file gone, extra missing
            res = {"stored": 0, "pending": -1, "error": str(exc).splitlines()[0]}
        if res["error"]:
            wait = RETRY_S[min(self.failures, len(RETRY_S) - 1)]
            if self.failures == 0:
                print(f"archive: DICOM SEG not stored ({res['error']}); the contours are saved "
                      f"here and will be stored when the archive answers (next try in "
                      f"{wait:.0f} s)", file=self.out, flush=True)
            self.failures += 1
        else:
            if self.failures:
                print(f"archive: storing again ({res['stored']} SEG(s) stored)",
                      file=self.out, flush=True)
            self.failures = 0
        return res

    def run(self):
        while not self.stopped.is_set():
            try:
                self.step()
            except Exception:                     # the launcher must go on
                log.exception("archive sync failed")
                self.failures += 1
            wait = RETRY_S[min(self.failures - 1, len(RETRY_S) - 1)] if self.failures \
                else POLL_S
            self.stopped.wait(wait)

    def stop(self):
        self.stopped.set()
