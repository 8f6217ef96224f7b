"""The reader station's study on disk: queues, contours, access, agreement (no Slicer, no web).

The browser station (``her2radiomics station``) puts a web front end on this store; all its
rules live here so they are tested without a browser:

- **Cases** come only from the study's manifest: a client names a case id, never a path.
- **Readers** each get a token (only its SHA-256 is stored) and a queue: the manifest's cases
  in an order shuffled per reader from the study seed (recorded), blind to labels and to other
  readers' contours. A reader reads and writes only its own contours.
- **Contours** are written atomically per reader and case: an NRRD label map in the image's
  own geometry and a JSON sidecar (reader, start source, seconds spent, edits, time). The
  sidecar is written last and marks the case done, so an interrupted save leaves the case to
  do again, never half a result. An autosave keeps the contour in progress.
- **Resume**: queues and contours are files; a restarted station continues each reader at the
  first case that is neither saved nor skipped.
- **Coordinator** (its own token): progress per reader, Dice / HD95 between readers as soon as
  two have saved a case, and a reader manifest that ``her2radiomics reader-study`` accepts.

Layout under the study folder::

    study.json                    manifest, start source, seed, token hashes
    queues/<reader>.json          order, skipped, flags
    contours/<reader>/<case>.nrrd + <case>.json
    contours/<reader>/<case>.seg.dcm   the contour as a DICOM SEG (DICOM images; see .dicom_seg)
    contours/<reader>/.autosave/<case>.nrrd
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..errors import HER2Error, InputError, one_line
from ..extraction.batch import read_manifest
from ..imaging.io import atomic_write_text, read_image, write_image
from ..readers.metrics import compare_masks
from . import dicom_seg

log = logging.getLogger(__name__)

#: how a case starts: the CNN's proposal (edited by the reader) or an empty contour
START_SOURCES = ("cnn", "empty")
#: reader names become folder names: letters, digits, dot, dash, underscore
READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STUDY_FILE = "study.json"


class AccessDenied(HER2Error):
    """A token, reader or case the request is not allowed to use (the station answers 403)."""


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: ``role`` is ``reader`` (with ``reader``) or ``coordinator``."""

    role: str
    reader: str | None = None


