"""Datasets: colour emoji, rendered letters (glyphs) and Fashion-MNIST (offline, from Debian
packages), image folders and webdataset shards, behind one entry point.

Every dataset yields dicts with ``image`` (uint8 tensor C,H,W), ``label`` (int or None) and
``caption`` (str or None), plus dataset-specific fields:

    load("emoji", size=32)                 # 3,655 Noto colour emoji, captions = CLDR names
    load("glyphs", size=32)                # 4,160 letters with known factors (letter, colour, ...)
    load("fashion-mnist", size=32, channels=3)
    load("imagefolder:/path/to/images", size=64)
    load("webdataset:/data/shards-{000000..000099}.tar")

``channels`` works for every dataset: 3 repeats a grey image, 1 turns RGB into grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import PositiveInt
from ..errors import DataError
from .defaults import DatasetDefaults, dataset_defaults
from .emoji import EMOJI_FONT, EMOJI_TEST, load_emoji
from .fashion import FASHION_CLASSES, FASHION_DIR, load_fashion_mnist
from .folder import ImageFolderDataset, SkipCounter, image_files
from .glyphs import DEJAVU_CORE, DEJAVU_EXTRA, load_glyphs
from .images import (
    IMAGE_EXTENSIONS,
    collate,
    decode_image,
    encode_png,
    load_image,
    pil_to_tensor,
    resize_center_crop,
    to_channels,
    to_float,
    to_rgb,
    to_uint8,
)
from .memory import TensorImageDataset, cache_dir
from .shards import ShardDataset, expand_urls, read_manifest, write_shards

DATASETS = {
    "emoji": "3,655 Noto colour emoji with CLDR names as captions and subgroups as labels",
    "glyphs": "4,160 captioned letters, factors known (letter, colour, background, font); 4 pairs held out",
    "fashion-mnist": "70,000 28x28 clothing images in 10 classes",
    "imagefolder:PATH": "images under PATH; train/ test/ subfolders are splits, class subfolders labels; "
                        "captions.jsonl and dataset.json optional",
    "webdataset:PATTERN": "webdataset shards (png/jpg + cls + txt), e.g. /data/s-{000..099}.tar",
}
ALIASES = {"fashion": "fashion-mnist"}


def canonical_name(name: str) -> str:
    """The dataset's name as ``DATASETS`` spells it (``fashion`` -> ``fashion-mnist``)."""
    return ALIASES.get(name, name)


def load(name: str, size: int | None = None, split: str = "train", channels: int | None = None, **options):
    """Load a dataset by name (see ``DATASETS``); items are dicts with image, label, caption.

    ``split`` is "train", "test" or "all" for emoji, glyphs and Fashion-MNIST; for an image folder it
    picks the split subfolder of that name (train/, val/, test/; "all": every one); a folder
    without split subfolders is one training set ("train" or "all"; any other split is an error).
    A shard pattern names its own split. ``channels``: 1 or 3 (None: the dataset's own)."""
    name = canonical_name(name)
    if name == "emoji":
        return load_emoji(size or 32, split, channels, **options)
    if name == "glyphs":
        return load_glyphs(size or 32, split, channels, **options)
    if name == "fashion-mnist":
        return load_fashion_mnist(size or 28, split, channels, **options)
    if name.startswith("imagefolder:"):
        return ImageFolderDataset(Path(name.split(":", 1)[1]), size, channels, split, **options)
    if name.startswith("webdataset:"):
        return ShardDataset(name.split(":", 1)[1], size, channels, **options)  # the pattern names the split
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def in_memory(dataset):
    """``dataset`` with every image in one uint8 tensor ``.images`` (and labels a tensor): an
    in-memory dataset as it is, an image folder read in. Shards stream and cannot be."""
    if hasattr(dataset, "images"):
        return dataset
    if hasattr(dataset, "to_memory"):
        return dataset.to_memory()
    raise DataError(f"{dataset.name} streams its images; this needs a dataset that fits in memory "
                    "(a built-in dataset or imagefolder:PATH)")


def some_items(dataset, limit: int) -> list[dict]:
    """Up to ``limit`` items of a dataset: evenly spaced over a map-style one (all of them when it has
    no more), the first ones of a stream (webdataset shards have no index)."""
    import itertools

    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return list(itertools.islice(iter(dataset), limit))
    return [dataset[int(i)] for i in _spaced(len(dataset), limit)]


def some_images(dataset, limit: int):
    """``some_items``' images as one uint8 tensor (N, C, H, W): statistics over a large folder or a
    stream without reading all of it."""
    import torch

    if hasattr(dataset, "images"):
        return dataset.images[_spaced(len(dataset), limit)]
    return torch.stack([item["image"] for item in some_items(dataset, limit)])


def _spaced(length: int, limit: int):
    import torch

    return torch.linspace(0, length - 1, min(limit, length)).round().long().unique()


@dataclass
class DataConfig:
    """The ``data:`` section of a stage config."""

    dataset: str = "emoji"  # emoji, glyphs, fashion-mnist, imagefolder:PATH, webdataset:PATTERN
    size: PositiveInt = 32
    channels: Literal[1, 3] = 3  # 3 (RGB; grey images repeated) or 1 (grey)

    def load(self, split: str = "train", **options):
        return load(self.dataset, size=self.size, split=split, channels=self.channels, **options)


__all__ = [
    "DATASETS", "DataConfig", "DatasetDefaults", "ImageFolderDataset", "ShardDataset", "SkipCounter",
    "TensorImageDataset",
    "DEJAVU_CORE", "DEJAVU_EXTRA", "EMOJI_FONT", "EMOJI_TEST", "FASHION_CLASSES", "FASHION_DIR", "IMAGE_EXTENSIONS",
    "cache_dir", "canonical_name", "collate", "dataset_defaults", "decode_image", "encode_png", "expand_urls",
    "image_files", "in_memory", "load", "load_image", "some_images", "some_items",
    "load_emoji", "load_fashion_mnist", "load_glyphs", "pil_to_tensor", "read_manifest", "resize_center_crop", "to_channels",
    "to_float", "to_rgb", "to_uint8", "write_shards",
]
