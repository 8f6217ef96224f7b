"""CLI commands of the modelling side: ``train``, ``predict``, ``recipes`` (``report`` is in
``reports/commands.py``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import HER2Error, InputError

# Command functions import the library modules (and numpy, pandas, SimpleITK, matplotlib)
# when they run: the parser imports this module, and `her2radiomics --help` must stay instant
# (Testing/test_outputs_atomic.py checks what building the parser loads).


def register(sub):
    p = sub.add_parser("recipes", help="list the study recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("train", help="run a study recipe on a feature table")
    p.add_argument("--recipe", required=True, help="cui2023, zhao2025, peritumoral2025, yin2024 "
                                                   "or a recipe YAML")
    p.add_argument("--features", required=True, help="feature CSV from 'extract'")
    p.add_argument("--labels", required=True, help="CSV with case_id, label, site, clinical "
                                                   "(e.g. the synthetic cohort.csv)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--icc", help="reader-study icc.csv for the stable-feature filter")
    p.add_argument("--functions", help="feature,function table for cui2023's URF-module")
    p.add_argument("--repeats", type=int,
                   help="repeated random splits (recipe default; 0 = none)")
    ext = p.add_mutually_exclusive_group()
    ext.add_argument("--external-site", help="site held out for external validation")
    ext.add_argument("--no-external", action="store_true")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int)
    p.add_argument("--jobs", type=int, default=1)
    syn = p.add_mutually_exclusive_group()
    syn.add_argument("--synthetic-labels", dest="synthetic", action="store_const", const=True,
                     help="the labels are synthetic (stated in the model card and report); "
                          "the built-in synthetic cohort is recognised by itself")
    syn.add_argument("--real-labels", dest="synthetic", action="store_const", const=False,
                     help="the labels are real (overrides the synthetic-cohort recognition)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict new patients with a model bundle")
    p.add_argument("--bundle", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--manifest", help="CSV with case_id,image,mask[,site, clinical...]")
    src.add_argument("--features", help="feature CSV already extracted with the bundle's params")
    p.add_argument("--mask")
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("X", "Y"))
    p.add_argument("--site", help="scanner site (for bundles that harmonise with ComBat)")
    p.add_argument("--clinical", nargs="*", default=[], metavar="NAME=VALUE",
                   help="clinical values for the nomogram, e.g. age=52 ki67=30")
    p.add_argument("--trust", action="store_true",
                   help="allow joblib/pickle bundles and untrusted types (runs code!)")
    p.add_argument("--pixel-units", action="store_true",
                   help="treat images as 1 px = 1 mm, as a bundle trained on uncalibrated "
                        "images was")
    p.add_argument("--out", help="CSV (or JSON for --image) with the predictions")
    p.set_defaults(func=cmd_predict)


def cmd_recipes(a) -> int:
    from .recipes import list_recipes, load_recipe
    for name in list_recipes():
        print(f"{name:26s} {load_recipe(name).get('title', '')}")
    return 0


def cmd_train(a) -> int:
    from ..outputs import staged_dir
    from ..reports.study import render_study
    from .study import StudyOptions, run
    ext = None if a.no_external else (a.external_site or "recipe")
    opts = StudyOptions(icc=a.icc, functions=a.functions, repeats=a.repeats, external_site=ext,
                        n_boot=a.bootstrap, jobs=a.jobs, seed=a.seed,
                        synthetic=getattr(a, "synthetic", None))
    # built aside and swapped in at the end: a failed run leaves an earlier model folder intact
    with staged_dir(a.out) as stage:
        # the run computes and writes its data and bundle; the report layer draws from it
        s = render_study(run(a.recipe, a.features, a.labels, stage, opts))
    m = s["models"][s["primary"]]
    key = "auc" if s["positive"] is not None else "auc_macro"
    for split in ("test", "external"):
        if m.get(split):
            d = m[split]
            lo = d.get(f"{key}_delong_ci_low", d.get(f"{key}_ci_low"))
            hi = d.get(f"{key}_delong_ci_high", d.get(f"{key}_ci_high"))
            print(f"{s['primary']}: {split} {key} {d[key]:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    for n in s["notes"]:
        print(f"note: {n}")
    out = Path(a.out)
    print(f"report: {out / s['report']}\nbundle: {out / s['bundle'] if s.get('bundle') else None}"
          f"\nmetrics: {out / 'metrics.json'}")
    return 0


def cmd_predict(a) -> int:
    import pandas as pd
    from .bundle import load_bundle
    from ..imaging.io import atomic_write_text
    from ..outputs import spreadsheet_safe_frame, write_csv
    from .predict import ReadOptions, predict_case, predict_rows
    from .clinical import clinical_inputs, parse_clinical
    clinical = parse_clinical(a.clinical)      # before the (seconds-long) bundle load
    b = load_bundle(a.bundle, trust=a.trust)
    if not a.image:   # one image: its warnings (bundle's included) are printed with it
        for w in b.warnings:
            print(f"warning: {w}", file=sys.stderr)
    clinical_inputs(b, clinical)     # names the nomogram does not take: refused once, up front
    if a.image:
        if not a.mask:
            raise InputError("--image needs --mask (draw or auto-segment the lesion first)")
        pr = predict_case(b, a.image, a.mask, site=a.site, clinical=clinical,
                          options=ReadOptions(spacing_mm=a.spacing_mm,
                                              pixel_units=a.pixel_units)).prediction
        print(f"case {pr.case_id}: predicted {pr.predicted_class}")
        for k, v in pr.probabilities.items():
            print(f"  P({k}) = {v:.3f}")
        if pr.rad_score is not None:
            print(f"  Rad-score = {pr.rad_score:+.3f}")
            for c in pr.contributions:
                print(f"    {c['contribution']:+.3f}  {c['feature']}")
        if pr.nomogram_probability is not None:
            print(f"  nomogram probability = {pr.nomogram_probability:.3f}")
        print("  QC: " + ", ".join(f"{k} {v}" for k, v in pr.qc.items()))
        for w in pr.warnings:
            print(f"  warning: {w}")
        if a.out:
            atomic_write_text(a.out, json.dumps(pr.__dict__, indent=2, default=str))
        return 0
    names = [str(n) for n in b.nomogram.predictors[1:]] if b.nomogram is not None else []
    if a.features:
        from .tables import id_problems, load_table
        rows = load_table(a.features, "feature")
        # a case id that extract would refuse (a spreadsheet formula, a path) is that row's
        # error, as in a manifest; the other rows are predicted
        errors, ok = [], []
        for i, cid in enumerate(rows["case_id"]):
            problems = id_problems(cid)
            if problems:
                errors.append({"case_id": cid, "error": f"{a.features}: row {i + 2}: "
                                                        f"{'; '.join(problems)}"})
            ok.append(not problems)
        rows = rows[ok].reset_index(drop=True)
        # each row's own clinical cells, else the --clinical values; a row whose values are
        # refused is that row's error, the others are predicted
        clin = pd.DataFrame([{k: _cell(r.get(k), clinical.get(k)) for k in names}
                             for r in rows.to_dict("records")], index=rows.index)
        preds = predict_rows(b, rows, site=a.site, clinical=clin, errors=errors,
                             source=a.features) if len(rows) else []
    else:
        preds, errors = _predict_manifest(a, b, clinical, names)
    # case ids and feature names are the input's text: a cell a spreadsheet would run as a
    # formula is quoted, in the file and on the screen (as in every CSV this library writes)
    table = pd.DataFrame([p.as_row() for p in preds])
    if a.out and not preds:
        # nothing succeeded: an earlier table at --out is worth more than an empty one
        print(f"no case could be predicted; {a.out} was not written")
    elif a.out:
        write_csv(a.out, table, float_format="%.4f")
        print(f"{len(preds)} predictions -> {a.out}")
    else:
        print(spreadsheet_safe_frame(table).to_csv(index=False, float_format="%.4f"))
    for e in errors:
        print(f"  {e['case_id']}: {e['error']}", file=sys.stderr)
    return 1 if errors else 0


def _cell(value, default):
    """A table cell, or ``default`` when the cell is empty (blank or NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()) or value != value:
        return default
    return value


