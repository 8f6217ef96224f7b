"""CLI command of the per-patient report: ``report`` (predict one patient, then draw it).

The prediction is made once (:func:`~HER2RadiomicsLib.modelling.predict.predict_case`) and the
report only draws that result (:func:`~HER2RadiomicsLib.reports.case.write_case_report`). Without
``--mask`` the shipped CNN draws the lesion in memory: no file is written but the report.
"""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("report", help="per-patient prediction report (HTML or PDF)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", help="lesion mask (default: the shipped CNN's auto-mask)")
    p.add_argument("--out", required=True, help="case.html or case.pdf")
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("X", "Y"))
    p.add_argument("--frame", type=int, help="frame of a multi-frame image")
    p.add_argument("--site", help="scanner site (for bundles that harmonise with ComBat)")
    p.add_argument("--clinical", nargs="*", default=[], metavar="NAME=VALUE",
                   help="clinical values for the nomogram points, e.g. age=52 ki67=30")
    p.add_argument("--case-id")
    p.add_argument("--pixel-units", action="store_true",
                   help="treat the image as 1 px = 1 mm, as a bundle trained on uncalibrated "
                        "images was")
    p.add_argument("--trust", action="store_true",
                   help="allow joblib/pickle bundles and untrusted types (runs code!)")
    p.set_defaults(func=cmd_report)


def _cnn_mask(a):
    """``(loaded image, mask, mask flags, confidence)`` from the shipped CNN, checked as a
    mask file would be (lesion size, share of the image, the calibrated region holding it)."""
    import SimpleITK as sitk
    from ..errors import InputError
    from ..imaging.io import (DEFAULT_MIN_MASK_PIXELS, MAX_LESION_FRACTION, read_image,
                              resolve_us_region)
    from ..segmentation.inference import auto_mask
    from ..segmentation.modality import check_ultrasound
    loaded = read_image(a.image, spacing_mm=a.spacing_mm, frame=a.frame)
    flags = check_ultrasound(loaded)
    res = auto_mask(loaded, no_lesion=f"{a.image}: the CNN found no lesion; draw a mask and "
                                      "pass --mask")
    n = res.info["lesion_px"]
    if n < DEFAULT_MIN_MASK_PIXELS:
        raise InputError(f"{a.image}: the CNN's mask has {n} lesion pixels, fewer than the "
                         f"minimum {DEFAULT_MIN_MASK_PIXELS}; draw a mask and pass --mask")
    share = float(sitk.GetArrayViewFromImage(res.mask).mean())
    if share > MAX_LESION_FRACTION:
        raise InputError(f"{a.image}: the CNN's mask covers {100 * share:.0f}% of the image, "
                         "which is no lesion contour; draw a mask and pass --mask")
    resolve_us_region(loaded, res.mask)
    res.mask.CopyInformation(loaded.image)
    return loaded, res.mask, flags + res.info["flags"], res.info["confidence"]


def cmd_report(a) -> int:
    from ..modelling.bundle import load_bundle
    from ..modelling.clinical import parse_clinical
    from ..modelling.predict import ReadOptions, predict_case
    from .case import write_case_report
    b = load_bundle(a.bundle, trust=a.trust)
    image, mask, source, flags = a.image, a.mask, "reader", []
    if mask is None:
        image, mask, flags, confidence = _cnn_mask(a)
        source = f"CNN auto-mask (not reviewed; confidence {confidence:.2f})"
    result = predict_case(b, image, mask, site=a.site, clinical=parse_clinical(a.clinical),
                          case_id=a.case_id,
                          options=ReadOptions(spacing_mm=a.spacing_mm, frame=a.frame,
                                              pixel_units=a.pixel_units))
    out, pr = write_case_report(b, result, a.out, mask_source=source, mask_flags=flags)
    print(f"case {pr.case_id}: predicted {pr.predicted_class} "
          f"(P = {pr.probabilities[pr.predicted_class]:.3f}) -> {out}")
    return 0
