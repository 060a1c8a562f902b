"""Contrastive objectives: mutual-information bounds (InfoNCE, NWJ) and the losses built on them.

Conventions: a critic matrix ``scores`` is ``(N, N)`` with ``scores[i, j] = f(x_i, y_j)`` and the
positive pairs on the diagonal. Embeddings are ``(N, D)`` rows; losses that say so normalise
them to unit length inside. Information is in nats.

Everything follows the device and dtype of its inputs.
"""

from __future__ import annotations

import math  # noqa: F401  (used by the functions appended below)

import torch  # noqa: F401
import torch.nn.functional as F  # noqa: F401

__all__ = [
    "alignment_uniformity",
    "clip_loss",
    "gaussian_mi",
    "infonce_bound",
    "itm_hard_negatives",
    "moco_loss",
    "momentum_update",
    "nt_xent_loss",
    "nwj_bound",
    "siglip_loss",
]



# ---------------------------------------------------------------------------------------------
# SimCLR and MoCo (chapter ssl/contrastive)


def _check_embeddings(z: torch.Tensor, name: str) -> torch.Tensor:
    """Validate ``(N, D)`` float embeddings and return them L2-normalised (no zero rows allowed)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) tensor, got shape {tuple(z.shape)}")
    if not z.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {z.dtype}")
    norm = z.norm(dim=1, keepdim=True)
    if bool((norm <= torch.finfo(z.dtype).tiny).any()):
        raise ValueError(f"{name} has a zero row, which cannot be normalised to unit length")
    return z / norm


def _check_views(z1: torch.Tensor, z2: torch.Tensor, who: str, why: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``(N, D)`` batches of views, same shape, ``N >= 2``; returned L2-normalised."""
    u1, u2 = _check_embeddings(z1, "z1"), _check_embeddings(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"{who} needs N >= 2 pairs ({why}), got N = {z1.shape[0]}")
    return u1, u2


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss for a batch of ``N`` positive pairs ``(z1[i], z2[i])``.

    Rows are L2-normalised inside. The ``2N`` views ``z = cat(z1, z2)`` are each an anchor; the
    anchor's positive is its pair, its negatives are the other ``2N - 2`` views (the anchor itself
    is excluded), and the logits are cosine similarities divided by ``temperature``. The result is
    the mean over the ``2N`` anchors of ``-log softmax(positive logit)``. Implements (ctr-ntxent).

    Args:
        z1: ``(N, D)`` embeddings of the first views, ``N >= 2``.
        z2: ``(N, D)`` embeddings of the second views.
        temperature: ``tau > 0``.

    Returns:
        A scalar tensor on the inputs' device and dtype.

    >>> z = torch.eye(3)
    >>> round(float(nt_xent_loss(z, z, temperature=1.0)), 4)  # log(e + 4 e^0) - 1
    0.9048
    """
    tau = _check_temperature(temperature)
    u1, u2 = _check_views(z1, z2, "nt_xent_loss", "so each anchor has a negative")
    n = z1.shape[0]
    z = torch.cat((u1, u2), 0)  # (2N, D)
    logits = z @ z.T / tau  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is not its own negative
    target = torch.cat((torch.arange(n, 2 * n), torch.arange(0, n))).to(z.device)
    return F.cross_entropy(logits, target)


@torch.no_grad()
def momentum_update(target: torch.nn.Module, online: torch.nn.Module, m: float) -> None:
    """MoCo's momentum (EMA) update, in place: ``theta_k <- m theta_k + (1 - m) theta_q``.

    Walks ``target.parameters()`` and ``online.parameters()`` in order (the two modules must
    have the same architecture); floating buffers (e.g. batch-norm statistics) get the same EMA.
    ``m = 1`` freezes the target, ``m = 0`` copies the online weights. Implements (ctr-momentum).

    >>> a, b = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    >>> _ = a.weight.data.fill_(1.0); _ = b.weight.data.fill_(0.0)
    >>> momentum_update(a, b, 0.9); round(float(a.weight), 4)
    0.9
    """
    if not isinstance(target, torch.nn.Module) or not isinstance(online, torch.nn.Module):
        raise TypeError("target and online must be torch.nn.Module instances")
    if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0.0 <= m <= 1.0:
        raise ValueError(f"m must be a number in [0, 1], got {m!r}")
    tp, op = list(target.parameters()), list(online.parameters())
    tb = [b for b in target.buffers() if b.dtype.is_floating_point]
    ob = [b for b in online.buffers() if b.dtype.is_floating_point]
    if len(tp) != len(op) or len(tb) != len(ob):
        raise ValueError("target and online must have the same parameters and buffers (same architecture)")
    for t, o in zip(tp + tb, op + ob):
        if t.shape != o.shape:
            raise ValueError(f"parameter shapes differ: target {tuple(t.shape)} vs online {tuple(o.shape)}")
        t.mul_(m).add_(o.detach().to(device=t.device, dtype=t.dtype), alpha=1.0 - m)


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """MoCo's InfoNCE loss: each query ``q[i]`` against its key ``k[i]`` and the ``K`` queued keys.

    Rows of ``q``, ``k`` and ``queue`` are L2-normalised inside. The logits of query ``i`` are
    ``[q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / temperature`` (the positive first), and the
    loss is the mean cross-entropy with label 0. ``k`` and ``queue`` come from the momentum
    encoder and are treated as constants (detached): gradients flow into ``q`` only.
    Implements (ctr-moco).

    Args:
        q: ``(N, D)`` queries (online encoder).
        k: ``(N, D)`` positive keys (momentum encoder).
        queue: ``(K, D)`` negative keys from earlier batches, ``K >= 1``.
        temperature: ``tau > 0``.

    Returns:
        A scalar tensor on the inputs' device and dtype.

    >>> q = torch.eye(2); round(float(moco_loss(q, q, -q, temperature=1.0)), 4)  # log(1 + e^-1 + e^-2)
    0.4076
    """
    tau = _check_temperature(temperature)
    uq = _check_embeddings(q, "q")
    uk = _check_embeddings(k.detach() if isinstance(k, torch.Tensor) else k, "k")
    uqueue = _check_embeddings(queue.detach() if isinstance(queue, torch.Tensor) else queue, "queue")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, D) with D = {q.shape[1]}, got shape {tuple(queue.shape)}")
    pos = (uq * uk).sum(dim=1, keepdim=True)  # (N, 1)
    neg = uq @ uqueue.T  # (N, K)
    logits = torch.cat((pos, neg), dim=1) / tau
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def alignment_uniformity(z1: torch.Tensor, z2: torch.Tensor, t: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Wang and Isola's two diagnostics of an embedding, on L2-normalised rows.

    Alignment is the mean squared distance between positive pairs, ``mean_i |u1_i - u2_i|^2``
    (0 is perfect, 4 is antipodal). Uniformity is ``log mean exp(-t |u_i - u_j|^2)`` over the
    ordered pairs ``i != j`` of the ``2N`` views ``u = cat(u1, u2)`` that are views of *different*
    inputs (the ``2N`` positive pairs ``(i, i + N)`` are left out: (ctr-uniform) averages over
    independent points). Lower is more uniform: about ``-2t`` for a spread-out cloud in high
    dimension, ``0`` when collapsed to a point. Needs ``N >= 2``. Implements (ctr-align) and
    (ctr-uniform).

    Returns:
        ``(alignment, uniformity)``, two scalar tensors.

    >>> a, u = alignment_uniformity(torch.eye(2), torch.eye(2)); float(a)
    0.0
    """
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0:
        raise ValueError(f"t must be a positive number, got {t!r}")
    u1, u2 = _check_views(z1, z2, "alignment_uniformity", "uniformity uses views of different inputs")
    n = z1.shape[0]
    align = (u1 - u2).pow(2).sum(dim=1).mean()
    z = torch.cat((u1, u2), 0)
    sq = torch.cdist(z, z).pow(2)
    same = torch.arange(2 * n, device=z.device) % n  # the input each view comes from
    off = same[:, None] != same[None, :]  # pairs of views of different inputs
    uniform = torch.logsumexp(-t * sq[off], dim=0) - math.log(int(off.sum()))
    return align, uniform


# ---------------------------------------------------------------------------------------------
# Mutual-information bounds (chapter ssl/infonce)
def _check_scores(scores: torch.Tensor, min_n: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor, got dtype {scores.dtype}")
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (N, N) critic matrix, got shape {tuple(scores.shape)}")
    if scores.shape[0] < min_n:
        raise ValueError(f"scores needs N >= {min_n} rows, got N = {scores.shape[0]}")
    return scores


def gaussian_mi(rho: float | torch.Tensor, dim: int = 1) -> float | torch.Tensor:
    r"""Mutual information (nats) between ``x`` and ``y`` made of ``dim`` independent standard
    Gaussian coordinate pairs, each pair with correlation ``rho``.

    :math:`I(x; y) = -\tfrac{d}{2}\log(1 - \rho^2)`. Implements (infonce-gaussian-mi).

    Args:
        rho: the correlation of each pair, a float or a tensor of them, with ``|rho| < 1``.
        dim: the number ``d`` of coordinate pairs, a positive int.

    Returns:
        A float for a float ``rho``; a tensor of ``rho``'s shape, device and dtype otherwise.

    >>> round(gaussian_mi(0.5), 6), round(gaussian_mi(0.5, dim=4), 6)
    (0.143841, 0.575364)
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if isinstance(rho, torch.Tensor):
        if not rho.is_floating_point():
            raise TypeError(f"rho must be a floating tensor, got dtype {rho.dtype}")
        if not bool((rho.abs() < 1).all()):
            raise ValueError("rho must satisfy |rho| < 1 (at |rho| = 1 the information is infinite)")
        return -0.5 * dim * torch.log1p(-rho * rho)
    if not isinstance(rho, (int, float)) or isinstance(rho, bool):
        raise TypeError(f"rho must be a float or a tensor, got {type(rho).__name__}")
    if not abs(rho) < 1:
        raise ValueError(f"rho must satisfy |rho| < 1 (at |rho| = 1 the information is infinite), got {rho!r}")
    return -0.5 * dim * math.log1p(-rho * rho)


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    r"""The InfoNCE lower bound on :math:`I(x; y)` (nats) from one batch of ``N`` pairs.

    ``scores[i, j] = f(x_i, y_j)`` is a critic on the log scale, with the positive pairs
    :math:`(x_i, y_i) \sim p(x, y)` on the diagonal; row ``i`` uses the other ``y_j`` as its
    ``N - 1`` negatives. Implements (infonce-bound):

    .. math:: \hat I_{\mathrm{NCE}} = \frac1N\sum_i \Big(f(x_i, y_i) - \log\sum_j e^{f(x_i, y_j)}\Big) + \log N .

    Each term in brackets is at most 0, so the value never exceeds :math:`\log N` (the ceiling).
    Without the :math:`\log N`, its negative is the cross-entropy of picking the positive out of
    the row: the CPC / InfoNCE loss.

    Args:
        scores: ``(N, N)`` floating tensor, ``N >= 1``.

    Returns:
        A scalar tensor on ``scores``' device and dtype (differentiable).

    >>> import torch
    >>> round(float(infonce_bound(torch.zeros(4, 4))), 6)  # a constant critic carries no information
    0.0
    """
    scores = _check_scores(scores, 1)
    n = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(n)


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    r"""The NWJ (Nguyen–Wainwright–Jordan, "f-GAN KL") lower bound on :math:`I(x; y)` (nats).

    Same critic matrix as :func:`infonce_bound`: the diagonal holds samples of :math:`p(x, y)`
    and the ``N(N - 1)`` off-diagonal entries samples of :math:`p(x)p(y)`. Implements
    (infonce-nwj):

    .. math:: \hat I_{\mathrm{NWJ}} = \frac1N\sum_i f(x_i, y_i) - \frac{e^{-1}}{N(N-1)}\sum_{i\ne j} e^{f(x_i, y_j)} .

    It is an unbiased estimate of the bound for a fixed critic; with the optimal critic
    :math:`f = 1 + \log p(y\mid x)/p(y)` its expectation is exactly :math:`I(x; y)`, but its
    variance grows exponentially with :math:`I`.

    Args:
        scores: ``(N, N)`` floating tensor, ``N >= 2``.

    Returns:
        A scalar tensor on ``scores``' device and dtype (differentiable).

    >>> import torch
    >>> round(float(nwj_bound(torch.ones(3, 3))), 6)  # f = 1 everywhere: 1 - e^{-1} e^{1} = 0
    0.0
    """
    scores = _check_scores(scores, 2)
    n = scores.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    # exp(f - 1) = e^{-1} e^{f}; subtracting 1 first keeps it finite a little longer
    return scores.diagonal().mean() - torch.exp(scores[off] - 1).mean()


# ---------------------------------------------------------------------------------------------
# CLIP, SigLIP and BLIP's hard negatives (chapters ssl/clip-siglip and ssl/blip)


def _check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = _check_embeddings(image_emb, "image_emb")
    y = _check_embeddings(text_emb, "text_emb")
    if x.shape != y.shape:
        raise ValueError(f"image_emb and text_emb must have the same shape (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise TypeError("image_emb and text_emb must have the same dtype and device")
    return x, y


def _check_scalar(v: object, name: str, positive: bool) -> None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or not v.is_floating_point():
            raise ValueError(f"{name} must be a number or a one-element float tensor, got shape {tuple(v.shape)}")
        value = float(v.detach())
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        value = float(v)
    else:
        raise TypeError(f"{name} must be a number or a one-element float tensor, got {type(v).__name__}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be {'positive and ' if positive else ''}finite, got {value}")


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over a batch of ``N`` matching image–text pairs.

    Implements (clip-loss) with the logits (clip-logits).

    Row ``i`` of ``image_emb`` and row ``i`` of ``text_emb`` are a pair. Both are normalised to
    unit length inside; the logits are ``logit_scale * <x_i, y_j>`` (``logit_scale`` is used as
    given: a caller who learns a log-scale passes its exponential), and the loss is the mean of
    the image→text cross-entropy (each image picks its caption among the ``N`` captions) and the
    text→image one.

    Args:
        image_emb, text_emb: ``(N, D)`` float embeddings, same shape, dtype and device; no zero rows.
        logit_scale: a positive number or one-element tensor (it may carry a gradient).

    Returns:
        A scalar tensor.

    >>> x = torch.eye(3); y = torch.eye(3)
    >>> round(float(clip_loss(x, y, 1.0)), 4)   # log(e + 2) - 1 for orthonormal pairs at scale 1
    0.5514
    """
    x, y = _check_pair(image_emb, text_emb)
    _check_scalar(logit_scale, "logit_scale", positive=True)
    logits = logit_scale * (x @ y.T)
    labels = torch.arange(x.shape[0], device=x.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, t: float | torch.Tensor,
                b: float | torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every image–text pair of the batch is its own binary problem.

    Implements (siglip-loss):
    ``-(1/N) sum_i sum_j log sigmoid(z_ij * (t <x_i, y_j> + b))`` with ``z_ij = 1`` on the
    diagonal (the matching pairs) and ``-1`` elsewhere, after normalising the embeddings to unit
    length. Note the ``1/N`` (not ``1/N^2``): the sum over all ``N^2`` pairs is divided by the
    batch size, as in the SigLIP paper. ``t`` is the scale that multiplies the cosines (the
    paper's "temperature" ``t = exp(t')``), used as given (a caller who learns ``log t`` passes
    its exponential), and ``b`` the bias.

    Args:
        image_emb, text_emb: ``(N, D)`` float embeddings, same shape, dtype and device; no zero rows.
        t: a positive number or one-element tensor. b: a finite number or one-element tensor.

    Returns:
        A scalar tensor.

    >>> x = torch.eye(2)
    >>> round(float(siglip_loss(x, x, 1.0, 0.0)), 4)   # (2 log(1 + e^-1) + 2 log 2) / 2
    1.0064
    """
    x, y = _check_pair(image_emb, text_emb)
    _check_scalar(t, "t", positive=True)
    _check_scalar(b, "b", positive=False)
    n = x.shape[0]
    z = 2.0 * torch.eye(n, dtype=x.dtype, device=x.device) - 1.0
    logits = t * (x @ y.T) + b
    return -F.logsigmoid(z * logits).sum() / n


def itm_hard_negatives(similarity: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """BLIP's hard negatives for image–text matching: one negative column per row.

    Implements (blip-hard-negative).

    Row ``i`` of the ``(N, N)`` matrix ``similarity`` scores item ``i`` of one modality against
    all ``N`` items of the other, with the matching pair on the diagonal. Column ``j != i`` is
    drawn with probability ``softmax_j(similarity[i, j])`` over the ``N - 1`` off-diagonal columns
    (the positive excluded), so negatives that look like the positive are drawn most often.
    Draws are made on the CPU from ``generator`` for reproducibility; the result is on the
    input's device. No gradient flows through the draw.

    Args:
        similarity: ``(N, N)`` float tensor with ``N >= 2``; finite entries.
        generator: optional CPU ``torch.Generator``.

    Returns:
        ``(N,)`` int64 column indices, each different from its row index.

    >>> s = torch.tensor([[0.0, 50.0, -50.0], [0.0, 0.0, 0.0], [-50.0, 50.0, 0.0]])
    >>> itm_hard_negatives(s, torch.Generator().manual_seed(0))[[0, 2]].tolist()
    [1, 1]
    """
    if not isinstance(similarity, torch.Tensor) or not similarity.is_floating_point():
        raise TypeError("similarity must be a floating-point torch.Tensor")
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 2:
        raise ValueError(f"similarity must be a square (N, N) tensor with N >= 2, got shape {tuple(similarity.shape)}")
    if not bool(torch.isfinite(similarity).all()):
        raise ValueError("similarity must be finite")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    n = similarity.shape[0]
    logits = similarity.detach().to("cpu", torch.float64)
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    probs = torch.softmax(logits, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(similarity.device)
