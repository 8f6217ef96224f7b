"""How a study run splits its cases: the external site held out, the development patients
split by patient (stratified), out-of-fold predictions, scores per evaluation unit and the
repeated random splits.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from ..errors import InputError
from .pipelines import _proba, fit_grouped
from .recipes import UNITS, class_names
from .transformers import rad_score

#: folds of the out-of-fold predictions (fewer when a class has fewer patients): the papers'
#: five-fold cross-validation
OOF_FOLDS = 5


@dataclass
class Target:
    """What a run predicts: ``classes`` (``[0, 1]`` for a binary task, else the class
    names) and ``positive``, the positive class's name (None for several classes)."""
    classes: list
    positive: str | None = None

    @property
    def binary(self) -> bool:
        return self.positive is not None


@dataclass
class Design:
    """The evaluation design of a run, resolved from the recipe and the run's options.

    Attributes
    ----------
    seed : int
        Seed of the splits, folds, bootstrap and models (repeated split ``r`` uses
        ``seed + 1000 + r`` for its split and ``seed + r`` for its fits).
    n_boot : int
        Bootstrap resamples of the confidence intervals.
    repeats : int
        Repeated random patient splits (0: none).
    test_size : float
        Fraction of the development patients in the test set (0 < f <= 0.5).
    unit : {"patients", "images"}
        The unit every count and metric is computed on.
    jobs : int
        Parallel processes for the repeated splits.
    progress : bool
        Print each model's test AUC.
    """
    seed: int = 42
    n_boot: int = 2000
    repeats: int = 20
    test_size: float = 0.3
    unit: str = "patients"
    jobs: int = 1
    progress: bool = False


@dataclass
class ExternalSite:
    """The site a run holds out for external validation.

    ``site``: its name (None: no external validation); ``batch_col``: the column naming each
    case's site; ``explicit``: asked for on the command line (used or refused) rather than
    the recipe's default (which adapts: without a usable site the run goes on without one).
    """
    site: str | None
    batch_col: str = "site"
    explicit: bool = False


def patient_split(df, y, test_size, seed):
    """Stratified train/test split of patients (all images of a patient on one side)."""
    pats = pd.DataFrame({"p": df["patient_id"].astype(str).to_numpy(), "y": y}).groupby(
        "p", sort=True)["y"].first()
    tr, te = train_test_split(pats.index.to_numpy(), test_size=test_size, stratify=pats.to_numpy(),
                              random_state=seed)
    trs = set(tr)
    mask = df["patient_id"].astype(str).isin(trs).to_numpy()
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def unit_level(X: pd.DataFrame, y, score, unit: str = "patients"):
    """Scores per evaluation unit: ``(ids, y, score)``.

    ``patients`` (the default of every recipe): a patient's images are one observation, scored
    by the mean of their image scores (probabilities, or Rad-scores), so that DeLong and
    bootstrap intervals assume independent patients, not independent images. ``images``
    keeps one row per image. Patients are returned in sorted id order.
    """
    if score is None:
        return None, None, None
    score = np.asarray(score, dtype=float)
    y = np.asarray(y)
    if unit == "images":
        ids = X["case_id"].astype(str).to_numpy() if "case_id" in X else np.arange(len(y))
        return ids, y, score
    if unit not in UNITS:
        raise InputError(f"evaluation unit {unit!r}: choose from {', '.join(UNITS)}")
    pid = X["patient_id"].astype(str).to_numpy()
    ids, first, inv = np.unique(pid, return_index=True, return_inverse=True)
    yu = y[first]
    if (y != yu[inv]).any():
        bad = ids[np.unique(inv[y != yu[inv]])][:3]
        raise InputError(f"patient(s) {', '.join(bad)} have images with different labels: "
                         "evaluate per image (evaluation: {unit: images})")
    counts = np.bincount(inv)
    if score.ndim == 1:
        su = np.bincount(inv, weights=score) / counts
    else:
        su = np.column_stack([np.bincount(inv, weights=score[:, j]) / counts
                              for j in range(score.shape[1])])
    return ids, yu, su


def oof_predictions(make_model, X, y, groups, target: Target, seed: int, *,
                    with_radscore=False, fitted=None):
    """Out-of-fold predictions on the training part (grouped by patient, stratified).

    With ``with_radscore`` the same fold models also give out-of-fold Rad-scores (for the
    nomogram), so no pipeline is fitted twice. A list ``fitted`` receives the fold models (their
    fallbacks go into the run's notes). Returns (predictions, radscores or None).
    """
    classes, positive = target.classes, target.positive
    k = int(max(2, min(OOF_FOLDS, pd.Series(y).value_counts().min())))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = np.zeros(len(y)) if positive is not None else np.zeros((len(y), len(classes)))
    rs = np.zeros(len(y)) if with_radscore else None
    for tr, va in cv.split(X, y, groups):
        m = fit_grouped(make_model(y[tr]), X.iloc[tr], y[tr], groups[tr], seed)
        if fitted is not None:
            fitted.append(m)
        out[va] = _proba(m, X.iloc[va], classes, positive)
        if with_radscore:
            rs[va] = rad_score(m, X.iloc[va])
    return out, rs


