"""``pacs fetch``: DICOMweb studies into a folder with a manifest, so that ``extract``,
``segment`` and ``predict --manifest`` run on a PACS's images as on files.

The folder holds ``images/<SOP UID>.dcm`` (WADO-RS), ``masks/<SOP UID>.png`` for each image
that a SEG in its study contours (the newest SEG's lesion, as ``pacs run`` takes it) and
``manifest.csv`` (``case_id`` = SOP Instance UID, ``patient_id``, ``image``, ``mask`` — empty
without a SEG: ``segment --manifest`` draws those — plus ``study_uid``, ``series_uid`` and
``contour``). The folder is built aside and swapped in whole.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from . import dicomweb
from .run import _write_mask, retrieve_study, study_instances

COLUMNS = ["case_id", "patient_id", "image", "mask", "study_uid", "series_uid", "contour"]


def fetch_studies(url: str, studies: list, out, auth=None, ca_bundle=None,
                  reader: str | None = None) -> tuple:
    """Fetch ``studies`` into ``out``; returns ``(manifest path, rows, problems)``.

    Raises
    ------
    InputError
        The server cannot be reached, refuses the credentials, or a study is unknown or holds
        no ultrasound image (checked for every study before anything is written).
    """
    from ..imaging.files import atomic_write_text
    from ..outputs import staged_dir
    pacs = dicomweb.Pacs(url, auth, ca_bundle)
    found = {s: study_instances(pacs, s) for s in dict.fromkeys(studies)}
    rows, problems = [], []
    with staged_dir(out) as stage:        # owned by the command that claimed it
        stage = Path(stage)
        (stage / "images").mkdir()
        (stage / "masks").mkdir()
        for study, instances in found.items():
            images, contours = retrieve_study(pacs, study, instances, stage / "images",
                                              problems, reader)
            for uid, im in images.items():
                frames = int(getattr(im["header"], "NumberOfFrames", 1) or 1)
                if frames > 1:
                    problems.append(f"{pacs.url}: image {uid} of study {study} is a cine loop "
                                    f"of {frames} frames; left out")
                    (stage / "images" / f"{uid}.dcm").unlink()
                    continue
                mask, contour = "", ""
                if uid in contours:
                    c = contours[uid]
                    _write_mask(c.mask, stage / "masks" / f"{uid}.png")
                    mask = f"masks/{uid}.png"
                    contour = f"SEG {c.sop_uid} segment {c.segment_number} ({c.algorithm.kind})"
                rows.append({"case_id": uid,
                             "patient_id": str(getattr(im["header"], "PatientID", "")),
                             "image": f"images/{uid}.dcm", "mask": mask, "study_uid": study,
                             "series_uid": im["series"], "contour": contour})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(stage / "manifest.csv", buf.getvalue())
    return Path(out) / "manifest.csv", rows, problems
