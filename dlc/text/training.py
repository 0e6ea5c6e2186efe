"""Training the text-to-code model (``dlc train text``, ``python train/text.py``) on (code, caption)
pairs: LLaDA's whole-sequence masked-diffusion loss (see ``dlc.text``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..codes import resolve_codes
from ..config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    TrainConfig,
    replace,
)
from ..data import DataConfig, dataset_defaults, to_float
from ..data.defaults import sample_prompts
from ..errors import ConfigError
from ..runs import RunDir
from ..training import fit, seed_everything
from .hf import HFTextToCode
from .minilm import MiniLMTextToCode
from .model import TextToCode, padded_text_length, sequence_loss
from .tokenizers import CaptionTokenizer


@dataclass
class TextCodesConfig:
    """Where the (code, caption) pairs' codes come from."""

    source: Literal["codes", "encoder", "synthetic"] = "codes"
    codes: str | None = None  # source=codes: .npy uint16 (N, L), row i = image i of data.load("train")
    vocab_size: PositiveInt | None = None  # source=codes: V (default: largest value + 1)
    encoder: str | None = None  # source=encoder: a DLCEncoder run or model folder (frozen, codes on the fly)
    code_length: PositiveInt = 16  # source=synthetic
    synthetic_vocab: PositiveInt = 64  # source=synthetic
    # captions left out of training: null = the dataset's held-out set when it defines one (emoji: the
    # compositional names of dlc.data.holdout; an image folder: "heldout" in its dataset.json), else none;
    # true = the dataset's set, an error when it defines none; false = train on every caption
    holdout: bool | None = None


@dataclass
class TextModelConfig:
    # scratch: a small denoiser trained from scratch; minilm: the same reading the caption through the
    # frozen pretrained MiniLM (dlc/text/minilm.py); hf: a Hugging Face LM fine-tuned (LLaDA in the paper)
    kind: Literal["scratch", "minilm", "hf"] = "scratch"
    tokenizer: str = "auto"  # scratch: auto (MiniLM WordPiece if installed, else bytes), minilm, bytes, a path
    max_text_length: PositiveInt = 24
    width: PositiveInt = 256
    depth: PositiveInt = 4
    heads: PositiveInt = 4
    mlp_ratio: PositiveFloat = 4.0
    dropout: Probability = 0.0
    pretrained: str | None = None  # hf: a model name or folder, e.g. GSAI-ML/LLaDA-8B-Base
    model_class: str = "AutoModel"  # hf: the transformers class that loads it
    trust_remote_code: bool = False
    torch_dtype: str | None = None  # hf: e.g. bfloat16
    lora_rank: NonNegativeInt = 0  # hf: 0 = full fine-tune (the paper)
    caption_dropout: Probability = 0.1  # minilm: rows whose whole caption is masked (guidance's unconditional)


@dataclass
class TextSampleConfig:
    prompts: list[str] | None = None  # null: the dataset's sample prompts, else 4 of its training captions
    num_per_prompt: PositiveInt = 4
    steps: PositiveInt = 16
    temperature: NonNegativeFloat = 0.2
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    guidance_scale: NonNegativeFloat = 0.0


@dataclass
class TextRunConfig:
    run_dir: str = "runs/text"
    data: DataConfig = field(default_factory=DataConfig)
    codes: TextCodesConfig = field(default_factory=TextCodesConfig)
    model: TextModelConfig = field(default_factory=TextModelConfig)
    sample: TextSampleConfig = field(default_factory=TextSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)



class CaptionedCodes(torch.utils.data.Dataset):
    """(code, caption) pairs; with ``codes`` None the image comes instead (encoded on the fly)."""

    def __init__(self, dataset, codes: torch.Tensor | None, indices: list[int]):
        self.dataset, self.codes, self.indices = dataset, codes, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = self.indices[i]
        if self.codes is not None:
            return {"code": self.codes[j], "caption": self.dataset.captions[j]}
        item = self.dataset[j]
        return {"image": item["image"], "caption": item["caption"]}


class CaptionedStream(torch.utils.data.IterableDataset):
    """Image-caption pairs from webdataset shards (samples without a caption are skipped)."""

    def __init__(self, shards):
        self.shards = shards

    def __iter__(self):
        for item in self.shards:
            if item.get("caption") and "image" in item:
                yield {"image": item["image"], "caption": item["caption"]}


def code_spec(src: TextCodesConfig) -> str:
    """The ``dlc.codes`` source of ``codes:``."""
    if src.source == "encoder":
        if not src.encoder:
            raise ConfigError("codes.source=encoder needs codes.encoder=DIR (an encoder run or model folder)")
        return f"encoder:{src.encoder}"
    if src.source == "synthetic":
        return "synthetic:captions"
    if not src.codes:
        raise ConfigError("codes.source=codes needs codes.codes=PATH (a .npy written by `dlc encode`); "
                          "or use codes.source=synthetic or codes.source=encoder")
    return src.codes


