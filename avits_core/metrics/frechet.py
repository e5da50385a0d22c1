"""Distribution distances between two feature sets: Fréchet distance and kernel MMD (KVD/KID).

Fréchet distance (FVD, FAD, FID are this formula on different features)
    d^2 = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})
    with the sample means and unbiased (n - 1) covariances of the rows. The cross term is computed
    as tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}) = sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S_a^{1/2} S_b S_a^{1/2} (same eigenvalues as S_a S_b). Symmetric
    eigendecompositions never produce the complex parts that ``scipy.linalg.sqrtm(S_a @ S_b)`` shows
    on near-singular covariances (the reason for the usual "add eps to the diagonal and retry"
    fallback); eigenvalues that round-off makes slightly negative are set to 0. The result is
    clipped at 0 (it is a squared distance; tiny negative values are round-off). Units: squared
    feature units. Fewer than 2 rows in a set is an error; few rows relative to the dimension give a
    biased (rank-deficient) estimate — FVD is usually reported on >= 2048 videos.

Kernel MMD (KVD on I3D features, KID on Inception features)
    MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(a_i, a_j) + 1/(n(n-1)) sum_{i!=j} k(b_i, b_j)
              - 2/(m n) sum_{i,j} k(a_i, b_j)
    with the polynomial kernel k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/D by default, degree 3,
    coef0 1 (the KID/KVD kernel). The estimator is unbiased, so it can be slightly negative when the
    two sets come from one distribution; it is not clipped. :func:`kvd` optionally averages it over
    random subsets (as KID implementations do for large sets) with a fixed seed.
"""

from __future__ import annotations

import logging

import numpy as np

from avits_core.errors import ConfigError

log = logging.getLogger(__name__)


