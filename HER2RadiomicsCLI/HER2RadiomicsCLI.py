#!/usr/bin/env python-real
"""HER2Radiomics scripted CLI: one image or a cohort manifest -> regions, features, prediction.

Slicer runs it from the CLI module GUI or ``slicer.cli.run``; it also runs as a plain script
(``python HER2RadiomicsCLI.py --inputVolume us.nrrd --outputTable out.tsv``). The parameters
are declared in ``HER2RadiomicsCLI.xml``; ``Testing/test_slicer_cli.py`` pins the two together.
Progress goes to stdout as ``<filter-progress>`` lines, which Slicer shows in its progress bar.

What Slicer does with a CLI decides how this one reports (``vtkSlicerCLIModuleLogic``, 5.8 to
5.12): output tables are read back only after exit code 0 (any other code discards and deletes
them), and anything on stderr is logged as an error even after a successful run. So:

* a manifest run exits 0 when at least one case succeeded; the cases that failed are rows of
  the second output table (``outputErrors``: case_id, file, error), shown in Slicer beside the
  features; exit 1 (one stderr line) only when no case succeeded, 2 for a bad invocation;
* a clean run writes nothing to stderr: progress and notes go to stdout, Python warnings too;
* Slicer names its temporary outputs ``<pid>_<nodeID>.tsv``, the same name for every run into
  the same table in a session: nothing is reused from an earlier run unless ``--resume`` asks
  for it, and then only for cases whose files (content) and settings are unchanged.

A manifest goes through the library's batch engine, as ``her2radiomics extract --manifest``
does: parallel workers (``--jobs``), a bad row or image fails only its case. Cases without a
mask get the CNN's.

Imports only the public face of HER2RadiomicsLib (``from HER2RadiomicsLib import ...``), and
inside the functions: the library's folder is found at run time (:func:`_addLibraryPath`) and
``--help`` (Slicer asks it for the XML) must answer without loading numpy.
"""
import argparse
import os
import sys

#: presets shipped with HER2RadiomicsLib (the XML's string-enumeration lists the same)
PRESETS = ["default", "cui2023", "yin2024", "zhao2025"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):       # one line, as every other error of this CLI
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def buildParser():
    p = _Parser(description="HER2Radiomics batch CLI (research use only)")
    p.add_argument("--inputVolume", help="2D image (grey or colour: colour is converted to "
                   "grey with the library's BT.601 rule)")
    p.add_argument("--caseId", type=str, default="",
                   help="case name for a single image (default: the image file's name)")
    p.add_argument("--inputLabel", help="tumour label map (CNN when absent)")
    p.add_argument("--inputRegions", help="bit-coded label map of the regions to extract "
                   "(region i sets bit i; the Slicer panel's edited segments)")
    p.add_argument("--regionNames", type=str, default="",
                   help="comma-separated region names in bit order (with --inputRegions)")
    p.add_argument("--spacingUnknown", action="store_true", default=False,
                   help="the image's spacing is a placeholder: features in pixel units")
    p.add_argument("--manifest", help="cohort CSV with columns case_id, image and mask (mask "
                                      "cells may be empty: the CNN draws those), and "
                                      "optionally site and clinical columns")
    p.add_argument("--spacingMm", type=str, help="X,Y pixel spacing in mm")
    p.add_argument("--rings", type=str, default="3,5,8")
    p.add_argument("--annuli", action="store_true", default=False)
    p.add_argument("--preset", choices=PRESETS, default="default")
    p.add_argument("--paramsFile")
    p.add_argument("--bundle")
    p.add_argument("--site", type=str, default="")
    p.add_argument("--clinical", type=str, default="")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--resume", action="store_true", default=False,
                   help="reuse the cases an earlier run into the same output table finished, "
                        "when their files and settings are unchanged")
    p.add_argument("--prompt", type=str, default="",
                   help="CNN prompt in pixels: 'box:X0,Y0,X1,Y1' or 'click:X,Y'")
    p.add_argument("--outputMask", help="the tumour mask used (the CNN's when no label map)")
    p.add_argument("--outputJson", help="details of the run for the panel: the CNN's "
                                        "confidence and flags, the prediction")
    p.add_argument("--outputReport", help="per-case report (.html or .pdf; with --bundle)")
    p.add_argument("--outputLabel")
    p.add_argument("--outputTable")
    p.add_argument("--outputErrors", help="table of the cases that failed (case_id, file, "
                                          "error)")
    return p


def progress(fraction):
    """Slicer reads these lines from stdout to drive the CLI module's progress bar."""
    sys.stdout.write(f"<filter-progress>{fraction:.4f}</filter-progress>\n")
    sys.stdout.flush()


