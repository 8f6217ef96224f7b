"""CLI commands of the archive: ``pacs run``, ``pacs query``, ``pacs fetch`` and ``pacs demo``.

Credentials come from the environment or a file, never from an option (see
:mod:`.dicomweb`); ``--out`` is a folder (stored as ``out_dir`` so the command line's output
checks treat it as one).
"""
from __future__ import annotations

import sys

from . import DEFAULT_RINGS


def _add_connection(p):
    p.add_argument("--url", required=True,
                   help="DICOMweb root, e.g. https://pacs.example.org/dicom-web")
    p.add_argument("--auth-file",
                   help="file with one line 'bearer <token>' or 'basic <user>:<password>' "
                        "(default: HER2RADIOMICS_PACS_TOKEN, or HER2RADIOMICS_PACS_USER and "
                        "HER2RADIOMICS_PACS_PASSWORD, from the environment)")
    p.add_argument("--ca-bundle", help="CA certificate file to verify the server's TLS with")


def register(sub):
    from ..extraction.options import add_extract_options
    p = sub.add_parser("pacs", help="work against a PACS (DICOMweb): run, query, demo")
    ps = p.add_subparsers(dest="pacs_cmd", metavar="ACTION", required=True)

    r = ps.add_parser("run", help="a study's ultrasound images in; features, DICOM SEG and SR "
                                  "back into the archive; features.csv and reports into --out")
    _add_connection(r)
    r.add_argument("--study", required=True, help="Study Instance UID")
    r.add_argument("--bundle", help="model bundle: predict and store the prediction in the SR")
    r.add_argument("--site", help="scanner site of the study (bundles that harmonise sites)")
    r.add_argument("--trust", action="store_true",
                   help="allow joblib/pickle bundles and untrusted types (runs code!)")
    r.add_argument("--out", dest="out_dir", required=True, metavar="DIR",
                   help="folder for features.csv, reports/, dicom/ and pacs_run.json")
    r.add_argument("--reader", help="take only this reader's SEGs (their Content Creator's "
                                    "Name, as the station writes it) as contours")
    r.add_argument("--spacing-mm", nargs=2, type=float, metavar=("X", "Y"),
                   help="pixel spacing in mm (column, row) for images whose DICOM states no "
                        "calibration (their own calibration wins)")
    r.add_argument("--no-store", action="store_true",
                   help="write the SEG and SR into --out only, send nothing to the archive")
    add_extract_options(r)
    r.set_defaults(func=cmd_run, rings=DEFAULT_RINGS)

    q = ps.add_parser("query", help="list studies (or one study's series) with modality, "
                                    "date and what this tool stored")
    _add_connection(q)
    q.add_argument("--study", help="list this study's series")
    q.add_argument("--patient", help="only this Patient ID's studies")
    q.set_defaults(func=cmd_query)

    f = ps.add_parser("fetch", help="studies' ultrasound images and SEG contours into a folder "
                                    "with manifest.csv, for extract/segment/predict --manifest")
    _add_connection(f)
    f.add_argument("--study", required=True, action="append",
                   help="Study Instance UID (repeat for several studies)")
    f.add_argument("--out", dest="out_dir", required=True, metavar="DIR",
                   help="folder for images/, masks/ and manifest.csv")
    f.add_argument("--reader", help="take only this reader's SEGs as contours")
    f.set_defaults(func=cmd_fetch)

    d = ps.add_parser("demo", help="a local Orthanc with the synthetic cohort, then pacs run")
    d.add_argument("--out", dest="out_dir", default="pacs-demo-output", metavar="DIR")
    d.add_argument("--n", type=int, default=4, help="synthetic patients (default 4)")
    d.add_argument("--keep", action="store_true",
                   help="keep Orthanc running until Enter is pressed")
    d.set_defaults(func=cmd_demo)


def _connection(a):
    from .dicomweb import auth_from
    return auth_from(auth_file=a.auth_file), a.ca_bundle


def cmd_run(a) -> int:
    from pathlib import Path
    from ..extraction.options import extract_config
    from .run import RunOptions, run_into
    bundle = None
    if a.bundle:
        from ..modelling.bundle import load_bundle
        bundle = load_bundle(a.bundle, trust=a.trust)
        check_site(bundle, a.site)
    auth, ca = _connection(a)
    opts = RunOptions(url=a.url, study=a.study, out=Path(a.out_dir), cfg=extract_config(a),
                      bundle=bundle, auth=auth, ca_bundle=ca, store=not a.no_store,
                      site=a.site, reader=a.reader,
                      spacing_mm=tuple(a.spacing_mm) if a.spacing_mm else None)
    outcomes, problems, published = run_into(opts)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"error: {o.case_id}: {o.error}", file=sys.stderr)
    done = len(outcomes) - len(failed)
    if not published:
        print(f"0/{len(outcomes)} ultrasound images done; {a.out_dir} was not changed")
        return 2
    print(f"{done}/{len(outcomes)} ultrasound images done -> {a.out_dir} (features.csv, "
          "reports/, dicom/, pacs_run.json)")
    return 1 if (failed or problems) else 0


def check_site(bundle, site) -> None:
    """A bundle that harmonises sites needs a --site it knows: refused before the study is
    downloaded and extracted (one line, as ``predict`` says it)."""
    import pandas as pd
    from ..errors import InputError
    from ..modelling.predict import _site_problems
    meta = bundle.meta
    batch = meta.get("batch_col", "site")
    if batch not in (meta.get("input_columns") or []):
        return
    bad = _site_problems(bundle, pd.DataFrame({batch: [site]}), batch)
    if bad:
        raise InputError(bad[0])


def cmd_fetch(a) -> int:
    from .fetch import fetch_studies
    auth, ca = _connection(a)
    manifest, rows, problems = fetch_studies(a.url, a.study, a.out_dir, auth, ca,
                                             a.reader)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    with_mask = sum(1 for r in rows if r["mask"])
    print(f"{len(rows)} ultrasound images ({with_mask} with a SEG contour) -> {manifest}; "
          f"her2radiomics extract --manifest {manifest} ... (segment --manifest draws the rest)")
    return 1 if problems else 0


def cmd_query(a) -> int:
    from .query import query_lines
    auth, ca = _connection(a)
    for line in query_lines(a.url, auth, ca, study=a.study, patient=a.patient):
        print(line)
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo
    return run_demo(a)
