"""Datasets held in memory as one uint8 tensor (emoji, Fashion-MNIST), the cache they render into,
and the Debian packages their files come from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

SPLITS = ("train", "test", "all")


def cache_dir() -> Path:
    """Where rendered datasets and reference statistics are cached (``$DLC_CACHE``)."""
    return Path(os.environ.get("DLC_CACHE", Path.home() / ".cache" / "dlc"))


def require_package(path: Path, package: str) -> None:
    """A clear error when a dataset file that a Debian package installs is missing."""
    if not path.exists():
        raise DataError(
            f"{path} is missing. It comes from the Debian package '{package}': "
            f"run 'sudo apt-get install {package}' (or 'make install' as root), then try again."
        )


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W), with labels, captions and fields.
    ``factors`` (optional) maps the names of integer fields that are known factors of variation
    (the glyphs' letter, colour, ...) to their class names; code evaluation probes each."""

    def __init__(self, images: torch.Tensor, labels, captions, class_names: list[str], fields=None, name="",
                 factors: dict[str, list[str]] | None = None):
        self.images = images
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.captions = captions
        self.class_names = class_names
        self.fields = fields or {}
        self.name = name
        self.factors = factors or {}

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, index: int) -> dict:
        item = {
            "image": self.images[index],
            "label": None if self.labels is None else int(self.labels[index]),
            "caption": None if self.captions is None else self.captions[index],
        }
        for key, values in self.fields.items():
            item[key] = values[index]
        return item

    def subset(self, indices) -> TensorImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        pick = indices.tolist()
        return TensorImageDataset(
            self.images[indices],
            None if self.labels is None else self.labels[indices],
            None if self.captions is None else [self.captions[i] for i in pick],
            self.class_names,
            {k: [v[i] for i in pick] for k, v in self.fields.items()},
            self.name,
            self.factors,
        )

    def split(self, is_test: np.ndarray, split: str) -> TensorImageDataset:
        """The "train" (``~is_test``), "test" or "all" part."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r} for {self.name}: expected one of {', '.join(SPLITS)}")
        return self if split == "all" else self.subset(np.flatnonzero(is_test if split == "test" else ~is_test))


def stratified_split(groups, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: in each group (in order of first appearance), ``test_fraction`` of its
    members (rounded half up) drawn with a generator seeded by ``seed`` go to test."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    is_test = np.zeros(len(groups), dtype=bool)
    for group in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == group)
        n_test = int(test_fraction * len(members) + 0.5)  # round half up: 5 members -> 1
        is_test[members[rng.permutation(len(members))[:n_test]]] = True
    return is_test
