"""A Diffusion Transformer conditioned on a Discrete Latent Code.

DiT (Peebles & Xie) with adaLN-Zero blocks. The conditioning is the paper's: an embedding table of
shape (L, V+1, width), one V-entry table per code position plus a null entry (index V); the L
looked-up vectors are averaged and added to the timestep embedding. A soft code (a distribution
over V per position) averages the table rows with those weights. Class-conditional (L=1,
V=classes) and unconditional (L=0) models are the same class with other settings.

``code_tokens=True`` also gives the L looked-up vectors to the transformer as extra sequence tokens
(DiT's "in-context" conditioning): every patch can attend to every code token, where the average
squeezes the L tokens into one vector. The tokens are dropped before the output layer.

    model = create_dit("DiT-T/4", image_size=32, code_length=32, vocab_size=64)
    out = model(x, t, codes)            # codes: (B, L) long, (B, L, V) float, or None (null)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from ..errors import CodeError, ConfigError
from ..saved import CheckedLoading


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed(dim: int, grid: int, column_first: bool = False) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim), patches in row-major order: the
    first half of the channels encodes the patch's row, the second its column (``column_first``:
    the other way round, as DiT's and MAE's reference code)."""
    coords = torch.arange(grid, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))

    def embed(pos):
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    first, second = (xx, yy) if column_first else (yy, xx)
    return torch.cat([embed(first), embed(second)], dim=1)


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (length, head_dim/2) of rotary position embeddings."""
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2k, 2k+1) of x (B, H, N, Dh) by the position's angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).to(x.dtype)


def init_adaln_weights(model: nn.Module, init_inputs: Callable[[], None]) -> None:
    """DiT's initialisation of an adaLN-Zero transformer (``t_embedder``, ``blocks``, ``final_layer``):
    Xavier linears, then ``init_inputs()`` (the model's input embeddings), N(0, 0.02) timestep MLP,
    and zero modulation and output layers, so every block starts as the identity and the output at 0."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    init_inputs()
    for layer in model.t_embedder.mlp[::2]:
        nn.init.normal_(layer.weight, std=0.02)
    for block in [*model.blocks, model.final_layer]:
        nn.init.zeros_(block.modulation[-1].weight)
        nn.init.zeros_(block.modulation[-1].bias)
    nn.init.zeros_(model.final_layer.linear.weight)
    nn.init.zeros_(model.final_layer.linear.bias)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # DiT's sinusoidal embedding of (possibly fractional) timesteps in [0, 1000): cosines first
        return self.mlp(get_timestep_embedding(t, self.freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0))


CODE_INITS = ("dit", "authors")


class CodeEmbedder(nn.Module):
    """The (L, V+1, D) table: per-position embeddings plus a null entry (the DiT averages them).

    ``init``: ``"dit"`` draws every entry from N(0, 0.02^2) (DiT's class table), each position's null
    entry on its own; ``"authors"`` is the paper's code (their ``SEMEmbedder``): N(0, 1/D) and ONE null
    vector copied to every position, so the averaged null starts at that vector's scale rather than
    1/sqrt(L) of it. The copies are separate parameters and train apart."""

    def __init__(self, code_length: int, vocab_size: int, hidden: int, init: str = "dit"):
        super().__init__()
        if init not in CODE_INITS:
            raise ConfigError(f"unknown code table init {init!r}; choose from {', '.join(CODE_INITS)}")
        self.code_length, self.vocab_size = code_length, vocab_size
        if init == "authors":
            scale = hidden ** -0.5
            null = (torch.randn(1, 1, hidden) * scale).expand(code_length, 1, hidden)
            table = torch.cat([torch.randn(code_length, vocab_size, hidden) * scale, null], 1)
        else:
            table = torch.randn(code_length, vocab_size + 1, hidden) * 0.02
        self.table = nn.Parameter(table.contiguous())

    def null(self, batch: int) -> torch.Tensor:
        return self.table[:, self.vocab_size].expand(batch, -1, -1)  # (B, L, D)

    def forward(self, codes: torch.Tensor | None, drop: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The looked-up vectors (B, L, D): position l's table row of code value ``codes[:, l]`` (a soft
        code: the rows averaged with its weights); null rows where ``codes`` is None or ``drop``."""
        if codes is None:
            return self.null(batch)
        if codes.is_floating_point():  # soft codes (B, L, V)
            emb = torch.einsum("blv,lvd->bld", codes.to(self.table.dtype), self.table[:, : self.vocab_size])
        else:
            offsets = torch.arange(self.code_length, device=codes.device) * (self.vocab_size + 1)
            emb = F.embedding(codes + offsets, self.table.reshape(-1, self.table.shape[-1]))  # (B, L, D)
        if drop is not None:
            emb = torch.where(drop[:, None, None], self.null(batch), emb)
        return emb

    def check(self, codes: torch.Tensor | None, batch: int) -> None:
        """Raise CodeError for codes that do not fit this table."""
        if codes is None:
            return
        L, V = self.code_length, self.vocab_size
        if codes.is_floating_point():
            if codes.shape != (batch, L, V):
                raise CodeError(f"soft codes must have shape (batch, {L}, {V}); got {tuple(codes.shape)}")
            return
        if codes.shape != (batch, L):
            raise CodeError(f"codes must have shape (batch, {L}) = (batch, code length); got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= V):
            raise CodeError(f"code values must be in [0, {V}); got values from {int(codes.min())} to {int(codes.max())}")


class DiTBlock(nn.Module):
    """Self-attention and MLP, each modulated (shift, scale, gate) by the conditioning: adaLN-Zero.

    ``rotary_length`` > 0 rotates queries and keys by their position (rotary embeddings, for
    sequences of up to that length: the code prior's); attention is never masked (bidirectional)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, rotary_length: int = 0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.rotary = rotary_length > 0
        if self.rotary:
            cos, sin = rotary_tables(rotary_length, hidden // heads)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        if self.rotary:
            q, k = apply_rotary(q, self.cos[:N], self.sin[:N]), apply_rotary(k, self.cos[:N], self.sin[:N])
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)  # each (B, D)
        x = x + gate1.unsqueeze(1) * self.attention(modulate(self.norm1(x), shift1, scale1))  # (B, N, D)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(CheckedLoading, ModelMixin, ConfigMixin):
    """DiT over images (pixels or latents) of ``image_size`` with ``in_channels`` channels.

    ``code_length`` L and ``vocab_size`` V size the code table; L = 0 makes an unconditional model.
    ``learn_sigma`` doubles the output channels (epsilon and the variance interpolation, as DiT).
    ``pos_embed_column_first``: the position embedding's channel order of DiT's reference code (see
    ``sincos_pos_embed``), for weights trained there (``dlc convert dit``). ``code_tokens``: the code's
    L vectors also join the sequence (see the module docstring). ``code_init``: how the code table
    starts (``CodeEmbedder``; only the initialisation, which saved weights replace).
    """

    @register_to_config
    def __init__(self, image_size: int = 32, in_channels: int = 3, patch_size: int = 4, hidden_size: int = 256,
                 depth: int = 6, num_heads: int = 4, mlp_ratio: float = 4.0, code_length: int = 32,
                 vocab_size: int = 64, learn_sigma: bool = False, pos_embed_column_first: bool = False,
                 code_tokens: bool = False, code_init: str = "dit"):
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed(hidden_size, self.grid, pos_embed_column_first)[None],
                             persistent=False)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.code_embedder = CodeEmbedder(code_length, vocab_size, hidden_size, code_init) if code_length else None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def patch_embedding():
            w = self.patch_embed.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.patch_embed.bias)

        init_adaln_weights(self, patch_embedding)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p, g, c = self.config.patch_size, self.grid, self.out_channels
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, C, H, W); ``t`` (B,) timesteps in [0, 1000); ``codes`` hard (B, L), soft (B, L, V)
        or None (all null); ``drop`` (B,) bool replaces a sample's code by the null code."""
        B = x.shape[0]
        t = t.expand(B) if t.ndim == 0 or t.shape[0] == 1 else t  # (B,)
        c = self.t_embedder(t)  # (B, D)
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T, D), T = (H / patch)^2
        h = (patches + self.pos_embed).to(patches.dtype)  # (B, T, D); under autocast the stream stays bf16
        T = h.shape[1]
        if self.code_embedder is not None:
            self.code_embedder.check(codes, B)
            tokens = self.code_embedder(codes, drop, B)  # (B, L, D)
            c = c + tokens.mean(1)  # (B, D): the averaged code embedding
            if self.config.code_tokens:
                h = torch.cat([h, tokens.to(h.dtype)], dim=1)  # (B, T + L, D): in-context code tokens
        for block in self.blocks:
            h = block(h, c)  # (B, T [+ L], D)
        return self.unpatchify(self.final_layer(h[:, :T], c))  # (B, C_out, H, W)


# model_index.json records this import path: the public one (diffusers would read dlc.dit.model as its own `dit`)
DiT.__module__ = "dlc.dit"



# name -> (depth, width, heads); T (tiny) and N (nano) are CPU sizes
SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6),
         "T": (6, 256, 4), "N": (4, 192, 3)}
DIT_MODELS = {
    f"DiT-{size}/{patch}": partial(DiT, depth=d, hidden_size=w, num_heads=h, patch_size=patch)
    for size, (d, w, h) in SIZES.items()
    for patch in (1, 2, 4, 8)  # patch 1: small latents (8x8 from a 4x-downsampling VAE)
}


def create_dit(name: str, **kwargs) -> DiT:
    """``create_dit("DiT-XL/2", image_size=32, in_channels=4, code_length=512, vocab_size=256)``."""
    if name not in DIT_MODELS:
        raise ConfigError(f"unknown DiT {name!r}; choose from {', '.join(DIT_MODELS)}")
    return DIT_MODELS[name](**kwargs)
