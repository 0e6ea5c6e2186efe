"""Composition: new codes built from the tokens of several source codes.

The paper takes each position's token at random from one of the sources; the authors' code
instead averages the sources' SEM distributions (encoder temperature 0.001) and samples each
position from the average. Both are here (``method="random"``, the default, and ``"average"``);
they agree as ``tau`` -> 0, and tokens on which all sources agree stay fixed in both.

    codes = compose([code_a, code_b], n=8, seed=0)                       # (8, L) long
    codes = compose([probs_a, probs_b], method="average", tau=0.5)       # from encoder.probs(...)
    codes = compose([a, b], mask=torch.arange(L) < L // 2)               # first half from a
    codes = compose([a, b, c], mask=group_mask([0, 1, -1, 2], L))       # quarters: a, b, free, c
    soft = interpolate(code_a, code_b, n=5, vocab_size=V)               # (5, L, V) soft codes

Every position is drawn from a mixture: ``p = sum_s W[s] q_s`` where ``q_s`` is source s's
distribution (one-hot for a hard code, the tempered probabilities otherwise) and ``W`` is a
one-hot random choice of source (random), the source weights (average) or the mask's source.
Sample i depends only on (seed, i), or on seed[i] when ``seed`` gives one seed per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import CodeError
from .seeding import SampleRNG, Seed, categorical

AUTHORS_TAU = 1e-3  # the temperature of the authors' averaging


def _as_code_or_probs(source, index: int) -> torch.Tensor:
    """One source as a (L,) long code or an (L, V) probability tensor."""
    t = torch.as_tensor(source)
    if t.ndim == (3 if t.is_floating_point() else 2) and t.shape[0] == 1:  # a batch of one
        t = t[0]
    if t.is_floating_point():
        if t.ndim != 2:
            raise CodeError(f"source {index}: probabilities must have shape (L, V); got {tuple(t.shape)}")
        if (t < 0).any() or not torch.allclose(t.sum(-1), torch.ones(()), atol=1e-3):
            raise CodeError(f"source {index}: each of the L rows of probabilities must be >= 0 and sum to 1")
        return t.float()
    if t.ndim != 1:
        raise CodeError(f"source {index}: a code must have shape (L,) or (1, L); got {tuple(t.shape)}")
    if t.numel() and t.min() < 0:
        raise CodeError(f"source {index}: code values must be >= 0; got {int(t.min())}")
    return t.long()


def source_distributions(sources: Sequence, vocab_size: int | None = None, tau: float = 1.0) -> torch.Tensor:
    """Sources (codes or probabilities) -> (S, L, V) distributions.

    Probabilities are re-tempered, ``q = softmax(log p / tau)`` (``tau=0``: one-hot argmax), so
    probabilities taken from the encoder at temperature 1 become those at temperature ``tau``.
    ``vocab_size`` defaults to the probabilities' V, or to the largest code value + 1."""
    if not sources:
        raise CodeError("compose needs at least one source code")
    items = [_as_code_or_probs(s, i) for i, s in enumerate(sources)]
    lengths = {t.shape[0] for t in items}
    if len(lengths) > 1:
        raise CodeError(f"all sources must have the same code length L; got lengths {sorted(lengths)}")
    vocabs = {t.shape[1] for t in items if t.ndim == 2} | ({vocab_size} if vocab_size else set())
    if len(vocabs) > 1:
        raise CodeError(f"probabilities and vocab_size must agree on one vocabulary size V; got {sorted(vocabs)}")
    V = vocab_size or (vocabs.pop() if vocabs else max(int(t.max()) for t in items) + 1)
    out = []
    for i, t in enumerate(items):
        if t.ndim == 1:
            if t.numel() and t.max() >= V:
                raise CodeError(f"source {i}: code values must be in [0, {V}); got {int(t.max())}")
            out.append(F.one_hot(t, V).float())
        elif tau == 0:
            out.append(F.one_hot(t.argmax(-1), V).float())
        else:
            out.append(torch.softmax(t.clamp_min(1e-30).log() / tau, dim=-1))
    return torch.stack(out)


def _source_weights(weights, num_sources: int) -> torch.Tensor:
    if weights is None:
        return torch.full((num_sources,), 1.0 / num_sources)
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.numel() != num_sources or (w < 0).any() or w.sum() <= 0:
        raise CodeError(f"weights must be {num_sources} non-negative numbers (one per source) with a positive sum; "
                        f"got {w.tolist()}")
    return w / w.sum()


