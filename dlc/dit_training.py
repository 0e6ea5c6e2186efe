"""Training the code-conditioned DiT (``dlc train dit``, ``python train/dit.py``).

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

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .codes import check_codes, load_codes
from .config import load_config
from .data import IMAGE_KEYS, DataConfig, _decode_image, _rank_and_world, expand_urls, to_float, to_uint8
from .diffusion import get_objective, sample
from .dit import DiT, create_dit
from .errors import CheckpointError, ConfigError, DataError
from .imageio import save_grid
from .latents import make_latent_space
from .runs import RunDir
from .training import TrainConfig, fit, seed_everything


@dataclass
class DiTModelConfig:
    arch: str = "DiT-T/4"  # a name from dlc.dit.DIT_MODELS


@dataclass
class DiTDataConfig(DataConfig):
    """The ``data:`` section; ``size`` is the image size (also with latent shards: the VAE's input)."""

    shuffle_buffer: int = 1000  # condition.kind=shards: samples are shuffled in a buffer of this size


@dataclass
class ConditionConfig:
    kind: Literal["codes", "encoder", "class", "random", "none", "shards"] = "codes"
    codes: str | None = None  # kind=codes: the .npy for the training split
    # kind=codes: V, the encoder's vocabulary (default: largest value + 1); kind=shards: default from
    # the shards' encode.json
    vocab_size: int | None = None
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
    data: DiTDataConfig = field(default_factory=DiTDataConfig)
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    objective: Literal["flow", "ddpm"] = "flow"
    flow_time: Literal["uniform", "logit_normal"] = "uniform"  # objective=flow: how training times are drawn
    latent: str = "pixel"  # or a diffusers VAE name / folder (with latent shards: the VAE that wrote them)
    hflip: bool = False  # random horizontal flips (kind=shards: the stored flipped pairs)
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


class ShardLatents(torch.utils.data.IterableDataset):
    """The DiT's training items from ``dlc encode --shards`` output, read without re-encoding:
    ``code`` (long (L,)) with ``latent`` (float (C, h, w)) when the shards hold ``latent.npy``, else
    ``image`` (uint8 (C, size, size), from the png). With ``hflip`` each sample is its flipped pair
    with probability 1/2: ``code_flip`` with ``latent_flip`` (or the mirrored image), never a
    flipped latent with the code of the unflipped image.

    Endless. Shard i goes to rank ``i % world`` and, within it, to worker ``(i // world) % workers``.
    Each epoch a reader visits its shards in a shuffled order and passes the samples through a
    shuffle buffer; both, and the flips, are drawn from (seed, epoch, rank, worker) alone, so
    ``set_start(step, local_batch)`` (called by ``dlc.training.fit`` on resume) continues the stream
    where an interrupted run left it. Unreadable samples are skipped with a warning.
    """

    def __init__(self, pattern: str, size: int | None = None, hflip: bool = False, seed: int = 0,
                 shuffle_buffer: int = 1000, code_length: int | None = None, vocab_size: int | None = None,
                 rank: int | None = None, world_size: int | None = None):
        self.urls = expand_urls(pattern)
        self.pattern, self.size, self.hflip, self.seed = pattern, size, hflip, seed
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.code_length, self.vocab_size = code_length, vocab_size
        self.rank, self.world_size = rank, world_size
        self.start_step, self.local_batch = 0, 0
        self.name = f"webdataset:{pattern}"

    def set_start(self, step: int, local_batch: int) -> None:
        """Start the stream after ``step`` batches of ``local_batch`` items per process."""
        self.start_step, self.local_batch = step, local_batch

    # raw samples -------------------------------------------------------------------------
    def _raw(self, url: str):
        import webdataset as wds

        def warn(error):
            warnings.warn(f"skipping unreadable data in {url}: {error}", stacklevel=2)
            return True

        yield from wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(handler=warn))

    def first_samples(self, n: int) -> list[dict]:
        """The first ``n`` raw samples in shard order (no shuffling): for checks and references."""
        samples = []
        for url in self.urls:
            for raw in self._raw(url):
                samples.append(raw)
                if len(samples) == n:
                    return samples
        return samples

    def _reader(self) -> tuple[list[str], tuple[int, int, int]]:
        rank, world = _rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        shards = self.urls[rank::world][worker::workers]
        if not shards:
            raise DataError(f"{len(self.urls)} shard(s) for {world} process(es) x {workers} data worker(s): every "
                            "reader needs a shard of its own. Write more, smaller shards (dlc encode --chunk) or "
                            "lower train.num_workers")
        return shards, (rank, worker, workers)

    def _epoch(self, shards: list[str], epoch: int, rank: int, worker: int):
        """(raw sample, flip) pairs of one pass over this reader's shards, shuffled."""
        rng = np.random.default_rng([self.seed, epoch, rank, worker])
        buffer = []

        def out(raw):
            return raw, bool(self.hflip and rng.random() < 0.5)

        for i in rng.permutation(len(shards)):
            for raw in self._raw(shards[i]):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(raw)
                    continue
                j = int(rng.integers(len(buffer)))
                buffer[j], raw = raw, buffer[j]
                yield out(raw)
        for j in rng.permutation(len(buffer)):
            yield out(buffer[j])

    def _epoch_length(self, shards: list[str]) -> int:
        from .commands.encode import read_manifest

        manifest = read_manifest(shards[0]) or {}
        counts = dict(zip(manifest.get("shards", []), manifest.get("samples_per_shard", [])))
        total = 0
        for url in shards:
            if Path(url).name in counts:
                total += counts[Path(url).name]
            else:
                total += sum(1 for _ in self._raw(url))
        return total

    # items -------------------------------------------------------------------------------
    def convert(self, raw: dict, flip: bool) -> dict:
        key = raw.get("__key__")
        suffix = "_flip" if flip else ""
        if f"code{suffix}.npy" not in raw:
            raise KeyError(f"no code{suffix}.npy (write the shards with `dlc encode --shards"
                           f"{' --hflip' if flip else ''}`)")
        code = np.load(io.BytesIO(raw[f"code{suffix}.npy"])).astype(np.int64)
        code = check_codes(torch.from_numpy(code).view(1, -1), self.code_length, self.vocab_size,
                           what=f"code of shard sample {key}")[0]
        item = {"code": code}
        if "latent.npy" in raw:
            item["latent"] = torch.from_numpy(np.load(io.BytesIO(raw[f"latent{suffix}.npy"])).astype(np.float32))
            return item
        image_key = next((k for k in IMAGE_KEYS if k in raw), None)
        if image_key is None:
            raise KeyError("neither latent.npy nor an image")
        image = _decode_image(raw[image_key], self.size)
        item["image"] = image.flip(-1) if flip else image
        return item

    def __iter__(self):
        shards, (rank, worker, workers) = self._reader()
        # the DataLoader takes batches from its workers in turn: worker w made batches w, w+W, ...
        skip = len(range(worker, self.start_step, workers)) * self.local_batch
        epoch = 0
        if skip:
            length = self._epoch_length(shards)
            if not length:
                raise DataError(f"the shards {shards} hold no samples")
            epoch, skip = divmod(skip, length)
        while True:
            seen = 0
            for k, (raw, flip) in enumerate(self._epoch(shards, epoch, rank, worker)):
                seen += 1
                if k < skip:
                    continue
                try:
                    item = self.convert(raw, flip)
                except (OSError, ValueError, KeyError) as e:
                    warnings.warn(f"skipping shard sample {raw.get('__key__')} of {raw.get('__url__')}: {e}",
                                  stacklevel=2)
                    continue
                yield item
            if not seen:
                raise DataError(f"the shards {shards} hold no readable samples")
            skip, epoch = 0, epoch + 1


