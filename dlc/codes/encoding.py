"""Encoding a dataset into codes: a ``.npy`` of codes, or shard entries (codes, VAE latents, and
the same of the flipped image) for ``dlc.data.write_shards``. What ``dlc encode`` runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.images import to_float
from ..data.shards import batches, chunk_ranges
from ..files import atomic_write
from ..progress import tqdm
from .store import save_codes


def code_maker(encoder) -> Callable:
    return lambda images: encoder.encode(images).cpu().numpy().astype(np.uint16)


def latent_maker(space, device) -> Callable:
    """uint8 images -> float16 latents (B, C, h, w): the VAE's latent mean times its scaling factor."""
    in_channels = space.vae.config.in_channels

    def make(images):
        x = to_float(images).to(device)
        if x.shape[1] == 1 and in_channels == 3:  # grey images (fashion-mnist) through an RGB VAE
            x = x.expand(-1, 3, -1, -1)
        return space.encode(x).float().cpu().numpy().astype(np.float16)

    return make


def make_entry_makers(encoder, space=None, hflip: bool = False) -> dict[str, Callable]:
    """Shard entry name -> function of a batch of uint8 images (B, C, H, W) giving one array per
    sample: ``code.npy``, with a VAE ``latent.npy``, and with ``hflip`` the same of the flipped
    image (``code_flip.npy``, ``latent_flip.npy``): codes and latents of a flip always agree."""
    makers = {"code.npy": code_maker(encoder)}
    if space is not None:
        makers["latent.npy"] = latent_maker(space, encoder.device)
    if hflip:
        for name, make in list(makers.items()):
            makers[name.replace(".npy", "_flip.npy")] = lambda images, make=make: make(images.flip(-1))
    return makers


def encode_to_npy(dataset, make_codes: Callable, out: Path, batch_size: int, chunk: int) -> Path:
    """Codes of every image, chunk by chunk into ``OUT.parts/``, then joined into ``out``."""
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = chunk_ranges(dataset, chunk)
    with tqdm(total=len(dataset), desc="encoding", unit="img", dynamic_ncols=True) as bar:
        for k, rows in enumerate(chunks):
            part = parts / f"{k:06d}.npy"
            if part.exists():
                bar.update(len(rows))
                continue
            codes = []
            for batch in batches(dataset, rows, batch_size):
                codes.append(make_codes(batch["image"]))
                bar.update(len(batch["image"]))
            with atomic_write(part) as partial:
                np.save(partial, np.concatenate(codes))
    codes = np.concatenate([np.load(parts / f"{k:06d}.npy") for k in range(len(chunks))])
    save_codes(out, torch.from_numpy(codes.astype(np.int64)))
    shutil.rmtree(parts)
    return out
