"""The authors' DiTSEM (facebookresearch DiT blocks with the SEM code embedder) -> our ``DiT``.

Their model and ours compute the same function; only the names differ:

    x_embedder.proj.*              -> patch_embed.*            (Conv2d, kernel = stride = patch)
    t_embedder.mlp.{0,2}.*         -> t_embedder.mlp.{0,2}.*   (256 sinusoidal frequencies, cos first)
    sem_embedder.embedding_table   -> code_embedder.table      (L, V+1, width), index V the null code
    blocks.i.attn.qkv.*            -> blocks.i.qkv.*           (fused, rows ordered (q|k|v, head, channel))
    blocks.i.attn.proj.*           -> blocks.i.proj.*
    blocks.i.mlp.fc{1,2}.*         -> blocks.i.mlp.{0,2}.*     (tanh-GELU)
    blocks.i.adaLN_modulation.1.*  -> blocks.i.modulation.1.*  (shift, scale, gate of attention, then of the MLP)
    final_layer.linear.*           -> final_layer.linear.*
    final_layer.adaLN_modulation.1.* -> final_layer.modulation.1.*  (shift, scale)
    pos_embed                      -> checked against the fixed sine-cosine table (ours is not stored)

Their position table puts the column's sines and cosines in the first half of the channels; it is
read from the checkpoint and the converted model is built with ``pos_embed_column_first`` to
match. Sizes (width, depth, patch, channels, grid, MLP ratio, learned variance, L, V) are read from
the weights; the number of heads is not in the weights: it is DiT's for the width (XL: 16) unless
given. The model was trained with DDPM (1000 linear-beta steps, learned variance): the pipeline's
objective is ``ddpm`` and its default sampler the paper's (DDPM with the learned variance).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..dit.diffusion import get_objective
from ..dit.model import DiT, sincos_pos_embed
from ..errors import CheckpointError
from .common import checkpoint_state, count_indexed, load_checked, require

WHAT = "DiT checkpoint"
HEADS_BY_WIDTH = {1152: 16, 1024: 16, 768: 12, 384: 6}  # DiT-XL, -L, -B, -S
RENAMES = [
    (r"^x_embedder\.proj\.", "patch_embed."),
    (r"^sem_embedder\.embedding_table$", "code_embedder.table"),
    (r"\.attn\.qkv\.", ".qkv."),
    (r"\.attn\.proj\.", ".proj."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.2."),
    (r"\.adaLN_modulation\.", ".modulation."),
]


def rename_key(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def dit_state_dict(source: str | Path | dict, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The DiTSEM state dict in a checkpoint: a fast-DiT training ``.pt`` (``model``/``ema``;
    ``weights`` picks one), a safetensors/bin state dict or a folder (a diffusers pipeline's
    ``transformer/`` too), with any of the prefixes ``module.``, ``_orig_mod.``, ``model.``."""
    return checkpoint_state(source, WHAT, weights, containers=("model", "ema"), subfolders=("transformer",))


