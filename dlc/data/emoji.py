"""The 3,655 Noto colour emoji (Debian packages ``fonts-noto-color-emoji`` and ``unicode-data``),
rendered with PIL, captioned with their CLDR names, labelled by subgroup, split 90/10 by subgroup."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..files import atomic_write
from .images import to_channels
from .memory import TensorImageDataset, cache_dir, require_package, stratified_split

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_TEST_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass
class EmojiEntry:
    codepoints: str
    name: str
    group: str
    subgroup: str

    @property
    def base_name(self) -> str:
        return self.name.split(":")[0].strip()

    @property
    def skin_tone(self) -> str | None:
        qualifier = self.name.split(":", 1)[1].strip() if ":" in self.name else ""
        return qualifier if "skin tone" in qualifier else None


def read_emoji_list(path: Path = EMOJI_TEST) -> list[EmojiEntry]:
    """The fully-qualified emoji of ``emoji-test.txt``, in file order, with group and subgroup."""
    require_package(path, "unicode-data")
    entries, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codes, comment = line.split("#", 1)
            chars = "".join(chr(int(c, 16)) for c in codes.split(";")[0].split())
            # comment: " 😀 E1.0 grinning face"
            name = comment.strip().split(" ", 2)[2]
            entries.append(EmojiEntry(chars, name, group, subgroup))
    return entries


def render_emoji(chars: str, size: int, font) -> Image.Image:
    """One emoji, tightly cropped, centred on a white square, resized with Lanczos."""
    from PIL import ImageDraw

    canvas = Image.new("RGBA", (320, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), chars, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise DataError(f"the emoji font has no glyph for {chars!r}")
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS)


def _render_all_emoji(size: int) -> tuple[np.ndarray, list[EmojiEntry]]:
    from PIL import ImageFont

    from ..progress import tqdm

    require_package(EMOJI_FONT, "fonts-noto-color-emoji")
    entries = read_emoji_list()
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # a bitmap font: 109 px is its only size
    images = np.stack(
        [np.asarray(render_emoji(e.codepoints, size, font)) for e in tqdm(entries, desc=f"rendering emoji at {size}px", leave=False)]
    )
    return images.transpose(0, 3, 1, 2), entries


def emoji_split(subgroups: list[str], test_fraction: float = EMOJI_TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean test mask: in each subgroup (file order), fraction * n (rounded half up) emoji drawn with a
    fixed seed go to test. Deterministic for a given emoji-test.txt."""
    return stratified_split(subgroups, test_fraction, seed)


def load_emoji(size: int = 32, split: str = "train", channels: int | None = None) -> TensorImageDataset:
    """The Noto colour emoji: ``split`` is "train" (about 90%), "test" (about 10%, stratified by
    subgroup) or "all". Rendered once per size and cached under ``cache_dir()``."""
    path = cache_dir() / f"emoji-{size}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        images = stored["images"]
        meta = json.loads(str(stored["meta"]))
        entries = [EmojiEntry(**m) for m in meta]
    else:
        images, entries = _render_all_emoji(size)
        with atomic_write(path) as partial:
            np.savez(partial, images=images, meta=np.asarray(json.dumps([e.__dict__ for e in entries])))
    subgroup_names = list(dict.fromkeys(e.subgroup for e in entries))
    labels = [subgroup_names.index(e.subgroup) for e in entries]
    full = TensorImageDataset(
        to_channels(torch.from_numpy(np.ascontiguousarray(images)), channels),
        labels,
        [e.name for e in entries],
        subgroup_names,
        {
            "group": [e.group for e in entries],
            "subgroup": [e.subgroup for e in entries],
            "base_name": [e.base_name for e in entries],
            "skin_tone": [e.skin_tone for e in entries],
            "emoji": [e.codepoints for e in entries],
        },
        name="emoji",
    )
    return full.split(emoji_split([e.subgroup for e in entries]), split)
