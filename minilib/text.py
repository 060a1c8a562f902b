"""Synthetic text with known structure, shared by the sequence-model and alignment labs.

Two generators live here, both built from a seed so that every lab can report how close a
model gets to the *truth*:

* :class:`MarkovLanguage`: a random, sparse first-order Markov chain over a small vocabulary.
  Its stationary distribution, exact sequence log-probabilities and entropy rate are all
  known in closed form, so a language model's loss can be compared with the best possible
  loss (the entropy rate).
* :func:`arithmetic_problems` and :func:`verify_arithmetic`: fixed-width addition problems
  ``a+b=`` as token tensors, and a verifier that recomputes the sum from the prompt. This is a
  task with a *verifiable* reward, as the GRPO lab needs.

Conventions: tokens are ``int64`` tensors; log-probabilities and entropies are in nats.

>>> lang = MarkovLanguage(vocab_size=8, branching=3, seed=0)
>>> x = lang.sample(4, 10, generator=torch.Generator().manual_seed(0))
>>> x.shape, x.dtype
(torch.Size([4, 10]), torch.int64)
>>> bool(lang.log_prob(x).le(0).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ARITH_EOS",
    "ARITH_EQUALS",
    "ARITH_PAD",
    "ARITH_PLUS",
    "ARITH_VOCAB",
    "ArithmeticProblems",
    "MarkovLanguage",
    "arithmetic_problems",
    "decode_arithmetic",
    "markov_masked_posterior",
    "mlm_mask",
    "verify_arithmetic",
]


def _check_pos_int(value: object, name: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


class MarkovLanguage:
    """A random first-order Markov chain over tokens ``0 .. vocab_size - 1``.

    Each token has ``branching`` possible successors with random weights. The
    successors of token ``i`` always include ``(i + 1) % vocab_size`` and token 0 may follow
    itself, so the chain is irreducible and aperiodic, and its stationary distribution
    :math:`\\pi` is unique. Sequences start from :math:`\\pi`, which makes the process
    stationary: every position has marginal :math:`\\pi`.

    Args:
        vocab_size: number of tokens :math:`V` (at least 2).
        branching: successors per token, between 1 and ``vocab_size``. Small values give
            low-entropy, learnable text.
        logit_scale: the successor weights are a softmax of standard-normal logits times
            ``logit_scale``; 0 gives uniform successors, large values let one dominate.
        seed: seed of the chain's construction (not of sampling).

    Attributes:
        vocab_size: :math:`V`.
        transition: ``(V, V)`` float64 tensor, ``transition[i, j]`` :math:`= P(x_{t+1}=j \\mid x_t=i)`.
        initial: ``(V,)`` float64 tensor, the distribution of the first token (:math:`\\pi`).

    Raises:
        ValueError: on a non-positive or out-of-range size.
    """

    def __init__(
        self, vocab_size: int = 16, *, branching: int = 3, logit_scale: float = 1.0, seed: int = 0
    ) -> None:
        self.vocab_size = _check_pos_int(vocab_size, "vocab_size", 2)
        _check_pos_int(branching, "branching")
        if branching > vocab_size:
            raise ValueError(f"branching must be <= vocab_size={vocab_size}, got {branching}")
        if not (isinstance(logit_scale, (int, float)) and logit_scale >= 0):
            raise ValueError(f"logit_scale must be a non-negative number, got {logit_scale!r}")
        _check_pos_int(seed, "seed", 0)
        self.branching = branching
        g = torch.Generator().manual_seed(seed)
        V = vocab_size
        P = torch.zeros(V, V, dtype=torch.float64)
        for i in range(V):
            forced = (i + 1) % V
            others = [j for j in torch.randperm(V, generator=g).tolist() if j != forced]
            if i == 0 and branching > 1 and forced != 0:
                others.remove(0)
                others.insert(0, 0)  # a self-loop at token 0 makes the chain aperiodic
            succ = [forced] + others[: branching - 1]
            # successor weights: a softmax of Gaussian logits (larger logit_scale = peakier)
            z = torch.randn(branching, generator=g, dtype=torch.float64)
            P[i, succ] = torch.softmax(float(logit_scale) * z, dim=0)
        self.transition = P
        self.initial = self.stationary()

    def __repr__(self) -> str:
        return f"MarkovLanguage(vocab_size={self.vocab_size}, branching={self.branching})"

    def stationary(self) -> torch.Tensor:
        """The stationary distribution :math:`\\pi` with :math:`\\pi^\\top P = \\pi^\\top`.

        Solved exactly as a linear system: :math:`(P^\\top - I)\\pi = 0` with one equation
        replaced by :math:`\\sum_i \\pi_i = 1`.

        Returns:
            ``(V,)`` float64 tensor summing to 1.
        """
        V = self.vocab_size
        A = self.transition.T - torch.eye(V, dtype=torch.float64)
        A[-1] = 1.0  # replace the last (redundant) balance equation by normalisation
        b = torch.zeros(V, dtype=torch.float64)
        b[-1] = 1.0
        pi = torch.linalg.solve(A, b)
        return pi.clamp_min(0.0) / pi.clamp_min(0.0).sum()

    def entropy_rate(self) -> float:
        """The entropy rate :math:`H = -\\sum_i \\pi_i \\sum_j P_{ij} \\log P_{ij}` in nats per token.

        This is the smallest achievable average next-token cross-entropy of any model
        that sees the previous token; a model's loss minus ``entropy_rate()`` is its excess
        loss.
        """
        P = self.transition
        plogp = torch.where(P > 0, P * P.clamp_min(1e-300).log(), torch.zeros_like(P))
        return float(-(self.stationary() * plogp.sum(dim=1)).sum())

    def sample(
        self, n_seqs: int, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n_seqs`` independent sequences of ``length`` tokens.

        Args:
            n_seqs: number of sequences.
            length: tokens per sequence (the first is drawn from :attr:`initial`).
            generator: a CPU ``torch.Generator`` for reproducibility (default: global RNG).

        Returns:
            ``(n_seqs, length)`` int64 tensor on the CPU.
        """
        _check_pos_int(n_seqs, "n_seqs")
        _check_pos_int(length, "length")
        _check_generator(generator)
        P = self.transition
        out = torch.empty(n_seqs, length, dtype=torch.int64)
        out[:, 0] = torch.multinomial(self.initial.expand(n_seqs, -1), 1, generator=generator)[:, 0]
        for t in range(1, length):
            out[:, t] = torch.multinomial(P[out[:, t - 1]], 1, generator=generator)[:, 0]
        return out

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact log-probability of each sequence, :math:`\\log\\pi(x_1) + \\sum_t \\log P_{x_t x_{t+1}}`.

        Args:
            tokens: ``(..., T)`` integer tensor with values in ``[0, V)``.

        Returns:
            ``(...)`` float64 tensor (``-inf`` for impossible sequences).

        Raises:
            TypeError: if ``tokens`` is not an integer tensor.
            ValueError: if a token is out of range or ``T == 0``.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex():
            raise TypeError("tokens must be an integer tensor")
        if tokens.dim() == 0 or tokens.shape[-1] == 0:
            raise ValueError(f"tokens must have shape (..., T) with T >= 1, got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size}), got values outside")
        x = tokens.to("cpu", torch.int64)
        logP = self.transition.log()
        lp = self.initial.log()[x[..., 0]]
        if x.shape[-1] > 1:
            lp = lp + logP[x[..., :-1], x[..., 1:]].sum(dim=-1)
        return lp.to(tokens.device)

    def next_token_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """The true next-token distribution after each position: ``transition[tokens]``.

        Args:
            tokens: ``(..., T)`` integer tensor.

        Returns:
            ``(..., T, V)`` float64 tensor.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point():
            raise TypeError("tokens must be an integer tensor")
        return self.transition[tokens.to("cpu", torch.int64)].to(tokens.device)


# ----------------------------------------------------------------------------------------
# Arithmetic with a verifiable answer
# ----------------------------------------------------------------------------------------

#: Token vocabulary of the arithmetic task: digits 0-9 are tokens 0-9.
ARITH_VOCAB = "0123456789+=$_"
ARITH_PLUS = 10  #: token of ``+``
ARITH_EQUALS = 11  #: token of ``=``
ARITH_EOS = 12  #: end-of-answer token (printed ``$``)
ARITH_PAD = 13  #: padding token (printed ``_``)


@dataclass(frozen=True)
class ArithmeticProblems:
    """A batch of addition problems.

    Attributes:
        prompts: ``(n, 2w + 2)`` int64 tokens ``a + b =``, operands zero-padded to ``w`` digits,
            where ``w`` is the number of digits of ``max_operand``.
        answers: ``(n, w_ans)`` int64 digit tokens of ``a + b``, most significant first,
            zero-padded to ``w_ans`` digits (the digits of ``2 * max_operand``).
        operands: ``(n, 2)`` int64, the numbers ``a`` and ``b``.
    """

    prompts: torch.Tensor
    answers: torch.Tensor
    operands: torch.Tensor


def _digits(values: torch.Tensor, width: int) -> torch.Tensor:
    """``(n,)`` non-negative ints -> ``(n, width)`` digit tokens, most significant first."""
    powers = 10 ** torch.arange(width - 1, -1, -1, device=values.device)
    return (values[:, None] // powers) % 10


def arithmetic_problems(
    n: int, max_operand: int, generator: torch.Generator | None = None
) -> ArithmeticProblems:
    """Draw ``n`` problems ``a + b`` with ``a, b`` uniform on ``0 .. max_operand``.

    Args:
        n: number of problems.
        max_operand: largest operand (at least 1).
        generator: optional CPU ``torch.Generator``.

    Returns:
        An :class:`ArithmeticProblems` batch on the CPU.

    >>> p = arithmetic_problems(2, 9, generator=torch.Generator().manual_seed(0))
    >>> p.prompts.shape, p.answers.shape
    (torch.Size([2, 4]), torch.Size([2, 2]))
    >>> bool(verify_arithmetic(p.prompts, p.answers).all())
    True
    """
    _check_pos_int(n, "n")
    _check_pos_int(max_operand, "max_operand")
    _check_generator(generator)
    w = len(str(max_operand))
    w_ans = len(str(2 * max_operand))
    ab = torch.randint(0, max_operand + 1, (n, 2), generator=generator)
    plus = torch.full((n, 1), ARITH_PLUS, dtype=torch.int64)
    eq = torch.full((n, 1), ARITH_EQUALS, dtype=torch.int64)
    prompts = torch.cat([_digits(ab[:, 0], w), plus, _digits(ab[:, 1], w), eq], dim=1)
    answers = _digits(ab.sum(dim=1), w_ans)
    return ArithmeticProblems(prompts=prompts, answers=answers, operands=ab)


def _parse_number(digits: torch.Tensor) -> torch.Tensor:
    """``(n, w)`` digit tokens -> ``(n,)`` int64 value."""
    w = digits.shape[1]
    powers = 10 ** torch.arange(w - 1, -1, -1, device=digits.device)
    return (digits * powers).sum(dim=1)


def verify_arithmetic(prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    """Outcome reward: is each completion the correct sum of its prompt?

    The sum is recomputed from the prompt tokens, not looked up. A completion is correct
    when its leading digits (up to the first non-digit, e.g. ``ARITH_EOS``) spell the sum;
    leading zeros are allowed, an empty or non-numeric answer is wrong.

    Args:
        prompts: ``(n, 2w + 2)`` int64 prompts as made by :func:`arithmetic_problems`.
        completions: ``(n, L)`` int64 tokens generated after ``=``.

    Returns:
        ``(n,)`` bool tensor.

    Raises:
        TypeError: if an input is not an integer tensor.
        ValueError: on mismatched batch sizes or malformed prompts.
    """
    for name, t in (("prompts", prompts), ("completions", completions)):
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must be an integer tensor")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (n, L), got {tuple(t.shape)}")
    if prompts.shape[0] != completions.shape[0]:
        raise ValueError(
            f"prompts and completions must have the same batch size, got {prompts.shape[0]} "
            f"and {completions.shape[0]}"
        )
    Lp = prompts.shape[1]
    if Lp < 4 or Lp % 2 != 0:
        raise ValueError(f"prompts must have length 2w + 2, got {Lp}")
    w = (Lp - 2) // 2
    if not (bool((prompts[:, w] == ARITH_PLUS).all()) and bool((prompts[:, -1] == ARITH_EQUALS).all())):
        raise ValueError("prompts must look like digits + digits =")
    a = _parse_number(prompts[:, :w])
    b = _parse_number(prompts[:, w + 1 : 2 * w + 1])
    is_digit = completions < 10
    # number of leading digits: position of the first non-digit
    n_lead = torch.cumprod(is_digit.long(), dim=1).sum(dim=1)
    L = completions.shape[1]
    powers_idx = torch.arange(L, device=completions.device)
    # value of the leading-digit prefix: sum_k d_k 10^(n_lead - 1 - k) over k < n_lead
    expo = (n_lead[:, None] - 1 - powers_idx).clamp_min(0)
    keep = powers_idx[None, :] < n_lead[:, None]
    value = torch.where(keep, completions.clamp(0, 9) * 10**expo, torch.zeros_like(completions)).sum(dim=1)
    return (n_lead > 0) & (value == a + b)


def decode_arithmetic(tokens: torch.Tensor) -> list[str]:
    """Render ``(n, L)`` arithmetic tokens as strings (``$`` is EOS, ``_`` is padding).

    >>> decode_arithmetic(torch.tensor([[1, 10, 2, 11, 3, 12]]))
    ['1+2=3$']
    """
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point():
        raise TypeError("tokens must be an integer tensor")
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(ARITH_VOCAB)):
        raise ValueError(f"tokens must lie in [0, {len(ARITH_VOCAB)})")
    return ["".join(ARITH_VOCAB[int(t)] for t in row) for row in tokens]


# ----------------------------------------------------------------------------------------
# Masked language modelling (chapter "BERT and masked language modelling", book/ssl/bert.md)
# ----------------------------------------------------------------------------------------


def mlm_mask(
    tokens: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    p: float = 0.15,
    special_ids: tuple[int, ...] | list[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-language-model corruption with the 80/10/10 rule.

    Each position whose token is not in ``special_ids`` (nor ``mask_id``) is *selected*
    independently with probability ``p``. A selected position keeps its original token as
    its label; its input becomes ``mask_id`` with probability 0.8, a random token with
    probability 0.1, and stays unchanged with probability 0.1. Random tokens are drawn
    uniformly from the *ordinary* ids: ``0 .. vocab_size - 1`` minus ``mask_id`` and
    ``special_ids`` (so a random draw may equal the original token, as in BERT; BERT's own
    script draws from the whole vocabulary, special tokens included: see the chapter's note).
    Implements (bert-corruption).

    Selection is Bernoulli per position, so the number of selected tokens per sequence is
    random (the original BERT code selected exactly ``round(p * T)``; see the chapter's note).

    Args:
        tokens: ``(..., T)`` integer tensor of ids in ``[0, vocab_size)``.
        mask_id: id of the ``[MASK]`` token, in ``[0, vocab_size)``.
        vocab_size: size of the whole vocabulary, special ids included.
        p: selection probability, in the open interval ``(0, 1)``.
        special_ids: ids that are never selected (e.g. ``[CLS]``, padding).
        generator: optional CPU ``torch.Generator``; draws are made on the CPU and moved
            to ``tokens.device``, so results do not depend on the device.

    Returns:
        ``(inputs, labels)``, both shaped and typed like ``tokens`` and on its device:
        ``inputs`` the corrupted ids, ``labels`` the original id at selected positions and
        ``-100`` elsewhere (the ``ignore_index`` of :func:`torch.nn.functional.cross_entropy`).

    Raises:
        TypeError: if ``tokens`` is not an integer tensor or ``generator`` is not a Generator.
        ValueError: on ``p`` outside ``(0, 1)``, ids out of range, or no ordinary id left.

    >>> x = torch.arange(10).repeat(2, 1)
    >>> inp, lab = mlm_mask(x, mask_id=10, vocab_size=12, p=0.5, special_ids=(11,),
    ...                     generator=torch.Generator().manual_seed(0))
    >>> bool(((lab == -100) | (lab == x)).all()), inp.shape
    (True, torch.Size([2, 10]))
    """
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError("tokens must be an integer tensor")
    if tokens.dim() == 0:
        raise ValueError("tokens must have shape (..., T), got a scalar")
    _check_pos_int(vocab_size, "vocab_size", 2)
    if not isinstance(mask_id, int) or isinstance(mask_id, bool) or not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be an int in [0, vocab_size={vocab_size}), got {mask_id!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise ValueError(f"p must be a number in the open interval (0, 1), got {p!r}")
    specials = list(special_ids)
    for s in specials:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < vocab_size:
            raise ValueError(f"special_ids must be ints in [0, vocab_size={vocab_size}), got {s!r}")
    _check_generator(generator)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"tokens must lie in [0, vocab_size={vocab_size})")
    banned = torch.tensor(sorted(set(specials) | {mask_id}), dtype=torch.int64)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(banned.tolist())], dtype=torch.int64)
    if len(ordinary) == 0:
        raise ValueError("no ordinary token id is left for random replacement")
    x = tokens.detach().to("cpu", torch.int64)
    eligible = ~torch.isin(x, banned)
    u_select = torch.rand(x.shape, generator=generator, dtype=torch.float64)
    u_action = torch.rand(x.shape, generator=generator, dtype=torch.float64)
    rand_tok = ordinary[torch.randint(0, len(ordinary), x.shape, generator=generator)]
    selected = eligible & (u_select < float(p))
    inputs = x.clone()
    inputs = torch.where(selected & (u_action < 0.8), torch.full_like(x, mask_id), inputs)
    inputs = torch.where(selected & (u_action >= 0.8) & (u_action < 0.9), rand_tok, inputs)
    labels = torch.where(selected, x, torch.full_like(x, -100))
    return inputs.to(tokens.device, tokens.dtype), labels.to(tokens.device, tokens.dtype)