def _features(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {a.shape[0]}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = _features(a, "feats_a"), _features(b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dimensions differ: feats_a has {fa.shape[1]}, feats_b has {fb.shape[1]}")
    return fa, fb


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by eigendecomposition (negative round-off -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr((S_a S_b)^{1/2}) for symmetric PSD S_a, S_b."""
    r = _psd_sqrt(sigma_a)
    m = r @ sigma_b @ r
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b); >= 0."""
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sa, sb = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or sa.shape != (d, d) or sb.shape != (d, d):
        raise ValueError(f"shape mismatch: mu_a {mu_a.shape}, sigma_a {sa.shape}, mu_b {mu_b.shape}, sigma_b {sb.shape}")
    for name, x in (("mu_a", mu_a), ("sigma_a", sa), ("mu_b", mu_b), ("sigma_b", sb)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or infinite values")
    diff = mu_a - mu_b
    val = float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * trace_sqrt_product(sa, sb))
    return max(val, 0.0)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) of the rows of a (N, D) feature array."""
    f = _features(feats, "feats")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets; >= 0, 0 when equal."""
    fa, fb = _pair(feats_a, feats_b)
    return frechet_distance_from_stats(*feature_stats(fa), *feature_stats(fb))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """(gamma x.y + coef0)^degree for every row pair; gamma = 1 / D when None."""
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return (g * (x @ y.T) + coef0) ** degree


def kernel_mmd_unbiased(feats_a: np.ndarray, feats_b: np.ndarray, degree: int = 3, gamma: float | None = None,
                        coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with the polynomial kernel (see the module docstring); may be slightly < 0."""
    fa, fb = _pair(feats_a, feats_b)
    if not isinstance(degree, int) or degree < 1:
        raise ConfigError(f"degree must be a positive integer, got {degree!r}")
    m, n = fa.shape[0], fb.shape[0]
    kaa = polynomial_kernel(fa, fa, degree, gamma, coef0)
    kbb = polynomial_kernel(fb, fb, degree, gamma, coef0)
    kab = polynomial_kernel(fa, fb, degree, gamma, coef0)
    saa = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    sbb = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(saa + sbb - 2.0 * kab.mean())


def kvd(feats_a: np.ndarray, feats_b: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
        subset_size: int | None = None, num_subsets: int = 100, seed: int = 0) -> float:
    """Kernel distance (KVD on video features, KID on image features): :func:`kernel_mmd_unbiased`
    on the full sets, or, with ``subset_size``, its mean over ``num_subsets`` random subsets of
    min(subset_size, m, n) rows from each set drawn without replacement (seeded)."""
    fa, fb = _pair(feats_a, feats_b)
    if subset_size is None:
        return kernel_mmd_unbiased(fa, fb, degree, gamma, coef0)
    if subset_size < 2 or num_subsets < 1:
        raise ConfigError(f"need subset_size >= 2 and num_subsets >= 1, got {subset_size}, {num_subsets}")
    k = min(subset_size, fa.shape[0], fb.shape[0])
    rng = np.random.default_rng(seed)
    vals = [
        kernel_mmd_unbiased(fa[rng.choice(fa.shape[0], k, replace=False)],
                            fb[rng.choice(fb.shape[0], k, replace=False)], degree, gamma, coef0)
        for _ in range(num_subsets)
    ]
    return float(np.mean(vals))


# ---------------------------------------------------------------------------------------------
# protocol "javisbench": the evaluator's own recipes (JavisDiT eval/javisbench, facts only)
# ---------------------------------------------------------------------------------------------
#: Protocols of the set-level distances: ``avits`` (float64, eigendecomposition, clipped at 0) or
#: ``javisbench`` (float32 torch, TF-GAN style SVD square roots, no clipping; both sets cut to the
#: first min(m, n) rows; FAD multiplied by 10000).
PROTOCOLS = ("avits", "javisbench")
#: JavisBench multiplies its AudioCLIP Fréchet distance by this factor.
JAVISBENCH_FAD_SCALE = 10000.0


def check_protocol(protocol: str, what: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{what}: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def frechet_distance_javisbench(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance computed the way JavisBench's evaluator does (TF-GAN's recipe in torch).

    float32 throughout: means; covariances (x - mean)^T (x - mean) / (N - 1); the cross term
    tr(sqrt(sqrt(S_a) S_b sqrt(S_a))) where each symmetric square root is U diag(s') V^T from an SVD
    with s' = sqrt(s) for s >= 1e-10 and s' = s (unrooted) below; d^2 = tr(S_a + S_b) - 2 cross +
    ||mu_a - mu_b||^2, NOT clipped at 0. Differs from :func:`frechet_distance` (float64) in the 4th-6th
    significant digit on real features."""
    import torch

    fa, fb = _pair(feats_a, feats_b)
    xa = torch.from_numpy(fa).to(torch.float32)
    xb = torch.from_numpy(fb).to(torch.float32)

    def cov(x: torch.Tensor) -> torch.Tensor:
        c = x - x.mean(dim=0, keepdim=True)
        return (c.T @ c) * (1.0 / (x.shape[0] - 1))

    def sqrtm_svd(m: torch.Tensor) -> torch.Tensor:
        u, s, vh = torch.linalg.svd(m)
        s2 = torch.where(s < 1e-10, s, torch.sqrt(s))
        return u @ torch.diag(s2) @ vh

    sa, sb = cov(xa), cov(xb)
    ra = sqrtm_svd(sa)
    cross = torch.trace(sqrtm_svd(ra @ (sb @ ra)))
    mean = torch.sum((xa.mean(dim=0) - xb.mean(dim=0)) ** 2)
    return float(torch.trace(sa + sb) - 2.0 * cross + mean)


def truncate_to_common(feats_a: np.ndarray, feats_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """JavisBench's pairing: both sets cut to their first min(m, n) rows (in order)."""
    n = min(len(feats_a), len(feats_b))
    if n != len(feats_a) or n != len(feats_b):
        log.warning("javisbench protocol: sets of %d and %d rows are both cut to the first %d",
                    len(feats_a), len(feats_b), n)
    return np.asarray(feats_a)[:n], np.asarray(feats_b)[:n]
