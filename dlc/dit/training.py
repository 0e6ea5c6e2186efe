"""Training the code-conditioned DiT (``dlc train dit``, ``python train/dit.py``); the conditioning
kinds are described in ``dlc.dit.config``."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..codes import code_decoder, resolve_codes
from ..codes.sources import shard_codes_shape
from ..data import to_float, to_uint8
from ..data.images import decode_image
from ..data.shards import IMAGE_KEYS, ShardDataset, describe_source, npy_entry, read_manifest
from ..errors import ConfigError, DataError
from ..imageio import save_grid
from ..runs import RunDir
from ..training import fit, seed_everything
from .config import DiTRunConfig
from .diffusion import get_objective, sample
from .latents import make_latent_space
from .model import DIT_MODELS, DiT, create_dit


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


def shard_decoder(code_length: int | None, vocab_size: int | None, size: int | None):
    """``decode(raw, flip)`` of the DiT's training shards (``dlc encode --shards``): ``code`` (L,)
    long with ``latent`` (C, h, w) float when the shards hold ``latent.npy``, else ``image`` (uint8,
    from the png). A flipped sample is the stored pair (``code_flip`` with ``latent_flip``, or the
    mirrored image with ``code_flip``), never a flipped latent with the code of the unflipped image."""
    code_of = code_decoder(code_length, vocab_size)

    def decode(raw: dict, flip: bool = False) -> dict:
        item = code_of(raw, flip)
        if "latent.npy" in raw:
            item["latent"] = torch.from_numpy(npy_entry(raw, "latent_flip.npy" if flip else "latent.npy")
                                              .astype(np.float32))
            return item
        image_key = next((k for k in IMAGE_KEYS if k in raw), None)
        if image_key is None:
            raise DataError(f"shard sample {raw.get('__key__')} has neither latent.npy nor an image "
                            f"({', '.join(IMAGE_KEYS)})")
        image = decode_image(raw[image_key], size)
        item["image"] = image.flip(-1) if flip else image
        return item

    return decode


def shard_data(config: DiTRunConfig) -> tuple[ShardDataset, dict]:
    """The training stream of ``condition.kind=shards`` and what its first sample says: code
    length, vocabulary, whether it holds latents (their shape) and flipped pairs."""
    data, cond = config.data, config.condition
    if not data.dataset.startswith("webdataset:"):
        raise ConfigError("condition.kind=shards reads webdataset shards: set data.dataset=webdataset:PATTERN "
                          "(written by `dlc encode --shards DIR [--latents VAE] [--hflip]`)")
    pattern = data.dataset.split(":", 1)[1]
    code_length, vocab_size, first = shard_codes_shape(pattern, vocab_size=cond.vocab_size)
    has_latent = "latent.npy" in first
    if config.hflip:
        missing = [n for n in ("code_flip.npy", "latent_flip.npy" if has_latent else None) if n and n not in first]
        if missing:
            raise ConfigError(f"hflip=true but the shards have no {' or '.join(missing)}: re-encode them with "
                              "`dlc encode --shards ... --hflip` (a flipped image needs the code of the flipped "
                              "image), or set hflip=false")
    decode = shard_decoder(code_length, vocab_size, data.size)
    dataset = ShardDataset(pattern, data.size, repeat=True, shuffle_buffer=max(1, data.shuffle_buffer),
                           seed=config.train.seed, hflip=config.hflip, decode=decode)
    item = decode(first)
    info = {"code_length": code_length, "vocab_size": vocab_size,
            "manifest": read_manifest(dataset.urls[0]) or {},
            "latent_shape": tuple(item["latent"].shape) if has_latent else None,
            "image_shape": None if has_latent else tuple(item["image"].shape)}
    return dataset, info


def code_spec(config: DiTRunConfig) -> str:
    """The ``dlc.codes`` source of ``condition:``."""
    cond = config.condition
    if cond.kind == "codes":
        if not cond.codes:
            raise ConfigError("condition.kind=codes needs condition.codes=PATH to a .npy written by `dlc encode`")
        return cond.codes
    if cond.kind == "encoder":
        if not cond.encoder:
            raise ConfigError("condition.kind=encoder needs condition.encoder=DIR (an encoder run or model folder)")
        return f"encoder:{cond.encoder}"
    return {"class": "class", "random": "synthetic:random", "none": "none"}[cond.kind]


def create_model(config: DiTRunConfig, in_channels: int, image_size: int, code_length: int,
                 vocab_size: int) -> DiT:
    """The DiT of ``config.model`` for inputs (in_channels, image_size, image_size) and codes (L, V);
    ``model.depth``/``width``/``heads`` resize the named arch."""
    m = config.model
    named = DIT_MODELS[m.arch].keywords
    width, heads = m.width or named["hidden_size"], m.heads or named["num_heads"]
    if width % heads:
        raise ConfigError(f"model.width {width} must be a multiple of model.heads {heads}")
    return create_dit(m.arch, image_size=image_size, in_channels=in_channels, code_length=code_length,
                      vocab_size=vocab_size, learn_sigma=get_objective(config.objective).learn_sigma,
                      code_tokens=m.code_tokens, code_init=m.code_init, depth=m.depth or named["depth"],
                      hidden_size=width, num_heads=heads)


def _shard_space(config: DiTRunConfig, info: dict):
    """The latent space for latent shards, checked against them (the run records ``latent`` so
    that sampling decodes through the VAE the shards were written with)."""
    shape, manifest = info["latent_shape"], info["manifest"]
    if shape is None:
        return make_latent_space(config.latent, config.data.size, info["image_shape"][0])
    if config.latent == "pixel":
        raise ConfigError(f"the shards hold VAE latents ({manifest.get('latents') or 'latent.npy'}): set "
                          "latent=<that VAE> so that samples decode through it")
    if manifest.get("latents") and manifest["latents"] != describe_source(config.latent):
        warnings.warn(f"latent={config.latent} but the shards were written with the VAE {manifest['latents']}",
                      stacklevel=2)
    space = make_latent_space(config.latent, config.data.size)
    if (space.channels, space.size, space.size) != shape:
        hint = f" (the shards were encoded at {manifest['image_size']} px)" if manifest.get("image_size") else ""
        raise ConfigError(f"the shards hold latents of shape {shape}, but {config.latent} at data.size="
                          f"{config.data.size} gives {(space.channels, space.size, space.size)}: set data.size to "
                          f"the image size of the shards{hint}")
    return space


def build(config: DiTRunConfig):
    """(model, objective, latent space, dataset, frozen encoder) for a config."""
    objective = get_objective(config.objective, **({"time_sampling": config.flow_time} if config.objective == "flow" else {}))
    if config.condition.kind == "shards":
        dataset, info = shard_data(config)
        space = _shard_space(config, info)
        channels, size = (info["latent_shape"] or (space.channels, space.size))[:2]
        model = create_model(config, channels, size, info["code_length"], info["vocab_size"])
        return model, objective, space, dataset, None
    dataset, cond = config.data.load("train"), config.condition
    random = cond.kind == "random"
    source = resolve_codes(code_spec(config), dataset, code_length=cond.code_length if random else None,
                           vocab_size=cond.random_vocab if random else cond.vocab_size, seed=config.train.seed)
    if config.hflip and cond.kind in ("codes", "random"):
        raise ConfigError("hflip=true with stored codes would pair flipped images with the codes of unflipped "
                          "ones; use condition.kind=encoder (it encodes the flipped image), condition.kind="
                          "shards (codes of flipped images from `dlc encode --shards --hflip`) or hflip=false")
    image = dataset[0]["image"]
    space = make_latent_space(config.latent, image.shape[-1], image.shape[0])
    model = create_model(config, space.channels, space.size, source.code_length, source.vocab_size)
    return model, objective, space, CodedImages(dataset, source.codes), source.encoder


def _on(space, device):
    """The latent space with its VAE (if any) on ``device``."""
    vae = getattr(space, "vae", None)
    if vae is not None and next(vae.parameters()).device != torch.device(device):
        vae.to(device)
    return space


def references(config: DiTRunConfig, dataset, space, encoder) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 images, their codes or None): the first ``sample.num`` training images, unflipped,
    shown beside the samples generated from their codes."""
    n = config.sample.num
    if isinstance(dataset, ShardDataset):
        samples = dataset.first_samples(n)
        items = [dataset.convert(s) for s in samples]
        codes = torch.stack([item["code"] for item in items])
        image_key = next((k for k in IMAGE_KEYS if k in samples[0]), None)
        if image_key is not None:
            images = torch.stack([decode_image(s[image_key], config.data.size) for s in samples])
        else:  # latents only: show their reconstructions
            images = to_uint8(space.decode(torch.stack([item["latent"] for item in items]))).cpu()
        return images, codes
    images = torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))])
    if encoder is not None:
        return images, encoder.encode(to_float(images)).cpu()
    return images, torch.stack([dataset[i]["code"] for i in range(len(images))]) if dataset.codes is not None else None


