"""Training the code-conditioned DiT (``dlc train dit``, ``python train/dit.py``).

The conditioning is chosen by ``condition.kind``, so the paper's baselines train with the same code:
- ``codes``: stored codes (``.npy`` uint16 (N, L), row i = image i), e.g. from ``dlc encode``;
- ``encoder``: codes computed on the fly by a frozen DLCEncoder (flips stay consistent: the
  flipped image is encoded);
- ``class``: the label as a one-token code (L = 1, V = classes);
- ``random``: a fixed random code per image (a stand-in for a perfect encoder);
- ``none``: unconditional (L = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .codes import load_codes
from .config import load_config
from .data import DataConfig, to_float, to_uint8
from .diffusion import get_objective, sample
from .dit import DiT, create_dit
from .errors import CheckpointError, ConfigError
from .imageio import save_grid
from .latents import make_latent_space
from .runs import RunDir
from .training import TrainConfig, fit, seed_everything


@dataclass
class DiTModelConfig:
    arch: str = "DiT-T/4"  # a name from dlc.dit.DIT_MODELS


@dataclass
class ConditionConfig:
    kind: Literal["codes", "encoder", "class", "random", "none"] = "codes"
    codes: str | None = None  # kind=codes: the .npy for the training split
    vocab_size: int | None = None  # kind=codes: V, the encoder's vocabulary (default: largest value + 1)
    encoder: str | None = None  # kind=encoder: an encoder run or model directory
    code_length: int = 32  # kind=random
    random_vocab: int = 64  # kind=random
    dropout: float = 0.1  # whole-code dropout, for classifier-free guidance


@dataclass
class SampleConfig:
    sampler: str | None = None  # None: the objective's default (flow: euler, ddpm: dpm)
    steps: int = 50
    guidance_scale: float = 1.0
    guidance_channels: int | None = None  # None: all channels; 3 as in DiT's paper
    num: int = 16


@dataclass
class DiTRunConfig:
    run_dir: str = "runs/dit"
    data: DataConfig = field(default_factory=DataConfig)
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    objective: Literal["flow", "ddpm"] = "flow"
    latent: str = "pixel"  # or a diffusers VAE name / folder
    hflip: bool = False
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CONFIG = DiTRunConfig


class CodedImages(torch.utils.data.Dataset):
    """Images with their code (or None): the DiT's training items."""

    def __init__(self, images, codes: torch.Tensor | None):
        self.images, self.codes = images, codes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        item = {"image": self.images[i]["image"]}
        if self.codes is not None:
            item["code"] = self.codes[i]
        return item


def conditioning(config: DiTRunConfig, dataset) -> tuple[torch.Tensor | None, int, int, object]:
    """(per-image codes or None, L, V, frozen encoder or None) for ``config.condition``."""
    cond = config.condition
    if cond.kind == "codes":
        if not cond.codes:
            raise ConfigError("condition.kind=codes needs condition.codes=PATH to a .npy written by `dlc encode`")
        codes = load_codes(cond.codes, rows=len(dataset))
        vocab = cond.vocab_size or int(codes.max()) + 1
        load_codes(cond.codes, vocab_size=vocab)  # values must fit the declared V
        return codes, codes.shape[1], vocab, None
    if cond.kind == "encoder":
        from .encoder import DLCEncoder

        if not cond.encoder:
            raise ConfigError("condition.kind=encoder needs condition.encoder=DIR (an encoder run or model folder)")
        encoder = DLCEncoder.from_pretrained(_model_dir(cond.encoder)).eval().requires_grad_(False)
        return None, encoder.config.code_length, encoder.config.vocab_size, encoder
    if cond.kind == "class":
        if dataset.labels is None:
            raise ConfigError(f"condition.kind=class needs labels; {config.data.dataset} has none")
        return torch.as_tensor(dataset.labels).view(-1, 1), 1, dataset.num_classes, None
    if cond.kind == "random":
        g = torch.Generator().manual_seed(config.train.seed + 12345)
        codes = torch.randint(0, cond.random_vocab, (len(dataset), cond.code_length), generator=g)
        return codes, cond.code_length, cond.random_vocab, None
    return None, 0, 1, None


def _model_dir(path) -> Path:
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").exists() else path


def load_dit_run(run_dir) -> tuple[DiT, object, object]:
    """(EMA DiT in eval mode, objective, latent space) of a finished DiT run directory."""
    run = RunDir(run_dir)
    if not (run.model_dir / "config.json").exists():
        raise CheckpointError(f"{run.model_dir} has no trained DiT (train one with `dlc train dit`)")
    config = load_config(DiTRunConfig, run.config_path)
    model = DiT.from_pretrained(run.model_dir).eval()
    space = make_latent_space(config.latent, config.data.size, 3 if config.latent != "pixel" else model.config.in_channels)
    return model, get_objective(config.objective), space


def build(config: DiTRunConfig):
    """(model, objective, latent space, dataset, frozen encoder) for a config."""
    dataset = config.data.load("train")
    codes, L, V, encoder = conditioning(config, dataset)
    if config.hflip and config.condition.kind in ("codes", "random"):
        raise ConfigError("hflip=true with stored codes would pair flipped images with the codes of unflipped "
                          "ones; use condition.kind=encoder (it encodes the flipped image) or hflip=false")
    objective = get_objective(config.objective)
    image = dataset[0]["image"]
    space = make_latent_space(config.latent, image.shape[-1], image.shape[0])
    model = create_dit(config.model.arch, image_size=space.size, in_channels=space.channels,
                       code_length=L, vocab_size=V, learn_sigma=objective.learn_sigma)
    return model, objective, space, CodedImages(dataset, codes), encoder


def train(config: DiTRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    model, objective, space, dataset, encoder = build(config)
    run = RunDir(config.run_dir)
    dropout = config.condition.dropout

    def loss_fn(net, batch, info):
        images = to_float(batch["image"])
        if config.hflip:
            flip = torch.rand(len(images), device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        codes = batch.get("code")
        if encoder is not None:
            codes = encoder.to(images.device).encode(images)
        drop = torch.rand(len(images), device=images.device) < dropout if codes is not None else None
        return objective.loss(net, space.encode(images), codes, drop)

    reference = torch.stack([dataset[i]["image"] for i in range(min(config.sample.num, len(dataset)))])
    ref_codes = torch.stack([dataset[i]["code"] for i in range(len(reference))]) if dataset.codes is not None else None

    def sample_fn(ema_model, step, run_dir):
        codes = ref_codes
        if encoder is not None:
            codes = encoder.encode(to_float(reference))
        x = sample(ema_model, objective, codes, num=len(reference), seed=0, steps=config.sample.steps,
                   sampler=config.sample.sampler, guidance_scale=config.sample.guidance_scale)
        generated = to_uint8(space.decode(x)).cpu()
        save_grid(torch.cat([reference, generated]), run_dir.samples / f"step-{step:07d}.png",
                  nrow=len(reference), scale=2)

    fit(run, config.train, model, dataset, loss_fn, config=config, sample_fn=sample_fn, desc="train dit")
    return run
