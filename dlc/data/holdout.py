"""Held-out compositional prompts: emoji, and colour x letter pairs of the glyphs.

The held-out set tests whether the text-to-code model composes: every held-out name combines parts
(a profession, a gender, a person or gesture, a skin tone) that the training captions show in
other combinations, but the combination itself is never trained on. It is fixed here, by name:

- (profession, gender): "woman firefighter", "man cook", "woman pilot", "man teacher", each in all
  six tones (default yellow plus five skin tones). "firefighter", "man firefighter" and the other
  "woman ..." professions stay in training.
- (person or gesture, skin tone): eight single emoji such as "waving hand: dark skin tone";
  the same gesture in the other tones and the same tone on other people stay in training.

32 emoji in all; ``heldout_emoji(dataset)`` finds them in any emoji dataset or split.

Glyphs (``dlc.data.load("glyphs")``): four colour x letter pairs, red K, blue S, green R and purple E,
are never in the training split; every other colour of those letters and every other letter in
those colours are. Their images (all backgrounds and fonts) are all in the test split;
``heldout_glyphs(dataset)`` finds them by caption ("red K on white, DejaVu Sans").
"""

from __future__ import annotations

SKIN_TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
HELDOUT_PROFESSION_GENDER = ("woman firefighter", "man cook", "woman pilot", "man teacher")
HELDOUT_PERSON_TONE = (
    "waving hand: dark skin tone",
    "thumbs up: medium skin tone",
    "person running: light skin tone",
    "OK hand: medium-dark skin tone",
    "man dancing: medium-light skin tone",
    "baby: medium-dark skin tone",
    "clapping hands: light skin tone",
    "raised fist: dark skin tone",
)
HELDOUT_NAMES = frozenset(
    [f"{base}: {tone} skin tone" for base in HELDOUT_PROFESSION_GENDER for tone in SKIN_TONES]
    + list(HELDOUT_PROFESSION_GENDER)
    + list(HELDOUT_PERSON_TONE)
)

HELDOUT_GLYPHS = (("K", "red"), ("S", "blue"), ("R", "green"), ("E", "purple"))  # (letter, colour)
HELDOUT_GLYPH_PROMPTS = frozenset(f"{colour} {letter}" for letter, colour in HELDOUT_GLYPHS)


def heldout_emoji(dataset) -> tuple[list[int], list[str]]:
    """(indices into ``dataset``, captions) of the held-out compositional emoji it contains."""
    pairs = [(i, c) for i, c in enumerate(dataset.captions) if c in HELDOUT_NAMES]
    return [i for i, _ in pairs], [c for _, c in pairs]


def heldout_glyphs(dataset) -> tuple[list[int], list[str]]:
    """(indices into ``dataset``, captions) of the held-out colour x letter glyphs it contains."""
    pairs = [(i, c) for i, c in enumerate(dataset.captions) if is_heldout_glyph(c)]
    return [i for i, _ in pairs], [c for _, c in pairs]


def is_heldout_glyph(caption: str | None) -> bool:
    """Whether a glyph caption ("red K on white, DejaVu Sans", or just "red K") names a held-out pair."""
    return caption is not None and caption.split(" on ", 1)[0].strip() in HELDOUT_GLYPH_PROMPTS


def is_heldout(caption: str | None) -> bool:
    """Whether ``caption`` is a held-out emoji name."""
    return caption in HELDOUT_NAMES
