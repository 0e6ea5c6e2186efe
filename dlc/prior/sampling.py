"""Sampling codes from the prior: ancestral unmasking steps with the paper's remasking corrector
(see ``dlc.prior``). Sample i depends only on (seed, i)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..codes import check_codes
from ..errors import ConfigError
from ..progress import tqdm
from ..seeding import SampleRNG, Seed, categorical, seed_slice
from .model import CodePrior, mask_prob

# --------------------------------------------------------------------------------------------
# Sampling


def step_probs(m_t: float, m_s: float, remask: float) -> tuple[float, float]:
    """(probability a masked token unmasks, probability a decoded token remasks) for one step from
    mask level m_t to m_s. Remasking lengthens the step by remask * (1 - m_t) so the expected masked
    fraction still ends at m_s."""
    target = max(m_s - remask * (1.0 - m_t), 0.0)
    return (m_t - target) / m_t, remask


@torch.no_grad()
def sample_codes(model: CodePrior, num: int, seed: Seed = 0, steps: int = 128, temperature: float = 1.0,
                 eta: float = 0.0, start_index: int = 0, batch_size: int | None = None,
                 window: tuple[float, float] = (0.3, 0.55), progress: bool = False,
                 indices: Sequence[int] | None = None) -> torch.Tensor:
    """``num`` codes (num, L) long in [0, V) from ``steps`` ancestral steps; sample i depends only on
    (seed, start_index + i), or on (seed, indices[i]) when ``indices`` are given (``seed`` may be one
    seed per sample). ``eta`` > 0 turns on the remasking corrector for t inside ``window``."""
    check_options(steps, eta)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"prior temperature must be a finite number > 0; got {temperature}")
    return sample_in_batches(model, lambda rng: _sample_batch(model, rng, steps, temperature, eta, window), num, seed,
                             start_index, batch_size, indices, progress)


def check_options(steps: int, eta: float) -> None:
    """The settings every prior's sampler takes (``CodePrior``'s and ``SEDDPrior``'s)."""
    if steps < 1:
        raise ConfigError(f"prior steps must be at least 1; got {steps}")
    if not 0.0 <= eta < 1.0:
        raise ConfigError(f"prior eta must be in [0, 1); got {eta}")


def sample_in_batches(model, draw: Callable[[SampleRNG], torch.Tensor], num: int, seed: Seed, start_index: int = 0,
                      batch_size: int | None = None, indices: Sequence[int] | None = None,
                      progress: bool = False) -> torch.Tensor:
    """``num`` checked codes (num, L), ``batch_size`` at a time: ``draw(rng)`` samples one batch from the
    batch's ``SampleRNG``, so sample i depends only on (seed, start_index + i) or (seed, indices[i])."""
    batch_size = batch_size or num
    indices = list(range(start_index, start_index + num) if indices is None else indices)
    out = []
    for first in tqdm(range(0, num, batch_size), desc="sampling codes", disable=not progress, leave=False):
        last = min(first + batch_size, num)
        out.append(draw(SampleRNG(seed_slice(seed, first, last), indices[first:last])))
    codes = torch.cat(out) if out else torch.zeros(0, model.config.code_length, dtype=torch.long)
    return check_codes(codes, model.config.code_length, model.config.vocab_size, what="sampled codes")


def _sample_batch(model: CodePrior, rng: SampleRNG, steps: int, temperature: float, eta: float,
                  window: tuple[float, float]) -> torch.Tensor:
    L, V, eps = model.config.code_length, model.config.vocab_size, model.config.noise_eps
    rng.device = device = next(model.parameters()).device
    x = torch.full((len(rng), L), V, dtype=torch.long, device=device)
    cached_x, probs = None, None
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for t, s in zip(times[:-1], times[1:]):
        u_unmask, u_remask, u_token = rng.rand(3, L).unbind(1)  # a fixed number of draws per step
        probs = _denoise(model, x, t, temperature, cached_x, probs)
        cached_x = x
        remask = eta if (window[0] < t < window[1] and s > 0) else 0.0
        p_unmask, p_remask = step_probs(mask_prob(t, eps), mask_prob(s, eps), remask)
        masked = x == V
        tokens = categorical(probs, u_token)
        x = torch.where(masked & (u_unmask < p_unmask), tokens, x)
        x = torch.where(~masked & (u_remask < p_remask), V, x)
    if (x == V).any():  # the last step has m_s = 0 and no remasking: unreachable
        raise RuntimeError("the sampler left a masked position")
    return x


def _denoise(model: CodePrior, x: torch.Tensor, t: float, temperature: float,
             cached_x: torch.Tensor | None, cached: torch.Tensor | None) -> torch.Tensor:
    """p(x0 | x_t) at ``temperature``; a model without time input is re-run only on changed samples."""
    if model.config.time_conditioning or cached is None:
        stale = torch.ones(len(x), dtype=torch.bool, device=x.device)
        probs = torch.empty(*x.shape, model.config.vocab_size, device=x.device)
    else:
        stale, probs = (x != cached_x).any(1), cached.clone()
    if stale.any():
        logits = model(x[stale], torch.full((int(stale.sum()),), t, device=x.device))
        probs[stale] = torch.softmax(logits / temperature, dim=-1)
    return probs