def _predict_manifest(a, b, clinical: dict, names: list) -> tuple:
    """``(predictions, errors)`` of the manifest's rows: whatever goes wrong with one row
    (a bad cell, an unreadable image, a refused clinical value, an unforeseen failure) is
    that row's error; the other rows are predicted."""
    from ..extraction.batch import read_manifest
    from .clinical import clinical_inputs
    from .predict import ReadOptions, predict_case
    rows = read_manifest(a.manifest, per_row=True)
    batch = b.meta.get("batch_col", "site")
    preds, errors = [], []
    for r in rows:
        case = r["case_id"]
        try:
            if r.get("_error"):
                raise InputError(r["_error"])
            sp = (float(r["spacing_x_mm"]), float(r["spacing_y_mm"])) \
                if r.get("spacing_x_mm") else a.spacing_mm
            clin = {k: _cell(r.get(k), clinical.get(k)) for k in names}
            clin = {k: v for k, v in clin.items() if v is not None}
            clinical_inputs(b, clin, what=f"{a.manifest}: case {case}")
            preds.append(predict_case(b, r["image"], r["mask"], site=r.get(batch) or a.site,
                                      clinical=clin, case_id=case,
                                      options=ReadOptions(spacing_mm=sp,
                                                          pixel_units=a.pixel_units)).prediction)
        except HER2Error as exc:
            errors.append({"case_id": case, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 -- one row's unforeseen failure never aborts the others
            errors.append({"case_id": case,
                           "error": f"unexpected {type(exc).__name__}: {exc}"})
    return preds, errors
