"""Noise that depends only on (seed, sample index).

Sample i of a sampling run must be the same whatever the batch size, the number of processes or
which process drew it (edm2's rule). Each sample gets its own ``torch.Generator`` seeded from
(seed, i); batched samplers draw per-sample noise from these and stack it. ``seed`` may also be a
sequence, one seed per sample (a list of generators in a pipeline call): sample i then draws
from (seed[i], indices[i]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``seed`` (a SplitMix64 mix)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


Seed = int | Sequence[int]


def seed_slice(seed: Seed, start: int, stop: int) -> Seed:
    """The seeds of samples ``start .. stop-1`` (a single seed serves them all)."""
    return seed if isinstance(seed, int) else list(seed)[start:stop]


class SampleRNG:
    """One generator per sample: ``rng.randn(C, H, W)`` returns (B, C, H, W) noise whose row i
    depends only on (seed, indices[i]) (or (seed[i], indices[i])) and on how many draws came before it."""

    def __init__(self, seed: Seed, indices: Sequence[int], device: torch.device | str = "cpu"):
        indices = list(indices)
        seeds = [seed] * len(indices) if isinstance(seed, int) else list(seed)
        if len(seeds) != len(indices):
            raise ValueError(f"{len(seeds)} seeds for {len(indices)} samples: give one seed, or one per sample")
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(sample_seed(int(s), int(i))) for s, i in zip(seeds, indices)]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators]).to(self.device)

    def rand(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g, dtype=dtype) for g in self.generators]).to(self.device)

    def subset(self, keep: Sequence[int]) -> SampleRNG:
        out = SampleRNG.__new__(SampleRNG)
        out.device, out.generators = self.device, [self.generators[i] for i in keep]
        return out


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: ``probs`` (..., K) (rows need not be normalised), one uniform per row
    ``u`` (...) -> indices (...) in [0, K). One uniform per draw keeps each sample's noise small and
    independent of the batch it is drawn in."""
    cdf = probs.cumsum(-1)
    index = (cdf < u[..., None] * cdf[..., -1:]).sum(-1)
    return index.clamp_(max=probs.shape[-1] - 1)