def _mask_sources(mask, num_sources: int, length: int) -> torch.Tensor:
    """A mask -> (L,) source index per position, -1 where the method chooses.

    A bool mask takes True positions from the first source and the rest from the second; an
    integer mask names the source of each position (-1: composed as usual)."""
    m = torch.as_tensor(mask)
    if m.shape != (length,):
        raise CodeError(f"mask must have shape (L,) = ({length},); got {tuple(m.shape)}")
    if m.dtype == torch.bool:
        if num_sources != 2:
            raise CodeError(f"a boolean mask needs exactly 2 sources (True: first, False: second); got {num_sources}")
        return torch.where(m, 0, 1)
    m = m.long()
    if (m < -1).any() or (m >= num_sources).any():
        raise CodeError(f"an integer mask holds a source index in [0, {num_sources}) or -1 per position")
    return m


def group_mask(groups: Sequence[int], length: int) -> torch.Tensor:
    """A source per group of positions -> the (L,) integer ``mask`` of ``compose``.

    The L positions are cut into G = len(groups) contiguous groups, position p in group
    floor(p G / L) (blocks of L / G when G divides L; G = L is one source per position).
    ``groups[g]`` is the source index of group g, or -1 to leave it to the method."""
    g = torch.as_tensor(groups, dtype=torch.long).flatten()
    if not 1 <= g.numel() <= length:
        raise CodeError(f"give between 1 and L = {length} groups (one source index or -1 each); got {g.numel()}")
    return g[torch.arange(length) * g.numel() // length]


def mixture_weights(method: str, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(n, L, S) per-position weights of each source for ``method`` given uniforms ``u`` (n, L)."""
    if method == "random":
        return F.one_hot(categorical(w.expand(*u.shape, -1), u), w.numel()).float()
    return w.expand(*u.shape, -1)


METHODS = ("random", "average")


def compose(sources: Sequence, n: int = 8, seed: Seed = 0, method: str = "random", weights=None, mask=None,
            tau: float = AUTHORS_TAU, vocab_size: int | None = None,
            indices: Sequence[int] | None = None) -> torch.Tensor:
    """Compose ``n`` codes (n, L) long from source codes (L,)/(1, L) or probabilities (L, V).

    ``method``: "random" (each position from one source drawn with ``weights``: the paper) or
    "average" (sample from the ``weights``-average of the sources' distributions: the authors'
    code). ``mask``: positions forced to a source (bool: True from the first, False from the
    second; or an integer source index per position, -1 for free). ``tau``: temperature applied
    to probability sources (hard codes are one-hot whatever ``tau``). ``indices``: the sample
    index of each of the ``n`` codes (default 0..n-1): code i depends only on (seed, indices[i])."""
    if method not in METHODS:
        raise ValueError(f"unknown composition method {method!r}; choose from {METHODS}")
    q = source_distributions(sources, vocab_size, tau)  # (S, L, V)
    S, L, _ = q.shape
    w = _source_weights(weights, S)
    rng = SampleRNG(seed, range(n) if indices is None else indices)
    u_source, u_token = rng.rand(L), rng.rand(L)  # each (n, L)
    W = mixture_weights(method, w, u_source)
    if mask is not None:
        forced = _mask_sources(mask, S, L)
        fixed = forced >= 0
        W = torch.where(fixed[None, :, None], F.one_hot(forced.clamp_min(0), S).float()[None], W)
    probs = torch.einsum("nls,slv->nlv", W, q)
    return categorical(probs, u_token)


def interpolate(source_a, source_b, n: int = 8, alphas: Sequence[float] | None = None,
                vocab_size: int | None = None, tau: float = 1.0) -> torch.Tensor:
    """Soft codes (n, L, V) on the line from a to b: ``(1 - alpha) q_a + alpha q_b`` for ``n``
    evenly spaced alphas in [0, 1] (or the given ``alphas``). The DiT averages its code table
    with these weights, so alpha 0 and 1 reproduce the two hard codes exactly. Hard codes need
    ``vocab_size`` (the model's V)."""
    hard = [not torch.as_tensor(s).is_floating_point() for s in (source_a, source_b)]
    if all(hard) and vocab_size is None:
        raise CodeError("interpolating two hard codes needs vocab_size (the model's V) to build soft codes")
    q = source_distributions([source_a, source_b], vocab_size, tau)
    a = (torch.linspace(0, 1, n) if alphas is None else torch.as_tensor(alphas, dtype=torch.float32)).view(-1, 1, 1)
    return (1 - a) * q[0] + a * q[1]


@torch.no_grad()
def encode_sources(images: torch.Tensor, encoder) -> list[torch.Tensor]:
    """Images (B, C, H, W), uint8 or float in [-1, 1] -> B probability sources (L, V) at encoder temperature 1,
    ready for ``compose`` (whose ``tau`` then sets the temperature)."""
    return list(encoder.probs(images, tau=1.0).float().cpu())
