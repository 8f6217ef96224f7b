"""The tables of a study run: features and labels read, checked, joined and turned into
the task's target.

Every refusal is one line naming the file (:class:`~HER2RadiomicsLib.errors.InputError`);
rows left out and values treated as missing are said in the run's notes instead.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, one_line
from ..extraction.batch import case_id_problems, text_cell_problems
from ..extraction.features import aggregate_patients
from .recipes import TASKS, _has_step, _recipe_regions, task_spec


def load_table(path, what: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} table not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read {what} table ({one_line(exc)})") from None
    if "case_id" not in df.columns:
        raise InputError(f"{path}: {what} table needs a case_id column")
    ids = df["case_id"]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise InputError(f"{path}: {int(empty.sum())} row(s) have no case_id (the first on "
                         f"line {int(np.flatnonzero(empty.to_numpy())[0]) + 2})")
    if ids.dtype.kind == "f" and (ids == ids.round()).all():
        ids = ids.astype("int64")          # numeric ids read as floats: 7.0 is case 7
    df["case_id"] = ids.astype(str)
    return df


def _check_feature_cells(feats: pd.DataFrame, name, notes) -> pd.DataFrame:
    """Feature columns as floats: a non-numeric cell is refused (it would otherwise be dropped
    by the per-patient mean or break a fit deep inside the pipeline); an infinite value is
    treated as missing (imputed like an empty cell) and said in ``notes``."""
    cols = [c for c in feats.columns if "__" in c]
    out = feats.copy()
    n_inf, inf_cols = 0, []
    for c in cols:
        v = feats[c]
        if v.dtype == bool:
            out[c] = v.astype(float)
            continue
        num = pd.to_numeric(v, errors="coerce")
        bad = num.isna() & v.notna() & (v.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            more = f", and {int(bad.sum()) - 1} more" if bad.sum() > 1 else ""
            raise InputError(f"{name}: column {c} has a non-numeric value {str(v.iloc[i])!r} "
                             f"(case {feats['case_id'].iloc[i]}{more})")
        num = num.astype(float)
        inf = np.isinf(num.to_numpy())
        if inf.any():
            n_inf += int(inf.sum())
            inf_cols.append(c)
            num = num.mask(inf)
        out[c] = num
    if n_inf:
        notes.append(f"{name}: {n_inf} infinite value(s) in {len(inf_cols)} column(s) (e.g. "
                     f"{', '.join(inf_cols[:3])}) treated as missing (imputed)")
    return out


def _check_label_cells(labels: pd.DataFrame, recipe: dict, name):
    """Patient ids present where given (an empty one would join unrelated images into one
    patient "nan"); clinical values numeric (the nomogram is a logistic regression on them;
    an empty cell is a missing value). Returns the labels with clinical columns as numbers."""
    labels = labels.copy()
    if "patient_id" in labels.columns:
        pid = labels["patient_id"]
        empty = pid.isna() | (pid.astype(str).str.strip() == "")
        if empty.any():
            raise InputError(f"{name}: {int(empty.sum())} row(s) have no patient_id (e.g. case "
                             f"{labels['case_id'][empty].iloc[0]}); give every image its "
                             "patient, or leave the column out when each case is a patient")
    for c in recipe.get("clinical") or []:
        if c not in labels.columns:
            continue
        v = labels[c]
        num = pd.to_numeric(v, errors="coerce")
        bad = num.isna() & v.notna() & (v.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{name}: clinical column {c} has a non-numeric value "
                             f"{str(v.iloc[i])!r} (case {labels['case_id'].iloc[i]}); code it "
                             "as a number (e.g. 0/1) or leave the cell empty")
        if np.isinf(num.to_numpy(dtype=float)).any():
            raise InputError(f"{name}: clinical column {c} has an infinite value")
        labels[c] = num
    return labels


def id_problems(value, column: str = "case_id") -> list:
    """What keeps ``value`` from being a ``case_id`` (or ``patient_id``) of our tables.

    A case id follows extract's rules (:func:`~HER2RadiomicsLib.extraction.batch.
    case_id_problems`: no path, control characters or spreadsheet formula, at most 200
    characters), so a table extract would refuse is refused here too; a patient id names no
    file, so only a formula or control characters are refused.
    """
    text = str(value)
    if column == "case_id":
        return case_id_problems(text)
    return text_cell_problems(text, column, "patient")


def _check_ids(table: pd.DataFrame, name) -> None:
    """Refuse a case or patient id extract would refuse (one line naming the row)."""
    for col in ("case_id", "patient_id"):
        if col not in table.columns:
            continue
        for i, v in enumerate(table[col]):
            if v is None or (isinstance(v, float) and v != v):
                continue                     # an empty id is refused with its own message
            problems = id_problems(v, col)
            if problems:
                raise InputError(f"{name}: row {i + 2}: {'; '.join(problems)}")


def _check_unique_ids(df: pd.DataFrame, name):
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise InputError(f"{name}: case_id {dup.iloc[0]!r} appears more than once "
                         f"({dup.nunique()} duplicated case_id(s)); one row per case")


def prepare(features: pd.DataFrame, labels: pd.DataFrame, recipe: dict, *, notes=None,
            features_name="feature table", labels_name="labels table") -> pd.DataFrame:
    """Join features and labels (aggregating per patient when the recipe says so).

    ``features_name`` / ``labels_name`` (the files' paths) start every error message; rows
    left out (a feature row without a label row, or the reverse) and infinite values are
    said in ``notes``.
    """
    notes = [] if notes is None else notes
    label_col = recipe["label_col"]
    if label_col not in labels.columns:
        raise InputError(f"{labels_name}: no column {label_col!r} (the label of recipe "
                         f"{recipe.get('name')})")
    _check_ids(features, features_name)
    _check_ids(labels, labels_name)
    _check_unique_ids(features, features_name)
    _check_unique_ids(labels, labels_name)
    labels = _check_label_cells(labels, recipe, labels_name)
    feats = _check_feature_cells(features, features_name, notes)
    agg = recipe.get("aggregate")
    if agg:
        if "patient_id" not in labels.columns:
            raise InputError(f"{labels_name}: recipe {recipe.get('name')} aggregates per "
                             "patient but the labels have no patient_id column")
        _check_patient_labels(labels, labels[label_col], labels_name,
                              f"recipe {recipe.get('name')} averages a patient's images",
                              "remove 'aggregate' from the recipe")
        pid = labels.set_index("case_id")["patient_id"].astype(str)
        missing = set(feats["case_id"]) - set(pid.index)
        if missing:
            raise InputError(f"{labels_name}: {len(missing)} feature rows have no label row, "
                             f"e.g. {sorted(missing)[:3]}")
        already = feats["case_id"].isin(set(pid.values)).all()
        if not already:
            feats = aggregate_patients(feats.drop(columns=["n_images"], errors="ignore"),
                                       pid.loc[feats["case_id"]].to_numpy(), agg)
        labels = labels.drop_duplicates("patient_id").assign(
            case_id=lambda d: d["patient_id"].astype(str))
    feature_cols = [c for c in feats.columns if "__" in c]
    if not feature_cols:
        raise InputError(f"{features_name}: no '<region>__<feature>' columns")
    meta_cols = [c for c in labels.columns if c not in feats.columns or c == "case_id"]
    df = feats[["case_id"] + feature_cols].merge(labels[meta_cols], on="case_id", how="inner")
    if df.empty:
        raise InputError(f"{labels_name}: no case_id in common with {features_name}")
    for n_out, what, src in ((len(feats) - len(df), "feature row(s) have no label row",
                              labels_name),
                             (len(labels) - len(df), "labelled case(s) have no feature row",
                              features_name)):
        if n_out:
            notes.append(f"{n_out} {what} in {src}: left out")
    if "patient_id" not in df.columns:
        df["patient_id"] = df["case_id"]
    return df


def _check_patient_labels(table: pd.DataFrame, y, name, why: str, fix: str) -> None:
    """Refuse a patient whose images carry different labels where the patient is one
    observation (``why``; ``fix`` says what else the user can do), naming the labels file;
    missing labels are not compared."""
    if "patient_id" not in table.columns:
        return
    lab = pd.Series(np.asarray(y, dtype=object), index=table.index).map(
        lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    per = lab.groupby(table["patient_id"].astype(str)).nunique(dropna=True)
    if (per > 1).any():
        bad = list(per.index[per > 1])
        raise InputError(f"{name}: patient(s) {', '.join(map(str, bad[:3]))} have images with "
                         f"different labels, but {why}; correct the labels, or {fix}")


def _label_text(v: pd.Series) -> pd.Series:
    """Labels as text, None where missing. A numeric label column with an empty cell is read
    as floats (1.0): written back as "1" so it still matches the task's classes."""
    def one(x):
        if x is None or (isinstance(x, float) and x != x):
            return None
        if isinstance(x, (float, np.floating)) and float(x).is_integer():
            return str(int(x))
        t = str(x).strip()
        return t or None
    return v.astype(object).map(one)


def make_target(df: pd.DataFrame, recipe: dict, *, notes=None, labels_name="labels table"):
    """Filter rows for the task and return (df, y, classes, positive_class).

    Rows without a label are left out (said in ``notes``). A label that a named task does not
    know (``Low`` for ``low``, a typo) is refused rather than silently dropped; a task given
    as ``{positive: [...], negative: [...]}`` leaves other values out, as its definition says,
    and ``notes`` lists them.
    """
    notes = [] if notes is None else notes
    task, col = recipe["task"], recipe["label_col"]
    spec = task_spec(task)
    lab = _label_text(df[col])
    missing = lab.isna()
    if missing.any():
        notes.append(f"{labels_name}: {int(missing.sum())} case(s) without a {col} label "
                     "left out")
    if "classes" in spec:
        classes = [str(c) for c in spec["classes"]]
        groups = {c: [c] for c in classes}
    else:
        groups = {"+".join(map(str, spec[k])): [str(c) for c in spec[k]]
                  for k in ("negative", "positive")}
    wanted = [c for g in groups.values() for c in g]
    named = isinstance(task, str)          # a named task knows every HER2 class
    known = set(wanted) | set(TASKS["three_class"]["classes"])
    other = lab[~missing & ~lab.isin(wanted)]
    unknown = other[~other.isin(known)] if named else other.iloc[:0]
    if len(unknown):
        vals = ", ".join(f"{k!r} ({n})" for k, n in unknown.value_counts().head(5).items())
        raise InputError(f"{labels_name}: column {col} has value(s) task {task} does not know: "
                         f"{vals}; expected {', '.join(sorted(known))} (leave the cell empty "
                         "when the label is unknown)")
    if len(other) and not named:
        vals = ", ".join(f"{k!r} ({n})" for k, n in other.value_counts().head(5).items())
        notes.append(f"{labels_name}: {col} values outside the task left out: {vals}")
    keep = lab.isin(wanted).to_numpy()
    counts = {g: int(lab[keep].isin(members).sum()) for g, members in groups.items()}
    absent = [g for g, n in counts.items() if n == 0]
    if absent:
        raise InputError(f"{labels_name}: task {task} needs every class in column {col}; "
                         f"none labelled {', '.join(absent)} (found "
                         + ", ".join(f"{g} {n}" for g, n in counts.items()) + ")")
    d = df[keep].reset_index(drop=True)
    if "classes" in spec:
        return d, lab[keep].to_numpy(), classes, None
    pos = groups["+".join(map(str, spec["positive"]))]
    return d, lab[keep].isin(pos).astype(int).to_numpy(), [0, 1], "+".join(pos)


def _check_sites(df, recipe: dict, labels_name):
    """ComBat harmonises each case with its site's effects: a case without a site cannot be
    harmonised (an empty cell would silently become a site of its own)."""
    batch = recipe["batch_col"]
    if not _has_step(recipe, "combat") or batch not in df.columns:
        return
    site = df[batch]
    empty = site.isna() | (site.astype(str).str.strip() == "")
    if empty.any():
        raise InputError(f"{labels_name}: {int(empty.sum())} case(s) have no {batch} (e.g. "
                         f"{df['case_id'][empty].iloc[0]}); recipe {recipe['name']} harmonises "
                         "by site (ComBat) and needs every case's site")


def _check_varying_features(df, recipe: dict, features_name):
    """Every region of the recipe has feature columns, and at least one of them varies
    (a table of empty or constant columns leaves nothing to model)."""
    for region in _recipe_regions(recipe):
        cols = [c for c in df.columns if c.startswith(f"{region}__")]
        if not cols:
            raise InputError(f"{features_name}: recipe {recipe['name']} needs region {region}, "
                             "which has no feature columns (extract it with --rings)")
        if not (df[cols].nunique() >= 2).any():
            raise InputError(f"{features_name}: no {region} feature varies across the "
                             f"{len(df)} labelled cases (all empty or constant): nothing to "
                             "model")