def markov_masked_posterior(lang: MarkovLanguage, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact posterior of every token of a Markov-chain sequence given its unmasked tokens.

    For a sequence drawn from ``lang`` (first token from :math:`\\pi`, then the transition
    matrix :math:`A` = ``lang.transition``), the positions where ``mask`` is True are hidden
    and the others are observed. The forward-backward recursions, with an emission that is 1
    for every value at a hidden position and the indicator of the observed token elsewhere,
    give the marginal
    :math:`p(x_t = v \\mid x_{\\text{observed}})` at every position. For an isolated hidden
    position this reduces to :math:`\\propto A_{x_{t-1} v} A_{v x_{t+1}}`, (bert-isolated).
    Implements (bert-forward), (bert-backward) and (bert-marginal).

    Each step is renormalised, so long sequences do not underflow.

    Args:
        lang: the :class:`MarkovLanguage` that generated the sequences.
        tokens: ``(B, T)`` or ``(T,)`` integer tensor; values at hidden positions are ignored
            (they may be a ``[MASK]`` id outside ``[0, V)``).
        mask: bool tensor of the same shape, True where the token is hidden.

    Returns:
        ``(..., T, V)`` float64 tensor on ``tokens.device``: the posterior at every position
        (one-hot at observed positions).

    Raises:
        TypeError: on a non-integer ``tokens`` or non-bool ``mask``.
        ValueError: on mismatched shapes, observed tokens out of range, or observed tokens
            that the chain cannot produce (probability zero).

    >>> lang = MarkovLanguage(vocab_size=4, branching=2, seed=0)
    >>> x = lang.sample(1, 5, generator=torch.Generator().manual_seed(0))
    >>> m = torch.tensor([[False, False, True, False, False]])
    >>> post = markov_masked_posterior(lang, x, m)
    >>> P = lang.transition
    >>> iso = P[x[0, 1]] * P[:, x[0, 3]]
    >>> bool(torch.allclose(post[0, 2], iso / iso.sum()))
    True
    """
    if not isinstance(lang, MarkovLanguage):
        raise TypeError(f"lang must be a MarkovLanguage, got {type(lang).__name__}")
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError("tokens must be an integer tensor")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool tensor")
    if mask.shape != tokens.shape:
        raise ValueError(f"mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(mask.shape)}")
    if tokens.dim() not in (1, 2) or tokens.shape[-1] == 0:
        raise ValueError(f"tokens must have shape (T,) or (B, T) with T >= 1, got {tuple(tokens.shape)}")
    squeeze = tokens.dim() == 1
    x = tokens.detach().to("cpu", torch.int64).reshape(-1, tokens.shape[-1])
    m = mask.detach().to("cpu").reshape(x.shape)
    V = lang.vocab_size
    obs = x[~m]
    if obs.numel() and (int(obs.min()) < 0 or int(obs.max()) >= V):
        raise ValueError(f"observed tokens must lie in [0, {V})")
    B, T = x.shape
    # emission e[b, t, v]: 1 at hidden positions, indicator of the observed token otherwise
    e = torch.nn.functional.one_hot(x.clamp(0, V - 1), V).to(torch.float64)
    e[m] = 1.0
    P = lang.transition
    alpha = torch.empty(B, T, V, dtype=torch.float64)
    beta = torch.empty(B, T, V, dtype=torch.float64)
    a = lang.initial[None, :] * e[:, 0]  # (bert-forward), t = 1
    for t in range(T):
        if t > 0:
            a = (alpha[:, t - 1] @ P) * e[:, t]  # (B, V)
        z = a.sum(-1, keepdim=True)
        if bool((z <= 0).any()):
            raise ValueError("the observed tokens have probability zero under lang")
        alpha[:, t] = a / z
    beta[:, T - 1] = 1.0
    for t in range(T - 2, -1, -1):
        b = (e[:, t + 1] * beta[:, t + 1]) @ P.T  # (bert-backward)
        beta[:, t] = b / b.sum(-1, keepdim=True)
    post = alpha * beta  # (bert-marginal)
    post = post / post.sum(-1, keepdim=True)
    out = post[0] if squeeze else post
    return out.to(tokens.device)
