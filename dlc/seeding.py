"""Noise that depends only on (seed, sample index).

Sample i of a sampling run must be the same whatever the batch size, the number of processes or
which process drew it (edm2's rule). Each sample gets its own ``torch.Generator`` seeded from
(seed, i); batched samplers draw per-sample noise from these and stack it.
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


class SampleRNG:
    """One generator per sample: ``rng.randn(C, H, W)`` returns (B, C, H, W) noise whose row i
    depends only on (seed, indices[i]) and on how many draws came before it."""

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, int(i))) for i in indices]

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
