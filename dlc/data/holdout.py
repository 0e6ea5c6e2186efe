"""Held-out compositional emoji prompts.

The held-out set tests whether the text-to-code model composes: every held-out name combines parts
(a profession, a gender, a person or gesture, a skin tone) that the training captions show in
other combinations, but the combination itself is never trained on. It is fixed here, by name:

- (profession, gender): "woman firefighter", "man cook", "woman pilot", "man teacher", each in all
  six tones (default yellow plus five skin tones). "firefighter", "man firefighter" and the other
  "woman ..." professions stay in training.
- (person or gesture, skin tone): eight single emoji such as "waving hand: dark skin tone";
  the same gesture in the other tones and the same tone on other people stay in training.

32 emoji in all; ``heldout_emoji(dataset)`` finds them in any emoji dataset or split.
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


def heldout_emoji(dataset) -> tuple[list[int], list[str]]:
    """(indices into ``dataset``, captions) of the held-out compositional emoji it contains."""
    pairs = [(i, c) for i, c in enumerate(dataset.captions) if c in HELDOUT_NAMES]
    return [i for i, _ in pairs], [c for _, c in pairs]


def is_heldout(caption: str | None) -> bool:
    return caption in HELDOUT_NAMES
