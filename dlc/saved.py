"""Loading saved models with errors a user can act on.

diffusers' ``from_pretrained`` reports a damaged folder with an ``OSError`` deep in its loading
code, and loads a folder saved by another model class half-way before failing on meta tensors.
``CheckedLoading`` (a mixin before ``ModelMixin``) and ``loading_errors`` (around any diffusers
load) turn both into one ``CheckpointError`` that names the folder and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CheckpointError
from .runs import model_folder


@contextmanager
def loading_errors(cls: type, name_or_path, subfolder: str | None = None) -> Iterator[None]:
    """Refuse a local folder saved from another class, then turn the loader's ``OSError`` or
    ``ValueError`` (missing or damaged files, weights that do not fit) into a ``CheckpointError``."""
    folder = Path(name_or_path) / (subfolder or "")
    if folder.is_dir():
        check_saved_class(folder, cls)
    elif not Path(name_or_path).exists() and not is_hub_repo_id(str(name_or_path)):
        raise CheckpointError(f"{folder} does not exist: expected a run directory, a model folder or a hub repo id")
    try:
        yield
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {reason}") from e


def is_hub_repo_id(name: str) -> bool:
    """True for a name the Hugging Face hub could hold (``name`` or ``owner/name``), not for a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_saved_class(folder: Path, cls: type) -> None:
    """The folder's ``config.json`` (when there is one) must name ``cls`` or one of its bases."""
    config = folder / "config.json"
    if not config.is_file():
        return  # the loader says what is missing
    try:
        saved = json.loads(config.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{config} is damaged (not a JSON object): {e}") from e
    if saved is not None and saved not in {c.__name__ for c in cls.__mro__}:
        raise CheckpointError(f"{folder} holds a saved {saved}, not a {cls.__name__}: check the path")


class CheckedLoading:
    """Put before ``ModelMixin`` in a model's bases: its ``from_pretrained`` takes a model folder, a hub
    name or a run directory (its ``model/`` folder is loaded) and raises ``CheckpointError``."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        if Path(pretrained_model_name_or_path).is_dir():
            pretrained_model_name_or_path = model_folder(pretrained_model_name_or_path)
        with loading_errors(cls, pretrained_model_name_or_path, kwargs.get("subfolder")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