def shard_data(config: DiTRunConfig) -> tuple[ShardLatents, dict]:
    """The training stream of ``condition.kind=shards`` and what its first sample says: code
    length, vocabulary, whether it holds latents (their shape) and flipped pairs."""
    from .commands.encode import read_manifest

    data, cond = config.data, config.condition
    if not data.dataset.startswith("webdataset:"):
        raise ConfigError("condition.kind=shards reads webdataset shards: set data.dataset=webdataset:PATTERN "
                          "(written by `dlc encode --shards DIR [--latents VAE] [--hflip]`)")
    dataset = ShardLatents(data.dataset.split(":", 1)[1], data.size, config.hflip, config.train.seed,
                           data.shuffle_buffer)
    first = dataset.first_samples(1)
    if not first:
        raise DataError(f"no samples in {data.dataset}")
    first = first[0]
    if "code.npy" not in first:
        raise DataError(f"shard sample {first['__key__']} has no code.npy: write the shards with `dlc encode --shards`")
    manifest = read_manifest(dataset.urls[0]) or {}
    vocab = cond.vocab_size or manifest.get("vocab_size")
    if vocab is None:
        raise ConfigError("condition.kind=shards needs condition.vocab_size (the encoder's V): the shards "
                          "have no encode.json to read it from")
    has_latent = "latent.npy" in first
    if config.hflip:
        missing = [n for n in ("code_flip.npy", "latent_flip.npy" if has_latent else None) if n and n not in first]
        if missing:
            raise ConfigError(f"hflip=true but the shards have no {' or '.join(missing)}: re-encode them with "
                              "`dlc encode --shards ... --hflip` (a flipped image needs the code of the flipped "
                              "image), or set hflip=false")
    dataset.vocab_size = vocab
    dataset.code_length = len(np.load(io.BytesIO(first["code.npy"])))
    item = dataset.convert(first, False)
    info = {"code_length": dataset.code_length, "vocab_size": vocab, "manifest": manifest,
            "latent_shape": tuple(item["latent"].shape) if has_latent else None,
            "image_shape": None if has_latent else tuple(item["image"].shape)}
    return dataset, info


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


