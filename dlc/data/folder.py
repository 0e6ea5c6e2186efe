"""A folder of images as a dataset: split subfolders pick splits, class subfolders become labels,
``captions.jsonl`` gives captions.

Layouts (``PATH`` as in ``imagefolder:PATH``)::

    PATH/*.png                          one split ("train" = "all"), no labels
    PATH/CLASS/*.png                    labels from the class folders
    PATH/train/CLASS/*.png, PATH/test/... (or val/)   splits; labels from the class folders below them

A split the folder does not have is an error (a folder without split subfolders has no test
split). Class names are gathered over every split folder, so label i means the same class in
train and test.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, load_image

SPLIT_FOLDERS = ("train", "val", "test")  # subfolder names that hold a split rather than a class


class MissingSplitError(DataError):
    """An image folder was asked for a split it does not have."""


class SkipCounter:
    """Counts and reports unreadable samples: a warning per file, never a crash mid-epoch."""

    def __init__(self):
        self.skipped: list[str] = []

    def __call__(self, name: str, error: Exception) -> None:
        self.skipped.append(name)
        warnings.warn(f"skipping unreadable image {name}: {error} ({len(self.skipped)} skipped so far)", stacklevel=3)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` at any depth (class folders included), sorted; hidden
    files and folders (``.name``) are left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and _visible(p, folder))


def split_folders(root: str | Path) -> list[str]:
    """The split subfolders (train, val, test) that ``root`` has."""
    return [name for name in SPLIT_FOLDERS if (Path(root) / name).is_dir()]


def split_roots(root: Path, split: str) -> list[Path]:
    """The folders that hold ``split`` of the image folder ``root``: its split subfolder, every
    split subfolder for "all", or ``root`` itself when it has none (then only "train" or "all")."""
    splits = split_folders(root)
    if split == "all":
        return [root / s for s in splits] or [root]
    if split in splits:
        return [root / split]
    if splits:
        raise MissingSplitError(f"image folder {root} has no {split!r} split: its split folders are "
                        f"{', '.join(splits)} (or use 'all' for every one)")
    if split == "train":
        return [root]
    raise MissingSplitError(f"image folder {root} has no {split!r} split: it has no {split}/ subfolder, so all its "
                    f"images are one training set (split 'train' or 'all'). For a {split} split, put the "
                    f"images in {root}/train/ and {root}/{split}/ (class folders inside each)")


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under a folder (see the module doc for the layouts and splits); a ``captions.jsonl``
    in the folder or its split folder (lines of ``{"file": "relative/path", "caption": "..."}``,
    paths relative to the file's own folder) gives captions. Unreadable files are skipped with a
    warning (the next readable image stands in for them)."""

    def __init__(self, root: str | Path, size: int | None = None, channels: int | None = None, split: str = "all"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        self.split = split
        folders = split_roots(self.root, split)
        files = [(folder, f) for folder in folders for f in image_files(folder)]
        if not files:
            raise DataError(f"image folder {', '.join(map(str, folders))} has no images "
                            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.files = [f for _, f in files]
        self.class_names = self._class_names(folders)
        label_of = {name: i for i, name in enumerate(self.class_names)}
        self.labels = [label_of[f.relative_to(folder).parts[0]] if f.parent != folder else None
                       for folder, f in files]
        self.captions = self._read_captions(folders)
        self.size, self.channels = size, channels
        self.skips = SkipCounter()
        self.name = f"imagefolder:{self.root}"

    def _class_names(self, folders: list[Path]) -> list[str]:
        """Class folder names over every split folder (not only this split's), so that a label
        means the same class in every split."""
        every = [self.root / s for s in split_folders(self.root)] or folders
        return sorted({d.name for folder in every for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")})

    def _read_captions(self, folders: list[Path]) -> list[str | None]:
        """Each file's caption from ``captions.jsonl`` in the root and in this split's folders
        (None where none is given)."""
        paths = [place / "captions.jsonl" for place in dict.fromkeys([self.root, *folders])]
        paths = [path for path in paths if path.exists()]
        if not paths:
            return [None] * len(self.files)
        by_path = {key: caption for path in paths for key, caption in read_captions_file(path).items()}  # later win
        return [by_path.get(os.path.normpath(f)) for f in self.files]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return load_image(image, self.size, self.channels)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                image = self.load_image(i)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                self.skips(str(self.files[i]), e)
                continue
            return {"image": image, "label": self.labels[i], "caption": self.captions[i], "path": str(self.files[i])}
        raise DataError(f"no image in {self.root} could be read")

    def to_memory(self):
        """Every image read into one ``TensorImageDataset`` (what code evaluation and FID
        references need), with the labels (None unless every image has one), captions and paths."""
        from .memory import TensorImageDataset

        if self.size is None:
            raise DataError(f"reading {self.name} into memory needs a size (its images may differ in size)")
        items = [self[i] for i in range(len(self))]
        labels = [it["label"] for it in items]
        labels = None if None in labels else labels
        captions = None if all(c is None for c in self.captions) else [it["caption"] for it in items]
        return TensorImageDataset(torch.stack([it["image"] for it in items]), labels, captions, self.class_names,
                                  {"path": [it["path"] for it in items]}, name=self.name)


def read_captions_file(path: Path) -> dict[str, str]:
    """``captions.jsonl`` -> {normalised path of the image: caption}; paths in the file are
    relative to the file's folder."""
    by_path = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            by_path[os.path.normpath(path.parent / row["file"])] = row["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{number}: expected a JSON object with 'file' and 'caption', got {line!r}") from e
    return by_path