def dit_config(state: dict[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """Our DiT's config, read from the DiTSEM weights."""
    patch = require(state, "x_embedder.proj.weight", WHAT, ndim=4)
    width, in_channels, p, _ = patch.shape
    table = require(state, "sem_embedder.embedding_table", WHAT, ndim=3)
    pos = require(state, "pos_embed", WHAT, ndim=3)
    grid = round(pos.shape[1] ** 0.5)
    if grid * grid != pos.shape[1]:
        raise CheckpointError(f"{WHAT}: pos_embed has {pos.shape[1]} positions, not a square grid")
    out = require(state, "final_layer.linear.weight", WHAT, ndim=2).shape[0] // (p * p)
    if out not in (in_channels, 2 * in_channels):
        raise CheckpointError(f"{WHAT}: the final layer makes {out} channels per pixel; expected {in_channels} or "
                              f"{2 * in_channels} (with learned variance)")
    heads = num_heads or HEADS_BY_WIDTH.get(width)
    if heads is None or width % heads:
        raise CheckpointError(f"{WHAT}: width {width} is not a DiT size whose head count is known; give num_heads "
                              "(a divisor of the width)")
    mlp = require(state, "blocks.0.mlp.fc1.weight", WHAT, ndim=2).shape[0]
    return dict(image_size=grid * p, in_channels=in_channels, patch_size=p, hidden_size=width,
                depth=count_indexed(state, "blocks."), num_heads=heads, mlp_ratio=mlp / width,
                code_length=table.shape[0], vocab_size=table.shape[1] - 1, learn_sigma=out == 2 * in_channels)


def position_layout(pos: torch.Tensor, width: int, grid: int) -> bool:
    """``pos_embed_column_first`` for the stored table: which of the two sine-cosine layouts it is."""
    for column_first in (True, False):
        if torch.allclose(pos[0].float(), sincos_pos_embed(width, grid, column_first), atol=1e-4):
            return column_first
    raise CheckpointError(f"{WHAT}: pos_embed is not a fixed sine-cosine table of width {width} on a {grid}x{grid} "
                          "grid; learned position embeddings are not supported")


def convert_dit(source: str | Path | dict, weights: str = "ema", num_heads: int | None = None) -> DiT:
    """The authors' DiTSEM checkpoint -> our DiT (eval mode), every key and shape checked."""
    state = dit_state_dict(source, weights)
    config = dit_config(state, num_heads)
    grid = config["image_size"] // config["patch_size"]
    column_first = position_layout(state["pos_embed"], config["hidden_size"], grid)
    model = DiT(**config, pos_embed_column_first=column_first)
    tensors = {k: v for k, v in state.items() if k != "pos_embed"}  # pos_embed: consumed by the check above
    return load_checked(model, tensors, WHAT, rename=rename_key).eval()


def dit_pipeline(source: str | Path | dict, out_dir: str | Path, vae=None, weights: str = "ema",
                 num_heads: int | None = None, sampler: str = "ddpm"):
    """Convert the DiT and write a pipeline folder (``DLCPipeline.from_pretrained(out_dir)``) with
    the VAE (a diffusers ``AutoencoderKL``, a folder or hub name of one; default: the source
    pipeline folder's ``vae/``) and a DDPM scheduler (``sampler``: ddpm, ddim or dpm)."""
    from ..pipeline import DLCPipeline

    dit = convert_dit(source, weights, num_heads)
    vae = load_vae(vae, source, dit.config.in_channels)
    paper = {"dit": {"sampler": sampler, "steps": 250, "guidance_scale": 1.4},  # the paper's sampling settings
             "prior": {"steps": 4096, "eta": 0.01, "window": [0.3, 0.55]}}
    pipe = DLCPipeline(dit=dit, scheduler=get_objective("ddpm").make_scheduler(sampler), vae=vae, objective="ddpm",
                       sampling=paper)
    pipe.save_pretrained(out_dir)
    return pipe


def load_vae(vae, source, latent_channels: int):
    """The VAE the DiT's latents decode with: given, or the source pipeline's ``vae/``."""
    if vae is None and not isinstance(source, dict) and (Path(source) / "vae" / "config.json").is_file():
        vae = Path(source) / "vae"
    if isinstance(vae, (str, Path)):
        from diffusers import AutoencoderKL

        try:
            vae = AutoencoderKL.from_pretrained(vae)
        except OSError as e:
            raise CheckpointError(f"cannot load the VAE {vae}: {e} (download stabilityai/sd-vae-ft-ema, the "
                                  "authors' VAE)") from e
    if vae is None:
        if latent_channels != 3:
            raise CheckpointError(f"the DiT works on {latent_channels}-channel latents: give the VAE that made them "
                                  "(the authors': stabilityai/sd-vae-ft-ema)")
        return None
    if vae.config.latent_channels != latent_channels:
        raise CheckpointError(f"the VAE has {vae.config.latent_channels} latent channels; the DiT reads {latent_channels}")
    return vae.eval()
