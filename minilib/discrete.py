"""Masked (absorbing-state) discrete diffusion for token sequences.

Convention: here ``t`` is the **masking probability**. At ``t = 0`` the sequence is clean data;
at ``t = 1`` every token is the mask token. This is the convention of the masked-diffusion
papers (MDLM, LLaDA). The rest of the "Flows and beyond" part puts noise at ``t = 0``; in that
convention the time would be ``1 - t``, the fraction of tokens still visible.

Tokens are ``int64`` tensors of shape ``(B, L)``; the mask token ``mask_id`` is an extra token
id outside the data vocabulary (usually ``mask_id = V``). Log-probabilities are in nats.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "block_diffusion_mask",
    "markov_denoiser",
    "mask_tokens",
    "masked_diffusion_loss",
    "masked_sample",
    "score_entropy",
]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _check_tokens(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, L), got {tuple(x.shape)}")


def _check_mask_id(mask_id: int) -> None:
    if not isinstance(mask_id, int) or isinstance(mask_id, bool) or mask_id < 0:
        raise ValueError(f"mask_id must be a non-negative int, got {mask_id!r}")


def _time_column(t: float | torch.Tensor, B: int, ref: torch.Tensor, *, allow_zero: bool) -> torch.Tensor:
    """``t`` as a float tensor of shape (B, 1) on ``ref``'s device, validated to lie in the allowed range."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"t must be a float or a tensor of shape (B,), got {type(t).__name__}")
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise TypeError(f"t must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must be a float or have shape (B,) = ({B},), got {tuple(t.shape)}")
        tc = t.to(ref.device)[:, None]
    else:
        tc = torch.full((B, 1), float(t), device=ref.device)
    if tc.device.type != "meta":
        low_ok = bool((tc >= 0).all()) if allow_zero else bool((tc > 0).all())
        if not (low_ok and bool((tc <= 1).all())):
            raise ValueError(f"t must lie in {'[0, 1]' if allow_zero else '(0, 1]'} (the masking probability)")
    return tc


