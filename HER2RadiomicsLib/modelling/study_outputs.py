"""The files of a study run, written from its :class:`~HER2RadiomicsLib.modelling.study.
StudyRun`: ``predictions.csv``, ``predictions_images.csv``, ``model_bundle.zip`` and
``metrics.json`` (figures and ``report.html`` are drawn by :mod:`HER2RadiomicsLib.reports.study`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .recipes import class_names, required_rings


#: the keys of ``metrics.json`` that name the run's files, written last in this order
FILE_KEYS = ("figures", "bundle", "report")


def write_outputs(sr, make_bundle: bool = True) -> None:
    """Predictions, the bundle (``make_bundle``) and ``metrics.json`` of a
    :class:`~HER2RadiomicsLib.modelling.study.StudyRun`; the paths of the files written are
    added to ``sr.summary``."""
    out, d, best = sr.out, sr.data, sr.primary
    _write_predictions(out, sr.predictions, d, sr.target.classes, sr.target.positive, best,
                       sr.results[best]["image_scores"])
    # paths inside metrics.json are relative to the output folder, so the folder can be moved
    # (the CLI builds it aside and swaps it into place when the run succeeds)
    if make_bundle:
        sr.summary["bundle"] = _bundle(sr).relative_to(out).as_posix()
    write_metrics(out, sr.summary)


def write_metrics(out: Path, summary: dict) -> Path:
    """``metrics.json``: the summary, the paths of the run's files (:data:`FILE_KEYS`) last."""
    from ..imaging.io import atomic_write_text
    doc = {k: v for k, v in summary.items() if k not in FILE_KEYS}
    doc.update({k: summary[k] for k in FILE_KEYS if k in summary})
    path = Path(out) / "metrics.json"
    atomic_write_text(path, json.dumps(doc, indent=2, default=_json))
    return path


def _write_predictions(out, preds, d, classes, positive, best, image_scores):
    """``predictions.csv``: the primary model's scores per evaluation unit (``id`` is the
    patient id, or the case id when the unit is images), with the unit's image count;
    ``predictions_images.csv``: the same model's score of every image. Ids and labels are the
    input tables' text: a cell a spreadsheet would run as a formula is quoted."""
    from ..outputs import write_csv

    def scores(frame, p):
        if positive is not None:
            frame["probability"] = p
        else:
            for j, c in enumerate(classes):
                frame[f"p_{c}"] = p[:, j]
        return frame
    images = []
    for split, X, y, p in zip(("train_oof", "test", "external"), (d.Xtr, d.Xte, d.dext),
                              (d.ytr, d.yte, d.yext), image_scores):
        if p is not None and len(X):
            images.append(scores(pd.DataFrame({
                "case_id": X["case_id"].astype(str).to_numpy(),
                "patient_id": X["patient_id"].astype(str).to_numpy(), "split": split,
                "label": y}), p))
    write_csv(out / "predictions_images.csv", pd.concat(images), float_format="%.10g")
    rows = []
    oof, pte, pext = preds[best]
    for split, X, p in (("train_oof", d.Xtr, oof), ("test", d.Xte, pte),
                        ("external", d.dext, pext)):
        if p is None or not len(X):
            continue
        part = "train" if split == "train_oof" else split
        ids, yy, _ = d.per_unit(part, np.zeros(len(X)))
        key = X["patient_id" if d.unit == "patients" else "case_id"].astype(str)
        n_img = key.value_counts().reindex(ids).to_numpy()
        rows.append(scores(pd.DataFrame({"id": ids, "unit": d.unit[:-1], "n_images": n_img,
                                         "split": split, "label": yy}), p))
    write_csv(out / "predictions.csv", pd.concat(rows), float_format="%.10g")


def training_engine(prov: pd.DataFrame | None) -> dict:
    """The engine (name, version) the training features came from, as their provenance says.

    Tables written before engines were recorded came from pyradiomics 3.0.1, the only engine
    then.
    """
    if prov is None or "engine" not in prov or prov["engine"].nunique() != 1:
        return {"name": "pyradiomics", "version": "3.0.1"}
    name = str(prov["engine"].iloc[0])
    if "engine_version" in prov and prov["engine_version"].nunique() == 1:
        return {"name": name, "version": str(prov["engine_version"].iloc[0])}
    from ..extraction.features import engine_info
    return engine_info(name)


def training_spacing(prov: pd.DataFrame | None, case_ids) -> dict:
    """Units and pixel-spacing range of the training images (from the features' provenance).

    ``units`` is ``"pixel"`` when the spacing of the training images was unknown (features in
    pixel units), ``"mm"`` when it was known for all of them, ``"mixed"`` otherwise, and
    ``"unrecorded"`` without provenance.
    """
    if prov is None or "spacing_source" not in prov or "case_id" not in prov:
        return {"units": "unrecorded"}
    p = prov[prov["case_id"].astype(str).isin(set(map(str, case_ids)))]
    if p.empty:
        return {"units": "unrecorded"}
    unknown = (p["spacing_source"].astype(str) == "unknown").to_numpy()
    units = "pixel" if unknown.all() else ("mm" if not unknown.any() else "mixed")
    out = {"units": units, "sources": {str(k): int(v) for k, v in
                                       p["spacing_source"].value_counts().items()}}
    known = p[~unknown]
    for ax in ("x", "y"):
        col = f"spacing_{ax}_mm"
        if col in known and len(known):
            v = known[col].astype(float)
            out[f"{col}_range"] = [float(v.min()), float(v.max())]
    return out


