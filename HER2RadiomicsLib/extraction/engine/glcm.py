r"""Grey-level co-occurrence matrix (GLCM): how often two grey levels meet at an offset.

P(i, j | δ) counts the pairs of region pixels (p, p + δ) with levels i and j, for each offset
δ at the ``distances`` (Chebyshev, pixels; 4 angles per distance in 2D). The matrix is made
symmetrical (P + Pᵀ, ``symmetricalGLCM``), optionally the angles merged with weights
(``weightingNorm``), and each angle's matrix normalised to p(i, j) = P(i, j) / Σ P. Every
feature is computed per angle and then averaged over the angles (IBSI: "2D, averaged"; an
angle without any pair is left out, as pyradiomics leaves it out).

Notation: N_g the highest grey level in the region; p_x(i) = Σ_j p(i, j), p_y(j) = Σ_i p(i, j);
μ_x = Σ i p(i, j), μ_y = Σ j p(i, j); σ_x, σ_y their standard deviations;
p_{x+y}(k) = Σ_{i+j=k} p(i, j) (k = 2..2N_g); p_{x-y}(k) = Σ_{|i-j|=k} p(i, j)
(k = 0..N_g-1); HX = -Σ p_x log2(p_x + ε), HY likewise; HXY = -Σ p log2(p + ε);
HXY1 = -Σ p log2(p_x p_y + ε); HXY2 = -Σ p_x p_y log2(p_x p_y + ε); ε machine epsilon.

======================  =====================================================  ====================
Feature (pyradiomics)   Formula                                                IBSI name
======================  =====================================================  ====================
Autocorrelation         Σ p(i,j) i j                                           cm_auto_corr
JointAverage            μ_x = Σ p(i,j) i                                       cm_joint_avg
ClusterProminence       Σ (i + j - μ_x - μ_y)⁴ p(i,j)                          cm_clust_prom
ClusterShade            Σ (i + j - μ_x - μ_y)³ p(i,j)                          cm_clust_shade
ClusterTendency         Σ (i + j - μ_x - μ_y)² p(i,j)                          cm_clust_tend
Contrast                Σ (i - j)² p(i,j)                                      cm_contrast
Correlation             Σ p(i,j) (i - μ_x)(j - μ_y) / (σ_x σ_y + ε); 1 when     cm_corr
                        σ_x σ_y = 0 (a flat region)
DifferenceAverage       Σ_k k p_{x-y}(k)                                       cm_diff_avg
DifferenceEntropy       -Σ_k p_{x-y}(k) log2(p_{x-y}(k) + ε)                   cm_diff_entr
DifferenceVariance      Σ_k (k - DifferenceAverage)² p_{x-y}(k)                cm_diff_var
JointEnergy             Σ p(i,j)²                                              cm_energy
JointEntropy            HXY                                                    cm_joint_entr
Imc1                    (HXY - HXY1) / max(HX, HY); 0 when max(HX, HY) = 0     cm_info_corr1
Imc2                    sqrt(1 - exp(-2 (HXY2 - HXY))); 0 when HXY2 = HXY      cm_info_corr2
Idm                     Σ_k p_{x-y}(k) / (1 + k²)                              cm_inv_diff_mom
MCC                     sqrt(second largest eigenvalue of Q),                  (none)
                        Q(i,j) = Σ_k p(i,k) p(j,k) / (p_x(i) p_y(k) + ε)
Idmn                    Σ_k p_{x-y}(k) / (1 + k² / N_g²)                       cm_inv_diff_mom_norm
Id                      Σ_k p_{x-y}(k) / (1 + k)                               cm_inv_diff
Idn                     Σ_k p_{x-y}(k) / (1 + k / N_g)                         cm_inv_diff_norm
InverseVariance         Σ_{k≥1} p_{x-y}(k) / k²                                cm_inv_var
MaximumProbability      max p(i,j)                                             cm_joint_max
SumAverage              Σ_k k p_{x+y}(k)                                       cm_sum_avg
SumEntropy              -Σ_k p_{x+y}(k) log2(p_{x+y}(k) + ε)                   cm_sum_entr
SumSquares              Σ (i - μ_x)² p(i,j)                                    cm_joint_var
======================  =====================================================  ====================

Angle weights (``weightingNorm``), from the offset's length d in mm: w = exp(-d²) with d the
infinity, Euclidean or Manhattan norm; the weighted angles are summed into one matrix.
"""
from __future__ import annotations

import numpy as np

from .region import (EPS, Region, Settings, angle_means_many, angle_weights, angles_2d,
                     pad_stack)