def training_pairs(config: TextRunConfig):
    """(dataset of pairs, L, V, frozen encoder or None) for ``config.codes``."""
    src = config.codes
    if config.data.dataset.startswith("webdataset:"):
        if src.source != "encoder":
            raise ConfigError("webdataset input has no stored code rows: use codes.source=encoder")
        source = resolve_codes(code_spec(src))
        pairs = CaptionedStream(config.data.load("train", repeat=True))
        return pairs, source.code_length, source.vocab_size, source.encoder
    data = config.data.load("train")
    if data.captions is None or not any(data.captions):
        raise ConfigError(f"dataset {config.data.dataset} has no captions to train a text model on "
                          "(an image folder gives them in captions.jsonl)")
    heldout = heldout_captions(config)
    keep = [i for i, c in enumerate(data.captions) if c and not (heldout and heldout(c))]
    if heldout:
        held = sum(1 for c in data.captions if c) - len(keep)  # the captioned images ``keep`` left out
        print(f"text: {held} images held out of training, by the dataset's held-out captions (codes.holdout)")
    synthetic = src.source == "synthetic"
    source = resolve_codes(code_spec(src), data, code_length=src.code_length if synthetic else None,
                           vocab_size=src.synthetic_vocab if synthetic else src.vocab_size, seed=config.train.seed)
    return CaptionedCodes(data, source.codes, keep), source.code_length, source.vocab_size, source.encoder


def heldout_captions(config: TextRunConfig):
    """Whether a caption is held out of training (a predicate), or None: ``codes.holdout`` against
    what the dataset defines."""
    heldout = dataset_defaults(config.data.dataset).heldout
    if config.codes.holdout is False:
        return None
    if config.codes.holdout and heldout is None:
        raise ConfigError(f"codes.holdout: true, but {config.data.dataset} defines no held-out captions; set "
                          "codes.holdout=false, or (an image folder) list them under \"heldout\" in its dataset.json")
    return heldout


def resolved(config: TextRunConfig, captions: Sequence[str] | None) -> TextRunConfig:
    """``config`` with the dataset's choices filled in where it left them null: the sample
    prompts and whether captions are held out (so config.yaml records what the run did)."""
    prompts = config.sample.prompts
    if prompts is None:
        prompts = sample_prompts(dataset_defaults(config.data.dataset), captions or ())
        if not prompts:
            raise ConfigError(f"sample.prompts: {config.data.dataset} suggests none; give some, e.g. "
                              "sample.prompts='[red apple, cat]'")
    return replace(config, **{"sample.prompts": prompts, "codes.holdout": heldout_captions(config) is not None})


def build_model(config: TextRunConfig, L: int, V: int, captions: Sequence[str] | None):
    m = config.model
    if m.kind == "hf":
        if not m.pretrained:
            raise ConfigError("model.kind=hf needs model.pretrained=NAME_OR_PATH (e.g. GSAI-ML/LLaDA-8B-Base)")
        return HFTextToCode.from_base(m.pretrained, L, V, m.model_class, m.trust_remote_code, m.torch_dtype,
                                      m.lora_rank, m.max_text_length)
    if m.kind == "minilm":
        return MiniLMTextToCode(L, V, m.max_text_length, m.width, m.depth, m.heads, m.mlp_ratio, m.dropout,
                                m.caption_dropout)
    if captions is None:
        raise ConfigError("a text model trained from scratch needs a caption list to build its tokenizer: "
                          "use a map-style dataset, or model.kind=hf")
    tokenizer = CaptionTokenizer.build(captions, m.tokenizer)
    model = TextToCode(L, V, tokenizer.vocab_size, m.max_text_length, m.width, m.depth, m.heads, m.mlp_ratio,
                       m.dropout)
    model.tokenizer = tokenizer
    return model


def train(config: TextRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    pairs, L, V, encoder = training_pairs(config)
    captions = [pairs.dataset.captions[i] for i in pairs.indices] if isinstance(pairs, CaptionedCodes) else None
    config = resolved(config, captions)
    model = build_model(config, L, V, captions)
    layout, run = model.layout, RunDir(config.run_dir)
    text_length = padded_text_length(model)
    caption_dropout = getattr(model.config, "caption_dropout", None)  # a model trained with LLaDA's fine-tuning loss

    def loss_fn(net, batch, info):
        codes = batch.get("code")
        if encoder is not None:
            with torch.no_grad():
                codes = encoder.to(batch["image"].device).encode(to_float(batch["image"]))
        return sequence_loss(net, layout, codes, model.text_ids(batch["caption"]), text_length=text_length,
                             caption_dropout=caption_dropout)

    fit(run, config.train, model, pairs, loss_fn, config=config, sample_fn=_sampler(config.sample), desc="text")
    return run


def _sampler(cfg: TextSampleConfig):
    def sample_fn(ema_model, step, run):
        codes = ema_model.generate(cfg.prompts, cfg.num_per_prompt, seed=0, steps=cfg.steps,
                                   temperature=cfg.temperature, remasking=cfg.remasking,
                                   guidance_scale=cfg.guidance_scale)
        rows = codes.view(len(cfg.prompts), cfg.num_per_prompt, -1).tolist()
        (run.samples / f"codes-{step:06d}.json").write_text(json.dumps(dict(zip(cfg.prompts, rows))))

    return sample_fn