def train(config: DiTRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    model, objective, space, dataset, encoder = build(config)
    run = RunDir(config.run_dir)
    dropout = config.condition.dropout
    from_shards = isinstance(dataset, ShardDataset)  # flips come from the shards, as stored pairs

    def loss_fn(net, batch, info):
        codes = batch.get("code")
        if "latent" in batch:
            x0 = batch["latent"]
        else:
            images = to_float(batch["image"])
            if config.hflip and not from_shards:
                flip = torch.rand(len(images), device=images.device) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            if encoder is not None:
                codes = encoder.to(images.device).encode(images)
            x0 = _on(space, images.device).encode(images)
        drop = torch.rand(len(x0), device=x0.device) < dropout if codes is not None else None
        return objective.loss(net, x0, codes, drop)

    reference, ref_codes = references(config, dataset, space, encoder)

    def sample_fn(ema_model, step, run_dir):
        s = config.sample
        x = sample(ema_model, objective, ref_codes, num=len(reference), seed=0, steps=s.steps, sampler=s.sampler,
                   guidance_scale=s.guidance_scale, guidance_channels=s.guidance_channels,
                   guidance_interval=tuple(s.guidance_interval))
        generated = to_uint8(_on(space, x.device).decode(x)).cpu()
        save_grid(torch.cat([reference, generated]), run_dir.samples / f"step-{step:07d}.png",
                  nrow=len(reference), scale=2)

    fit(run, config.train, model, dataset, loss_fn, config=config, sample_fn=sample_fn, desc="train dit")
    return run
