#!/usr/bin/env python-real
"""HER2Radiomics scripted CLI: one image or a cohort manifest -> regions, features, prediction.

Slicer runs it from the CLI module GUI or ``slicer.cli.run``; it also runs as a plain script
(``python HER2RadiomicsCLI.py --inputVolume us.nrrd --outputTable out.tsv``). The parameters
are declared in ``HER2RadiomicsCLI.xml``; ``Testing/test_slicer_cli.py`` pins the two together.
Progress goes to stdout as ``<filter-progress>`` lines, which Slicer shows in its progress bar.
Imports only HER2RadiomicsLib.
"""
import argparse
import os
import sys

#: presets shipped with HER2RadiomicsLib (the XML's string-enumeration lists the same)
PRESETS = ["default", "cui2023", "yin2024", "zhao2025"]


def buildParser():
    p = argparse.ArgumentParser(description="HER2Radiomics batch CLI (research use only)")
    p.add_argument("--inputVolume", help="2D image")
    p.add_argument("--inputLabel", help="tumour label map (CNN when absent)")
    p.add_argument("--manifest", help="cohort CSV: case_id,image[,mask,site,...]")
    p.add_argument("--spacingMm", type=str, help="X,Y pixel spacing in mm")
    p.add_argument("--rings", type=str, default="3,5,8")
    p.add_argument("--annuli", action="store_true", default=False)
    p.add_argument("--preset", choices=PRESETS, default="default")
    p.add_argument("--paramsFile")
    p.add_argument("--bundle")
    p.add_argument("--site", type=str, default="")
    p.add_argument("--clinical", type=str, default="")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--outputLabel")
    p.add_argument("--outputTable")
    return p


def progress(fraction):
    """Slicer reads these lines from stdout to drive the CLI module's progress bar."""
    sys.stdout.write(f"<filter-progress>{fraction:.4f}</filter-progress>\n")
    sys.stdout.flush()


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


def _spacing(text):
    if not text:
        return None
    parts = [float(v) for v in str(text).replace(" ", "").split(",") if v]
    if len(parts) < 2 or min(parts[:2]) <= 0:
        raise ValueError(f"--spacingMm {text!r}: expected two positive numbers X,Y")
    return tuple(parts[:2])


def processCase(caseId, image, mask, args, bundle=None, site=None, clinical=None,
                spacing=None, writeLabel=None, report=None):
    """One case -> a table row (features, and the prediction with a bundle)."""
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case, read_image, write_image
    from HER2RadiomicsLib.imaging.rings import build_regions
    if mask:
        loaded, maskImage = load_case(image, mask, spacing_mm=spacing)
    else:
        from HER2RadiomicsLib.segmentation.commands import get_segmenter
        loaded = read_image(image, spacing_mm=spacing)
        res = get_segmenter(None, args.device).predict(loaded.image)
        if not res.info["lesion_px"]:
            raise ValueError(f"{image}: the CNN found no lesion; give a label map")
        maskImage = res.mask
    regs = build_regions(loaded.image, maskImage, args.rings, annuli=args.annuli,
                         spacing_known=loaded.spacing_known, path=str(image))
    if writeLabel:
        write_image(labelLikeInput(regs.label_map, image), writeLabel)
    fx = FeatureExtractor(args.paramsFile or args.preset)
    feats, _ = fx.extract(loaded.image, regs.masks, spacing_known=loaded.spacing_known,
                          path=str(image),
                          progress=(lambda d, t, r: report(d / max(t, 1))) if report else None)
    row = {"case_id": caseId, "mask_source": "label map" if mask else "CNN auto-mask",
           "spacing_source": loaded.spacing_source, **feats}
    if bundle is not None:
        from HER2RadiomicsLib.modelling.predict import predict_case
        pr = predict_case(bundle, None, maskImage, site=site or None,
                          clinical=clinical or None, case_id=caseId, loaded=loaded)
        row.update({f"prediction_{k}": v for k, v in pr.as_row().items() if k != "case_id"})
    return row


def main(argv=None):
    args = buildParser().parse_args(argv)
    _addLibraryPath()
    import pandas as pd
    from HER2RadiomicsLib.errors import HER2Error
    from HER2RadiomicsLib.imaging.io import atomic_write_text
    try:
        if not args.inputVolume and not args.manifest:
            raise ValueError("give --inputVolume (one image) or --manifest (a cohort)")
        spacing = _spacing(args.spacingMm)
        from HER2RadiomicsLib.modelling.predict import parse_clinical
        clinical = parse_clinical(args.clinical)
        bundle = None
        if args.bundle:
            from HER2RadiomicsLib.modelling.bundle import load_bundle
            bundle = load_bundle(args.bundle)
        progress(0.02)
        rows, errors = [], []
        if args.manifest:
            from HER2RadiomicsLib.extraction.batch import read_manifest
            cases = read_manifest(args.manifest, empty_mask_ok=True)   # empty: CNN mask
            for i, c in enumerate(cases):
                try:
                    cs = (float(c["spacing_x_mm"]), float(c["spacing_y_mm"])) \
                        if c.get("spacing_x_mm") else spacing
                    clin = {**clinical, **{k: float(c[k]) for k in
                                           (bundle.meta.get("clinical") if bundle else [])
                                           if c.get(k) not in (None, "")}}
                    rows.append(processCase(c["case_id"], c["image"], c.get("mask") or None,
                                            args, bundle, c.get("site") or args.site, clin, cs))
                except (HER2Error, ValueError) as exc:  # the other cases still run
                    errors.append(f"{c['case_id']}: {exc}")
                    print(f"error: {c['case_id']}: {exc}", file=sys.stderr)
                progress(0.02 + 0.96 * (i + 1) / len(cases))
        else:
            caseId = os.path.basename(args.inputVolume).split(".")[0]
            rows.append(processCase(caseId, args.inputVolume, args.inputLabel or None, args,
                                    bundle, args.site, clinical, spacing,
                                    writeLabel=args.outputLabel,
                                    report=lambda f: progress(0.1 + 0.8 * f)))
        if args.outputTable and rows:
            sep = "," if args.outputTable.lower().endswith(".csv") else "\t"
            atomic_write_text(args.outputTable, pd.DataFrame(rows).to_csv(index=False, sep=sep))
        progress(1.0)
        for e in errors:
            print(f"failed: {e}", file=sys.stderr)
        return 1 if errors else 0
    except (HER2Error, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
