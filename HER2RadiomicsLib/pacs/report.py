"""The case report ``pacs run`` writes when no model bundle is given: the image with the lesion
and rings drawn, where the contour came from, each region's area and clipping, and the DICOM
objects stored (with a bundle, the prediction report of ``report`` is written instead)."""
from __future__ import annotations

from pathlib import Path


def _drawn(masks: dict) -> dict:
    """The regions drawn: the tumour and non-overlapping rings (the first expansion and the
    annuli between distances); wider expansions and tumour+ring regions would hide them."""
    expansions = [n for n in masks if n.startswith("peri_0-")]
    return {n: m for n, m in masks.items()
            if n == "tumor" or (n.startswith("peri_") and (n not in expansions
                                                           or n == expansions[0]))}


def write_plain_report(path: Path, im: dict, out, regions) -> Path:
    """Write one case's HTML page atomically; returns its path."""
    import matplotlib.pyplot as plt
    from ..imaging.io import atomic_write_text, read_image
    from ..reports import html as H
    from ..reports.case import overlay_figure
    loaded = read_image(im["path"], spacing_mm=im.get("spacing_mm"))
    fig = overlay_figure(loaded.image, _drawn(regions.masks), spacing_known=loaded.spacing_known)
    uri = H.fig_to_data_uri(fig, dpi=120)
    plt.close(fig)
    head = im["header"]
    facts = [("patient", str(getattr(head, "PatientID", ""))),
             ("study", str(getattr(head, "StudyInstanceUID", ""))),
             ("image", out.case_id), ("contour", out.contour),
             ("DICOM SEG", out.seg_uid), ("DICOM SR", out.sr_uid),
             ("sent to the archive", ", ".join(out.stored)),
             ("spacing", f"{loaded.spacing_mm[0]:.4g} x {loaded.spacing_mm[1]:.4g} mm "
                         f"({loaded.spacing_source})")]
    area = "area_mm2" if loaded.spacing_known else "area_px"
    unit = "mm²" if loaded.spacing_known else "px"
    rows = [(name, f"{q[area]:.1f} {unit}, clipped {100 * q['clipped_fraction']:.0f}%"
             + (" (flagged)" if q.get("flagged") else ""))
            for name, q in regions.qc.items()]
    sections = [("Image and regions", H.figure(uri, "lesion and non-overlapping rings; every "
                                                     "region is a segment of the SEG")),
                ("Case", H.kv_table(facts)), ("Regions", H.kv_table(rows))]
    page = H.page(f"HER2Radiomics — image {out.case_id}",
                  "features stored as DICOM SR; no model was given, so no prediction", sections,
                  footer=f"image {out.case_id}")
    return atomic_write_text(path, page)
