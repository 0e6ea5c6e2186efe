"""Saving images: numbered lossless PNGs and labelled grids a person can look at."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W) tensor -> PIL image (grey or RGB)."""
    array = image.detach().cpu().permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def make_grid(images: torch.Tensor | Sequence[torch.Tensor], nrow: int | None = None,
              labels: Sequence[str] | None = None, scale: int = 1, pad: int = 2,
              label_chars: int = 18) -> Image.Image:
    """A grid of uint8 (C, H, W) images on white, each optionally with a short caption below."""
    images = [to_pil(im) for im in images]
    if not images:
        raise ValueError("make_grid needs at least one image")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    w, h = images[0].width * scale, images[0].height * scale
    font = ImageFont.load_default()
    label_h = 12 if labels else 0
    cell_w = max(w, 6 * min(label_chars, max((len(t) for t in labels), default=0))) if labels else w
    rows = math.ceil(len(images) / nrow)
    grid = Image.new("RGB", (nrow * (cell_w + pad) + pad, rows * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        x, y = pad + c * (cell_w + pad), pad + r * (h + label_h + pad)
        grid.paste(image.convert("RGB").resize((w, h), Image.NEAREST), (x + (cell_w - w) // 2, y))
        if labels:
            text = labels[i] if len(labels[i]) <= label_chars else labels[i][: label_chars - 1] + "…"
            draw.text((x, y + h), text, fill="black", font=font)
    return grid


DISPLAY_PIXELS = 96  # what a grid shows a small image at by default: 32 px images drawn 3x


def display_scale(height: int, pixels: int = DISPLAY_PIXELS) -> int:
    """The whole nearest-neighbour factor that draws an image of ``height`` pixels at about
    ``pixels`` (never below 1: large images are drawn as they are)."""
    return max(1, round(pixels / height))


def pairs_grid(sources: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], pairs_per_row: int = 4,
               scale: int | None = None, names: tuple[str, str] = ("input", "output")) -> Image.Image:
    """Each output beside its source (input, output, input, output, ...), captioned, at
    ``scale`` (None: ``display_scale``). Sources are drawn at the outputs' size."""
    size = outputs[0].shape[-1]
    cells = [im for pair in zip(sources, outputs) for im in (fit(pair[0], size), pair[1])]
    return make_grid(cells, nrow=2 * pairs_per_row, labels=list(names) * len(outputs),
                     scale=scale or display_scale(size))


def parents_grid(parents: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], nrow: int | None = None,
                 scale: int | None = None) -> Image.Image:
    """The parents in a captioned first row ("parent A", ...), the outputs below, at ``scale``
    (None: ``display_scale``)."""
    size = outputs[0].shape[-1]
    scale = scale or display_scale(size)
    top = make_grid([fit(p, size) for p in parents], nrow=len(parents), scale=scale,
                    labels=[f"parent {chr(ord('A') + i)}" for i in range(len(parents))])
    bottom = make_grid(outputs, nrow=nrow, scale=scale)
    grid = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 4), "white")
    grid.paste(top, (0, 0))
    grid.paste(bottom, (0, top.height + 4))
    return grid


def fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 (C, H, W) image resized (short side, Lanczos) and centre-cropped to ``size``."""
    from .data import load_image

    return image if image.shape[-2:] == (size, size) else load_image(to_pil(image), size, image.shape[0])


def read_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W), resized (short side) and centre-cropped to ``size``
    when given."""
    from .data import load_image

    with Image.open(path) as image:
        return load_image(image, size)


def save_grid(images, path: str | Path, **kwargs) -> Path:
    return save_image(make_grid(images, **kwargs), path)


def save_image(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_pngs(images: torch.Tensor | Sequence[torch.Tensor], out_dir: str | Path, start: int = 0) -> list[Path]:
    """Numbered lossless PNGs ``000000.png, ...`` (numbering from ``start``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{i:06d}.png" for i in range(start, start + len(images))]
    for image, path in zip(images, paths):
        to_pil(image).save(path)
    return paths
