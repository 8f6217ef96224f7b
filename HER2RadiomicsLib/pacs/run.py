"""``pacs run``: one study's ultrasound images from a DICOMweb server in; features, a DICOM
SEG (lesion + rings) and a DICOM SR (features, prediction) back; features.csv and a case report
per image into a folder.

Per ultrasound image of the study (single-frame):

1. the contour: the lesion segment of the newest SEG in the study that references the image
   (ContentDate/ContentTime; a SEG this command wrote only when no other one does), else the
   shipped CNN's auto-mask (AUTOMATIC);
2. features of the tumour and its rings (the same code and table as ``extract``);
3. with a bundle, the prediction (the bundle's own params and rings, as ``predict``);
4. a SEG of the lesion and every ring and an SR referencing it, stored with STOW-RS.

Idempotent: the SEG's and SR's UIDs are derived from a digest of what they hold (SEG: the
image, every segment's pixels, the contour's algorithm, the settings and library version; SR:
the SEG, every measurement, the prediction, the site and the bundle's digest; never a
timestamp), and an instance the server already holds is not sent again. A second run with the
same settings adds nothing; a new contour or other settings add a new SEG and SR (the newest
SEG wins next time).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HER2Error, InputError
from . import dicomweb
from . import seg as dseg
from . import sr as dsr
from .reader_segs import same_reader

log = logging.getLogger(__name__)
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 900, 901


@dataclass
class RunOptions:
    """``pacs run``'s settings (the extraction's are an ExtractConfig)."""

    url: str
    study: str
    out: Path
    cfg: object                      # extraction.batch.ExtractConfig
    bundle: object = None            # a loaded ModelBundle, or None
    auth: object = None              # dicomweb.Auth
    ca_bundle: str | None = None
    store: bool = True               # False: compute and write files, send nothing
    site: str | None = None          # scanner site, for bundles that harmonise sites
    reader: str | None = None        # only this content creator's SEGs are contours
    spacing_mm: tuple | None = None  # (x, y) for images whose DICOM states no calibration


@dataclass
class CaseOutcome:
    case_id: str
    series_uid: str
    contour: str = ""                # where the lesion came from
    seg_uid: str = ""
    sr_uid: str = ""
    stored: list = field(default_factory=list)     # "SEG stored", "SR already there", ...
    predicted_class: str = ""
    report: str = ""
    error: str = ""


def _uid(*parts) -> str:
    return dseg.derived_uid(*parts)


def mask_digest(mask: np.ndarray) -> str:
    m = np.asarray(mask, dtype=bool)
    return hashlib.sha256(repr(m.shape).encode() + np.packbits(m).tobytes()).hexdigest()


def content_digest(*parts) -> str:
    """A digest of an object's content (numbers as their ``repr``: exact)."""
    blob = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def settings_digest(cfg) -> str:
    """What the features depend on: the extraction settings, the params file's text and this
    library's version (a new version gets a new series, never a silent change)."""
    from .. import __version__
    from ..extraction.features import resolve_params
    text = Path(resolve_params(cfg.params)).read_text(encoding="utf-8")
    blob = json.dumps({"cfg": asdict(cfg), "params": text, "version": __version__},
                      sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


def bundle_info(bundle) -> dict:
    meta = bundle.meta
    return {"name": str(meta.get("recipe") or Path(str(bundle.path)).stem),
            "version": str((meta.get("versions") or {}).get("HER2RadiomicsLib", "")),
            "digest": str((meta.get("integrity") or {}).get("digest")
                          or meta.get("model_sha256", ""))}


def creator(ds) -> str:
    """The reader a SEG's Content Creator's Name (a DICOM PN: the station writes ``R1^``)
    names, as ``reader-study`` reads it."""
    from .reader_segs import reader_of
    return reader_of(getattr(ds, "ContentCreatorName", ""))


def _newest_contours(pacs, study, segs_meta, images: dict, problems: list,
                     reader: str | None = None) -> dict:
    """``({image SOP UID: SegContour}, {image SOP UID whose SEGs are all unusable})`` from
    the newest SEG referencing each image.

    A SEG this command wrote (lesion and rings, :func:`.seg.is_derived`) counts only when no
    other SEG contours the image: a reader's contour drawn before the last run but stored after
    it (an older ContentDate) still replaces the CNN's or an earlier copy. With ``reader``,
    only SEGs whose Content Creator's Name is ``reader`` count (a study holding several
    readers' station contours would otherwise give whichever reader saved last).
    """
    found, unusable = {}, {}
    for meta in segs_meta:
        uid = meta.get("SOPInstanceUID", "")
        ds = pacs.retrieve(study, meta.get("SeriesInstanceUID", ""), uid)
        if reader is not None and not same_reader(getattr(ds, "ContentCreatorName", ""),
                                                   reader):
            continue
        refs = dseg.referenced_images(ds)
        ours = refs & set(images)
        if not ours:
            problems.append(f"{pacs.url}: SEG {uid} references image "
                            f"{', '.join(sorted(refs)) or '(none)'}, which is not an "
                            f"ultrasound image of study {study}")
            continue
        for image_uid in ours:
            try:
                contour = dseg.read_contour(ds, images[image_uid]["header"])
            except InputError as exc:
                unusable.setdefault(image_uid, []).append(f"{pacs.url}: {exc}")
                continue
            rank = (not dseg.is_derived(ds), contour.content, contour.sop_uid)
            old = found.get(image_uid)
            if old is None or rank > old[0]:
                found[image_uid] = (rank, contour)
    for image_uid, lines in unusable.items():
        if image_uid not in found:      # its contour exists but cannot be read: not a CNN case
            lines[-1] += (f"; image {image_uid} left out (no usable SEG of it; no automatic "
                          "contour in its place)")
        problems.extend(lines)
    return {uid: contour for uid, (_, contour) in found.items()}, set(unusable) - set(found)


def study_instances(pacs, study: str) -> list:
    """QIDO-RS metadata of a study's instances; refuses an unknown study and one without an
    ultrasound image (one line each)."""
    try:
        instances = pacs.instances(study)
    except dicomweb.NotFound:
        instances = []
    if not instances:
        pacs.probe()        # a URL that is no DICOMweb root is not "study not found"
        raise InputError(f"{pacs.url}: study {study} not found")
    if not any(dicomweb.is_ultrasound(m) for m in instances):
        kinds = sorted({m.get("Modality", "?") for m in instances})
        raise InputError(f"{pacs.url}: study {study} has no ultrasound image (it holds "
                         f"{', '.join(kinds)})")
    return instances


def retrieve_study(pacs, study: str, instances: list, folder: Path, problems: list,
                   reader: str | None = None) -> tuple:
    """Every ultrasound image of the study into ``folder/<SOP UID>.dcm`` (WADO-RS) and the
    lesion of the newest SEG referencing each (``reader``'s only, when given):
    ``({uid: {"header", "path", "series"}}, {uid: SegContour})``; a SEG that cannot be used
    adds a line to ``problems``."""
    images = {}
    for m in instances:
        if not dicomweb.is_ultrasound(m):
            continue
        uid = m["SOPInstanceUID"]
        ds = pacs.retrieve(study, m["SeriesInstanceUID"], uid)
        path = folder / f"{uid}.dcm"
        ds.save_as(path)
        images[uid] = {"header": ds, "path": path, "series": m["SeriesInstanceUID"]}
    segs = [m for m in instances if m.get("SOPClassUID") == dicomweb.SEG]
    contours, unusable = _newest_contours(pacs, study, segs, images, problems, reader)
    for uid in unusable:                # reported by _newest_contours
        images.pop(uid)["path"].unlink(missing_ok=True)
    if reader is not None:
        # a user asking for a reader's contours expects that reader's: an image the reader did
        # not contour is reported and left out, not given the CNN's (or another's) contour
        for uid in [u for u in images if u not in contours]:
            problems.append(f"{pacs.url}: image {uid} of study {study}: no SEG of reader "
                            f"{reader}; left out")
            images.pop(uid)["path"].unlink(missing_ok=True)
    return images, contours


def _cnn_contour(loaded, segmenter):
    from ..segmentation.inference import auto_mask
    import SimpleITK as sitk
    res = auto_mask(loaded, segmenter=segmenter,
                    no_lesion=f"{loaded.path}: the CNN found no lesion and the study holds no "
                              "SEG of this image; store a reader's contour as a DICOM SEG")
    card = segmenter.card or {}
    algorithm = dseg.Algorithm("AUTOMATIC", f"HER2Radiomics CNN {card.get('name', 'unet')}",
                               str(card.get("sha256", ""))[:16] or "1")
    return sitk.GetArrayFromImage(res.mask) > 0, algorithm, res.info.get("confidence")


def _write_mask(mask: np.ndarray, path: Path) -> Path:
    import SimpleITK as sitk
    sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)), str(path))
    return path


