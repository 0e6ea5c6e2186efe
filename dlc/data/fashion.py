"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``): 70,000 28x28 clothing images in 10 classes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .images import to_channels
from .memory import TensorImageDataset, require_package

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(size: int = 28, split: str = "train", channels: int | None = None) -> TensorImageDataset:
    """Fashion-MNIST (train 60,000 / test 10,000), grey. ``size`` 32 pads the 28x28 images with black
    borders; ``channels`` 3 repeats the grey channel for models that expect RGB."""
    if size < 28:
        raise DataError(f"fashion-mnist images are 28x28; size must be >= 28 (got {size})")
    prefix = {"train": "train", "test": "t10k"}
    if split not in prefix:
        raise DataError(f"unknown split {split!r} for fashion-mnist: expected 'train' or 'test'")
    images_path = FASHION_DIR / f"{prefix[split]}-images-idx3-ubyte.gz"
    require_package(images_path, "dataset-fashion-mnist")
    images = torch.from_numpy(_read_idx(images_path).copy())[:, None]
    labels = _read_idx(FASHION_DIR / f"{prefix[split]}-labels-idx1-ubyte.gz").astype(np.int64)
    pad = size - 28
    if pad:
        images = torch.nn.functional.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    images = to_channels(images, channels)
    captions = [FASHION_CLASSES[i] for i in labels]
    return TensorImageDataset(images, labels, captions, list(FASHION_CLASSES), name="fashion-mnist")
