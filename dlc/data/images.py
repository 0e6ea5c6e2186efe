"""Image conversions shared by every dataset: PIL <-> uint8 tensors, RGB, resizing, PNG bytes,
channel counts, and the library's float convention ([-1, 1])."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "LA", "PA") or (image.mode == "RGBA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (Lanczos), then crop the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) tensor -> PNG bytes."""
    array = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(image: Image.Image, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """A PIL image -> uint8 (C, size, size): RGB (or grey with ``channels=1``), resized and centre-cropped."""
    image = to_rgb(image)
    if size:
        image = resize_center_crop(image, size)
    return to_channels(pil_to_tensor(image), channels)


def decode_image(data: bytes, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Encoded image bytes (png, jpg, webp, ...) -> uint8 (C, size, size)."""
    with Image.open(io.BytesIO(data)) as image:
        return load_image(image, size, channels)


def to_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 images (..., C, H, W) with C = 1 or 3 -> ``channels`` channels (None: as they are).
    Grey becomes RGB by repetition; RGB becomes grey by ITU-R 601 luma (PIL's "L")."""
    have = images.shape[-3]
    if channels is None or channels == have:
        return images
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB); got {channels}")
    if channels == 3:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (images.float() * weights).sum(-3, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float in [-1, 1], the library's image convention."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def collate(items: list[dict]) -> dict:
    """A batch of dataset items: images (and any tensors) stacked; labels a long tensor when all
    are known; captions and everything else kept as lists (they may hold None)."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif key == "label" and all(v is not None for v in values):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch
