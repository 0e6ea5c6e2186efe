"""SEDD (Lou et al., score entropy discrete diffusion) as a code prior: the authors' DLC prior
(``lavoies/DLC_SEDD_L512``, SEDD-medium on L=512 codes of V=256), behind the same interface as
``CodePrior`` (``prior.sample(num, seed=..., steps=..., eta=..., window=..., indices=...)``).

    prior = SEDDPrior.from_pretrained("dlc512/prior")
    codes = prior.sample(16, seed=0)                   # (16, L) long in [0, V): 4,096 analytic steps

Diffusion: the absorbing graph (token V is the mask) with log-linear noise: total noise
sigma(t) = -log(1 - (1 - eps) t), eps = 1e-3, so a token is masked at time t with probability
(1 - eps) t.

Network (DDiT): token embedding (shared (V+1, D), or one table per position (L, V+1, D)) plus a
learned position table; the noise level enters as c = SiLU(MLP(sinusoid(sigma))) (cond_dim wide,
sigma itself, not a timestep); each block is adaLN-Zero (shift, scale, gate for attention then
MLP, from Linear(c)) around bias-free LayerNorms (weight only), a bias-free fused qkv
(rows ordered (q|k|v, head, channel)) with rotary embeddings on q and k in the rotate-half layout
(channel k pairs with k + head_dim/2), and a tanh-GELU MLP. The output (B, L, V+1) is the log
score log s(x)_j ~ log p_t(x with x_i = j) / p_t(x); with ``scale_by_sigma`` the network's output
is shifted by -log(e^sigma - 1) - log V, and the current token's log score is set to 0.

Sampler (SEDD's analytic, Tweedie tau-leaping, step for the absorbing graph): from t to
s = t - dt with d = sigma(t) - sigma(s), a masked position moves to token j with probability
s_j (e^d - 1) and stays masked with the rest, 1 - (e^d - 1) sum_j s_j (clipped at 0); a decoded
token stays. The grid is t_k = 1 - k (1 - 1e-5) / steps, then a last denoising step at t = 1e-5
that unmasks every remaining position with the x0 weights s_j (e^sigma - 1). The authors'
remasking corrector (``eta`` > 0, for t strictly inside ``window``): the step is lengthened to
s = t - dt - eta (1 - t), and each position's most likely outcome gives up eta (1 - p_mask) of its
probability to the mask (a decoded token is remasked with probability eta).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..codes import check_codes
from ..dit.model import TimestepEmbedder, modulate, rotary_tables
from ..errors import ConfigError
from ..progress import tqdm
from ..seeding import SampleRNG, Seed, categorical
from .sampling import check_options, sample_in_batches

SAMPLING_EPS = 1e-5  # the time of the last grid point (SEDD's sampler)


def total_noise(t: float, eps: float) -> float:
    """Log-linear sigma(t) = -log(1 - (1 - eps) t)."""
    return -math.log1p(-(1.0 - eps) * t)


def rotate_half_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the rotate-half layout: x (B, H, N, Dh), cos/sin (N, Dh/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class WeightOnlyLayerNorm(nn.Module):
    """LayerNorm with a learned scale and no bias (SEDD's)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), x.shape[-1:]).to(x.dtype) * self.weight


class DDiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cond_dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = WeightOnlyLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = WeightOnlyLayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # each (B, D)
        qkv = self.attn_qkv(modulate(self.norm1(x), shift1, scale1))  # (B, N, 3D)
        q, k, v = qkv.view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        q, k = rotate_half_rotary(q, cos, sin), rotate_half_rotary(k, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        x = x + gate1.unsqueeze(1) * self.attn_out(att)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class DDiTFinalLayer(nn.Module):
    def __init__(self, dim: int, out: int, cond_dim: int):
        super().__init__()
        self.norm_final = WeightOnlyLayerNorm(dim)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SEDDPrior(ModelMixin, ConfigMixin):
    """SEDD's DDiT score network over codes of length ``code_length`` L and ``vocab_size`` V (V = mask);
    see the module docstring. ``forward(x, sigma)`` -> log scores (B, L, V+1)."""

    @register_to_config
    def __init__(self, code_length: int = 32, vocab_size: int = 64, hidden_size: int = 256, cond_dim: int = 128,
                 depth: int = 6, num_heads: int = 4, mlp_ratio: int = 4, scale_by_sigma: bool = True,
                 shared_embedding: bool = True, noise_eps: float = 1e-3):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size {hidden_size} must split into {num_heads} heads of even width")
        tokens = vocab_size + 1
        shape = (tokens, hidden_size) if shared_embedding else (code_length, tokens, hidden_size)
        self.vocab_embed = nn.Parameter(torch.randn(shape) * hidden_size ** -0.5)
        self.pos_embed = nn.Parameter(torch.randn(code_length, hidden_size) * 0.02)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.blocks = nn.ModuleList(DDiTBlock(hidden_size, num_heads, cond_dim, mlp_ratio) for _ in range(depth))
        self.output_layer = DDiTFinalLayer(hidden_size, tokens, cond_dim)
        cos, sin = rotary_tables(code_length, hidden_size // num_heads)
        self.register_buffer("rotary_cos", cos, persistent=False)  # (L, Dh/2)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) in [0, V] -> (B, L, D)."""
        if self.config.shared_embedding:
            return self.vocab_embed[x]
        return self.vocab_embed[torch.arange(x.shape[1], device=x.device), x]  # per-position tables

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L) long in [0, V]; ``sigma`` (B,) total noise -> log scores (B, L, V+1), 0 at x."""
        check_codes(x, self.config.code_length, self.config.vocab_size + 1, what="noisy codes (V = mask)")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        c = F.silu(self.sigma_map(sigma))  # (B, cond_dim)
        h = self.embed(x) + self.pos_embed  # (B, L, D)
        for block in self.blocks:
            h = block(h, c, self.rotary_cos, self.rotary_sin)  # (B, L, D)
        out = self.output_layer(h, c).float()  # (B, L, V+1)
        if self.config.scale_by_sigma:
            esigm1 = torch.where(sigma < 0.5, torch.expm1(sigma), sigma.exp() - 1)
            out = out - esigm1.log()[:, None, None] - math.log(self.config.vocab_size)
        return out.scatter(-1, x[..., None], 0.0)

    def sample(self, num: int, seed: Seed = 0, steps: int = 4096, temperature: float = 1.0, eta: float = 0.0,
               window: tuple[float, float] = (0.3, 0.55), start_index: int = 0, batch_size: int | None = None,
               indices: Sequence[int] | None = None, progress: bool = False) -> torch.Tensor:
        """``num`` codes (num, L) long in [0, V); sample i depends only on (seed, start_index + i) or
        (seed, indices[i]). ``eta`` > 0: the remasking corrector inside ``window``. SEDD has no
        temperature (only 1.0 is accepted, so a pipeline's default passes through)."""
        return sample_sedd(self, num, seed, steps, temperature, eta, window, start_index, batch_size, indices, progress)


# model_index.json records this import path
SEDDPrior.__module__ = "dlc.prior"


# --------------------------------------------------------------------------------------------
# Sampling


def step_probs(score: torch.Tensor, x: torch.Tensor, dsigma: float, mask: int) -> torch.Tensor:
    """The analytic step's transition weights (B, L, V+1) from scores ``score`` = exp(log score)."""
    grow = math.expm1(dsigma)
    unmask = score[..., :mask] * grow  # (B, L, V)
    stay = (1 - unmask.sum(-1, keepdim=True)).clamp(min=0)  # (B, L, 1)
    from_mask = torch.cat([unmask, stay], -1)
    return torch.where((x == mask)[..., None], from_mask, F.one_hot(x, mask + 1).to(score.dtype))


def remasked(probs: torch.Tensor, eta: float) -> torch.Tensor:
    """The authors' corrector: the most likely outcome gives eta (1 - p_mask) to the mask."""
    share = eta * (1 - probs[..., -1:])  # (B, L, 1)
    noise = torch.zeros_like(probs).scatter(-1, probs.argmax(-1, keepdim=True), -1.0)
    noise[..., -1] = 1.0
    return probs + share * noise


@torch.no_grad()
def sample_sedd(model: SEDDPrior, num: int, seed: Seed = 0, steps: int = 4096, temperature: float = 1.0,
                eta: float = 0.0, window: tuple[float, float] = (0.3, 0.55), start_index: int = 0,
                batch_size: int | None = None, indices: Sequence[int] | None = None,
                progress: bool = False) -> torch.Tensor:
    check_options(steps, eta)
    if temperature != 1.0:
        raise ConfigError(f"the SEDD sampler has no temperature; got {temperature} (use 1.0)")
    return sample_in_batches(model, lambda rng: _sample_batch(model, rng, steps, eta, window, progress), num, seed,
                             start_index, batch_size, indices)


def _sample_batch(model: SEDDPrior, rng: SampleRNG, steps: int, eta: float, window: tuple[float, float],
                  progress: bool) -> torch.Tensor:
    L, V, eps = model.config.code_length, model.config.vocab_size, model.config.noise_eps
    rng.device = device = model.device
    x = torch.full((len(rng), L), V, dtype=torch.long, device=device)
    dt = (1 - SAMPLING_EPS) / steps
    times = torch.linspace(1, SAMPLING_EPS, steps + 1, dtype=torch.float64).tolist()
    for t in tqdm(times[:-1], desc="sampling codes (SEDD)", disable=not progress, leave=False):
        corrected = eta > 0 and window[0] < t < window[1]
        sigma = total_noise(t, eps)
        dsigma = sigma - total_noise(t - dt - (eta * (1 - t) if corrected else 0.0), eps)
        probs = step_probs(_scores(model, x, sigma), x, dsigma, V)
        if corrected:
            probs = remasked(probs, eta)
        x = categorical(probs.clamp(min=0), rng.rand(L))
    sigma = total_noise(times[-1], eps)  # the denoising step: every mask goes
    probs = step_probs(_scores(model, x, sigma), x, sigma, V)[..., :V]
    return categorical(probs, rng.rand(L))


def _scores(model: SEDDPrior, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return model(x, torch.full((len(x),), sigma, device=x.device)).exp()