def training_ranges(pipeline, Xtr: pd.DataFrame) -> dict:
    """Training ranges of the model's inputs (raw values) and of its Rad-score.

    Recorded in the bundle for the out-of-distribution check at prediction time.
    """
    from .transformers import model_feature_names, rad_score
    try:
        used = model_feature_names(pipeline, Xtr)
    except Exception:  # noqa: BLE001 -- an exotic pipeline: fall back to every input column
        used = []
    used = [c for c in used if c in Xtr.columns] or [
        c for c in pipeline.named_steps["select"].selected_features_ if c in Xtr.columns]
    out = {"features": {}}
    for c in used:
        v = pd.to_numeric(Xtr[c], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v):
            out["features"][c] = [float(v.min()), float(v.max())]
    try:
        rs = rad_score(pipeline, Xtr)
        out["rad_score"] = [float(np.nanmin(rs)), float(np.nanmax(rs))]
    except InputError:
        pass
    return out


def _bundle(sr) -> Path:
    """``model_bundle.zip`` of the run's primary model (with its nomogram): the pipeline, the
    params the features came from, the regions, rings, training ranges and metrics."""
    from .bundle import save_bundle
    out, recipe, primary, summary = sr.out, sr.recipe, sr.primary_result, sr.summary
    nomo, nomo_res, features_csv = sr.nomogram, sr.nomogram_results, sr.features_csv
    classes, positive, batch, Xtr = (sr.target.classes, sr.target.positive,
                                     recipe["batch_col"], sr.data.Xtr)
    from ..extraction.features import load_params, params_hash
    params_name = recipe.get("params", "default")
    prov = Path(features_csv).with_name(Path(features_csv).stem + "_provenance.csv")
    text = load_params(params_name)[1]
    prov_df = None
    if prov.exists():
        prov_df = pd.read_csv(prov, usecols=lambda c: c in (
            "case_id", "params", "params_hash", "spacing_source", "spacing_x_mm",
            "spacing_y_mm", "engine", "engine_version"))
        p = prov_df
        if len(p) and "params_hash" in p and p["params_hash"].nunique() == 1:
            if p["params_hash"].iloc[0] != params_hash(text):
                try:
                    t2 = load_params(p["params"].iloc[0])[1]
                    if params_hash(t2) == p["params_hash"].iloc[0]:
                        text, params_name = t2, p["params"].iloc[0]
                except InputError:
                    pass
                if params_hash(text) != p["params_hash"].iloc[0]:
                    raise InputError(f"{features_csv}: features were extracted with params "
                                     f"{p['params'].iloc[0]!r} (hash differs from recipe "
                                     f"params {params_name!r}); cannot record them in the "
                                     "bundle")
    sel = primary["model"].named_steps["select"]
    input_cols = list(sel.selected_features_)
    regions = list(primary["regions"])
    sites = list(map(str, primary["model"].named_steps["combat"].sites_)) \
        if "combat" in primary["model"].named_steps else []
    binary_names = class_names(recipe["task"])
    meta = {
        "name": f"{recipe['name']}", "recipe": recipe["name"], "recipe_yaml": recipe["_text"],
        "task": recipe["task"], "label_col": recipe["label_col"],
        # binary bundles name their classes after the task (e.g. zero / low), not 0 / 1
        "classes": [str(c) for c in classes] if positive is None else binary_names,
        "positive_class": positive,
        "threshold": primary.get("threshold"), "input_columns": input_cols,
        "regions": regions, "rings": required_rings(regions),
        "aggregate": recipe.get("aggregate"), "params_name": str(params_name),
        "params_yaml": text, "params_hash": params_hash(text), "batch_col": batch,
        "sites": sites, "clinical": list(nomo.predictors[1:]) if nomo is not None else [],
        "nomogram_threshold": nomo_res.get("threshold"),
        "engine": training_engine(prov_df),
        "training_spacing": training_spacing(prov_df, Xtr["case_id"] if "case_id" in Xtr
                                             else []),
        "training_ranges": training_ranges(primary["model"], Xtr),
        "metrics": {"test": primary["test"], "external": primary.get("external"),
                    "train_oof": primary["train_oof"]},
        "training": {"n": summary["n"], "unit": summary["unit"],
                     "n_images": summary["n_images"], "class_counts": summary["class_counts"],
                     "primary": summary["primary"], "external_site": summary["external_site"]},
        # intended use, limitations, training data, calibration, external validation,
        # synthetic data, protocol notes: shown by the per-patient report's model card
        **({"model_card": summary["model_card"]} if summary.get("model_card") else {}),
        "research_use_only": True}
    return save_bundle(out / "model_bundle.zip", {"pipeline": primary["model"], "nomogram": nomo},
                       meta)


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="records")
    return str(o)
