"""``pacs demo`` (``make pacs-demo``): a local Orthanc, the synthetic cohort's DICOM images in
it, one reader's contour stored as a DICOM SEG, then ``pacs run`` over every study.

The first patient's image gets the synthetic reader contour as a MANUAL SEG (the "SEG in"
path); the others are contoured by the CNN (stored back as AUTOMATIC). Orthanc stops on exit.
"""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path


def _reader_seg(image_path: Path, mask_path: Path):
    import numpy as np
    import pydicom
    import SimpleITK as sitk
    from . import seg as dseg
    from .run import _uid
    image = pydicom.dcmread(image_path)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    if mask.ndim == 3:
        mask = mask[..., 0]
    return dseg.build_seg(image, {"tumor": np.asarray(mask)}, dseg.Algorithm("MANUAL"),
                          series_uid=_uid("demo-reader", image.SOPInstanceUID),
                          sop_uid=_uid("demo-reader-seg", image.SOPInstanceUID),
                          series_number=800, series_description="Reader contour",
                          content_creator="Reader^Demo")


def run_demo(a) -> int:
    import pydicom
    import argparse

    from ..extraction.options import add_extract_options, extract_config
    from ..imaging.synth import generate_cohort
    from .dicomweb import Pacs
    from .orthanc import LocalOrthanc
    from .query import query_lines
    from . import DEFAULT_RINGS
    from .run import RunOptions, run_into
    out = Path(a.out_dir)
    with tempfile.TemporaryDirectory(prefix="her2radiomics-pacs-demo-") as tmp, \
            LocalOrthanc() as orthanc:
        cohort = Path(tmp) / "cohort"
        generate_cohort(cohort, n_cases=a.n, seed=42, reader_fraction=0.0)
        pacs = Pacs(orthanc.dicomweb_url)
        with open(cohort / "cohort.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        studies = {}
        for i, r in enumerate(rows):
            ds = pydicom.dcmread(cohort / r["image"])
            pacs.store([ds], ds.StudyInstanceUID)
            studies.setdefault(ds.StudyInstanceUID, r["patient_id"])
            if i == 0:
                pacs.store([_reader_seg(cohort / r["image"], cohort / r["mask"])],
                           ds.StudyInstanceUID)
        print(f"Orthanc {orthanc.url} holds {len(rows)} ultrasound images of {len(studies)} "
              "studies (one with a reader's SEG)")
        # pacs run's own defaults (rings 3,5,8, the default params)
        parser = argparse.ArgumentParser()
        add_extract_options(parser)
        parser.set_defaults(rings=DEFAULT_RINGS)
        cfg = extract_config(parser.parse_args([]))
        for study, patient in studies.items():
            # each patient's folder is a pacs run's own (marked): `pacs run --out` takes it
            outcomes, problems, _ = run_into(RunOptions(
                url=orthanc.dicomweb_url, study=study, out=out / patient, cfg=cfg))
            for line in problems + [f"{o.case_id}: {o.error}" for o in outcomes if o.error]:
                print(f"  problem: {line}")
        print()
        for line in query_lines(orthanc.dicomweb_url):
            print(line)
        print(f"\nOrthanc's web explorer: {orthanc.url}/app/explorer.html (while it runs)")
        print(f"features, reports and the stored SEG/SR files: {out.resolve()}/<patient>/ "
              "(features.csv, reports/*.html, dicom/*.dcm, pacs_run.json)")
        if a.keep:
            input("Orthanc keeps running; press Enter to stop it ")
    print("Orthanc stopped")
    return 0