def run_study(opts: RunOptions, progress=print) -> tuple:
    """Run one study (see the module docstring).

    Returns ``(outcomes, problems)``: one :class:`CaseOutcome` per ultrasound image, and one
    line per SEG of the study that could not be used; writes features.csv, dicom/, reports/
    and pacs_run.json into ``opts.out`` (a staging folder: see :func:`run_into`).

    Raises
    ------
    InputError
        The server cannot be reached or refuses the credentials, the study is unknown or holds
        no ultrasound image (one line each).
    """
    from ..extraction.batch import run_batch
    from ..imaging.io import read_image
    pacs = dicomweb.Pacs(opts.url, opts.auth, opts.ca_bundle)
    instances = study_instances(pacs, opts.study)
    settings = settings_digest(opts.cfg)
    binfo = bundle_info(opts.bundle) if opts.bundle is not None else None
    problems, outcomes = [], {}
    with tempfile.TemporaryDirectory(prefix="her2radiomics-pacs-") as tmp:
        tmp = Path(tmp)
        images, contours = retrieve_study(pacs, opts.study, instances, tmp, problems,
                                          opts.reader)
        rows, sources, segmenter = [], {}, None
        for uid, im in images.items():
            out = outcomes[uid] = CaseOutcome(uid, im["series"])
            try:
                dseg._check_single_frame(im["header"])
                im["spacing_mm"] = _spacing_for(im["path"], opts.spacing_mm)
                if uid in contours:
                    c = contours[uid]
                    mask, algorithm = c.mask, c.algorithm
                    out.contour = f"SEG {c.sop_uid} segment {c.segment_number} ({algorithm.kind})"
                else:
                    if segmenter is None:
                        from ..segmentation.inference import get_segmenter
                        segmenter = get_segmenter()
                    loaded = read_image(im["path"], spacing_mm=im["spacing_mm"])
                    mask, algorithm, conf = _cnn_contour(loaded, segmenter)
                    out.contour = (f"CNN auto-mask (AUTOMATIC, not reviewed; confidence "
                                   f"{conf:.2f})" if conf is not None else "CNN auto-mask")
            except HER2Error as exc:
                out.error = _named(str(exc), im)
                continue
            sources[uid] = (mask, algorithm)
            rows.append({"case_id": uid, "image": str(im["path"]),
                         "mask": str(_write_mask(mask, tmp / f"{uid}_mask.png"))})
            if im["spacing_mm"]:
                rows[-1]["spacing_x_mm"], rows[-1]["spacing_y_mm"] = im["spacing_mm"]
        feats = {}
        if rows:
            from ..extraction.batch import BatchOptions
            # the per-case parts live in the temporary folder: --out gets the tables only
            res = run_batch(rows, opts.out / "features.csv", opts.cfg, progress=False,
                            options=BatchOptions(parts_dir=tmp / "parts"))
            if res.interrupted:         # the batch keeps Ctrl-C's parts; this run is over
                raise KeyboardInterrupt
            for e in res.errors:
                outcomes[e["case_id"]].error = _named(e["error"], images[e["case_id"]])
            feats = _read_features(opts.out / "features.csv")
        for uid, row in feats.items():
            out = outcomes[uid]
            try:
                _finish_case(pacs, opts, images[uid], out, row, sources[uid], settings, binfo)
            except HER2Error as exc:
                out.error = _named(str(exc), images[uid])
            progress(_line(out))
    _write_summary(opts, pacs.url, outcomes, problems)
    return list(outcomes.values()), problems


