"""A folder of generated samples that 50,000 images stream into, that survives a kill, and that
never mixes runs with different settings (what ``dlc sample``, ``dlc compose`` and ``dlc text2img`` write)::

    OUT/settings.json           every setting that decides the pictures; written before the first image
    OUT/images/000000.png ...   one lossless PNG per sample index, each written whole or not at all
    OUT/grid.png                the first 64 samples
    OUT/codes.npy               the codes used (uint16, row i = sample i), when known
    OUT/samples.npz             optional: arr_0 uint8 (N, H, W, C) of every sample, for the ADM evaluator

    folder = SampleFolder("OUT")
    folder.claim(settings)                 # refuses a folder holding samples made with other settings
    todo = folder.missing(indices)         # what a re-run after a kill still has to draw
    folder.write(images, todo)             # uint8 (N, C, H, W), sample indices
    folder.finish(settings, npz=True)      # grid, npz (streamed from the PNGs), settings.json

Sample i depends only on (seed, i), so a re-run that draws only the missing indices leaves a
folder byte-identical to an uninterrupted run. What "other settings" means: any entry of
``settings`` except those in ``RUN_KEYS``, which say how a run went, not what it drew.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .codes import save_codes
from .config import flat_keys
from .errors import DLCError
from .files import atomic_write
from .imageio import display_scale, make_grid, pairs_grid, parents_grid, read_image, to_pil
from .npzio import write_npz

GRID_SIZE = 64  # the grid shows the first 64 samples, however many there are
RUN_KEYS = ("start", "num", "batch_size", "chunk_size", "num_images", "argv", "created")


class OutputFolderError(DLCError, FileExistsError):
    """An output folder that holds samples made with other settings."""


class SampleFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.images = self.root / "images"
        self.settings_file = self.root / "settings.json"

    def path(self, index: int) -> Path:
        return self.images / f"{index:06d}.png"

    def indices(self) -> list[int]:
        """The sample indices on disk, in order."""
        return sorted(int(p.stem) for p in self.images.glob("*.png") if p.stem.isdigit())

    def missing(self, indices: Sequence[int]) -> list[int]:
        return [i for i in indices if not self.path(i).is_file()]

    # ---- settings ----------------------------------------------------------------------------

    def claim(self, settings: dict, write: bool = True) -> None:
        """Refuse (on every process) a folder whose samples were made with other settings, or
        whose images have no settings.json; write ``settings`` there first if it holds no
        samples yet (with ``write``: on the main process only)."""
        settings = _as_json(settings)
        existing = self.read_settings()
        if not self.indices():
            if write:
                self.root.mkdir(parents=True, exist_ok=True)
                _write_atomically(self.settings_file, _dumps(settings))
            return
        if existing is None:
            raise OutputFolderError(f"{self.root} holds images but no settings.json, so nothing says how they were "
                                    "made: give another --out, or delete that folder to start over")
        there, now = (flat_keys({k: v for k, v in d.items() if k not in RUN_KEYS}) for d in (existing, settings))
        differences = [f"{k}: {there.get(k)!r} there, {now.get(k)!r} now"
                       for k in sorted(set(there) | set(now)) if there.get(k) != now.get(k)]
        if differences:
            raise OutputFolderError(f"{self.root} holds samples made with other settings ({'; '.join(differences)}): "
                                    "give another --out, or delete that folder to start over")

    def read_settings(self) -> dict | None:
        return json.loads(self.settings_file.read_text()) if self.settings_file.is_file() else None

    # ---- images ------------------------------------------------------------------------------

    def write(self, images: torch.Tensor, indices: Sequence[int]) -> None:
        """One PNG per uint8 (C, H, W) image, under a temporary name until complete: a kill leaves
        whole PNGs only."""
        self.images.mkdir(parents=True, exist_ok=True)
        for image, index in zip(images, indices):
            with atomic_write(self.path(index)) as partial:
                to_pil(image).save(partial, format="PNG")

    def read(self, index: int) -> np.ndarray:
        """Sample ``index`` as uint8 (H, W, C)."""
        array = np.array(Image.open(self.path(index)))
        return array[:, :, None] if array.ndim == 2 else array

    def finish(self, settings: dict, codes: torch.Tensor | None = None, npz: bool = False,
               grid_cols: int | None = None, grid_scale: int | None = None, sources: Sequence[Path] | None = None,
               parents: Sequence[Path] | None = None) -> None:
        """The grid of the first 64 samples, the codes, the ``.npz`` of every sample (streamed:
        one image in memory at a time) and settings.json with the count of samples on disk.

        The grid draws each sample beside its source image (``sources[i]`` made sample i: a
        reconstruction), or below the ``parents`` it was composed from, at ``grid_scale`` times
        (nearest neighbour; None: small images at about 96 px)."""
        indices = self.indices()
        if not indices:
            raise DLCError(f"no samples in {self.images}")
        self.grid(indices[:GRID_SIZE], grid_cols, grid_scale, sources, parents).save(self.root / "grid.png")
        if codes is not None:
            save_codes(self.root / "codes.npy", codes)
        if npz:
            first = self.read(indices[0])
            write_npz(self.root / "samples.npz", (len(indices), *first.shape), (self.read(i) for i in indices))
        record = {**_as_json(settings), "num_images": len(indices), "argv": sys.argv[1:],
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_atomically(self.settings_file, _dumps(record))

    def grid(self, indices: list[int], cols: int | None, scale: int | None, sources: Sequence[Path] | None,
             parents: Sequence[Path] | None) -> Image.Image:
        """The picture of samples ``indices``: alone, beside their sources, or below their parents."""
        samples = [torch.from_numpy(self.read(i)).permute(2, 0, 1) for i in indices]
        if sources is not None:
            return pairs_grid([read_image(sources[i]) for i in indices], samples, (cols or 8) // 2 or 1, scale)
        if parents is not None:
            return parents_grid([read_image(p) for p in parents], samples, cols, scale)
        return make_grid(samples, nrow=cols, scale=scale or display_scale(samples[0].shape[-1]))


def _as_json(settings: dict) -> dict:
    """``settings`` as they read back from settings.json (tuples as lists, paths as strings)."""
    return json.loads(_dumps(settings))


def _dumps(settings: dict) -> str:
    return json.dumps(settings, indent=2, default=str) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    with atomic_write(path) as partial:
        partial.write_text(text)
