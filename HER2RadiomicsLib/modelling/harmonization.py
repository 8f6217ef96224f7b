"""ComBat harmonisation of radiomic features across scanners/sites, as a scikit-learn transformer.

The published method (Johnson, Li & Rabinovic 2007, Biostatistics; Fortin et al. 2017/2018 for
imaging features): each feature is modelled as
``y_ij = alpha + X_ij beta + gamma_i + delta_i * eps_ij`` for site ``i``; site effects
``gamma_i`` (additive) and ``delta_i`` (multiplicative) are shrunk with empirical Bayes towards
priors estimated across features (parametric: normal / inverse-gamma priors solved iteratively;
non-parametric: Monte-Carlo integration over the other features), then removed.

Implemented here (no maintained package offers a fit-on-train / apply-to-new-cases estimator
with pandas input; neuroCombat's ``neuroCombatFromTraining`` drops covariates) and verified
against ``neuroCombat`` on the same data in the tests.

Train/apply split: ``fit`` learns the pooled mean, covariate effects, pooled variance and the EB
site effects from training data only; ``transform`` applies them to any data of the known sites
(new patients at prediction time), so cross-validation refits ComBat in each fold and nothing
leaks.

Covariates: only variables **known at prediction time** may be preserved (age, menopausal
status...). The outcome label must not be a covariate: at prediction time it is unknown, and
using it during training would make the harmonised training features depend on the label
(leakage that inflates performance).  ``fit`` therefore refuses a covariate named like the
target when ``forbidden_covariates`` lists it (the modelling pipeline passes the label column).

Unknown site at ``transform``: ``unknown_site="error"`` (default) raises a clear error naming the
site; ``"estimate"`` estimates the new site's effects from its own cases in the data being
transformed (their features only, never labels; empirical Bayes as in ``fit``) — the usual way
to harmonise an external validation centre — and needs at least 2 cases of that site (with
fewer it falls back to ``"average"``); ``"average"`` applies the sample-size-weighted average of
the training sites' effects (a documented fallback for a single new patient from a new
scanner, sensible only when that scanner resembles the training mix).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError

log = logging.getLogger(__name__)


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation for a DataFrame of features plus a site (batch) column.

    Parameters
    ----------
    batch_col : str
        Column holding the site/scanner; it is dropped from the output.
    parametric : bool
        Parametric (True) or non-parametric (False) empirical Bayes.
    eb : bool
        Use empirical Bayes shrinkage (False: plain location/scale per site).
    mean_only : bool
        Only remove additive site effects (no scaling).
    covariate_cols : sequence of str
        Numeric covariates whose effect is preserved (known at prediction time; kept in the
        output unchanged).  Categorical covariates must be one-hot encoded first.
    unknown_site : {"error", "estimate", "average"}
        What ``transform`` does with a site not seen in ``fit`` (see the module docstring).
    forbidden_covariates : sequence of str
        Names that may not be covariates (the pipeline passes the outcome label).
    small_sites : {"error", "tolerate"}
        What ``fit`` does with sites it cannot estimate. ``"error"`` (default): every site
        needs two cases and there must be two sites, as the published method requires.
        ``"tolerate"`` (the training pipeline, whose cross-validation folds of a small
        multi-site study can hold a single case of a site, or one site only): a single-case
        site gets the average site effect when two other sites can be estimated; otherwise
        the fit leaves the features unchanged (``passthrough_``).

    Attributes
    ----------
    sites_ : list
        Sites seen in ``fit``, in order.
    feature_names_in_ : ndarray of str
        Feature columns harmonised (all numeric columns except batch and covariates).
    grand_mean_, var_pooled_, beta_cov_ : ndarray
        Pooled mean, pooled variance and covariate coefficients per feature.
    gamma_star_, delta_star_ : ndarray, shape (n_sites, n_features)
        Empirical-Bayes site effects.
    pooled_sites_ : list
        Sites that had a single case in ``fit`` (a small cross-validation fold): left out of
        the estimation when two other sites remain, and given the average site effect.
    passthrough_ : bool
        True when fewer than two sites had two or more cases (``small_sites="tolerate"``):
        no site effect can be estimated against another, and ``transform`` returns the
        features unchanged.
    fallback_ : str or None
        Says when either happened (the training run lists it in its notes).
    """

    def __init__(self, batch_col="site", parametric=True, eb=True, mean_only=False,
                 covariate_cols=(), unknown_site="error", forbidden_covariates=(),
                 small_sites="error"):
        self.batch_col = batch_col
        self.parametric = parametric
        self.eb = eb
        self.mean_only = mean_only
        self.covariate_cols = covariate_cols
        self.unknown_site = unknown_site
        self.forbidden_covariates = forbidden_covariates
        self.small_sites = small_sites

    def _split(self, X):
        if not isinstance(X, pd.DataFrame):
            raise InputError("ComBat needs a pandas DataFrame with the site column "
                             f"{self.batch_col!r}")
        if self.batch_col not in X.columns:
            raise InputError(f"ComBat: site column {self.batch_col!r} not in the data")
        covs = list(self.covariate_cols or ())
        missing = [c for c in covs if c not in X.columns]
        if missing:
            raise InputError(f"ComBat: covariate column(s) {missing} missing; covariates must be "
                             "available for every case, also at prediction time")
        return X[self.batch_col].astype(str).to_numpy(), covs

    def fit(self, X, y=None):
        """Estimate the pooled model and the (shrunk) site effects on ``X``."""
        batch, covs = self._split(X)
        self._check_settings(covs)
        feats = [c for c in X.columns if c != self.batch_col and c not in covs]
        Y = X[feats].to_numpy(dtype=np.float64)                   # (n, p)
        if not np.isfinite(Y).all():
            raise InputError("ComBat: features contain NaN/inf; impute before harmonising")
        # a site with one case has no variance to estimate: when at least two other sites
        # can be fitted, its case is harmonised like a new scanner's (the average effect)
        names, n_per = np.unique(batch, return_counts=True)
        single = [str(s) for s, n in zip(names, n_per) if n < 2]
        self.pooled_sites_, self.fallback_, self.passthrough_ = [], None, False
        tolerate = getattr(self, "small_sites", "error") == "tolerate"
        if tolerate and single and len(names) - len(single) >= 2:
            keep = ~np.isin(batch, single)
            batch, Y, X = batch[keep], Y[keep], X[keep]
            self.pooled_sites_ = single
            self.fallback_ = (f"ComBat: site(s) {', '.join(single)} had a single training "
                              "case and got the average site effect")
        elif tolerate and len(names) - len(single) < 2:
            # one site, or two of which one is a single case (a small cross-validation fold):
            # no site effect can be estimated against another, so this fit leaves the
            # features as they are rather than erase a lone case's values
            self.passthrough_ = True
            self.fallback_ = (f"ComBat: the training rows held {len(names)} site(s), "
                              f"{len(single)} of them a single case: not harmonised")
            self.sites_ = [str(x) for x in names]
            self.feature_names_in_ = np.array(feats, dtype=object)
            self.covariates_ = covs
            self.n_features_in_ = X.shape[1]
            self.gamma_star_ = self.delta_star_ = None
            return self
        sites, idx, counts = _sites(batch)
        C = X[covs].to_numpy(dtype=np.float64) if covs else np.zeros((len(Y), 0))
        grand, beta_cov, var = _pooled_model(Y, idx, counts, C)
        s = (Y - (grand + C @ beta_cov)) / np.sqrt(var)           # standardised data
        gamma_hat, delta_hat = self._site_effects(s, idx, len(sites))
        g_star, d_star = self._shrink(s, idx, gamma_hat, delta_hat)
        self.sites_ = list(sites)
        self.site_counts_ = counts
        self.feature_names_in_ = np.array(feats, dtype=object)
        self.covariates_ = covs
        self.grand_mean_, self.var_pooled_, self.beta_cov_ = grand, var, beta_cov
        self.gamma_star_, self.delta_star_ = g_star, d_star
        self.n_features_in_ = X.shape[1]
        return self

    def _check_settings(self, covs):
        bad = set(covs) & set(self.forbidden_covariates or ())
        if bad:
            raise InputError(f"ComBat: {sorted(bad)} is the outcome; it cannot be a covariate "
                             "(unknown at prediction time, and it would leak into the features)")
        if self.unknown_site not in ("error", "estimate", "average"):
            raise InputError(f"ComBat: unknown_site={self.unknown_site!r} (error, estimate or "
                             "average)")
        if getattr(self, "small_sites", "error") not in ("error", "tolerate"):
            raise InputError(f"ComBat: small_sites={self.small_sites!r} (error or tolerate)")

    def _site_effects(self, s, idx, n_sites):
        """Per-site mean (gamma) and variance (delta) of the standardised data, before
        shrinkage; delta is 1 with ``mean_only`` or where a site's feature is constant."""
        gamma_hat = np.vstack([s[idx == i].mean(axis=0) for i in range(n_sites)])
        if self.mean_only:
            return gamma_hat, np.ones_like(gamma_hat)
        delta_hat = np.vstack([s[idx == i].var(axis=0, ddof=1) for i in range(n_sites)])
        delta_hat[delta_hat == 0] = 1.0
        return gamma_hat, delta_hat

    def _shrink(self, s, idx, gamma_hat, delta_hat):
        """Empirical-Bayes site effects (parametric or not), or the raw ones without EB."""
        if not self.eb:
            return gamma_hat, delta_hat
        if self.parametric:
            return _parametric_eb(s, idx, gamma_hat, delta_hat, self.mean_only)
        return _nonparametric_eb(s, idx, gamma_hat, delta_hat, self.mean_only)

    def transform(self, X):
        check_is_fitted(self, "gamma_star_")
        batch, covs = self._split(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise InputError(f"ComBat: {len(missing)} feature(s) seen in fit are missing, "
                             f"e.g. {missing[:3]}")
        if getattr(self, "passthrough_", False):
            return X[list(self.feature_names_in_) + list(covs)].copy()
        Y = X[list(self.feature_names_in_)].to_numpy(dtype=np.float64)
        C = X[covs].to_numpy(dtype=np.float64) if covs else np.zeros((len(X), 0))
        stand = self.grand_mean_ + C @ self.beta_cov_
        s = (Y - stand) / np.sqrt(self.var_pooled_)
        site_index = {s_: i for i, s_ in enumerate(self.sites_)}
        w = self.site_counts_ / self.site_counts_.sum()
        g_avg, d_avg = w @ self.gamma_star_, w @ self.delta_star_
        out = np.empty_like(s)
        for site in np.unique(batch):
            rows = batch == site
            if site in site_index:
                g, d = self.gamma_star_[site_index[site]], self.delta_star_[site_index[site]]
            elif site in getattr(self, "pooled_sites_", ()):
                g, d = g_avg, d_avg                # seen in fit with a single case
            elif self.unknown_site == "estimate" and rows.sum() >= 2:
                g, d = self._estimate_new_site(s[rows])
            elif self.unknown_site in ("average", "estimate"):
                log.warning("ComBat: site %r was not in the training data; applying the "
                            "average site effect (documented fallback)", site)
                g, d = g_avg, d_avg
            else:
                raise InputError(f"ComBat: site {site!r} was not in the training data (known: "
                                 f"{self.sites_}); harmonisation cannot be applied")
            out[rows] = (s[rows] - g) / np.sqrt(d)
        adj = out * np.sqrt(self.var_pooled_) + stand
        res = pd.DataFrame(adj, index=X.index, columns=list(self.feature_names_in_))
        for c in covs:
            res[c] = X[c].to_numpy()
        return res

    def _estimate_new_site(self, s_new):
        """EB site effects of an unseen site from its own standardised data (no labels)."""
        idx = np.zeros(len(s_new), dtype=int)
        g_hat, d_hat = self._site_effects(s_new, idx, 1)
        g, d = self._shrink(s_new, idx, g_hat, d_hat)
        return g[0], d[0]

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "gamma_star_")
        return np.array(list(self.feature_names_in_) + list(self.covariates_), dtype=object)


