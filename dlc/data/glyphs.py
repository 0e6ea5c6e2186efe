"""Glyphs: letters with known factors, rendered with PIL in the DejaVu fonts (Debian packages
``fonts-dejavu-core`` and ``fonts-dejavu-extra``).

Every (letter, colour, background) combination is drawn ``VARIANTS`` times, each time in another
font (drawn without replacement, seeded per combination) with a small seeded jitter of scale,
position and shade. 26 letters x 8 colours x 4 backgrounds x 5 = 4,160 images. Each item carries
its factors as integer fields (``letter``, ``colour``, ``background``, ``font``) and names
(``letter_name``, ...), a caption such as "red K on white, DejaVu Serif Bold", and the letter as its
label.

Split: in every combination one variant (seeded) goes to test, the others to train, except the
held-out colour x letter pairs of ``dlc.data.holdout.HELDOUT_GLYPHS`` (red K, blue S, green R,
purple E), whose images all go to test: 3,264 train / 896 test, 80 of them held out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..files import atomic_write
from .holdout import HELDOUT_GLYPHS
from .images import to_channels
from .memory import TensorImageDataset, cache_dir, require_package

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
DEJAVU_CORE = DEJAVU_DIR / "DejaVuSans.ttf"            # one file of each package, for `dlc data list`
DEJAVU_EXTRA = DEJAVU_DIR / "DejaVuSerif-Italic.ttf"
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
COLOURS = {  # letter colours: saturated, each readable on every background
    "red": (215, 30, 35), "orange": (240, 125, 0), "green": (25, 150, 45), "teal": (0, 150, 170),
    "blue": (30, 60, 215), "purple": (130, 45, 180), "pink": (230, 40, 150), "brown": (120, 70, 25),
}
BACKGROUNDS = {"white": (255, 255, 255), "grey": (195, 195, 195), "cream": (245, 230, 180),
               "light blue": (195, 220, 245)}
CORE_FONTS = 6       # the first six of FONT_FILES come from fonts-dejavu-core, the rest from -extra
FONT_FILES = (  # every DejaVu text face but ExtraLight (its strokes vanish at 32 px)
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSerif", "DejaVuSerif-Bold",
    "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSansCondensed", "DejaVuSansCondensed-Bold",
    "DejaVuSansCondensed-Oblique", "DejaVuSansCondensed-BoldOblique", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic", "DejaVuSerifCondensed",
    "DejaVuSerifCondensed-Bold", "DejaVuSerifCondensed-Italic", "DejaVuSerifCondensed-BoldItalic",
)
VARIANTS = 5         # images per (letter, colour, background), each in another font
SPLIT_SEED = 0       # fonts, jitter and the test variant of every combination
RENDER_VERSION = 1   # bump when rendering changes: the cache file names it
SUPERSAMPLE = 4      # drawn at 4x the size, then box-filtered down (antialiasing)


def font_name(stem: str) -> str:
    """``DejaVuSerifCondensed-BoldItalic`` -> ``DejaVu Serif Condensed Bold Italic``."""
    return " ".join(["DejaVu", *re.findall(r"[A-Z][a-z]*", stem[len("DejaVu"):])])


FONTS = tuple(font_name(stem) for stem in FONT_FILES)
FACTORS = {"letter": list(LETTERS), "colour": list(COLOURS), "background": list(BACKGROUNDS), "font": list(FONTS)}


@dataclass(frozen=True)
class Glyph:
    """One item's factors, as indices into ``LETTERS``, ``COLOURS``, ``BACKGROUNDS`` and ``FONTS``."""

    letter: int
    colour: int
    background: int
    font: int
    variant: int

    def name(self, factor: str) -> str:
        """The name of this glyph's ``factor``: ``name("colour")`` -> "red"."""
        return FACTORS[factor][getattr(self, factor)]

    @property
    def caption(self) -> str:
        return glyph_caption(*(self.name(f) for f in FACTORS))

    @property
    def is_heldout(self) -> bool:
        return (self.name("letter"), self.name("colour")) in HELDOUT_GLYPHS


def glyph_caption(letter: str, colour: str, background: str, font: str) -> str:
    """The caption of one glyph: "red K on white, DejaVu Serif Bold"."""
    return f"{colour} {letter} on {background}, {font}"


def glyph_plan(seed: int = SPLIT_SEED) -> tuple[list[Glyph], np.ndarray]:
    """Every item's factors, in a fixed order, and the boolean test mask (see the module doc).
    Another ``seed`` draws other fonts and another test variant for every combination."""
    items, is_test = [], []
    for li in range(len(LETTERS)):
        for ci in range(len(COLOURS)):
            for bi in range(len(BACKGROUNDS)):
                rng = np.random.default_rng([seed, li, ci, bi])
                fonts = rng.choice(len(FONTS), VARIANTS, replace=False)
                test_variant = int(rng.integers(VARIANTS))
                for v, fi in enumerate(fonts):
                    items.append(Glyph(li, ci, bi, int(fi), v))
                    is_test.append(items[-1].is_heldout or v == test_variant)
    return items, np.asarray(is_test)


@cache
def _font(stem: str, pixels: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(DEJAVU_DIR / f"{stem}.ttf"), pixels)