def mask_tokens(
    x0: torch.Tensor,
    t: float | torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The forward process: replace each token by ``mask_id`` independently with probability ``t``.

    Implements (discrete-forward): :math:`q(x_t^l \\mid x_0^l) = (1 - t)\\,\\delta_{x_0^l} + t\\,\\delta_{m}`.

    Args:
        x0: clean tokens, shape ``(B, L)``, integer, none equal to ``mask_id``.
        t: masking probability in ``[0, 1]``: a float, or a ``(B,)`` float tensor (one per sequence).
        mask_id: the id of the mask token.
        generator: optional ``torch.Generator`` on ``x0``'s device for reproducibility.

    Returns:
        ``x_t``, shape ``(B, L)``, dtype and device of ``x0``.

    Raises:
        TypeError: a non-integer ``x0`` or a non-float ``t``.
        ValueError: wrong shapes, ``t`` outside ``[0, 1]``, or ``x0`` already containing ``mask_id``.

    >>> x0 = torch.zeros(2, 5, dtype=torch.long)
    >>> mask_tokens(x0, 1.0, mask_id=9).tolist()
    [[9, 9, 9, 9, 9], [9, 9, 9, 9, 9]]
    >>> mask_tokens(x0, 0.0, mask_id=9).tolist()
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    """
    _check_tokens(x0, "x0")
    _check_mask_id(mask_id)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if x0.device.type != "meta" and bool((x0 == mask_id).any()):
        raise ValueError(f"x0 must not contain the mask token {mask_id}")
    tc = _time_column(t, x0.shape[0], x0, allow_zero=True)  # (B, 1)
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    return torch.where(u < tc, torch.full_like(x0, mask_id), x0)


def masked_diffusion_loss(
    logits: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: float | torch.Tensor,
    mask_id: int,
) -> torch.Tensor:
    """The continuous-time masked-diffusion NELBO under the linear schedule, one sample of ``t``.

    :math:`\\mathcal{L} = \\frac{1}{B}\\sum_b -\\frac{1}{t_b} \\sum_{l:\\,x_t^{b,l} = m}
    \\log p_\\theta(x_0^{b,l} \\mid x_t^b)`. Averaged over :math:`t \\sim \\mathcal{U}(0, 1]`
    and the masking, it is an upper bound on :math:`-\\log p_\\theta(x_0)` per sequence.
    Implements (discrete-nelbo).

    Args:
        logits: the denoiser's output, shape ``(B, L, V)`` with ``V`` the number of candidate
            tokens (a softmax over the last axis gives :math:`p_\\theta(x_0^l \\mid x_t)`).
        x0: clean tokens ``(B, L)``, values in ``[0, V)``.
        x_t: the masked tokens ``(B, L)``: equal to ``x0`` except where it is ``mask_id``.
        t: the masking probability that produced ``x_t``, in ``(0, 1]``: a float or ``(B,)``.
        mask_id: the id of the mask token.

    Returns:
        A scalar tensor: the NELBO estimate in nats per sequence, averaged over the batch.

    Raises:
        TypeError: non-float ``logits``, non-integer tokens or a non-float ``t``.
        ValueError: mismatched shapes, ``t`` outside ``(0, 1]``, tokens out of range, or ``x_t``
            disagreeing with ``x0`` where it is not masked.

    >>> x0 = torch.tensor([[0, 1]]); x_t = torch.tensor([[2, 1]])
    >>> logits = torch.zeros(1, 2, 2)  # uniform over 2 tokens: -log p = log 2 per masked token
    >>> round(float(masked_diffusion_loss(logits, x0, x_t, 0.5, mask_id=2)), 4)  # 2 * log 2
    1.3863
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits).__name__)}")
    _check_tokens(x0, "x0")
    _check_tokens(x_t, "x_t")
    _check_mask_id(mask_id)
    if logits.dim() != 3 or logits.shape[:2] != x0.shape or x_t.shape != x0.shape:
        raise ValueError(
            f"logits must be (B, L, V) and x0, x_t (B, L); got {tuple(logits.shape)}, "
            f"{tuple(x0.shape)}, {tuple(x_t.shape)}"
        )
    B, _, V = logits.shape
    masked = x_t == mask_id  # (B, L)
    if x0.device.type != "meta":
        if bool(((x0 < 0) | (x0 >= V)).any()):
            raise ValueError(f"x0 must hold token ids in [0, {V}) (V = logits.shape[-1])")
        if bool((~masked & (x_t != x0)).any()):
            raise ValueError("x_t must equal x0 wherever it is not the mask token")
    tc = _time_column(t, B, logits, allow_zero=False).to(logits.dtype)  # (B, 1)
    log_p = logits.log_softmax(-1).gather(-1, x0.long()[..., None])[..., 0]  # (B, L): log p(x0^l | x_t)
    per_seq = -(log_p * masked.to(logits.dtype)).sum(-1, keepdim=True) / tc  # (B, 1): weight 1/t
    return per_seq.mean()