#: the command that owns a ``pacs run`` output folder (its ownership marker names it)
RUN_COMMAND = "pacs run"


class _NothingDone(Exception):
    """No image was done: the staged set is dropped and --out stays as it was."""


def check_out_study(out: Path, study: str) -> None:
    """Refuse an ``--out`` that holds another study's run: its tables would be replaced by
    this study's, silently dropping the other's (one line, before any work)."""
    try:
        held = json.loads((Path(out) / "pacs_run.json").read_text(encoding="utf-8"))["study"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if held and held != study:
        raise InputError(f"{out}: holds the pacs run of study {held}; give another --out for "
                         f"study {study} (nothing was changed)")


def run_into(opts: RunOptions, progress=print) -> tuple:
    """:func:`run_study` into a staged copy of ``opts.out`` that replaces the previous set
    (features.csv, dicom/, reports/, pacs_run.json) in one swap, only when at least one image
    was done: a failed or interrupted run leaves the previous folder as it was.

    Returns ``(outcomes, problems, published)``.
    """
    from dataclasses import replace
    from ..outputs import staged_dir
    check_out_study(opts.out, opts.study)
    try:
        with staged_dir(opts.out, RUN_COMMAND) as stage:
            outcomes, problems = run_study(replace(opts, out=Path(stage)), progress)
            if all(o.error for o in outcomes):
                raise _NothingDone
    except _NothingDone:
        return outcomes, problems, False
    return outcomes, problems, True


def _spacing_for(path: Path, spacing_mm) -> tuple | None:
    """``--spacing-mm`` for an image whose DICOM states no calibration (no Pixel Spacing,
    no calibrated ultrasound region), else None: the file's own calibration wins."""
    if not spacing_mm:
        return None
    from ..imaging.io import read_image
    loaded = read_image(path)
    return tuple(spacing_mm) if loaded.spacing_source == "unknown" and not loaded.us_regions \
        else None


def _named(error: str, im: dict) -> str:
    """An error that names the image by its SOP Instance UID, not by the temporary copy
    (deleted when the run ends)."""
    return error.replace(str(im["path"]), f"image {im['header'].SOPInstanceUID}")


def _read_features(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["case_id"]: {k: float(v) for k, v in r.items() if "__" in k and v != ""}
                for r in csv.DictReader(fh)}


def _region_arrays(opts, image_path: Path, mask: np.ndarray, spacing_mm=None) -> dict:
    """The regions ``extract`` built for this case (same function, same settings)."""
    import SimpleITK as sitk
    from ..imaging.io import load_case
    from ..imaging.rings import build_regions
    cfg = opts.cfg
    mask_path = image_path.with_name(image_path.stem + "_mask.png")
    loaded, m = load_case(image_path, mask_path, label=cfg.label, min_pixels=cfg.min_mask_pixels,
                          spacing_mm=spacing_mm)
    regions = build_regions(loaded, m, cfg.rings_mm, annuli=cfg.annuli, combined=cfg.combined,
                            fov="auto" if cfg.fov == "auto" else None,
                            max_clip_fraction=cfg.max_clip_fraction)
    return {k: sitk.GetArrayFromImage(v) > 0 for k, v in regions.masks.items()}, regions


def _ring_parameters(regions) -> dict:
    return {name: {"clipped_fraction": f"{q['clipped_fraction']:.4f}",
                   "fov": regions.fov_source}
            for name, q in regions.qc.items() if name != dseg.LESION}


def _finish_case(pacs, opts, im, out, row, source, settings, binfo) -> None:
    from .. import __version__
    mask, algorithm = source
    arrays, regions = _region_arrays(opts, im["path"], mask, im.get("spacing_mm"))
    if not np.array_equal(arrays[dseg.LESION], mask):
        raise InputError(f"image {out.case_id}: the lesion read back differs from the contour")
    study = opts.study
    # UIDs from a digest of what the object holds (never its timestamps): the same content
    # gives the same UID (a rerun sends nothing), any other content a new one
    out.seg_uid = _uid("seg", content_digest(
        out.case_id, [(name, mask_digest(a)) for name, a in arrays.items()],
        algorithm.kind, algorithm.name, algorithm.version, settings))
    seg_ds = dseg.build_seg(
        im["header"], arrays, algorithm, series_uid=_uid("seg-series", study, settings),
        sop_uid=out.seg_uid, ring_parameters=_ring_parameters(regions),
        series_number=SEG_SERIES_NUMBER, software_version=__version__,
        content_label=dseg.DERIVED_LABEL)
    prediction = result = None
    if opts.bundle is not None:
        result, prediction = _predict(opts, im, out)
    digest = binfo["digest"] if binfo else ""
    out.sr_uid = _uid("sr", content_digest(
        out.seg_uid, sorted(row.items()), asdict(prediction) if prediction else None,
        opts.site, digest, settings))
    sr_ds = dsr.build_sr(im["header"], seg_ds, row, prediction=prediction,
                         series_uid=_uid("sr-series", study, settings, digest),
                         sop_uid=out.sr_uid, series_number=SR_SERIES_NUMBER,
                         software_version=__version__)
    # Series Date/Time (type 3) as the content's: `pacs query` lists the series with a date
    sr_ds.SeriesDate, sr_ds.SeriesTime = sr_ds.ContentDate, sr_ds.ContentTime
    objects = opts.out / "dicom"
    objects.mkdir(parents=True, exist_ok=True)
    for kind, ds in (("SEG", seg_ds), ("SR", sr_ds)):
        _save(ds, objects / f"{out.case_id}_{kind.lower()}.dcm")
        if not opts.store:
            out.stored.append(f"{kind} written, not sent (--no-store)")
        elif pacs.exists(study, ds.SOPInstanceUID):
            out.stored.append(f"{kind} already there")
        else:
            pacs.store([ds], study)
            out.stored.append(f"{kind} stored")
    out.report = _report(opts, im, out, regions, result).relative_to(opts.out).as_posix()


def _save(ds, path: Path) -> None:
    """Written aside and renamed: an interrupted run never leaves half a file in place of a
    good one."""
    import os
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.save_as(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _predict(opts, im, out):
    from ..modelling.predict import ReadOptions, predict_case
    mask_path = im["path"].with_name(im["path"].stem + "_mask.png")
    result = predict_case(opts.bundle, im["path"], mask_path, case_id=out.case_id,
                          site=opts.site, options=ReadOptions(spacing_mm=im.get("spacing_mm")))
    out.predicted_class = str(result.prediction.predicted_class)
    info = bundle_info(opts.bundle)
    return result, dsr.ModelPrediction(
        predicted_class=out.predicted_class,
        probabilities={str(k): float(v) for k, v in result.prediction.probabilities.items()},
        model_name=info["name"], model_version=info["version"], model_digest=info["digest"],
        rad_score=result.prediction.rad_score)


def _report(opts, im, out, regions, result) -> Path:
    path = opts.out / "reports" / f"{out.case_id}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    if result is not None:
        from ..reports.case import write_case_report
        write_case_report(opts.bundle, result, path, mask_source=out.contour)
        return path
    from .report import write_plain_report
    write_plain_report(path, im, out, regions)
    return path


def _line(out: CaseOutcome) -> str:
    pred = f"; predicted {out.predicted_class}" if out.predicted_class else ""
    return f"{out.case_id}: {out.contour}; {', '.join(out.stored)}{pred}"


def _write_summary(opts, url, outcomes: dict, problems: list) -> Path:
    from ..imaging.io import atomic_write_text
    doc = {"url": url, "study": opts.study, "problems": problems,
           "cases": [{k: v for k, v in asdict(o).items()} for o in outcomes.values()]}
    return atomic_write_text(opts.out / "pacs_run.json", json.dumps(doc, indent=2))
