"""Held-out compositional emoji prompts, and synthetic codes for developing the text model.

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

import torch

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


def synthetic_codes(dataset, code_length: int = 16, vocab_size: int = 64, seed: int = 0) -> torch.Tensor:
    """Stand-in codes (N, L) with structure a caption can predict, for use before an encoder exists.

    The first 3/8 of the positions spell the emoji's subgroup label, the next 1/4 its mean colour
    (the non-white pixels, 4 levels per channel: skin tones differ here) through fixed random
    tables; the rest are random per image (what a caption cannot tell). A subgroup probe on these
    codes, and so prompt fidelity, is therefore measurable.
    """
    g = torch.Generator().manual_seed(seed)
    n_label, n_colour = 3 * code_length // 8, code_length // 4
    n_random = code_length - n_label - n_colour
    labels = torch.as_tensor(dataset.labels)
    label_table = torch.randint(0, vocab_size, (int(labels.max()) + 1, n_label), generator=g)
    colour_table = torch.randint(0, vocab_size, (64, n_colour), generator=g)
    images = dataset.images.float()
    ink = (images < 240).any(1, keepdim=True).float()  # (N,1,H,W): not the white background
    mean = (images * ink).sum((2, 3)) / ink.sum((2, 3)).clamp_min(1)  # (N, 3)
    levels = (mean / 64).long().clamp(0, 3)
    colour = levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2]
    rest = torch.randint(0, vocab_size, (len(labels), n_random), generator=g)
    return torch.cat([label_table[labels], colour_table[colour], rest], dim=1)