def markov_denoiser(
    transition: torch.Tensor, initial: torch.Tensor, x_t: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """The exact denoiser :math:`p(x_0^l \\mid x_t)` of a stationary first-order Markov chain.

    For a masked position :math:`l` with nearest visible tokens :math:`x^a` on the left and
    :math:`x^b` on the right, the Markov property gives
    :math:`p(x^l = v \\mid x_t) \\propto (P^{l-a})_{x^a v}\\,(P^{b-l})_{v x^b}`; with no visible
    token on the left the first factor is :math:`\\pi_v` (the chain is stationary, so every
    position has marginal :math:`\\pi`), and with none on the right the second factor is 1.
    This is the reference denoiser of (discrete-exact-denoiser).

    Args:
        transition: ``(V, V)`` transition matrix :math:`P` (rows sum to one).
        initial: ``(V,)`` stationary distribution :math:`\\pi` (the law of every position).
        x_t: partially masked tokens ``(B, L)``.
        mask_id: the id of the mask token (``>= V``).

    Returns:
        Log-probabilities ``(B, L, V)`` (float64). At visible positions: 0 at the visible token,
        ``-inf`` elsewhere. If the visible tokens are impossible together (probability zero), a
        masked position between them gets the left factor alone.

    Raises:
        TypeError, ValueError: on wrong dtypes or shapes, or ``mask_id < V``.
    """
    _check_tokens(x_t, "x_t")
    _check_mask_id(mask_id)
    if not (isinstance(transition, torch.Tensor) and transition.is_floating_point()):
        raise TypeError("transition must be a floating-point tensor")
    V = transition.shape[0]
    if transition.shape != (V, V) or initial.shape != (V,):
        raise ValueError(f"transition must be (V, V) and initial (V,), got {tuple(transition.shape)} and {tuple(initial.shape)}")
    if mask_id < V:
        raise ValueError(f"mask_id must be >= V = {V}, got {mask_id}")
    B, L = x_t.shape
    P = transition.to(x_t.device, torch.float64)
    pi = initial.to(x_t.device, torch.float64)
    # powers[k] = P^k for k = 0..L
    powers = [torch.eye(V, dtype=torch.float64, device=x_t.device)]
    for _ in range(L):
        powers.append(powers[-1] @ P)
    powers = torch.stack(powers)  # (L + 1, V, V)
    visible = x_t != mask_id
    pos = torch.arange(L, device=x_t.device).expand(B, L)
    # index of the nearest visible token to the left (-1 if none), by a running maximum
    left = torch.where(visible, pos, torch.full_like(pos, -1)).cummax(-1).values
    # nearest visible to the right (L if none): running minimum from the right
    right_src = torch.where(visible, pos, torch.full_like(pos, L)).flip(-1)
    right = (-(-right_src).cummax(-1).values).flip(-1)
    tok = x_t.clamp_max(V - 1).long()
    left_tok = tok.gather(1, left.clamp_min(0))  # (B, L)
    right_tok = tok.gather(1, right.clamp_max(L - 1))
    left_f = torch.where(
        (left >= 0)[..., None],
        powers[(pos - left).clamp(0, L), left_tok],  # (B, L, V): row x^a of P^(l-a)
        pi.expand(B, L, V),
    )
    right_f = torch.where(
        (right < L)[..., None],
        powers[(right - pos).clamp(0, L)].gather(-1, right_tok[..., None, None].expand(B, L, V, 1))[..., 0],
        torch.ones(B, L, V, dtype=torch.float64, device=x_t.device),
    )
    probs = left_f * right_f
    total = probs.sum(-1, keepdim=True)
    # an impossible context (the visible tokens cannot co-occur) leaves nothing to condition on the
    # right: fall back to the left factor alone, so the sampler can continue
    probs = torch.where(total > 0, probs / total.clamp_min(1e-300), left_f)
    one_hot = torch.nn.functional.one_hot(tok, V).to(torch.float64)
    probs = torch.where(visible[..., None], one_hot, probs)
    return probs.log()


def masked_sample(
    denoiser: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    length: int,
    *,
    steps: int,
    mask_id: int,
    strategy: str = "random",
    block_size: int | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate sequences by iterative unmasking, from all-mask (``t = 1``) to clean (``t = 0``).

    The time grid is uniform, :math:`t_i = 1 - i/S` for ``S`` steps per block, and the number of
    tokens revealed at each step is the decrease of :math:`\\mathrm{round}(L t)`, so both strategies
    reveal the same number of tokens at every step. Revealed tokens are drawn from
    :math:`p_\\theta(x_0^l \\mid x_t)` and are never masked again (the reverse step
    (discrete-reverse)). Which positions are revealed:

    * ``"random"``: uniformly among the masked positions (the ancestral sampler of the model);
    * ``"confidence"``: draw a candidate for every masked position, keep the ones whose drawn
      token has the highest probability, re-mask the rest (low-confidence remasking, as in LLaDA).

    With ``block_size``, the sequence is generated block by block from left to right (each block
    gets ``steps`` steps), as in block / semi-autoregressive diffusion.

    Args:
        denoiser: maps ``x_t`` of shape ``(n, length)`` to logits ``(n, length, V)`` over the data
            tokens (``V <= mask_id``).
        n: number of sequences.
        length: sequence length ``L``.
        steps: unmasking steps per block (``steps = L`` with ``"random"`` reveals one token per step).
        mask_id: the id of the mask token.
        strategy: ``"random"`` or ``"confidence"``.
        block_size: if given, a divisor of ``length``.
        device: where to create the sequences.
        generator: optional ``torch.Generator`` on ``device``.

    Returns:
        Tokens ``(n, length)``, int64, no mask left.

    Raises:
        ValueError: bad sizes, an unknown strategy, or a ``block_size`` that does not divide ``length``.
    """
    for name, v in (("n", n), ("length", length), ("steps", steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    _check_mask_id(mask_id)
    if strategy not in ("random", "confidence"):
        raise ValueError(f"strategy must be 'random' or 'confidence', got {strategy!r}")
    if block_size is None:
        block_size = length
    if not isinstance(block_size, int) or block_size < 1 or length % block_size:
        raise ValueError(f"block_size must be a positive divisor of length={length}, got {block_size!r}")
    x = torch.full((n, length), mask_id, dtype=torch.long, device=device)
    rows = torch.arange(n, device=x.device)[:, None]
    for start in range(0, length, block_size):
        block = slice(start, start + block_size)
        for i in range(steps):
            # tokens of this block still masked after the step: round(block_size * t_{i+1})
            n_reveal = round(block_size * (1 - i / steps)) - round(block_size * (1 - (i + 1) / steps))
            if n_reveal == 0:
                continue
            logits = denoiser(x)
            if logits.shape[:2] != (n, length) or logits.shape[-1] > mask_id:
                raise ValueError(f"denoiser must return logits (n, length, V) with V <= mask_id, got {tuple(logits.shape)}")
            probs = logits[:, block].float().softmax(-1)  # (n, block_size, V)
            cand = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(n, -1)
            masked = x[:, block] == mask_id
            if strategy == "random":
                score = torch.rand(masked.shape, generator=generator, device=x.device)
            else:
                score = probs.gather(-1, cand[..., None])[..., 0]  # confidence of the drawn token
            score = score.masked_fill(~masked, -1.0)  # never pick a visible position
            pick = score.topk(n_reveal, dim=-1).indices  # (n, n_reveal)
            xb = x[:, block].clone()
            xb[rows, pick] = cand[rows, pick]
            x[:, block] = xb
    return x


# --- Depth addition (issue 16): score entropy (SEDD) and the block-diffusion attention mask ---


def score_entropy(
    scores: torch.Tensor,
    ratios: torch.Tensor,
    weights: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Score entropy of positive scores against target ratios, summed over the last axis.

    For every pair ``(x, y)`` laid out along the last axis, the term is
    :math:`w_{xy}\\,[\\,s_y - a_y \\log s_y + K(a_y)\\,]` with :math:`K(a) = a(\\log a - 1)` and
    :math:`K(0) = 0`. Each term is the Bregman divergence of :math:`u \\log u` between ``a`` and
    ``s``: non-negative, zero exactly at ``s = a``. With the true ratios
    :math:`a_y = p(y)/p(x)` this is the score entropy; with the forward kernel's ratios
    :math:`q_t(y \\mid x_0)/q_t(x \\mid x_0)` it is the denoising score entropy.
    Implements (discrete-score-entropy) and (discrete-dse).

    Args:
        scores: the model's concrete score :math:`s_y(x) > 0`, shape ``(..., N)``, floating.
        ratios: the targets :math:`a_y \\ge 0`, same shape as ``scores``.
        weights: :math:`w_{xy} \\ge 0`, a float or a tensor broadcastable to ``scores``
            (put 0 on the pair ``y = x`` and on pairs the process never connects).

    Returns:
        Tensor of shape ``scores.shape[:-1]``, dtype and device of ``scores``.

    Raises:
        TypeError: non-floating ``scores`` or ``ratios``.
        ValueError: mismatched shapes, ``scores <= 0``, negative ``ratios`` or ``weights``.

    >>> s = torch.tensor([1.0, 2.0]); a = torch.tensor([1.0, 2.0])
    >>> float(score_entropy(s, a))  # zero at s = a
    0.0
    >>> round(float(score_entropy(torch.tensor([2.0]), torch.tensor([0.0]))), 4)  # a = 0: just s
    2.0
    """
    for name, v in (("scores", scores), ("ratios", ratios)):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(v, 'dtype', type(v).__name__)}")
    if scores.shape != ratios.shape or scores.dim() < 1:
        raise ValueError(f"scores and ratios must have the same shape (..., N), got {tuple(scores.shape)} and {tuple(ratios.shape)}")
    w = torch.as_tensor(weights, dtype=scores.dtype, device=scores.device)
    try:
        torch.broadcast_shapes(w.shape, scores.shape)
    except RuntimeError:
        raise ValueError(f"weights of shape {tuple(w.shape)} do not broadcast to {tuple(scores.shape)}") from None
    if scores.device.type != "meta":
        if bool((scores <= 0).any()):
            raise ValueError("scores must be strictly positive (they estimate ratios of probabilities)")
        if bool((ratios < 0).any()):
            raise ValueError("ratios must be non-negative")
        if bool((w < 0).any()):
            raise ValueError("weights must be non-negative")
    a = ratios.to(scores.dtype)
    k = torch.xlogy(a, a) - a  # K(a) = a (log a - 1), with K(0) = 0
    return (w * (scores - a * scores.log() + k)).sum(-1)


def block_diffusion_mask(
    length: int, block_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Attention mask for training block diffusion on ``[x_t, x_0]`` (noisy copy, then clean copy) in one pass.

    Position ``i`` of the input of length ``2L`` may attend to ``j`` (``True``) when, with
    ``b(i)`` the block of the token's position inside its copy:

    * noisy ``i``, noisy ``j``: same block, ``b(j) = b(i)`` (block-diagonal);
    * noisy ``i``, clean ``j``: earlier block, ``b(j) < b(i)`` (offset block-causal);
    * clean ``i``, clean ``j``: ``b(j) <= b(i)`` (block-causal);
    * clean ``i``, noisy ``j``: never.

    So the noisy block ``b`` sees exactly its own noisy tokens and the clean blocks before it,
    the context it has at sampling time, where the clean part is the key-value cache.
    Implements (discrete-block-mask).

    Args:
        length: sequence length ``L``.
        block_size: block size ``B``, a divisor of ``L``.
        device: where to create the mask.

    Returns:
        Bool tensor ``(2L, 2L)``: rows are queries, columns keys; ``True`` means "may attend"
        (the convention of ``torch.nn.functional.scaled_dot_product_attention``).

    Raises:
        ValueError: non-positive sizes or a ``block_size`` that does not divide ``length``.

    >>> block_diffusion_mask(2, 1).int().tolist()
    [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    """
    for name, v in (("length", length), ("block_size", block_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if length % block_size:
        raise ValueError(f"block_size must divide length={length}, got {block_size}")
    blk = torch.arange(length, device=device) // block_size
    bi, bj = blk[:, None], blk[None, :]
    noisy_noisy = bi == bj
    noisy_clean = bj < bi
    clean_clean = bj <= bi
    top = torch.cat([noisy_noisy, noisy_clean], 1)
    bottom = torch.cat([torch.zeros_like(clean_clean), clean_clean], 1)
    return torch.cat([top, bottom], 0)
