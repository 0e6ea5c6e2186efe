"""A DiT run's config (the ``dlc train dit`` settings, saved as the run's ``config.yaml``) and
loading what a finished run trained. Inference reads these; nothing here trains.

The conditioning is chosen by ``condition.kind``, so the paper's baselines train with the same code:
- ``codes``: stored codes (``.npy`` uint16 (N, L), row i = image i), e.g. from ``dlc encode``;
- ``encoder``: codes computed on the fly by a frozen DLCEncoder (flips stay consistent: the
  flipped image is encoded);
- ``class``: the label as a one-token code (L = 1, V = classes);
- ``random``: a fixed random code per image (a stand-in for a perfect encoder);
- ``none``: unconditional (L = 0);
- ``shards``: precomputed training data, read without re-encoding: webdataset shards
  (``data.dataset=webdataset:PATTERN``) from ``dlc encode --shards [--latents VAE] [--hflip]`` with
  ``code.npy`` and ``latent.npy`` (or a png) per sample; with ``hflip=true`` each sample is the
  flipped pair (``code_flip.npy`` with ``latent_flip.npy``) with probability 1/2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import NonNegativeFloat, NonNegativeInt, PositiveInt, Probability, TrainConfig, load_config
from ..data import DataConfig
from ..errors import CheckpointError
from ..runs import RunDir
from .diffusion import get_objective
from .latents import make_latent_space
from .model import CODE_INITS, DIT_MODELS, DiT


@dataclass
class DiTModelConfig:
    """The DiT's architecture: a named size, optionally resized (``model.depth=2 model.width=64
    model.heads=2`` runs a preset's DiT-XL/2, patch and code path unchanged, at a size a CPU trains)."""

    arch: Literal[tuple(DIT_MODELS)] = "DiT-T/4"  # a name from dlc.dit.DIT_MODELS
    depth: PositiveInt | None = None  # blocks; None: the arch's
    width: PositiveInt | None = None  # hidden size; None: the arch's
    heads: PositiveInt | None = None  # attention heads (must divide width); None: the arch's
    code_init: Literal[CODE_INITS] = "dit"  # the code table's init: dit N(0, 0.02); authors N(0, 1/width), one null
    code_tokens: bool = False  # also give the code's L embeddings to the DiT as sequence tokens (in-context)


@dataclass
class DiTDataConfig(DataConfig):
    """The ``data:`` section; ``size`` is the image size (also with latent shards: the VAE's input)."""

    shuffle_buffer: NonNegativeInt = 1000  # condition.kind=shards: samples are shuffled in a buffer of this size


@dataclass
class ConditionConfig:
    kind: Literal["codes", "encoder", "class", "random", "none", "shards"] = "codes"
    codes: str | None = None  # kind=codes: the .npy for the training split
    # kind=codes: V, the encoder's vocabulary (default: largest value + 1); kind=shards: default from
    # the shards' encode.json
    vocab_size: PositiveInt | None = None
    encoder: str | None = None  # kind=encoder: an encoder run or model directory
    code_length: PositiveInt = 32  # kind=random
    random_vocab: PositiveInt = 64  # kind=random
    dropout: Probability = 0.1  # whole-code dropout, for classifier-free guidance


@dataclass
class SampleConfig:
    sampler: str | None = None  # None: the objective's default (flow: euler, ddpm: dpm)
    steps: PositiveInt = 50
    guidance_scale: NonNegativeFloat = 1.0
    guidance_channels: PositiveInt | None = None  # None: all channels; 3 as in DiT's paper
    guidance_interval: tuple[Probability, Probability] = (0.0, 1.0)  # noise levels (0 clean, 1 noise) guided
    num: PositiveInt = 16


@dataclass
class DiTRunConfig:
    run_dir: str = "runs/dit"
    data: DiTDataConfig = field(default_factory=DiTDataConfig)
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    objective: Literal["flow", "ddpm"] = "flow"
    flow_time: Literal["uniform", "logit_normal"] = "uniform"  # objective=flow: how training times are drawn
    latent: str = "pixel"  # or a diffusers VAE name / folder (with latent shards: the VAE that wrote them)
    hflip: bool = False  # random horizontal flips (kind=shards: the stored flipped pairs)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_dit_run(run_dir: str | Path) -> tuple[DiT, object, object]:
    """(EMA DiT in eval mode, objective, latent space) of a finished DiT run directory."""
    run = RunDir(run_dir)
    if not (run.model_dir / "config.json").exists():
        raise CheckpointError(f"{run.model_dir} has no trained DiT (train one with `dlc train dit`)")
    config = load_config(DiTRunConfig, run.config_path)
    model = DiT.from_pretrained(run.model_dir).eval()
    space = make_latent_space(config.latent, config.data.size, 3 if config.latent != "pixel" else model.config.in_channels)
    return model, get_objective(config.objective), space