def note(text):
    """A line for the user that is not an error: stdout (Slicer logs stderr as an error)."""
    sys.stdout.write(text.rstrip() + "\n")
    sys.stdout.flush()


def _warningsToStdout():
    """Python warnings as notes on stdout: on stderr Slicer would log each one as an error."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        note(f"warning: {category.__name__}: {message}")
    warnings.showwarning = show
    import logging
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def libraryCandidates(here):
    """Folders that may hold HER2RadiomicsLib, nearest first: the source tree's top, an
    installed extension's ``qt-scripted-modules``, and a multi-configuration build tree's
    ``qt-scripted-modules/<CONFIG>`` (the CLI then sits in ``cli-modules/<CONFIG>``)."""
    out = []
    config = os.path.basename(here)
    up = here
    for _ in range(3):
        up = os.path.dirname(up)
        out += [up, os.path.join(up, "qt-scripted-modules"),
                os.path.join(up, "qt-scripted-modules", config)]
    return out


def _addLibraryPath():
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in libraryCandidates(here):
        if os.path.isdir(os.path.join(candidate, "HER2RadiomicsLib")):
            if candidate not in sys.path:
                sys.path.append(candidate)
            return


def labelLikeInput(label, inputPath):
    """The label map on the input volume's own grid: a 2D label read from a one-slice 3D
    volume goes back to 3D with the volume's origin, spacing and direction, so it overlays
    the volume in Slicer wherever its slice lies (a 2D file would land at z = 0)."""
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(inputPath))
    try:
        reader.ReadImageInformation()
    except RuntimeError:        # a format SimpleITK cannot read (DICOM via pydicom): as is
        return label
    if reader.GetDimension() != 3 or reader.GetSize()[2] != 1 or label.GetDimension() != 2:
        return label
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(label)[None])
    out.SetOrigin(reader.GetOrigin())
    out.SetSpacing(reader.GetSpacing())
    out.SetDirection(reader.GetDirection())
    return out


def _refuseOverlaps(args):
    """No output may be one of the inputs (a manifest, the image, its label map, the
    manifest's files, their sidecars), nor two outputs one file."""
    from HER2RadiomicsLib import companion_files, refuse_overlaps
    inputs = [getattr(args, n) for n in ("inputVolume", "inputLabel", "inputRegions",
                                         "manifest", "paramsFile", "bundle")
              if getattr(args, n, None)]
    if args.manifest:
        import csv
        from pathlib import Path
        base = Path(args.manifest).resolve().parent
        try:
            with open(args.manifest, newline="", encoding="utf-8-sig") as fh:
                for r in csv.DictReader(fh):
                    for col in ("image", "mask", "fov"):
                        v = (r.get(col) or "").strip()
                        if v:
                            inputs.append(Path(v) if Path(v).is_absolute() else base / v)
        except (OSError, UnicodeDecodeError, csv.Error):
            pass            # read_manifest says what is wrong with it, in one line
    inputs += [c for f in list(inputs) for c in companion_files(f)]
    outputs = [getattr(args, n) for n in ("outputTable", "outputErrors", "outputLabel",
                                          "outputMask", "outputJson", "outputReport")
               if getattr(args, n, None)]
    refuse_overlaps(inputs, outputs)


def _spacing(text):
    if not text:
        return None
    try:
        parts = [float(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"--spacingMm {text!r}: expected two positive numbers X,Y") from None
    import math
    if len(parts) < 2 or not all(math.isfinite(v) and v > 0 for v in parts[:2]):
        raise ValueError(f"--spacingMm {text!r}: expected two positive numbers X,Y")
    return tuple(parts[:2])


def processRegions(caseId, image, regionsPath, args, spacing=None, report=None):
    """Features of regions drawn elsewhere (the Slicer panel's tumour and ring segments,
    edits included) -> a table row; no ring is rebuilt and no CNN runs."""
    import SimpleITK as sitk
    from HER2RadiomicsLib import decode_region_bits, FeatureExtractor, read_image
    loaded = read_image(image, spacing_mm=spacing)
    try:
        label = sitk.ReadImage(str(regionsPath))
    except RuntimeError as exc:
        raise ValueError(f"{regionsPath}: cannot read the region label map "
                         f"({str(exc).strip().splitlines()[-1][:120]})") from None
    masks = decode_region_bits(label, args.regionNames, loaded.image, path=str(regionsPath))
    known = loaded.spacing_known and not args.spacingUnknown
    fx = FeatureExtractor(args.paramsFile or args.preset)
    feats, _ = fx.extract(loaded.image, masks, spacing_known=known, path=str(image),
                          progress=(lambda d, t, r: report(d / max(t, 1))) if report else None)
    return {"case_id": caseId, "mask_source": "region label map",
            "spacing_source": loaded.spacing_source if known else "unknown", **feats}


def _prompt(text):
    """``box:X0,Y0,X1,Y1`` / ``click:X,Y`` (pixels, column and row) -> (box, click)."""
    if not text:
        return None, None
    kind, _, values = str(text).partition(":")
    try:
        nums = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        nums = []
    if kind == "box" and len(nums) == 4:
        return nums, None
    if kind == "click" and len(nums) == 2:
        return None, nums
    raise ValueError(f"--prompt {text!r}: expected box:X0,Y0,X1,Y1 or click:X,Y (pixels)")


def processCase(caseId, image, mask, args, bundle=None, site=None, clinical=None,
                spacing=None, writeLabel=None, report=None):
    """One case -> a table row. Without a label map the CNN draws the tumour (with the
    ``--prompt``); with a bundle the prediction is made from one extraction of the bundle's
    own regions and params, which also gives the row's features and the report; otherwise the
    features of ``--rings`` and the preset are extracted when a table is asked for."""
    from HER2RadiomicsLib import (FeatureExtractor, build_regions, load_case, read_image,
                                  write_image)
    details = {"case_id": caseId}
    if mask:
        loaded, maskImage = load_case(image, mask, spacing_mm=spacing)
        source = "label map"
    else:
        from HER2RadiomicsLib import auto_mask, check_ultrasound, get_segmenter
        loaded = read_image(image, spacing_mm=spacing)
        flags = check_ultrasound(loaded)
        box, click = _prompt(args.prompt)
        res = auto_mask(loaded, segmenter=get_segmenter(None, args.device), box=box,
                        click=click, no_lesion=f"{image}: the CNN found no lesion; give a "
                                               "prompt or draw it")
        maskImage = res.mask
        source = "CNN auto-mask"
        details["cnn"] = {"confidence": res.info.get("confidence"),
                          "prompt": res.info.get("prompt"),
                          "lesion_px": res.info.get("lesion_px"),
                          "flags": flags + list(res.info.get("flags", []))}
    if report:
        report(0.25)
    if args.outputMask:
        write_image(labelLikeInput(maskImage, image), args.outputMask)
    row = {"case_id": caseId, "mask_source": source, "spacing_source": loaded.spacing_source}
    regs = None
    if bundle is not None:
        from HER2RadiomicsLib import predict_case
        # one extraction gives the prediction, the row's features and the report
        result = predict_case(bundle, loaded, maskImage, site=site or None,
                              clinical=clinical or None, case_id=caseId)
        pr = result.prediction
        regs = result.regions
        row.update(result.features)
        row.update({f"prediction_{k}": v for k, v in pr.as_row().items() if k != "case_id"})
        details["prediction"] = pr.__dict__
        details["features"] = result.features    # the panel keeps them: no second extraction
        if args.outputReport:
            from HER2RadiomicsLib import write_case_report
            write_case_report(bundle, result, args.outputReport, mask_source=source,
                              mask_flags=(details.get("cnn") or {}).get("flags", ()))
    elif args.outputReport:
        raise ValueError("--outputReport needs --bundle (the report shows the prediction)")
    elif args.outputTable or writeLabel:
        regs = build_regions(loaded, maskImage, args.rings, annuli=args.annuli,
                             path=str(image))
        if args.outputTable:
            fx = FeatureExtractor(args.paramsFile or args.preset)
            feats, _ = fx.extract(loaded.image, regs.masks, spacing_known=loaded.spacing_known,
                                  path=str(image),
                                  progress=(lambda d, t, r: report(0.25 + 0.7 * d / max(t, 1)))
                                  if report else None)
            row.update(feats)
    if writeLabel and regs is not None:
        write_image(labelLikeInput(regs.label_map, image), writeLabel)
    if args.outputJson:
        import json
        from HER2RadiomicsLib import atomic_write_text, json_default
        atomic_write_text(args.outputJson, json.dumps(details, default=json_default))
    return row


def _cnnMasks(rows, args, spacing, errors, report, folder):
    """CNN masks for the rows without one, written to ``folder``; with ``--resume`` a mask
    of an earlier run is reused only for the same image content, frame and model. Failed cases
    go to ``errors`` and are dropped."""
    from HER2RadiomicsLib import cnn_masks
    failedRows = cnn_masks(rows, folder, device=args.device, resume=args.resume,
                           spacing_of=lambda r: _rowSpacing(r, spacing), progress=report)
    errors += [_failure(r, message) for r, message in failedRows]
    failed = {e["case_id"] for e in errors}
    return [r for r in rows if r["case_id"] not in failed]


def _failure(row, message):
    """A failed case as a row of the failures table: the file the message names (an error
    starts with its file), else the case's image."""
    text = str(message)
    head = text.split(": ", 1)[0]
    file = row.get("_error_file") or (head if head and (os.sep in head or "/" in head)
                                      else row.get("image", ""))
    return {"case_id": row.get("case_id", ""), "file": file, "error": text}


def _rowSpacing(row, spacing):
    if row.get("spacing_x_mm"):
        return float(row["spacing_x_mm"]), float(row["spacing_y_mm"])
    return spacing


def runManifest(args, spacing, clinical, bundle):
    """A cohort through the library's batch engine; returns the exit code."""
    import shutil
    import tempfile
    from pathlib import Path

    from HER2RadiomicsLib import read_manifest
    if not args.outputTable:
        raise ValueError("--manifest needs --outputTable (one row per case)")
    # a bad row (missing file, bad value) is that case's failure; the others go on
    rows = read_manifest(args.manifest, empty_mask_ok=True, per_row=True)
    order = {}
    for i, r in enumerate(rows):
        order.setdefault(str(r.get("case_id", "")), i)
    errors = [_failure(r, r["_error"]) for r in rows if r.get("_error")]
    rows = [r for r in rows if not r.get("_error")]
    for r in rows:
        r.setdefault("mask_source", "label map" if r.get("mask") else "")
        if spacing and not r.get("spacing_x_mm"):
            r["spacing_x_mm"], r["spacing_y_mm"] = spacing
    out = Path(args.outputTable)
    # Slicer reuses one temporary output name per table node: work left by another run there
    # is only looked at when --resume asks for it; otherwise this run works in a fresh folder
    work = Path(str(out) + ".work") if args.resume else Path(tempfile.mkdtemp(prefix="h2r_cli_"))
    try:
        return _runManifestIn(work, rows, errors, args, spacing, clinical, bundle, out, order)
    finally:
        if not args.resume:
            shutil.rmtree(work, ignore_errors=True)


def _runManifestIn(work, rows, errors, args, spacing, clinical, bundle, out, order):
    import contextlib

    import pandas as pd
    from HER2RadiomicsLib import ExtractConfig, parse_rings, run_batch
    rows = _cnnMasks(rows, args, spacing, errors, lambda f: progress(0.02 + 0.28 * f),
                     work / "masks")
    with contextlib.ExitStack() as stack:
        if bundle is not None:
            # the bundle's own params and rings, so its input columns are extracted; the
            # params file lives as long as the extraction (its workers read it)
            from HER2RadiomicsLib import bundle_params_file
            ring = bundle.meta.get("rings") or {}
            cfg = ExtractConfig(params=str(stack.enter_context(bundle_params_file(bundle))),
                                rings_mm=tuple(ring.get("rings_mm", [])),
                                annuli=bool(ring.get("annuli", False)),
                                combined=tuple(ring.get("combined", [])))
        else:
            cfg = ExtractConfig(params=args.paramsFile or args.preset,
                                rings_mm=tuple(parse_rings(args.rings)), annuli=args.annuli)
        res = run_batch(rows, work / "features.csv", cfg, jobs=max(1, int(args.jobs)),
                        resume=args.resume,
                        progress=lambda done, total: progress(0.3 + 0.65 * done / max(total, 1)))
    if res.interrupted:              # the tables of a cohort cut short are never returned
        raise KeyboardInterrupt
    byId = {str(r["case_id"]): r for r in rows}
    errors += [_failure(byId.get(str(e["case_id"]), e), e["error"]) for e in res.errors]
    # a resumed run that lost a case keeps the previous table aside: this run's is staged
    table_csv = (res.staged_dir / res.features_csv.name) if res.kept_previous \
        else res.features_csv
    table = pd.read_csv(table_csv).copy() if res.n_ok and table_csv.exists() else None
    if table is not None:
        table.insert(1, "mask_source",
                     [byId[str(c)]["mask_source"] for c in table["case_id"]])
        if bundle is not None:
            table = _predictions(table, byId, bundle, args, clinical, errors)
    errors.sort(key=lambda e: order.get(str(e["case_id"]), len(order)))   # manifest order
    _writeErrors(args.outputErrors, errors)
    for e in errors:
        note(f"failed: {e['case_id']}: {e['error']}")
    if table is None or table.empty:
        print(f"error: {args.manifest}: no case succeeded ({len(errors)} failed; see the "
              "failures table)", file=sys.stderr)
        return 1
    _writeTable(out, table)
    note(f"{len(table)} case(s) done, {len(errors)} failed")
    progress(1.0)
    return 0


def _predictions(table, byId, bundle, args, clinical, errors):
    """The bundle's prediction per row; a row whose prediction fails (an unknown site, a bad
    clinical cell) becomes a failure and leaves the table, the others are predicted."""
    import pandas as pd
    from HER2RadiomicsLib import HER2Error, predict_rows
    site = bundle.meta.get("batch_col") or "site"
    table[site] = [byId[str(c)].get(site) or args.site or None for c in table["case_id"]]
    names = bundle.meta.get("clinical") or []
    keep, extra = [], []
    for i in range(len(table)):
        row = table.iloc[[i]].reset_index(drop=True)
        cid = str(row["case_id"].iloc[0])
        clin = pd.DataFrame([{k: byId[cid][k] if byId[cid].get(k) not in (None, "")
                              else clinical.get(k) for k in names}]) if names else None
        failed = []
        try:
            preds = predict_rows(bundle, row, site=args.site or None, clinical=clin,
                                 errors=failed)
        except HER2Error as exc:
            failed = [{"case_id": cid, "error": str(exc)}]
            preds = []
        if failed or not preds:
            errors += [_failure(byId.get(cid, {"case_id": cid}), e["error"]) for e in failed]
            continue
        keep.append(i)
        extra.append({f"prediction_{k}": v for k, v in preds[0].as_row().items()
                      if k != "case_id"})
    return pd.concat([table.iloc[keep].reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def _writeErrors(path, errors):
    """The failures table (header only when nothing failed: Slicer reads it either way)."""
    if not path:
        return
    import pandas as pd
    _writeTable(path, pd.DataFrame(errors, columns=["case_id", "file", "error"]))


def _writeTable(path, frame):
    """A table for Slicer (TSV, or CSV by its name), written atomically, with text cells that
    a spreadsheet would run as a formula quoted."""
    from HER2RadiomicsLib import atomic_write_text, spreadsheet_safe_frame
    sep = "," if str(path).lower().endswith(".csv") else "\t"
    atomic_write_text(path, spreadsheet_safe_frame(frame).to_csv(index=False, sep=sep))


def main(argv=None):
    args = buildParser().parse_args(argv)
    try:
        _addLibraryPath()
        _warningsToStdout()
        import pandas as pd
        # the face imports lazily: asking for an imaging name loads numpy and SimpleITK now
        from HER2RadiomicsLib import HER2Error, atomic_write_text  # noqa: F401
    except Exception as exc:  # noqa: BLE001 -- a broken install: one line, not a traceback
        print(f"error: HER2RadiomicsLib cannot be imported ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    import signal

    def _terminated(signum, frame):      # Slicer's Cancel and a kill: clean up, write nothing
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, _terminated)
    except (ValueError, OSError):        # not the main thread (tests)
        pass
    try:
        if not args.inputVolume and not args.manifest:
            raise ValueError("give --inputVolume (one image) or --manifest (a cohort)")
        _refuseOverlaps(args)
        spacing = _spacing(args.spacingMm)
        from HER2RadiomicsLib import parse_clinical
        clinical = parse_clinical(args.clinical)
        bundle = None
        if args.bundle:
            from HER2RadiomicsLib import load_bundle
            bundle = load_bundle(args.bundle)
        progress(0.02)
        if args.manifest:
            return runManifest(args, spacing, clinical, bundle)
        caseId = args.caseId or os.path.basename(args.inputVolume).split(".")[0]
        if args.inputRegions:
            if args.inputLabel or bundle is not None:
                raise ValueError("--inputRegions replaces --inputLabel and the rings; it "
                                 "takes no --bundle")
            row = processRegions(caseId, args.inputVolume, args.inputRegions, args, spacing,
                                 report=lambda f: progress(0.05 + 0.9 * f))
        else:
            row = processCase(caseId, args.inputVolume, args.inputLabel or None, args,
                              bundle, args.site, clinical, spacing,
                              writeLabel=args.outputLabel,
                              report=lambda f: progress(0.05 + 0.9 * f))
        if args.outputTable:
            _writeTable(args.outputTable, pd.DataFrame([row]))
        _writeErrors(args.outputErrors, [])
        progress(1.0)
        return 0
    except KeyboardInterrupt:
        print("interrupted: no table written (rerun; --resume reuses the finished cases)",
              file=sys.stderr)
        return 130
    except (HER2Error, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- last line of defence: one line, never a traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