def _sites(batch):
    """``(sites, index of each case's site, cases per site)``; at least 2 sites of 2 cases."""
    sites, idx = np.unique(batch, return_inverse=True)
    counts = np.bincount(idx)
    if len(sites) < 2:
        raise InputError(f"ComBat needs at least 2 sites (found {list(sites)})")
    if counts.min() < 2:
        raise InputError(f"ComBat: site {sites[counts.argmin()]!r} has a single case; "
                         "each site needs at least 2")
    return sites, idx, counts


def _pooled_model(Y, idx, counts, C):
    """Least squares of the features on site indicators and covariates: the grand mean
    (site means weighted by cases), the covariate coefficients and the pooled residual
    variance (1 for constant features: nothing to scale)."""
    n, n_sites = len(Y), len(counts)
    B = np.zeros((n, n_sites))
    B[np.arange(n), idx] = 1
    design = np.hstack([B, C])
    coef, *_ = np.linalg.lstsq(design, Y, rcond=None)          # (n_sites + n_cov, p)
    grand = (counts / n) @ coef[:n_sites]
    resid = Y - design @ coef
    var = (resid ** 2).mean(axis=0)
    var[var == 0] = 1.0
    return grand, coef[n_sites:], var


def _parametric_eb(s, idx, gamma_hat, delta_hat, mean_only, conv=1e-4, max_iter=1000):
    """Normal prior on gamma, inverse-gamma prior on delta; iterate the posterior means."""
    n_sites = gamma_hat.shape[0]
    g_star = np.empty_like(gamma_hat)
    d_star = np.empty_like(delta_hat)
    for i in range(n_sites):
        gh, dh = gamma_hat[i], delta_hat[i]
        g_bar, t2 = gh.mean(), gh.var(ddof=1)
        if mean_only:
            g_star[i] = (t2 * gh + g_bar) / (t2 + 1)
            d_star[i] = 1.0
            continue
        m, s2 = dh.mean(), dh.var(ddof=1)
        a, b = (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2
        x = s[idx == i]
        nn = x.shape[0]
        g_old, d_old = gh.copy(), dh.copy()
        for _ in range(max_iter):
            g_new = (t2 * nn * gh + d_old * g_bar) / (t2 * nn + d_old)
            sum2 = ((x - g_new) ** 2).sum(axis=0)
            d_new = (0.5 * sum2 + b) / (nn / 2.0 + a - 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                change = max(np.nanmax(np.abs(g_new - g_old) / np.abs(g_old)),
                             np.nanmax(np.abs(d_new - d_old) / d_old))
            g_old, d_old = g_new, d_new
            if change <= conv:
                break
        g_star[i], d_star[i] = g_new, d_new
    return g_star, d_star


def _nonparametric_eb(s, idx, gamma_hat, delta_hat, mean_only, chunk=256):
    """Monte-Carlo integration over the other features' site effects (Johnson 2007, non-param)."""
    n_sites, p = gamma_hat.shape
    g_star = np.empty_like(gamma_hat)
    d_star = np.empty_like(delta_hat)
    for i in range(n_sites):
        x = s[idx == i]                       # (n_i, p)
        n_i = x.shape[0]
        g, d = gamma_hat[i], (np.ones(p) if mean_only else delta_hat[i])
        for start in range(0, p, chunk):
            stop = min(p, start + chunk)
            # sum over samples of (x_j - g_k)^2 for features j in the chunk, all k
            xj = x[:, start:stop]                                     # (n_i, c)
            sum2 = ((xj[:, :, None] - g[None, None, :]) ** 2).sum(axis=0)   # (c, p)
            with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
                lh = (2 * np.pi * d[None, :]) ** (-n_i / 2) * np.exp(-sum2 / (2 * d[None, :]))
            lh = np.nan_to_num(lh)
            lh[np.arange(stop - start), np.arange(start, stop)] = 0.0   # leave the feature out
            den = lh.sum(axis=1)
            g_star[i, start:stop] = (lh * g[None, :]).sum(axis=1) / den
            d_star[i, start:stop] = (lh * d[None, :]).sum(axis=1) / den
        if mean_only:
            d_star[i] = 1.0
    return g_star, d_star
