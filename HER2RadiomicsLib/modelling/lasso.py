"""The LASSO step of the modelling pipelines (``LassoSelector``): an L1 model whose penalty is
chosen by cross-validation inside the training data, whose non-zero coefficients are the
selected features and whose linear predictor is the Rad-score (:func:`.transformers.rad_score`).

Its module path is recorded in model bundles: bundles written before it moved here name
``HER2RadiomicsLib.modelling.transformers.LassoSelector``, which still exports it
(:data:`.bundle_compat.LEGACY_TYPES`).
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.base import clone
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import l1_min_c
from sklearn.utils.multiclass import type_of_target

from .evaluation import roc_auc
from .selector_base import _relevance, _Selector

log = logging.getLogger(__name__)

# CV path settings. Weak penalties on nearly separable folds make liblinear iterate to its
# limit (seconds per fit) while their CV score has long stopped improving, so the path uses at
# most CV_MAX_ITER iterations per fit and stops after PATH_PATIENCE consecutive grid points
# without a better CV score (glmnet-style path truncation). The final fit is unaffected.
CV_MAX_ITER = 200
PATH_PATIENCE = 5


class LassoSelector(_Selector):
    """L1-penalised selection with k-fold CV over a log grid (the studies' LASSO step).

    Parameters
    ----------
    cv : int
        Folds (10 in zhao2025 / yin2024).
    n_alphas : int
        Grid points over ``decades`` decades of the penalty.
    decades : float
        Width of the log grid (zhao2025: 4).
    one_se : bool
        Choose the strongest penalty whose CV score is within one standard error of the best.
    max_features : int, optional
        Keep at most this many features (largest |coefficient|), e.g. yin2024's top 7.
    estimator : {"logistic", "lasso"}
        L1 logistic regression (classification, default) or LASSO regression on the 0/1 label
        (zhao2025's wording); multiclass labels use the logistic form.
    max_iter, tol, random_state :
        Solver settings (zhao2025's recipe: 100000, 1e-4, 15). The default max_iter is
        10000: on nearly separable training data liblinear otherwise spends tens of seconds
        per fit at weak penalties without changing which features are selected.
    passthrough : sequence of str
        Columns kept without penalisation (clinical variables).
    screen : estimator, optional
        Supervised filters that precede the LASSO in the protocol (univariate tests, the
        relevance-ranked correlation filter). They are fitted inside every inner CV fold on
        that fold's training rows only, then once on all rows for the final fit: screening
        all rows first would let the inner CV score features already chosen with its own
        validation rows (on pure noise that inner CV reached AUC 0.89-0.97).
    resample : sampler, optional
        An oversampler (SMOTE) applied to the inner training rows of every fold and to all
        rows for the final fit, never to validation rows.

    ``fit(X, y, groups=None)``: with ``groups`` (patient ids) the inner folds are
    stratified *and* grouped, so a patient's images never sit on both sides of a fold.

    Attributes
    ----------
    coef_ : ndarray
        Coefficients of the selected features (``coef_features_``) at the chosen penalty;
        for more than two classes, the largest absolute one-vs-rest coefficient (a ranking,
        not a Rad-score: see ``class_coef_``).
    class_coef_, class_intercept_ : ndarray or None
        More than two classes: the signed one-vs-rest coefficients (classes x features) and
        intercepts, one Rad-score per class (:func:`rad_score_per_class`).
    intercept_ : float
    alpha_ : float
        Chosen penalty (``C = 1 / alpha`` for the logistic form).
    """

    # Documented exception to the library's "at most 8 parameters": a scikit-learn estimator
    # lists every hyper-parameter in __init__ (get_params / set_params / clone, grid search
    # and the recipes' step settings read them from this signature), so they cannot be
    # grouped into a config object without breaking cloning and the recipe validation.
    def __init__(self, cv=10, n_alphas=30, decades=4.0, one_se=False, max_features=None,
                 estimator="logistic", max_iter=10000, tol=1e-4, random_state=15,
                 passthrough=(), min_features=1, screen=None, resample=None):
        self.cv = cv
        self.n_alphas = n_alphas
        self.decades = decades
        self.one_se = one_se
        self.max_features = max_features
        self.estimator = estimator
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.passthrough = passthrough
        self.min_features = min_features
        self.screen = screen
        self.resample = resample

    def _prepare(self, A, y, cols):
        """Resample then screen rows ``A`` (the fold's training part); returns the prepared
        matrix, its labels, the kept column indices and the fitted screen."""
        if self.resample is not None:
            sampler = clone(self.resample)
            if "k_neighbors" in sampler.get_params():
                # SMOTE needs k neighbours inside the minority class of this fold
                minority = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
                k = sampler.get_params()["k_neighbors"]
                if isinstance(k, int):
                    sampler.set_params(k_neighbors=max(1, min(k, minority - 1)))
            A, y = sampler.fit_resample(A, y)
        keep = np.arange(A.shape[1])
        screen = None
        if self.screen is not None:
            screen = clone(self.screen).fit(pd.DataFrame(A, columns=cols), y)
            names = list(screen.get_feature_names_out(cols)) if hasattr(
                screen, "get_feature_names_out") else list(screen.selected_features_)
            pos = {c: j for j, c in enumerate(cols)}
            keep = np.array(sorted(pos[c] for c in names), dtype=int)
        return A[:, keep], np.asarray(y), keep, screen

    def fit(self, X, y, groups=None):
        type_of_target(y, input_name="y", raise_unknown=True)
        X = self._validated(X, y, two=True)
        cols = [c for c in X.columns if c not in (self.passthrough or ())]
        A_all = X[cols].to_numpy(dtype=float)
        y_all = np.asarray(y)
        classes = np.unique(y_all)
        counts = np.array([(y_all == c).sum() for c in classes])
        folds = int(max(2, min(self.cv, counts.min())))
        if groups is not None:
            groups = np.asarray(groups)
            folds = int(max(2, min(folds, len(np.unique(groups)))))
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=self.random_state)
            splits = list(splitter.split(A_all, y_all, groups))
        else:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            splits = list(splitter.split(A_all, y_all))
        # every fold's training rows resampled and screened on their own; validation rows
        # untouched (only transformed by the fold's screen)
        prepared = []
        for tr, va in splits:
            Atr, ytr, keep, _ = self._prepare(A_all[tr], y_all[tr], cols)
            prepared.append((Atr, ytr, A_all[va][:, keep], y_all[va]))
        # the final fit's data, also the penalty grid's reference
        A, y, keep_final, self.screen_ = self._prepare(A_all, y_all, cols)
        cols = [cols[j] for j in keep_final]
        self.screened_features_ = list(cols)
        use_lasso = self.estimator == "lasso" and len(classes) == 2
        if use_lasso:
            yy = (y == classes[1]).astype(float)
            amax = np.abs(A.T @ (yy - yy.mean())).max() / len(yy)
            alphas = amax * np.logspace(0, -self.decades, self.n_alphas)

            def model(a, max_iter=None):
                return Lasso(alpha=a, max_iter=max_iter or self.max_iter, tol=self.tol,
                             random_state=self.random_state)
            target = yy
        else:
            # C grid from the smallest C at which any feature enters, over `decades` decades
            c0 = min(l1_min_c(A, (y == c).astype(int), loss="log") for c in classes[1:])
            alphas = 1.0 / (c0 * np.logspace(0.05, self.decades, self.n_alphas))

            def model(a, max_iter=None):
                # l1_ratio=1 is the L1 penalty (scikit-learn >= 1.8 deprecates penalty="l1")
                lr = LogisticRegression(l1_ratio=1.0, C=1.0 / a, solver="liblinear",
                                        max_iter=max_iter or self.max_iter, tol=self.tol,
                                        random_state=self.random_state)
                if len(classes) == 2:
                    return lr
                # one L1 model per class (liblinear is far faster than multinomial saga)
                return OneVsRestClassifier(lr)
            target = y

        def score(m, Ava, yva):
            """AUC of one fold: the LASSO's fitted values (a regressor) or the logistic
            decision function; one-vs-rest macro AUC for more classes."""
            # two classes: evaluation.roc_auc, scikit-learn's value bit for bit without its
            # input checks (they were a third of a study run's time: ~10 folds x 20
            # penalties per LASSO fit); NaN for a fold without both classes, as before
            if use_lasso:
                return roc_auc(yva == classes[1], m.predict(Ava))
            if len(classes) == 2:
                return roc_auc(yva, m.decision_function(Ava))
            try:
                return roc_auc_score(yva, m.predict_proba(Ava), multi_class="ovr",
                                     labels=classes)
            except ValueError:          # a fold without every class
                return np.nan
        means, ses = [], []
        best_so_far, since_best = -np.inf, 0
        # the path's hundreds of small fits all take finite, validated arrays and one set of
        # settings: those are checked once here (a recipe's out-of-range value is the same
        # InvalidParameterError as before), then scikit-learn's per-call checks are skipped
        # (~30 % of a LASSO fit; the same numbers)
        first = model(alphas[0], min(self.max_iter, CV_MAX_ITER))
        getattr(first, "estimator", first)._validate_params()
        with warnings.catch_warnings(), config_context(assume_finite=True,
                                                       skip_parameter_validation=True):
            warnings.simplefilter("ignore")
            for a in alphas:
                sc = []
                for Atr, ytr, Ava, yva in prepared:
                    if Atr.shape[1] == 0:
                        sc.append(np.nan)
                        continue
                    t = (ytr == classes[1]).astype(float) if use_lasso else ytr
                    m = model(a, min(self.max_iter, CV_MAX_ITER)).fit(Atr, t)
                    sc.append(score(m, Ava, yva))
                sc = np.asarray(sc, dtype=float)
                means.append(np.nanmean(sc) if np.isfinite(sc).any() else np.nan)
                ses.append(np.nanstd(sc, ddof=1) / math.sqrt(max(1, np.isfinite(sc).sum()))
                           if np.isfinite(sc).sum() > 1 else 0.0)
                if means[-1] > best_so_far + 1e-4:
                    best_so_far, since_best = means[-1], 0
                else:
                    since_best += 1
                    if since_best >= PATH_PATIENCE:
                        break
        alphas = alphas[:len(means)]
        means, ses = np.array(means), np.array(ses)
        best = int(np.nanargmax(means))
        if self.one_se:
            ok = np.where(means >= means[best] - ses[best])[0]
            best = int(ok.min())        # alphas descend: smallest index = strongest penalty
        self.alpha_ = float(alphas[best])
        self.cv_alphas_, self.cv_mean_, self.cv_se_ = np.asarray(alphas), means, ses
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            final = model(self.alpha_).fit(A, target)
        self.n_iter_ = int(np.max(np.concatenate([np.atleast_1d(e.n_iter_) for e in (
            final.estimators_ if hasattr(final, "estimators_") else [final])])))
        if hasattr(final, "estimators_"):
            coef = np.vstack([e.coef_ for e in final.estimators_])
            final_icpt = np.concatenate([e.intercept_ for e in final.estimators_])
        else:
            coef = np.atleast_2d(final.coef_)
            final_icpt = np.atleast_1d(final.intercept_)
        mag = np.abs(coef).max(axis=0)
        order = np.argsort(-mag, kind="stable")
        nz = [j for j in order if mag[j] > 0]
        if self.max_features:
            nz = nz[:self.max_features]
        self.fallback_ = None
        screen_fb = [getattr(st, "fallback_", None) for st in (
            [st for _, st in self.screen_.steps] if hasattr(self.screen_, "steps")
            else [self.screen_])]
        if len(nz) < self.min_features:
            # the CV optimum kept nothing: take the strongest univariate features instead
            nz = list(np.argsort(-_relevance(A, y), kind="stable")[:self.min_features])
            screen_fb.append(f"LASSO: no feature survived the chosen penalty; kept the "
                             f"{self.min_features} most relevant (fallback, not in the paper)")
            log.warning("LassoSelector: no feature survived the penalty; keeping the %d most "
                        "relevant", self.min_features)
        self.fallback_ = "; ".join(f for f in screen_fb if f) or None
        nz = sorted(nz)
        vals = coef[-1] if coef.shape[0] == 1 else mag
        self.coef_ = np.asarray([vals[j] for j in nz], dtype=float)
        self.coef_features_ = [cols[j] for j in nz]
        self.intercept_ = float(final_icpt[-1])
        self.classes_ = classes
        # more than two classes: one one-vs-rest linear predictor per class (its own signed
        # coefficients and intercept); coef_ then only ranks the features (largest |coef|)
        self.class_coef_ = coef[:, nz] if coef.shape[0] > 1 else None
        self.class_intercept_ = np.asarray(final_icpt, float) if coef.shape[0] > 1 else None
        self.selected_features_ = [cols[j] for j in nz] + \
            [c for c in (self.passthrough or ()) if c in X.columns]
        return self
