"""The authors' SEDD prior (a ``PyTorchModelHubMixin`` folder: ``config.json`` + weights) -> ``SEDDPrior``.

The network keeps SEDD's names except the token table (``vocab_embed.embedding`` (V+1, D), or
``vocab_embed.embedding_table`` (L, V+1, D) when not shared -> ``vocab_embed``); the stored
rotary frequencies (``rotary_emb.inv_freq``, head_dim/2 of them) give the head count and are
checked against 1/10000^(2k/head_dim). Sizes come from the weights (L, V, width, cond_dim, depth,
MLP ratio) and are checked against ``config.json`` where it states them; the config gives what the
weights cannot: ``scale_by_sigma`` and that the graph is absorbing and the noise log-linear (the
only kinds converted).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..prior import SEDDPrior
from .common import add_part, check_code_shape, checkpoint_state, count_indexed, load_checked, require

WHAT = "SEDD checkpoint"
EMBEDDINGS = ("vocab_embed.embedding", "vocab_embed.embedding_table")


def sedd_config(source: str | Path | dict) -> dict:
    """The SEDD config (``tokens``, ``graph``, ``noise``, ``model``) of a folder's ``config.json``
    (also when nested under ``config``, as some hub mixins save it), or the dict itself."""
    if isinstance(source, dict):
        config = source
    else:
        path = Path(source) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{source} has no config.json: give the SEDD folder (config.json + weights)")
        config = json.loads(path.read_text())
    config = config.get("config", config) if isinstance(config.get("config"), dict) else config
    for key in ("graph", "noise", "model"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{WHAT}: config.json has no {key!r} section; not a SEDD config")
    if config["graph"].get("type") != "absorb":
        raise CheckpointError(f"{WHAT}: graph {config['graph'].get('type')!r}; only the absorbing graph is converted")
    if config["noise"].get("type") != "loglinear":
        raise CheckpointError(f"{WHAT}: noise {config['noise'].get('type')!r}; only log-linear noise is converted")
    return config


def prior_config(state: dict, config: dict) -> dict:
    """``SEDDPrior``'s config, from the weights, checked against the SEDD config."""
    embed_key = next((k for k in EMBEDDINGS if k in state), EMBEDDINGS[0])
    embed = require(state, embed_key, WHAT)
    pos = require(state, "pos_embed", WHAT, ndim=2)
    length, width = pos.shape
    tokens = require(state, "output_layer.linear.weight", WHAT, ndim=2).shape[0]
    head_dim = 2 * require(state, "rotary_emb.inv_freq", WHAT, ndim=1).shape[0]
    ours = dict(code_length=length, vocab_size=tokens - 1, hidden_size=width,
                cond_dim=require(state, "sigma_map.mlp.0.weight", WHAT, ndim=2).shape[0],
                depth=count_indexed(state, "blocks."), num_heads=width // head_dim,
                mlp_ratio=require(state, "blocks.0.mlp.0.weight", WHAT, ndim=2).shape[0] // width,
                scale_by_sigma=bool(config["model"].get("scale_by_sigma", True)),
                shared_embedding=embed_key == EMBEDDINGS[0])
    model = config["model"]
    stated = {"code_length": model.get("length"), "vocab_size": config.get("tokens"), "hidden_size":
              model.get("hidden_size"), "cond_dim": model.get("cond_dim"), "depth": model.get("n_blocks"),
              "num_heads": model.get("n_heads")}
    for name, value in stated.items():
        if value is not None and value != ours[name]:
            raise CheckpointError(f"{WHAT}: config.json says {name} = {value}, the weights have {ours[name]}")
    if embed.shape[-2:] != (tokens, width):
        raise CheckpointError(f"{WHAT}: {embed_key!r} has shape {tuple(embed.shape)}; expected (..., {tokens}, {width})")
    return ours


def rename_key(key: str) -> str:
    return "vocab_embed" if key in EMBEDDINGS else key


def convert_prior(source: str | Path, config: dict | None = None) -> SEDDPrior:
    """The authors' SEDD folder (or a state dict ``source`` with its ``config``) -> SEDDPrior
    (eval mode), every key and shape checked."""
    config = sedd_config(config if config is not None else source)
    state = checkpoint_state(source, WHAT)
    model = SEDDPrior(**prior_config(state, config))
    head_dim = model.config.hidden_size // model.config.num_heads
    expected = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    if not torch.allclose(state["rotary_emb.inv_freq"].float(), expected, rtol=1e-5):
        raise CheckpointError(f"{WHAT}: rotary_emb.inv_freq is not 1/10000^(2k/{head_dim}); another rotary base")
    tensors = {k: v for k, v in state.items() if k != "rotary_emb.inv_freq"}  # consumed by the check above
    return load_checked(model, tensors, WHAT, rename=rename_key).eval()


def add_prior(source: str | Path, out_dir: str | Path, config: dict | None = None) -> SEDDPrior:
    """Convert the SEDD prior into the pipeline folder ``out_dir`` (its codes must be the DiT's)."""
    prior = convert_prior(source, config)
    check_code_shape(out_dir, prior.config.code_length, prior.config.vocab_size, "prior")
    add_part(out_dir, "prior", prior, ("dlc.prior", "SEDDPrior"))
    return prior
