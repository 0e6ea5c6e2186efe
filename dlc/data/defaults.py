"""What a dataset suggests to the stages trained on it when their config leaves a setting unset
(null): the text stage's sample prompts, the captions held out of text training, and the
encoder's augmentations.

A built-in dataset declares them here, by name; an image folder in an optional ``dataset.json``
beside its images::

    {"prompts": ["red K", "blue S"],                 # the text stage's sample prompts
     "heldout": ["red K", "blue S"],                 # captions never shown to the text model
     "augmentations": {"flip": false, "grayscale_prob": 0.0, "saturation": 0.0}}

Every key is optional. Without prompts the text stage samples a few of the training captions;
without a held-out list nothing is held out; augmentations left out take the encoder's generic
choice (DINO's: flips, colour jitter, 20% greyscale).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .holdout import is_heldout, is_heldout_glyph

DEFAULTS_FILE = "dataset.json"


@dataclass(frozen=True)
class DatasetDefaults:
    """A dataset's own choices; ``heldout`` says whether a caption is held out of text training
    (None: the dataset holds nothing out)."""

    prompts: tuple[str, ...] = ()
    heldout: Callable[[str | None], bool] | None = None
    augmentations: Mapping[str, object] = field(default_factory=dict)


BUILT_IN = {
    "emoji": DatasetDefaults(
        prompts=("red apple", "grinning face", "cat face", "rocket",  # seen in training, then held out
                 "woman firefighter", "waving hand: dark skin tone"),
        heldout=is_heldout),
    # letters are not mirror-symmetric and colour is a factor: no flips, no greyscale, weak colour jitter
    "glyphs": DatasetDefaults(
        prompts=("red A on white, DejaVu Sans", "blue K on cream, DejaVu Serif Bold",  # seen pairs, then held out
                 "red K on white, DejaVu Sans", "blue S on cream, DejaVu Serif Bold"),
        heldout=is_heldout_glyph,
        augmentations={"flip": False, "brightness": 0.2, "contrast": 0.2, "saturation": 0.1, "grayscale_prob": 0.0}),
    # grey images: saturation and greyscale change nothing
    "fashion-mnist": DatasetDefaults(augmentations={"saturation": 0.0, "grayscale_prob": 0.0}),
}


def dataset_defaults(name: str) -> DatasetDefaults:
    """The defaults of the dataset ``name`` (as ``dlc.data.load`` takes it)."""
    from . import canonical_name

    name = canonical_name(name)
    if name.startswith("imagefolder:"):
        return read_defaults(Path(name.split(":", 1)[1]) / DEFAULTS_FILE)
    return BUILT_IN.get(name, DatasetDefaults())


def read_defaults(path: Path) -> DatasetDefaults:
    """An image folder's ``dataset.json`` (absent: no defaults)."""
    if not path.is_file():
        return DatasetDefaults()
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    keys = {"prompts": list, "heldout": list, "augmentations": dict}
    if not isinstance(spec, dict) or set(spec) - set(keys):
        raise DataError(f"{path}: expected a JSON object with some of the keys {', '.join(keys)}; got {spec!r}")
    for key, kind in keys.items():
        if key in spec and not isinstance(spec[key], kind):
            raise DataError(f"{path}: {key!r} must be a JSON {'list' if kind is list else 'object'}; got {spec[key]!r}")
    heldout = frozenset(spec.get("heldout", ()))
    return DatasetDefaults(prompts=tuple(spec.get("prompts", ())),
                           heldout=heldout.__contains__ if heldout else None,
                           augmentations=dict(spec.get("augmentations", {})))


def sample_prompts(defaults: DatasetDefaults, captions, n: int = 4) -> list[str]:
    """The dataset's prompts, else its first ``n`` distinct captions."""
    return list(defaults.prompts) if defaults.prompts else list(dict.fromkeys(c for c in captions if c))[:n]
