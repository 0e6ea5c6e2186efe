"""Simplicial Embedding (SEM): a continuous vector -> L groups of V probabilities -> a discrete code.

    sem = SimplicialEmbedding(in_features=640, code_length=32, vocab_size=64)
    probs = sem(x)              # (B, L, V), each group sums to 1 (softmax at tau=1, as in training)
    codes = sem.codes(x)        # (B, L) long: the argmax of each group (the same at every tau)

The layer is a bias-free Linear(in -> L*V), ONE LayerNorm over the whole L*V vector (not one per
group: the groups share its statistics) and a softmax over V per group at temperature ``tau``.
"""

from __future__ import annotations

import torch
from torch import nn


class SimplicialEmbedding(nn.Module):
    def __init__(self, in_features: int, code_length: int, vocab_size: int, eps: float = 1e-5):
        super().__init__()
        self.code_length, self.vocab_size = code_length, vocab_size
        self.linear = nn.Linear(in_features, code_length * vocab_size, bias=False)
        self.norm = nn.LayerNorm(code_length * vocab_size, eps=eps)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> normalised logits (B, L, V) (before the temperature)."""
        return self.norm(self.linear(x)).unflatten(-1, (self.code_length, self.vocab_size))

    def forward(self, x: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """Probabilities (B, L, V): softmax over V of each group at temperature ``tau``."""
        if tau <= 0:
            raise ValueError(f"the SEM temperature must be > 0 (got {tau}); use .codes() for the argmax")
        return torch.softmax(self.logits(x).float() / tau, dim=-1).to(x.dtype)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The Discrete Latent Code (B, L) long: per-group argmax (temperature-invariant)."""
        return self.logits(x).argmax(dim=-1)