def _jittered(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int, per_channel: bool) -> tuple[int, ...]:
    """``rgb`` shifted by up to ``amount`` levels: per channel (a tint), or all alike (a shade)."""
    shifts = rng.integers(-amount, amount + 1, size=3 if per_channel else 1)
    return tuple(int(np.clip(c + s, 0, 255)) for c, s in zip(rgb, np.broadcast_to(shifts, 3)))


def render_glyph(glyph: Glyph, size: int, seed: int = SPLIT_SEED) -> Image.Image:
    """One glyph as an RGB image of ``size`` pixels: the letter's tight box scaled to 62-82% of the
    side, placed near the centre (within 8% of the side), the letter's colour tinted by up to 12
    levels per channel and the background's shade by up to 6; all drawn
    from a generator seeded by (seed, factors, variant), so the same item always has the same pixels."""
    from PIL import ImageDraw

    rng = np.random.default_rng([seed, glyph.letter, glyph.colour, glyph.background, glyph.variant, 1])
    big = size * SUPERSAMPLE
    mask = Image.new("L", (2 * big, 2 * big), 0)
    ImageDraw.Draw(mask).text((big // 2, big // 2), glyph.name("letter"), font=_font(FONT_FILES[glyph.font], big), fill=255)
    mask = mask.crop(mask.getbbox())
    scale = rng.uniform(0.62, 0.82) * big / max(mask.size)
    mask = mask.resize((max(1, round(mask.width * scale)), max(1, round(mask.height * scale))), Image.LANCZOS)
    shift = rng.uniform(-0.08, 0.08, size=2) * big
    x = int(np.clip((big - mask.width) / 2 + shift[0], 0, big - mask.width))
    y = int(np.clip((big - mask.height) / 2 + shift[1], 0, big - mask.height))
    canvas = Image.new("RGB", (big, big), _jittered(BACKGROUNDS[glyph.name("background")], rng, 6, False))
    canvas.paste(Image.new("RGB", mask.size, _jittered(COLOURS[glyph.name("colour")], rng, 12, True)), (x, y), mask)
    return canvas.reduce(SUPERSAMPLE)


def render_glyphs(items: list[Glyph], size: int, seed: int = SPLIT_SEED, desc: str | None = None) -> np.ndarray:
    """``items`` rendered at ``size``: uint8 (N, 3, size, size)."""
    from ..progress import tqdm

    require_fonts()
    images = [np.asarray(render_glyph(g, size, seed)) for g in tqdm(items, desc=desc, leave=False, disable=desc is None)]
    return np.stack(images).transpose(0, 3, 1, 2)


def require_fonts() -> None:
    """A clear error naming the Debian package when a DejaVu font is missing."""
    for i, stem in enumerate(FONT_FILES):
        require_package(DEJAVU_DIR / f"{stem}.ttf", "fonts-dejavu-core" if i < CORE_FONTS else "fonts-dejavu-extra")


def cached_renders(items: list[Glyph], size: int, seed: int, tag: str) -> np.ndarray:
    """``render_glyphs`` once per (tag, size, seed), then from ``cache_dir()``."""
    path = cache_dir() / f"{tag}-{size}-s{seed}-v{RENDER_VERSION}.npy"
    if path.exists():
        images = np.load(path, allow_pickle=False)
        if len(images) == len(items):
            return images
    images = render_glyphs(items, size, seed, desc=f"rendering {tag} at {size}px")
    with atomic_write(path) as partial:
        np.save(partial, images)
    return images


def glyph_dataset(images: np.ndarray, items: list[Glyph], channels: int | None, name: str = "glyphs") -> TensorImageDataset:
    """Rendered ``images`` of ``items`` as a dataset: letter labels, captions, factor fields."""
    fields = {}
    for factor, names in FACTORS.items():
        fields[factor] = [getattr(g, factor) for g in items]
        fields[f"{factor}_name"] = [names[getattr(g, factor)] for g in items]
    return TensorImageDataset(to_channels(torch.from_numpy(np.ascontiguousarray(images)), channels),
                              fields["letter"], [g.caption for g in items], list(LETTERS), fields, name=name,
                              factors=FACTORS)


def load_glyphs(size: int = 32, split: str = "train", channels: int | None = None) -> TensorImageDataset:
    """The glyphs (module doc): ``split`` "train" (3,264), "test" (896, with every held-out pair) or
    "all". Rendered once per size (about a second per thousand at 32 px) and cached."""
    if size < 8:
        raise DataError(f"glyphs need size >= 8 pixels to stay legible (got {size})")
    items, is_test = glyph_plan()
    images = cached_renders(items, size, SPLIT_SEED, "glyphs")
    return glyph_dataset(images, items, channels).split(is_test, split)


def parse_glyph_caption(caption: str) -> dict[str, str] | None:
    """"red K on white, DejaVu Sans" (the font optional) -> {"colour": "red", "letter": "K",
    "background": "white", "font": "DejaVu Sans"}; None for any other caption."""
    match = _CAPTION.fullmatch(caption.strip())
    return None if match is None else {k: v for k, v in match.groupdict().items() if v is not None}


_CAPTION = re.compile(rf"(?P<colour>{'|'.join(COLOURS)}) (?P<letter>[A-Z])"
                      rf"(?: on (?P<background>{'|'.join(BACKGROUNDS)}))?(?:, (?P<font>DejaVu [A-Za-z ]+))?")