@dataclass
class StudyData:
    """The cases of one run: development (train + internal test) and the external site."""
    dev: pd.DataFrame
    ydev: np.ndarray
    dext: pd.DataFrame
    yext: np.ndarray
    Xtr: pd.DataFrame = None
    ytr: np.ndarray = None
    Xte: pd.DataFrame = None
    yte: np.ndarray = None
    unit: str = "patients"

    def per_unit(self, split: str, score):
        """``(ids, y, score)`` of a split (``train``, ``test``, ``external``) per unit."""
        X, y = {"train": (self.Xtr, self.ytr), "test": (self.Xte, self.yte),
                "external": (self.dext, self.yext)}[split]
        return unit_level(X, y, score, self.unit)

    def y_unit(self, split: str):
        """The labels of a split per evaluation unit."""
        X = {"train": self.Xtr, "test": self.Xte, "external": self.dext}[split]
        if X is None or not len(X):
            return np.array([])
        return self.per_unit(split, np.zeros(len(X)))[1]


def _hold_out_external(df, y, binary, notes, external: ExternalSite, *, labels=None,
                       labels_name="labels table"):
    """Split off the external site (held out of every fit); ``(data, ext)``, ``ext`` None
    when the site is not usable.

    A site asked for on the command line (``explicit``) is used or refused: one the labels
    lack, one without a usable case (no label of the task, no feature row) or one holding
    every case is an error. The recipe's own default adapts instead: the run goes on
    without external validation and says so in ``notes``.
    """
    ext, batch, explicit = external.site, external.batch_col, external.explicit
    ext_mask = np.zeros(len(df), bool)
    if ext:
        if batch not in df.columns:
            raise InputError(f"{labels_name}: external site {ext!r} requested but the labels "
                             f"have no {batch!r} column")
        # a writable copy: under pandas' copy-on-write a comparison's array is read-only
        ext_mask = np.array(df[batch].astype(str) == str(ext), dtype=bool)
        problem = None
        if not ext_mask.any():
            n_rows = int((labels[batch].astype(str) == str(ext)).sum()) \
                if labels is not None and batch in labels.columns else 0
            problem = (f"has no usable case (its {n_rows} row(s) have no label of the task or "
                       "no feature row)") if n_rows else "does not occur in the labels"
        elif ext_mask.all():
            problem = "holds every usable case (nothing would be left to train on)"
        if problem:
            if explicit:
                sites = df[batch].astype(str).value_counts().sort_index()
                raise InputError(f"{labels_name}: external site {ext!r} {problem}; usable "
                                 "cases per site: "
                                 + ", ".join(f"{k} {v}" for k, v in sites.items()))
            notes.append(f"external site {ext!r} {problem}: no external validation")
            ext_mask[:] = False
            ext = None
    data = StudyData(dev=df[~ext_mask].reset_index(drop=True), ydev=y[~ext_mask],
                     dext=df[ext_mask].reset_index(drop=True), yext=y[ext_mask])
    if ext and binary and len(np.unique(data.yext)) < 2:
        notes.append(f"external site {ext!r} has a single class: AUC not computable there")
    return data, ext


def _assign_test_set(data, recipe: dict, ext, test_size: float, n_classes: int,
                     repeats: int, seed: int, notes: list) -> tuple:
    """Set ``data``'s training and test sets; return the test fraction and the number of
    repeated splits that follow from them.

    With ``test_size > 0`` the development patients are split (by patient); with 0, as in
    yin2024, every development patient trains and the external site is the test set (then
    there is nothing to repeat). Without a usable external site, or with one that lacks a
    class, there is no such test set: the development data is split 70/30 instead.
    """
    if test_size <= 0 and not ext:
        notes.append(f"recipe {recipe['name']} tests on an external site, but none is usable: "
                     "tested on a 70/30 split of the development patients instead")
        test_size = 0.3
    elif test_size <= 0 and len(np.unique(data.yext)) < n_classes:
        notes.append(f"external site {ext} lacks a class, so it cannot be the test set: "
                     "tested on a 70/30 split of the other sites instead")
        test_size = 0.3
    if test_size > 0:
        tr_idx, te_idx = patient_split(data.dev, data.ydev, test_size, seed)
        data.Xtr, data.ytr = data.dev.iloc[tr_idx], data.ydev[tr_idx]
        data.Xte, data.yte = data.dev.iloc[te_idx], data.ydev[te_idx]
        return test_size, repeats
    data.Xtr, data.ytr = data.dev, data.ydev
    data.Xte, data.yte = data.dext, data.yext
    data.dext, data.yext = data.dext.iloc[:0], data.yext[:0]
    notes.append(f"test set = external site {ext} (trained on every other site's "
                 "patients, as the paper's centre 1 / centre 2 design)")
    if repeats > 0:
        notes.append("no repeated random splits: the test set is the external site")
    return test_size, 0


