"""Where a stage's training codes come from: the one resolver every stage goes through.

A source is a short string, the same in every stage's config:

    runs/emoji/codes/train.npy   stored codes (``dlc encode``), row i = image i of the dataset
    encoder:DIR                  a frozen DLCEncoder (run or model folder) computing codes on the fly
    class                        the dataset's label as a one-token code (L = 1, V = classes)
    synthetic:NAME               codes made up by ``dlc.codes.synthetic.SYNTHETIC[NAME]``
    webdataset:PATTERN           ``code.npy`` of each sample of webdataset shards (a stream)
    none                         no code (L = 0): an unconditional model

    source = resolve_codes("encoder:runs/emoji/encoder", dataset)
    source.code_length, source.vocab_size    # L and V, whatever the kind
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CodeError, ConfigError, DataError
from .store import check_codes, load_codes
from .synthetic import SYNTHETIC

KINDS = ("PATH.npy", "encoder:DIR", "class", "synthetic:NAME", "webdataset:PATTERN", "none")


@dataclass
class CodeSource:
    """A resolved source: per-image ``codes`` (N, L) long (row i = dataset item i), or an
    ``encoder`` that computes them from the images, or a ``stream`` of ``{"code": (L,)}`` items;
    all three None for ``none``."""

    spec: str
    code_length: int
    vocab_size: int
    codes: torch.Tensor | None = None
    encoder: torch.nn.Module | None = None
    stream: torch.utils.data.IterableDataset | None = None


def frozen_encoder(path: str | Path):
    """A DLCEncoder in eval mode with no gradients, from a run directory or model folder."""
    from ..encoder import DLCEncoder

    return DLCEncoder.from_pretrained(path).eval().requires_grad_(False)


def code_decoder(code_length: int | None, vocab_size: int | None, entry: str = "code.npy"):
    """``decode(raw, flip)`` for a ShardDataset: the sample's code (L,) long, checked against L and V."""
    import numpy as np

    from ..data.shards import npy_entry

    def decode(raw: dict, flip: bool = False) -> dict:
        name = entry.replace(".npy", "_flip.npy") if flip else entry
        if name not in raw:
            raise DataError(f"shard sample {raw.get('__key__')} has no {name} (write the shards with "
                            f"`dlc encode --shards{' --hflip' if flip else ''}`)")
        code = torch.from_numpy(npy_entry(raw, name).astype(np.int64)).view(1, -1)
        return {"code": check_codes(code, code_length, vocab_size, what=f"code of shard sample {raw['__key__']}")[0]}

    return decode


def resolve_codes(spec: str, dataset=None, *, code_length: int | None = None, vocab_size: int | None = None,
                  seed: int = 0, num: int = 4096) -> CodeSource:
    """Resolve ``spec`` (see the module docstring) for ``dataset`` (the images the codes belong
    to, when there are any). ``code_length`` and ``vocab_size``: L and V to check against (or to
    make synthetic codes with); V defaults to the largest stored value + 1. ``seed`` and ``num``
    go to synthetic sources."""
    if not spec:
        raise ConfigError(f"no code source given: expected one of {', '.join(KINDS)}")
    if spec == "none":
        return CodeSource(spec, 0, 1)
    if spec == "class":
        return _class_codes(dataset)
    if spec.startswith("encoder:"):
        return _encoder_codes(spec, vocab_size)
    if spec.startswith("synthetic:"):
        name = spec.split(":", 1)[1]
        if name not in SYNTHETIC:
            raise ConfigError(f"unknown synthetic codes {name!r}; choose from {', '.join(SYNTHETIC)}")
        L, V = code_length or 16, vocab_size or 64
        codes = SYNTHETIC[name](num, L, V, seed, dataset)
        return CodeSource(spec, L, V, codes=check_codes(codes, L, V, what=f"codes from {spec}"))
    if spec.startswith("webdataset:"):
        return _shard_codes(spec, code_length, vocab_size)
    codes = load_codes(spec, code_length, rows=len(dataset) if dataset is not None else None)
    V = vocab_size or int(codes.max()) + 1
    return CodeSource(spec, codes.shape[1], V, codes=check_codes(codes, vocab_size=V, what=f"codes in {spec}"))


def _class_codes(dataset) -> CodeSource:
    labels = getattr(dataset, "labels", None)
    if labels is None or any(label is None for label in labels):
        raise ConfigError(f"class codes need a label for every image; {getattr(dataset, 'name', 'the dataset')} "
                          "has none (use an image folder with class subfolders)")
    return CodeSource("class", 1, dataset.num_classes, codes=torch.as_tensor(labels).view(-1, 1))


def _encoder_codes(spec: str, vocab_size: int | None) -> CodeSource:
    path = spec.split(":", 1)[1]
    if not path:
        raise ConfigError("encoder:DIR needs the encoder's run or model folder (encoder:runs/emoji/encoder)")
    encoder = frozen_encoder(path)
    L, V = encoder.config.code_length, encoder.config.vocab_size
    if vocab_size is not None and vocab_size != V:
        raise CodeError(f"the encoder {path} makes codes over V = {V} values, not the {vocab_size} configured")
    return CodeSource(spec, L, V, encoder=encoder)


def shard_codes_shape(pattern: str, code_length: int | None = None, vocab_size: int | None = None):
    """(L, V, first raw sample) of webdataset shards with ``code.npy``: L from the first sample
    (or the given one), V given or read from the shards' ``encode.json``."""
    from ..data.shards import ShardDataset, read_manifest

    probe = ShardDataset(pattern)
    first = probe.first_samples(1)
    if not first or "code.npy" not in first[0]:
        raise CodeError(f"webdataset:{pattern} holds no samples with code.npy: write the shards with "
                        "`dlc encode --shards`")
    L = code_length or code_decoder(None, None)(first[0])["code"].shape[0]
    recorded = (read_manifest(probe.urls[0]) or {}).get("vocab_size")
    if vocab_size and recorded and vocab_size != recorded:
        # a larger V trains, but a pipeline refuses the DiT or prior beside the encoder that made the codes
        raise ConfigError(f"vocab_size {vocab_size}, but webdataset:{pattern} was encoded with V={recorded} "
                          "(its encode.json): set the vocab_size to the encoder's, or leave it unset to read it there")
    V = vocab_size or recorded
    if V is None:
        raise ConfigError(f"webdataset:{pattern}: give the encoder's V (vocab_size); the shards have no encode.json "
                          "to read it from")
    return L, V, first[0]


def _shard_codes(spec: str, code_length: int | None, vocab_size: int | None) -> CodeSource:
    from ..data.shards import ShardDataset

    pattern = spec.split(":", 1)[1]
    L, V, _ = shard_codes_shape(pattern, code_length, vocab_size)
    return CodeSource(spec, L, V, stream=ShardDataset(pattern, repeat=True, decode=code_decoder(L, V)))
