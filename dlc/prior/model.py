"""The code prior's network: a bidirectional transformer predicting x0 at every code position,
and the log-linear masking schedule it is trained and sampled with (see ``dlc.prior``)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..codes import check_codes
from ..dit.model import DiTBlock, FinalLayer, TimestepEmbedder, init_adaln_weights
from ..errors import ConfigError
from ..saved import CheckedLoading

# --------------------------------------------------------------------------------------------
# Log-linear schedule


def mask_prob(t: torch.Tensor, eps: float) -> torch.Tensor:
    """m(t) = (1 - eps) t: the probability that a token is masked at time t (SEDD's log-linear noise,
    total noise sigma(t) = -log(1 - m(t)))."""
    return (1.0 - eps) * t


def elbo_weight(t: torch.Tensor) -> torch.Tensor:
    """The ELBO weight of a masked token's cross entropy at time t: m'(t) / m(t) = 1 / t."""
    return 1.0 / t


# --------------------------------------------------------------------------------------------
# Model


class CodePrior(CheckedLoading, ModelMixin, ConfigMixin):
    """p(x0 | x_t) over codes of length ``code_length`` L and vocabulary ``vocab_size`` V.

    Input tokens are in [0, V]; V is the mask. ``forward(x_t, t)`` returns logits (B, L, V): the mask
    is never predicted. ``time_conditioning=False`` drops the noise-level input (MDLM shows the number
    of masks carries it) and lets the sampler skip the network when a sample did not change.
    """

    @register_to_config
    def __init__(self, code_length: int = 32, vocab_size: int = 64, hidden_size: int = 256, depth: int = 6,
                 num_heads: int = 4, mlp_ratio: float = 4.0, rotary: bool = True,
                 time_conditioning: bool = True, noise_eps: float = 1e-3):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size {hidden_size} must split into {num_heads} heads of even width")
        self.mask_index = vocab_size
        self.token_embed = nn.Embedding(vocab_size + 1, hidden_size)
        self.pos_embed = nn.Parameter(torch.randn(1, code_length, hidden_size) * 0.02)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, rotary_length=code_length if rotary else 0)
                                    for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, 1, vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # zero output layers: the untrained model predicts uniform logits
        init_adaln_weights(self, lambda: nn.init.normal_(self.token_embed.weight, std=0.02))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t`` (B, L) long in [0, V] (V = mask); ``t`` (B,) or scalar time in [0, 1] -> logits (B, L, V)."""
        check_codes(x_t, self.config.code_length, self.config.vocab_size + 1, what="noisy codes (V = mask)")
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0])
        if not self.config.time_conditioning:
            t = torch.zeros_like(t)
        c = self.t_embedder(t * 1000)  # (B, D)
        h = self.token_embed(x_t) + self.pos_embed  # (B, L, D)
        for block in self.blocks:
            h = block(h, c)  # (B, L, D)
        return self.final_layer(h, c).float()  # (B, L, V)

    def sample(self, num: int, seed=0, **options) -> torch.Tensor:
        """``num`` codes (num, L) long in [0, V); ``options`` as ``dlc.prior.sample_codes``."""
        from .sampling import sample_codes

        return sample_codes(self, num, seed=seed, **options)


# model_index.json records this import path: the public one, as before the package was split
CodePrior.__module__ = "dlc.prior"



# name -> (depth, width, heads). medium is SEDD-medium, the paper's prior; nano is the CPU default.
PRIOR_SIZES = {"medium": (24, 1024, 16), "small": (12, 768, 12), "tiny": (6, 256, 4), "nano": (4, 128, 4),
               "micro": (2, 64, 2)}  # micro: smoke tests


def create_prior(size: str, **kwargs) -> CodePrior:
    """``create_prior("medium", code_length=512, vocab_size=256)``."""
    if size not in PRIOR_SIZES:
        raise ConfigError(f"unknown prior size {size!r}; choose from {', '.join(PRIOR_SIZES)}")
    depth, width, heads = PRIOR_SIZES[size]
    return CodePrior(depth=depth, hidden_size=width, num_heads=heads, **kwargs)


def load_prior(path: str | Path) -> CodePrior:
    """A prior from a run directory (its ``model/``) or a ``save_pretrained`` folder."""
    return CodePrior.from_pretrained(path).eval()