def create_model(config: DiTRunConfig, in_channels: int, image_size: int, code_length: int,
                 vocab_size: int) -> DiT:
    """The DiT of ``config.model`` for inputs (in_channels, image_size, image_size) and codes (L, V)."""
    return create_dit(config.model.arch, image_size=image_size, in_channels=in_channels, code_length=code_length,
                      vocab_size=vocab_size, learn_sigma=get_objective(config.objective).learn_sigma)


def _shard_space(config: DiTRunConfig, info: dict):
    """The latent space for latent shards, checked against them (the run records ``latent`` so
    that sampling decodes through the VAE the shards were written with)."""
    shape, manifest = info["latent_shape"], info["manifest"]
    if shape is None:
        return make_latent_space(config.latent, config.data.size, info["image_shape"][0])
    if config.latent == "pixel":
        raise ConfigError(f"the shards hold VAE latents ({manifest.get('latents') or 'latent.npy'}): set "
                          "latent=<that VAE> so that samples decode through it")
    from .commands.encode import _describe

    if manifest.get("latents") and manifest["latents"] != _describe(config.latent):
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
    dataset = config.data.load("train")
    codes, L, V, encoder = conditioning(config, dataset)
    if config.hflip and config.condition.kind in ("codes", "random"):
        raise ConfigError("hflip=true with stored codes would pair flipped images with the codes of unflipped "
                          "ones; use condition.kind=encoder (it encodes the flipped image), condition.kind="
                          "shards (codes of flipped images from `dlc encode --shards --hflip`) or hflip=false")
    image = dataset[0]["image"]
    space = make_latent_space(config.latent, image.shape[-1], image.shape[0])
    model = create_model(config, space.channels, space.size, L, V)
    return model, objective, space, CodedImages(dataset, codes), encoder


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
    if isinstance(dataset, ShardLatents):
        samples = dataset.first_samples(n)
        items = [dataset.convert(s, False) for s in samples]
        codes = torch.stack([item["code"] for item in items])
        image_key = next((k for k in IMAGE_KEYS if k in samples[0]), None)
        if image_key is not None:
            images = torch.stack([_decode_image(s[image_key], config.data.size) for s in samples])
        else:  # latents only: show their reconstructions
            images = to_uint8(space.decode(torch.stack([item["latent"] for item in items]))).cpu()
        return images, codes
    images = torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))])
    if encoder is not None:
        return images, encoder.encode(to_float(images)).cpu()
    codes = torch.stack([dataset[i]["code"] for i in range(len(images))]) if dataset.codes is not None else None
    return images, codes


def train(config: DiTRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    model, objective, space, dataset, encoder = build(config)
    run = RunDir(config.run_dir)
    dropout = config.condition.dropout
    from_shards = isinstance(dataset, ShardLatents)  # flips come from the shards, as stored pairs

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
                   guidance_scale=s.guidance_scale, guidance_channels=s.guidance_channels)
        generated = to_uint8(_on(space, x.device).decode(x)).cpu()
        save_grid(torch.cat([reference, generated]), run_dir.samples / f"step-{step:07d}.png",
                  nrow=len(reference), scale=2)

    fit(run, config.train, model, dataset, loss_fn, config=config, sample_fn=sample_fn, desc="train dit")
    return run