GLCM = ("Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade",
        "ClusterTendency", "Contrast", "Correlation", "DifferenceAverage", "DifferenceEntropy",
        "DifferenceVariance", "JointEnergy", "JointEntropy", "Imc1", "Imc2", "Idm", "MCC",
        "Idmn", "Id", "Idn", "InverseVariance", "MaximumProbability", "SumAverage",
        "SumEntropy", "SumSquares")


def glcm(region: Region, settings: Settings = Settings(), names=None) -> dict:
    """GLCM features of one region (see the module's table), each computed per angle and
    averaged over angles."""
    P, present = glcm_matrices(region, settings)
    return glcm_features([P], [present], names)[0]


def glcm_matrices(region: Region, settings: Settings = Settings()):
    """Normalised co-occurrence matrices, one per non-empty angle (shape ``(G, G, A)``, ``G`` =
    grey levels present in the region), and those levels."""
    present = region.present
    ng = int(present.max())
    angles = angles_2d(settings.distances)
    P = np.zeros((ng, ng, len(angles)))
    for k, (dy, dx) in enumerate(angles):
        # grey levels at p and p + (dy, dx) for every pair of region pixels
        b = region.neighbour(int(dy), int(dx))
        keep = b > 0
        i, j = region.lv[keep], b[keep]
        P[:, :, k] = np.bincount((i - 1) * ng + (j - 1), minlength=ng * ng).reshape(ng, ng)
    P = P[np.ix_(present - 1, present - 1)]          # drop levels absent from the region
    return glcm_normalise(P, angles, region.spacing, settings.symmetrical,
                          settings.weighting_norm), present


def glcm_normalise(P, angles, spacing=(1.0, 1.0), symmetrical=True, weighting_norm=None,
                   drop=True):
    """Counts ``(G, G, A)`` -> probabilities: symmetrised, angle-weighted, each angle divided
    by its sum. Empty angles are dropped (``drop``) or kept as NaN (several regions batched:
    the angle means skip NaN, which is the same as dropping)."""
    if symmetrical:
        P = P + P.transpose(1, 0, 2)
    if weighting_norm is not None:
        w = angle_weights(angles, spacing, weighting_norm, "glcm")
        P = np.sum(P * w[None, None, :], 2, keepdims=True)
    sums = P.sum((0, 1))
    if drop and P.shape[2] > 1:
        P, sums = P[:, :, sums > 0], sums[sums > 0]
    sums = np.where(sums == 0, np.nan, sums)
    return P / sums[None, None, :]


