"""A folder of images as a dataset: class subfolders become labels, ``captions.jsonl`` gives captions."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, load_image


class SkipCounter:
    """Counts and reports unreadable samples: a warning per file, never a crash mid-epoch."""

    def __init__(self):
        self.skipped: list[str] = []

    def __call__(self, name: str, error: Exception) -> None:
        self.skipped.append(name)
        warnings.warn(f"skipping unreadable image {name}: {error} ({len(self.skipped)} skipped so far)", stacklevel=3)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under a folder; class subfolders become labels, a ``captions.jsonl`` beside the images
    (lines of ``{"file": "relative/path", "caption": "..."}``) gives captions. Unreadable files are
    skipped with a warning (the next readable image stands in for them)."""

    def __init__(self, root: str | Path, size: int | None = None, channels: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise DataError(
                f"image folder {self.root} has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        relative = [p.relative_to(self.root) for p in self.files]
        self.class_names = sorted({r.parts[0] for r in relative if len(r.parts) > 1})
        self.labels = [self.class_names.index(r.parts[0]) if len(r.parts) > 1 else None for r in relative]
        self.captions = self._read_captions(relative)
        self.size, self.channels = size, channels
        self.skips = SkipCounter()
        self.name = f"imagefolder:{self.root}"

    def _read_captions(self, relative: list[Path]) -> list[str | None]:
        path = self.root / "captions.jsonl"
        if not path.exists():
            return [None] * len(relative)
        by_file = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                by_file[str(Path(row["file"]))] = row["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(
                    f"{path}:{number}: expected a JSON object with 'file' and 'caption', got {line!r}"
                ) from e
        return [by_file.get(str(r)) for r in relative]

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