#: names a reader cannot have: the coordinator's role and token, the launcher's log names
RESERVED_NAMES = frozenset({"coordinator", "all", "admin", "station", "logs"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _order(cases: list, seed: int, reader: str) -> list:
    """The reader's case order: a shuffle seeded by the study seed and the reader's name
    (SHA-256, so the same in every process)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{reader}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(key)
    return [cases[i] for i in rng.permutation(len(cases))]


class StudyStore:
    """A reader study's files. Create one with :meth:`create`, reopen it with ``StudyStore(root)``.

    Parameters
    ----------
    root : str or Path
        The study folder (holds ``study.json``).
    """

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / STUDY_FILE
        try:
            self.meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no station study here (create one first)") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable study file ({one_line(exc)})") from None
        # a dict, not a DataFrame: a reader's process then never imports pandas (41 MB of
        # its memory; the station's target is 700 MB per reader)
        self.cases = {str(c["case_id"]): c for c in self.meta["cases"]}

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def create(cls, root, manifest, readers, start: str = "cnn", seed: int | None = None,
               archive: dict | None = None):
        """Create a study from a cohort manifest; returns ``(store, tokens)``.

        ``tokens`` maps each reader and ``"coordinator"`` to its token: shown once, stored
        only as a hash. The manifest needs ``case_id`` and ``image``; every other column
        (labels!) stays out of the study, so readers are blind to it. ``archive`` (``{"url":
        DICOMweb root, "studies": [Study Instance UIDs]}``, no credentials) records the archive
        the images came from: the readers' DICOM SEGs are stored back there.
        """
        root = Path(root)
        if (root / STUDY_FILE).exists():
            raise InputError(f"{root}: a study exists already; open it instead of creating")
        if start not in START_SOURCES:
            raise InputError(f"start source {start!r}: choose {' or '.join(START_SOURCES)}")
        readers = cls.check_readers(readers)
        rows = read_manifest(manifest, require_mask=False)      # labels are never copied
        ids = [str(r["case_id"]) for r in rows]
        if len(set(ids)) != len(ids):
            raise InputError(f"{manifest}: case_id repeats; one row per case")
        seed = int(secrets.randbits(31) if seed is None else seed)
        tokens = {r: secrets.token_urlsafe(18) for r in readers}
        tokens["coordinator"] = secrets.token_urlsafe(18)
        meta = {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "manifest": str(Path(manifest).resolve()), "start": start, "seed": seed,
                "cases": [{"case_id": str(r["case_id"]), "image": str(r["image"]),
                           **({"spacing_x_mm": float(r["spacing_x_mm"]),
                               "spacing_y_mm": float(r["spacing_y_mm"])}
                              if r.get("spacing_x_mm") else {})} for r in rows],
                "readers": {r: {"token_sha256": _hash(tokens[r])} for r in readers},
                "coordinator_token_sha256": _hash(tokens["coordinator"]),
                # the study's part in the UIDs of its DICOM SEGs (.dicom_seg's replace rule)
                "uid_key": secrets.token_hex(16)}
        if archive:
            meta["archive"] = {"url": str(archive["url"]),
                               "studies": [str(s) for s in archive.get("studies", [])]}
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / STUDY_FILE, json.dumps(meta, indent=1))
        store = cls(root)
        for r in readers:
            store._write_queue(r, {"order": _order(ids, seed, r), "skipped": [], "flags": {}})
        return store, tokens

    @staticmethod
    def check_readers(readers) -> list:
        """The reader names, once each; refuses a reserved or unusable name (one line)."""
        readers = list(dict.fromkeys(readers))
        # names the station itself uses for its processes, logs and tokens
        reserved = [r for r in readers if str(r).lower() in RESERVED_NAMES]
        if reserved:
            raise InputError(f"reader name {reserved[0]!r} is reserved (the station uses "
                             f"{', '.join(sorted(RESERVED_NAMES))} itself); choose another")
        bad = [r for r in readers if not READER_NAME.fullmatch(str(r))]
        if bad or not readers:
            raise InputError(f"reader names {bad or readers}: letters, digits, '.', '-', '_' "
                             "(at most 64), and at least one reader")
        return readers

    # -- access --------------------------------------------------------------------------------

    def authenticate(self, token) -> Identity:
        """The identity of a token; :class:`AccessDenied` for anything else."""
        if not token:
            raise AccessDenied("a token is required")
        h = _hash(str(token))
        if hmac.compare_digest(h, self.meta["coordinator_token_sha256"]):
            return Identity("coordinator")
        for reader, info in self.meta["readers"].items():
            if hmac.compare_digest(h, info["token_sha256"]):
                return Identity("reader", reader)
        raise AccessDenied("unknown token")

    @property
    def readers(self) -> list:
        return list(self.meta["readers"])

    def _reader(self, reader) -> str:
        if reader not in self.meta["readers"]:
            raise AccessDenied(f"no reader {reader!r} in this study")
        return reader

    def _case(self, case_id) -> dict:
        """A manifest row by id; nothing outside the manifest is ever opened."""
        key = str(case_id)
        if key not in self.cases:
            raise AccessDenied(f"case {key!r} is not in this study")
        return dict(self.cases[key])

    def case_info(self, case_id) -> dict:
        """What a reader may know of a case: its id only (no label, no other reader)."""
        return {"case_id": self._case(case_id)["case_id"]}

    def load_image(self, case_id):
        """The case's image (calibrated spacing), as the library reads it."""
        row = self._case(case_id)
        spacing = ((row["spacing_x_mm"], row["spacing_y_mm"])
                   if "spacing_x_mm" in row else None)
        if dicom_seg.is_dicom_file(row["image"]):
            dicom_seg.warm_up()               # its Save writes a DICOM SEG too
        return read_image(row["image"], spacing_mm=spacing)

    # -- queues --------------------------------------------------------------------------------

    def _queue_path(self, reader) -> Path:
        return self.root / "queues" / f"{self._reader(reader)}.json"

    def _read_queue(self, reader) -> dict:
        return json.loads(self._queue_path(reader).read_text())

    def _write_queue(self, reader, q):
        atomic_write_text(self._queue_path(reader), json.dumps(q, indent=1))

    def queue(self, reader) -> list:
        """The reader's cases in its own order."""
        return list(self._read_queue(reader)["order"])

    def next_case(self, reader) -> str | None:
        """The first case in the reader's order that is neither saved nor skipped (resume)."""
        q = self._read_queue(reader)
        for case in q["order"]:
            if case not in q["skipped"] and not self.is_done(reader, case):
                return case
        return None

    def skip(self, reader, case_id):
        q = self._read_queue(reader)
        case = self._case(case_id)["case_id"]
        if case not in q["skipped"]:
            q["skipped"].append(case)
        self._write_queue(reader, q)

    def flag(self, reader, case_id, note: str):
        """Flag a case with a note (the coordinator sees it); the case stays in the queue."""
        q = self._read_queue(reader)
        q["flags"][self._case(case_id)["case_id"]] = str(note)[:2000]
        self._write_queue(reader, q)

    # -- contours ------------------------------------------------------------------------------

    def _contour_path(self, reader, case_id, suffix=".nrrd", autosave=False) -> Path:
        case = self._case(case_id)["case_id"]
        folder = self.root / "contours" / self._reader(reader)
        if autosave:
            folder = folder / ".autosave"
        # the case id is the manifest's; a file name never contains a path separator
        name = re.sub(r"[^A-Za-z0-9._-]", "_", case)
        return folder / f"{name}{suffix}"

    def is_done(self, reader, case_id) -> bool:
        return self._contour_path(reader, case_id, ".json").exists()

    def _as_label(self, case_id, mask):
        """The mask as a uint8 label map in the case image's own geometry."""
        loaded = self.load_image(case_id)
        arr = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
        arr = np.squeeze(arr)
        shape = sitk.GetArrayViewFromImage(loaded.image).shape
        if arr.shape != shape:
            raise InputError(f"case {case_id}: contour size {arr.shape[::-1]} differs from "
                             f"the image's {shape[::-1]}")
        out = sitk.GetImageFromArray((arr > 0).astype(np.uint8))
        out.CopyInformation(loaded.image)
        return out

    def autosave(self, reader, case_id, mask, info: dict | None = None):
        """Keep the contour in progress (not a result: the case is not done), with what is
        known of it so far (``info``: where it started, active seconds, edits), so that a
        restarted station resumes it truthfully."""
        path = write_image(self._as_label(case_id, mask),
                           self._contour_path(reader, case_id, autosave=True))
        atomic_write_text(self._contour_path(reader, case_id, ".json", autosave=True),
                          json.dumps({**(info or {}), "autosaved": time.strftime(
                              "%Y-%m-%dT%H:%M:%S")}))
        return path

    def autosaved(self, reader, case_id):
        """The autosaved contour in progress, or None."""
        p = self._contour_path(reader, case_id, autosave=True)
        return sitk.ReadImage(str(p)) if p.exists() else None

    def autosave_info(self, reader, case_id) -> dict:
        """What the autosave recorded with the contour in progress ({} when nothing)."""
        p = self._contour_path(reader, case_id, ".json", autosave=True)
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    # -- CNN proposals -------------------------------------------------------------------------

    def _proposal_path(self, case_id) -> Path:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self._case(case_id)["case_id"])
        return self.root / "proposals" / f"{name}.nrrd"

    def proposal(self, case_id):
        """The CNN's proposal for a case, made once for every reader (None when missing)."""
        p = self._proposal_path(case_id)
        return sitk.ReadImage(str(p)) if p.exists() else None

    def missing_proposals(self) -> list:
        """Cases of a study that starts from the CNN whose proposal is not made yet."""
        if self.meta.get("start") != "cnn":
            return []
        return [c for c in self.cases if not self._proposal_path(c).exists()]

    def save_proposal(self, case_id, mask) -> Path:
        """Store the CNN's proposal of a case (an empty one when the CNN found nothing)."""
        return write_image(self._as_label(case_id, mask), self._proposal_path(case_id))

    def save_contour(self, reader, case_id, mask, *, start_source=None, seconds=None,
                     edits=None) -> Path:
        """Save a reader's contour of a case (atomic; the JSON sidecar marks it done)."""
        label = self._as_label(case_id, mask)
        if not sitk.GetArrayViewFromImage(label).any():
            raise InputError(f"case {case_id}: the contour is empty; draw the lesion or skip")
        path = write_image(label, self._contour_path(reader, case_id))
        seg = self._write_seg(reader, case_id, label, path)
        side = {"reader": reader, "case_id": self._case(case_id)["case_id"],
                "start_source": start_source or self.meta["start"],
                "seconds": None if seconds is None else float(seconds),
                "edits": list(edits or []), "n_edits": len(list(edits or [])),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "mask": path.name, "area_px": int(sitk.GetArrayViewFromImage(label).sum()),
                **seg}
        atomic_write_text(self._contour_path(reader, case_id, ".json"),
                          json.dumps(side, indent=1))
        for auto in (self._contour_path(reader, case_id, autosave=True),
                     self._contour_path(reader, case_id, ".json", autosave=True)):
            if auto.exists():
                auto.unlink()
        return path

    def _write_seg(self, reader, case_id, label, path) -> dict:
        """The contour as a DICOM SEG beside it when the case's image is DICOM: ``{"dicom_seg":
        ...}`` for the sidecar, or ``{"dicom_seg_error": why}``. A SEG that cannot be written
        never undoes the Save (the label map is the reader's result; the SEG a copy of it)."""
        image = self.cases[str(case_id)]["image"]
        if not dicom_seg.is_dicom_file(image):
            return {}
        try:
            return {"dicom_seg": dicom_seg.write_reader_seg(
                self.meta, image, reader, str(case_id), sitk.GetArrayViewFromImage(label),
                path, self.readers)}
        except Exception as exc:                 # noqa: BLE001 (the Save itself stands)
            log.warning("case %s reader %s: DICOM SEG not written: %s", case_id, reader, exc)
            # an older save's SEG would now be a contour the reader replaced
            dicom_seg.paths(path)[0].unlink(missing_ok=True)
            return {"dicom_seg_error": str(exc).splitlines()[0] if str(exc) else
                    type(exc).__name__}

    def sidecar(self, reader, case_id) -> dict:
        """The saved contour's sidecar ({} when the case is not saved)."""
        try:
            doc = json.loads(self._contour_path(reader, case_id, ".json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def dicom_segs(self) -> list:
        """Every saved contour's DICOM SEG: ``{"reader", "case_id", "path", "contour",
        "sop_uid", "pending"}`` (``pending``: not yet stored in the archive), and the saves
        whose SEG could not be written (``"error"``)."""
        out = []
        for r in self.readers:
            for case in self.cases:
                side = self.sidecar(r, case)
                contour = self._contour_path(r, case)
                if side.get("dicom_seg_error"):
                    out.append({"reader": r, "case_id": case, "error": side["dicom_seg_error"]})
                if not (side.get("dicom_seg") or {}).get("sop_uid"):
                    continue
                out.append({"reader": r, "case_id": case, "contour": contour,
                            "path": dicom_seg.paths(contour)[0],
                            "sop_uid": side["dicom_seg"]["sop_uid"],
                            "pending": dicom_seg.pending(side, contour)})
        return out

    def load_contour(self, identity: Identity, reader, case_id):
        """A saved contour: a reader gets only its own; the coordinator any."""
        if identity.role != "coordinator" and identity.reader != reader:
            raise AccessDenied("a reader sees only their own contours")
        if not self.is_done(reader, case_id):
            return None
        return sitk.ReadImage(str(self._contour_path(reader, case_id)))

    # -- coordinator ---------------------------------------------------------------------------

    def progress(self):
        """Per reader: cases done, skipped, flagged, left."""
        rows = []
        for r in self.readers:
            q = self._read_queue(r)
            done = sum(self.is_done(r, c) for c in q["order"])
            rows.append({"reader": r, "done": done, "skipped": len(q["skipped"]),
                         "flagged": len(q["flags"]), "total": len(q["order"]),
                         "left": sum(1 for c in q["order"] if c not in q["skipped"]
                                     and not self.is_done(r, c))})
        return pd.DataFrame(rows)

    def flags(self) -> list:
        """``(reader, case_id, note)`` of every flagged case (the coordinator's list)."""
        return [(r, c, n) for r in self.readers
                for c, n in self._read_queue(r)["flags"].items()]

    def agreement(self):
        """Dice, HD95 (mm) and area difference of every pair of readers on every case that
        at least two readers saved."""
        rows = []
        for case in self.cases:
            done = [r for r in self.readers if self.is_done(r, case)]
            if len(done) < 2:
                continue
            masks = {r: sitk.ReadImage(str(self._contour_path(r, case))) for r in done}
            spacing = masks[done[0]].GetSpacing()[:2]
            for i, a in enumerate(done):
                for b in done[i + 1:]:
                    m = compare_masks(sitk.GetArrayFromImage(masks[a]) > 0,
                                      sitk.GetArrayFromImage(masks[b]) > 0, spacing)
                    rows.append({"case_id": case, "reader_a": a, "reader_b": b,
                                 "dice": m["dice"], "hd95_mm": m["hd95"],
                                 "area_diff_pct": m["area_diff_pct"]})
        return pd.DataFrame(rows, columns=["case_id", "reader_a", "reader_b", "dice",
                                           "hd95_mm", "area_diff_pct"])

    def export_reader_manifest(self, path, min_readers: int = 2) -> Path:
        """``case_id,image,reader,mask`` of the saved contours of cases with at least
        ``min_readers`` readers: the manifest ``her2radiomics reader-study`` takes."""
        rows = []
        for case in self.cases:
            done = [r for r in self.readers if self.is_done(r, case)]
            if len(done) >= min_readers:
                rows += [{"case_id": case, "image": self.cases[case]["image"], "reader": r,
                          "mask": str(self._contour_path(r, case))} for r in done]
        return atomic_write_text(path, pd.DataFrame(
            rows, columns=["case_id", "image", "reader", "mask"]).to_csv(index=False))
