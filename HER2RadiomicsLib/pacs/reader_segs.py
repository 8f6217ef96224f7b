"""Readers' contours from DICOM SEG files, for ``her2radiomics reader-study``.

Two ways to name them:

* a ``seg`` column in the reader manifest (``case_id, image, reader, seg``; ``mask`` may be
  empty on those rows, and other rows may keep a ``mask``): each SEG must reference the row's
  image, or the run stops with one line naming the SEG;
* ``--seg-dir FOLDER``: every DICOM SEG under the folder is matched to the manifest's images
  by the SOP Instance UIDs it references, and to a reader by its content creator (the reader
  station writes the reader's name there); of several SEGs of one image by one reader the
  newest counts (Content Date/Time, then Instance Number: the station's replace rule). The
  manifest then needs only ``case_id, image``.

The lesion segment of each SEG (:func:`HER2RadiomicsLib.pacs.seg.read_contour`) is written as a
label map in the image's geometry under ``<out>/seg_contours/``, with a manifest of them that
the reader study reads as any other. The images must be the DICOM files the SEGs were drawn on.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import HER2Error, InputError
from . import seg as dseg

log = logging.getLogger(__name__)

FOLDER = "seg_contours"


def is_dicom_file(path) -> bool:
    """A DICOM file (the ``DICM`` preamble, or a ``.dcm``/``.dicom`` name)."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def person_name(reader: str) -> str:
    """A reader's name as a DICOM person name (PN): the family-name component, with the
    trailing caret that says it is one (``R1^``; a station reader name has only letters,
    digits, ``.``, ``-`` and ``_``)."""
    return str(reader).replace("^", " ").replace("=", " ").replace("\\", " ")[:63] + "^"


def reader_of(person) -> str:
    """The reader a SEG's content creator names (:func:`person_name` read back; a full
    ``Family^Given`` name becomes ``Family Given``)."""
    return " ".join(p for p in str(person or "").split("=")[0].split("^") if p).strip()


def same_reader(person, reader) -> bool:
    """Whether a SEG's content creator (a DICOM PN, ``R1^``) names ``reader`` (as a user
    types it: ``R1``, ``R1^`` or ``Family^Given``): both read as :func:`reader_of`, the
    rule the station writes and ``reader-study`` reads by."""
    return bool(reader_of(reader)) and reader_of(person) == reader_of(reader)