def glcm_features(Ps, presents, names=None) -> list:
    """GLCM features of several regions at once (one region's numpy calls cost more than its
    arithmetic, so regions are batched): ``Ps`` normalised ``(G_r, G_r, A_r)`` matrices,
    ``presents`` their grey levels. Matrices are zero-padded to a common size (an empty grey
    level adds nothing to any sum), each feature is computed per angle and averaged.
    The formulas are in the module's table."""
    names = names or GLCM
    P = pad_stack(Ps)                                                       # (R, G, G, A)
    g = pad_stack([p.astype(np.float64) for p in presents], 1.0)           # (R, G)
    ngs = np.array([float(p.max()) for p in presents])                # (R,)
    ng = int(ngs.max())
    R, G, _, A = P.shape
    i, j = g[:, :, None, None], g[:, None, :, None]
    px, py = P.sum(2, keepdims=True), P.sum(1, keepdims=True)          # (R,G,1,A), (R,1,G,A)
    ux, uy = (i * P).sum((1, 2)), (j * P).sum((1, 2))                  # (R, A)
    k_sum = np.arange(2, 2 * ng + 1, dtype=np.float64)
    k_diff = np.arange(0, ng, dtype=np.float64)
    # p_{x+y}(k) and p_{x-y}(k): each cell of P added to its bin of i + j and |i - j|, for
    # every (region, angle) in one bincount
    s = (i + j)[:, :, :, 0].astype(np.intp) - 2                        # (R, G, G)
    d = np.abs(i - j)[:, :, :, 0].astype(np.intp)
    flat = P.transpose(0, 3, 1, 2).reshape(R, A, G * G)               # (R, A, G*G)
    ra = np.arange(R * A).reshape(R, A, 1)
    p_sum = np.bincount((ra * len(k_sum) + s.reshape(R, 1, -1)).ravel(), flat.ravel(),
                        R * A * len(k_sum)).reshape(R, A, -1).transpose(0, 2, 1)
    p_diff = np.bincount((ra * len(k_diff) + d.reshape(R, 1, -1)).ravel(), flat.ravel(),
                         R * A * len(k_diff)).reshape(R, A, -1).transpose(0, 2, 1)
    kd = k_diff[None, :, None]
    ux4, uy4 = ux[:, None, None, :], uy[:, None, None, :]
    hxy = -np.sum(P * np.log2(P + EPS), (1, 2))
    c = (i + j) - ux4 - uy4
    c2 = c * c
    out = {}
    out["Autocorrelation"] = np.sum(P * i * j, (1, 2))
    out["JointAverage"] = ux
    out["ClusterProminence"] = np.sum(P * c2 * c2, (1, 2))
    out["ClusterShade"] = np.sum(P * c2 * c, (1, 2))
    out["ClusterTendency"] = np.sum(P * c2, (1, 2))
    out["Contrast"] = np.sum(P * (i - j) ** 2, (1, 2))
    sigx = np.sqrt(np.sum(P * (i - ux4) ** 2, (1, 2)))
    sigy = np.sqrt(np.sum(P * (j - uy4) ** 2, (1, 2)))
    corm = np.sum(P * (i - ux4) * (j - uy4), (1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["Correlation"] = np.where(sigx * sigy == 0, 1.0, corm / (sigx * sigy + EPS))
    davg = np.sum(kd * p_diff, 1)
    out["DifferenceAverage"] = davg
    out["DifferenceEntropy"] = -np.sum(p_diff * np.log2(p_diff + EPS), 1)
    out["DifferenceVariance"] = np.sum(p_diff * (kd - davg[:, None, :]) ** 2, 1)
    out["JointEnergy"] = np.sum(P ** 2, (1, 2))
    out["JointEntropy"] = hxy
    hx = -np.sum(px * np.log2(px + EPS), (1, 2))
    hy = -np.sum(py * np.log2(py + EPS), (1, 2))
    pxy = px * py
    hxy1 = -np.sum(P * np.log2(pxy + EPS), (1, 2))
    hxy2 = -np.sum(pxy * np.log2(pxy + EPS), (1, 2))
    div = np.fmax(hx, hy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["Imc1"] = np.where(div != 0, (hxy - hxy1) / np.where(div != 0, div, 1.0), 0.0)
        out["Imc2"] = np.where(hxy2 == hxy, 0.0, (1 - np.e ** (-2 * (hxy2 - hxy))) ** 0.5)
    out["Idm"] = np.sum(p_diff / (1 + kd ** 2), 1)
    ngc = ngs[:, None, None]
    out["Idmn"] = np.sum(p_diff / (1 + kd ** 2 / ngc ** 2), 1)
    out["Id"] = np.sum(p_diff / (1 + kd), 1)
    out["Idn"] = np.sum(p_diff / (1 + kd / ngc), 1)
    out["InverseVariance"] = np.sum(p_diff[:, 1:] / kd[:, 1:] ** 2, 1)
    out["MaximumProbability"] = P.max((1, 2))
    out["SumAverage"] = np.sum(k_sum[None, :, None] * p_sum, 1)
    out["SumEntropy"] = -np.sum(p_sum * np.log2(p_sum + EPS), 1)
    out["SumSquares"] = np.sum(P * (i - ux4) ** 2, (1, 2))
    keys = [k for k in names if k != "MCC"]
    res = []
    means = angle_means_many(out, keys)                       # (features, regions)
    for r in range(R):
        got = {k: float(means[f, r]) for f, k in enumerate(keys)}
        if "MCC" in names:
            Pr = Ps[r][:, :, ~np.isnan(Ps[r].sum((0, 1)))]      # the region's own angles
            got["MCC"] = _mcc(Pr, Pr.sum(1, keepdims=True), Pr.sum(0, keepdims=True))
        res.append({k: got[k] for k in names})
    return res



def _mcc(P, px, py) -> float:
    """Maximal correlation coefficient: sqrt of the second-largest eigenvalue of
    Q(i, j) = sum_k P(i, k) P(j, k) / (p_x(i) p_y(k)), per angle, averaged."""
    if P.shape[0] < 2:
        return 1.0           # a flat region
    # every angle's Q in one stack and one eigvals call (the same LAPACK call per matrix as
    # one call per angle, without its Python overhead)
    Pa = P.transpose(2, 0, 1)                                       # (A, G, G)
    weighted = Pa / (px[:, 0, :].T[:, :, None] * py[0, :, :].T[:, None, :] + EPS)
    Q = weighted @ Pa.transpose(0, 2, 1)
    ev = np.sort(np.linalg.eigvals(Q), axis=1)
    vals = np.sqrt(ev[:, -2])
    return float(np.nanmean(vals).real)
