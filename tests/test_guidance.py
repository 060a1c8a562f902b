"""Tests for minilib.guidance against exact Gaussian-mixture scores computed by torch.distributions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as dist

from minilib.guidance import (
    cfg,
    classifier_grad,
    classifier_guidance,
    mixture_path_terms,
    posterior_average,
)


@pytest.fixture(autouse=True)
def _float64():
    """Compare in double precision, restoring the default afterwards (other test files share it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


F64 = torch.float64
MEANS = torch.tensor([[-2.0, 0.0], [0.0, 1.5], [2.0, 0.0], [0.5, -1.0]], dtype=F64)
STDS = torch.tensor([0.5, 0.3, 0.6, 0.4], dtype=F64)
WEIGHTS = torch.tensor([0.2, 0.3, 0.25, 0.25], dtype=F64)
CLASSES = torch.tensor([0, 1, 1, 0])


def noised_mixture(t: float, keep: torch.Tensor | None = None) -> dist.MixtureSameFamily:
    """p_t (or p_t(. | y) when keep selects the class's components), built independently."""
    idx = torch.arange(4) if keep is None else keep.nonzero()[:, 0]
    w = WEIGHTS[idx] / WEIGHTS[idx].sum()
    sd = torch.sqrt((1 - t) ** 2 + t**2 * STDS[idx] ** 2)
    comp = dist.Independent(dist.Normal(t * MEANS[idx], sd[:, None].expand(-1, 2)), 1)
    return dist.MixtureSameFamily(dist.Categorical(probs=w), comp)


def autograd_score(logp_fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(logp_fn(x).sum(), x)
    return g


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 1.0])
def test_scores_match_torch_distributions(t: float) -> None:
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 2
    log_joint, score_k, _ = mixture_path_terms(x, t, MEANS, STDS, WEIGHTS)
    torch.testing.assert_close(log_joint.logsumexp(-1), noised_mixture(t).log_prob(x))
    torch.testing.assert_close(posterior_average(log_joint, score_k), autograd_score(noised_mixture(t).log_prob, x))


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("t", [0.2, 0.9])
def test_cfg_equals_tilted_score(w: float, t: float) -> None:
    """cfg on exact scores = grad log p_t(x) + w grad log p_t(y | x), the latter by Bayes + autograd."""
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1)) * 2
    y = 1
    keep = CLASSES == y
    log_joint, score_k, _ = mixture_path_terms(x, t, MEANS, STDS, WEIGHTS)
    s_u = posterior_average(log_joint, score_k)
    s_c = posterior_average(log_joint, score_k, keep)
    prior_y = WEIGHTS[keep].sum().log()

    def log_py_given_x(z: torch.Tensor) -> torch.Tensor:
        return noised_mixture(t, keep).log_prob(z) + prior_y - noised_mixture(t).log_prob(z)

    expected = autograd_score(noised_mixture(t).log_prob, x) + w * autograd_score(log_py_given_x, x)
    torch.testing.assert_close(cfg(s_c, s_u, w), expected)
    # the same through classifier guidance with a classifier gradient computed by classifier_grad
    def class_log_probs(z: torch.Tensor) -> torch.Tensor:
        lj, _, _ = mixture_path_terms(z, t, MEANS, STDS, WEIGHTS)
        per_class = torch.stack([lj.masked_fill(CLASSES != c, -torch.inf).logsumexp(-1) for c in (0, 1)], -1)
        return per_class - lj.logsumexp(-1, keepdim=True)

    g = classifier_grad(class_log_probs, x, torch.full((32,), y))
    torch.testing.assert_close(classifier_guidance(s_u, g, w), expected)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.95])
def test_velocity_is_affine_in_score(t: float) -> None:
    """u = (x + (1 - t) s) / t for the linear path, so cfg on velocities = velocity of cfg on scores."""
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(2))
    log_joint, score_k, vel_k = mixture_path_terms(x, t, MEANS, STDS, WEIGHTS)
    keep = CLASSES == 0
    s_u, s_c = posterior_average(log_joint, score_k), posterior_average(log_joint, score_k, keep)
    u_u, u_c = posterior_average(log_joint, vel_k), posterior_average(log_joint, vel_k, keep)
    torch.testing.assert_close(u_u, (x + (1 - t) * s_u) / t)
    torch.testing.assert_close(cfg(u_c, u_u, 3.0), (x + (1 - t) * cfg(s_c, s_u, 3.0)) / t)


def test_velocity_monte_carlo() -> None:
    """E[x1 - x0 | x_t] for one component, by rejection-free importance weighting of samples."""
    g = torch.Generator().manual_seed(3)
    t = 0.4
    mu, sd = torch.tensor([[1.0, -1.0]]), torch.tensor([0.5])
    x0 = torch.randn(200_000, 2, generator=g)
    x1 = mu + sd * torch.randn(200_000, 2, generator=g)
    xt = (1 - t) * x0 + t * x1
    # condition on x_t near a point by a narrow Gaussian kernel
    point = torch.tensor([0.2, -0.1])
    k = torch.exp(-((xt - point) ** 2).sum(-1) / (2 * 0.05**2))
    mc = ((x1 - x0) * k[:, None]).sum(0) / k.sum()
    _, _, vel_k = mixture_path_terms(point[None], t, mu, sd, torch.ones(1))
    torch.testing.assert_close(vel_k[0, 0], mc, atol=0.05, rtol=0)


@settings(max_examples=30, deadline=None)
@given(w=st.floats(-3, 10), seed=st.integers(0, 1000))
def test_cfg_affine(w: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c, u = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    out = cfg(c, u, w)
    torch.testing.assert_close(out, (1 - w) * u + w * c)
    # per-example w
    ws = torch.full((4,), w)
    torch.testing.assert_close(cfg(c, u, ws), out)


def test_bad_inputs() -> None:
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        cfg(a, torch.zeros(2, 4), 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        cfg(a.long(), a, 1.0)
    with pytest.raises(ValueError, match="finite"):
        cfg(a, a, float("nan"))
    with pytest.raises(TypeError, match="w must be"):
        cfg(a, a, "2")
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        cfg(a, a, torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        classifier_guidance(a, torch.zeros(3, 3), 1.0)
    with pytest.raises(TypeError, match="integer"):
        classifier_grad(lambda z: z.log_softmax(-1), a, torch.zeros(2))
    with pytest.raises(ValueError, match="lie in"):
        classifier_grad(lambda z: z.log_softmax(-1), a, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="t must lie"):
        mixture_path_terms(torch.zeros(2, 2), 1.5, MEANS, STDS, WEIGHTS)
    with pytest.raises(ValueError, match="positive"):
        mixture_path_terms(torch.zeros(2, 2), 0.5, MEANS, -STDS, WEIGHTS)
    with pytest.raises(ValueError, match="sum to one"):
        mixture_path_terms(torch.zeros(2, 2), 0.5, MEANS, STDS, WEIGHTS * 2)
    with pytest.raises(ValueError, match="means"):
        mixture_path_terms(torch.zeros(2, 3), 0.5, MEANS, STDS, WEIGHTS)
    lj, sk, _ = mixture_path_terms(torch.zeros(2, 2), 0.5, MEANS, STDS, WEIGHTS)
    with pytest.raises(ValueError, match="at least one"):
        posterior_average(lj, sk, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        posterior_average(lj, sk, torch.ones(4))


def test_follows_dtype_and_meta() -> None:
    c = torch.zeros(2, 3, dtype=torch.float32)
    assert cfg(c, c, 2.0).dtype == torch.float32
    m = torch.zeros(2, 3, device="meta")
    assert cfg(m, m, 2.0).device.type == "meta"