#: patients of each class the development sites need. The run splits them 70/30, takes the
#: threshold from out-of-fold predictions of the training part (two or more folds, each with
#: every class) and its LASSO, SMOTE and calibration steps cross-validate again inside each
#: fold. Measured on the shipped recipes (16 seeds each): 5 runs; with 4, peritumoral2025's
#: inner folds lose a class; with 3, cui2023's do
MIN_PATIENTS_PER_CLASS = 5


def _check_class_sizes(data, classes, positive, recipe, labels_name, ext):
    pid = data.dev["patient_id"].astype(str).to_numpy()
    per = pd.Series(data.ydev).groupby(pid).first().value_counts()
    names = class_names(recipe["task"]) if positive is not None else classes
    counts = {str(names[i] if positive is not None else c): int(per.get(c, 0))
              for i, c in enumerate(classes)}
    few = {c: n for c, n in counts.items() if n < MIN_PATIENTS_PER_CLASS}
    if few:
        where = f" (external site {ext} held out)" if ext else ""
        raise InputError(
            f"{labels_name}: too few patients for recipe {recipe['name']}: "
            + ", ".join(f"{c} {n}" for c, n in counts.items())
            + f" in the development data{where}; each class needs at least "
            f"{MIN_PATIENTS_PER_CLASS} (train/test split, then cross-validation inside the "
            "training part)")


def repeated_splits(make, dev, ydev, target: Target, design: Design):
    """Test AUCs over ``design.repeats`` random patient-level splits of ``design.test_size``
    (scored per ``design.unit``, as the main split); returns ``(aucs, chosen scenarios)``.

    ``make`` is the primary classifier's pipeline factory, or ``{scenario: factory}`` when
    the recipe compares region scenarios: each split then chooses its scenario again, as the
    main run does (best training out-of-fold AUC), so the spread includes that choice.
    """
    makers = make if isinstance(make, dict) else {"main": make}
    classes, positive, seed, unit = target.classes, target.positive, design.seed, design.unit

    def auc(yu, p):
        if positive is not None:
            return float(roc_auc_score(yu, p))
        return float(np.mean([roc_auc_score((yu == c).astype(int), p[:, j])
                              for j, c in enumerate(classes)]))

    groups = dev["patient_id"].astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [patient_split(dev, ydev, design.test_size, seed + 1000 + r)
                 for r in range(design.repeats)]

    def score(r, scen):
        # one scenario's training out-of-fold AUC in split r: the 4 scenarios x repeats are
        # independent tasks, so two processes stay busy (3 repeats alone left one idle a third
        # of the time); the same seeds as before, so the same choice
        tr = parts[r][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oof, _ = oof_predictions(makers[scen], dev.iloc[tr], ydev[tr], groups[tr], target,
                                     seed + r)
            _, yo, po = unit_level(dev.iloc[tr], ydev[tr], oof, unit)
            return auc(yo, po)

    def one(r, chosen):
        tr, te = parts[r]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = fit_grouped(makers[chosen](ydev[tr]), dev.iloc[tr], ydev[tr], groups[tr],
                            seed + r)
            _, yu, p = unit_level(dev.iloc[te], ydev[te],
                                  _proba(m, dev.iloc[te], classes, positive), unit)
            return auc(yu, p), chosen

    chosen = [next(iter(makers))] * design.repeats
    if len(makers) > 1:
        todo = [(r, scen) for r in range(design.repeats) for scen in makers]
        got = Parallel(n_jobs=design.jobs)(delayed(score)(r, scen) for r, scen in todo)
        for r in range(design.repeats):
            scores = {scen: a for (rr, scen), a in zip(todo, got) if rr == r}
            chosen[r] = max(scores, key=scores.get)
    out = list(Parallel(n_jobs=design.jobs)(delayed(one)(r, chosen[r])
                                            for r in range(design.repeats)))
    return [a for a, _ in out], [c for _, c in out]