def _dcm(path, header_only=False):
    import pydicom
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises several types for a bad file
        raise InputError(f"{path}: not a readable DICOM file "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None


def _resolve(base: Path, p: str) -> str:
    return str(p if Path(p).is_absolute() else base / p)


def _image_header(path):
    if not is_dicom_file(path):
        raise InputError(f"{path}: a DICOM SEG contour needs the DICOM image it was drawn on "
                         "(this is not a DICOM file)")
    return _dcm(path, header_only=True)


def _seg_files(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_dicom_file(p))


def _order(ds) -> tuple:
    return (dseg.content_stamp(ds), int(getattr(ds, "InstanceNumber", 0) or 0))


def _from_column(df, base: Path) -> list:
    """``(case_id, image, reader, seg path)`` of the manifest rows with a ``seg``."""
    out = []
    for i, r in df.iterrows():
        if not r.get("seg"):
            continue
        if not r.get("reader"):
            raise InputError(f"{base / 'manifest'} row {i + 2}: a seg needs its reader")
        out.append((r["case_id"], _resolve(base, r["image"]), r["reader"],
                    _resolve(base, r["seg"])))
    return out


def _from_folder(df, base: Path, seg_dir: Path, warn) -> list:
    """``(case_id, image, reader, seg path)``: the newest SEG per image and content creator."""
    if not seg_dir.is_dir():
        raise InputError(f"{seg_dir}: --seg-dir folder not found")
    by_uid = {}
    for r in df.itertuples():
        image = _resolve(base, r.image)
        try:
            by_uid.setdefault(str(_image_header(image).SOPInstanceUID), []).append(
                (r.case_id, image))
        except InputError as exc:
            warn(f"{exc}: case {r.case_id} gets no SEG contour")
    best, unmatched, anonymous = {}, 0, 0
    for path in _seg_files(seg_dir):
        ds = _dcm(path, header_only=True)
        if not dseg.is_seg(ds):
            continue
        hits = [c for uid in dseg.referenced_images(ds) for c in by_uid.get(uid, [])]
        if not hits:
            unmatched += 1
            continue
        reader = reader_of(getattr(ds, "ContentCreatorName", ""))
        if not reader:
            anonymous += 1
            continue
        for case_id, image in hits:
            key = (case_id, reader)
            if key not in best or _order(ds) > best[key][0]:
                best[key] = (_order(ds), image, str(path))
    if unmatched:
        warn(f"{seg_dir}: {unmatched} SEG(s) reference no image of the manifest: ignored")
    if anonymous:
        warn(f"{seg_dir}: {anonymous} SEG(s) name no content creator (the reader): ignored")
    if not best:
        raise InputError(f"{seg_dir}: no DICOM SEG with a content creator references an image "
                         "of the manifest")
    return [(c, image, reader, seg) for (c, reader), (_, image, seg) in sorted(best.items())]



def _read_lesion(seg_path, image, case_id, reader, spacing_mm):
    """``(lesion as a label image in the image's geometry)`` of one reader's SEG."""
    import SimpleITK as sitk
    from ..imaging.io import read_image
    try:
        contour = dseg.read_contour(_dcm(seg_path), _image_header(image))
    except HER2Error as exc:
        raise InputError(f"{seg_path}: case {case_id} reader {reader}: "
                         f"{str(exc).splitlines()[0]}") from None
    ref = read_image(image, spacing_mm=spacing_mm).image
    shape = sitk.GetArrayViewFromImage(ref).shape
    if contour.mask.shape != shape:
        raise InputError(f"{seg_path}: its lesion is {contour.mask.shape}, image {image} reads "
                         f"as {shape}")
    label = sitk.GetImageFromArray(contour.mask.astype(np.uint8))
    label.CopyInformation(ref)
    return label


def seg_manifest(manifest, out_dir, seg_dir=None, spacing_mm=None, warn=None):
    """The readers' SEG contours as label maps and a reader manifest of them.

    Parameters
    ----------
    manifest : path
        CSV with ``case_id, image`` and, per row, ``reader`` with ``mask`` or ``seg``.
    out_dir : path
        The reader study's output folder (must be the reader study's or new): the label maps
        and ``reader_manifest.csv`` go to ``<out_dir>/seg_contours/``.
    seg_dir : path, optional
        A folder of SEGs matched by referenced image and content creator.
    spacing_mm : (float, float), optional
        The spacing the study reads the images with (the label maps get the same geometry).
    warn : callable, optional
        Called with one line per ignored SEG or image (default: printed to stderr).

    Returns
    -------
    Path
        The reader manifest (``case_id, image, reader, mask, seg``) to run the study on.

    Raises
    ------
    InputError
        A SEG that references another image than its row's, an unreadable SEG or image, no
        SEG matched at all.
    """
    import pandas as pd
    from ..imaging.files import write_image
    from ..outputs import check_folder_owner, claim_folder, write_csv
    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
    manifest = Path(manifest)
    try:
        df = pd.read_csv(manifest, dtype=str).fillna("")
    except (OSError, ValueError) as exc:
        raise InputError(f"{manifest}: cannot read manifest ({exc})") from None
    need = ["case_id", "image"] + ([] if seg_dir else ["reader"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{manifest}: manifest lacks column(s) {missing}")
    if not seg_dir and "seg" not in df.columns:
        raise InputError(f"{manifest}: no 'seg' column and no --seg-dir: no SEG contours")
    base = manifest.parent
    found = (_from_folder(df, base, Path(seg_dir), warn) if seg_dir
             else _from_column(df, base))
    # every SEG is read and checked before anything is written
    labels = [_read_lesion(seg, image, c, reader, spacing_mm) for c, image, reader, seg in found]
    check_folder_owner(out_dir, "reader-study")
    folder = claim_folder(out_dir, "reader-study") / FOLDER
    rows = []
    for (c, image, reader, seg), label in zip(found, labels):
        name = re.sub(r"[^A-Za-z0-9._@-]", "_", f"{c}@{reader}")
        rows.append({"case_id": c, "image": image, "reader": reader, "seg": seg,
                     "mask": str(write_image(label, folder / f"{name}.nrrd"))})
    if "mask" in df.columns and "reader" in df.columns:        # rows that keep a mask file
        rows += [{"case_id": r.case_id, "image": _resolve(base, r.image), "reader": r.reader,
                  "mask": _resolve(base, r.mask), "seg": ""}
                 for r in df.itertuples() if r.mask and not getattr(r, "seg", "")]
    out = folder / "reader_manifest.csv"
    write_csv(out, pd.DataFrame(rows, columns=["case_id", "image", "reader", "mask", "seg"]))
    log.info("%d SEG contour(s) -> %s", len(found), out)
    return out
