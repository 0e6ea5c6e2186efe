"""What every converter shares: reading a checkpoint in any of the usual containers, stripping
wrapper prefixes, loading a renamed state dict with every key and shape checked, and adding a
converted part to a pipeline folder.

A converter is a renaming: ``rename(source_key) -> target_key`` (None for a key it does not know).
``load_checked`` then refuses, with the first offending key named, a source key with no place in
the model, a model key with no source, or a shape that differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
                "diffusion_pytorch_model.bin")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def read_checkpoint(path: str | Path, subfolders: Iterable[str] = ()) -> dict:
    """The object stored at ``path``: a .safetensors file, a torch file (.pt/.pth/.bin, read with
    ``weights_only=True``; an ``argparse.Namespace`` of training arguments is allowed), or a folder
    holding one of ``WEIGHT_FILES`` (itself or in one of ``subfolders``, e.g. a pipeline's ``transformer``)."""
    path = Path(path)
    if path.is_dir():
        for folder in [path, *(path / s for s in subfolders)]:
            for name in WEIGHT_FILES:
                if (folder / name).is_file():
                    return read_checkpoint(folder / name)
        raise CheckpointError(f"{path} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: give a checkpoint file or a model folder")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # an unpickling refusal or a corrupt file: both mean "not a plain checkpoint"
            raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {e}") from e


def select_weights(checkpoint: dict, wanted: str, containers: Iterable[str]) -> dict:
    """The state dict inside a training checkpoint: ``checkpoint[wanted]`` when the checkpoint is a
    container with any of the keys ``containers`` (e.g. fast-DiT's ``model``/``ema``), else the
    checkpoint itself."""
    containers = list(containers)
    if not any(isinstance(checkpoint.get(k), dict) for k in containers):
        return checkpoint
    if not isinstance(checkpoint.get(wanted), dict):
        have = [k for k in containers if isinstance(checkpoint.get(k), dict)]
        raise CheckpointError(f"the checkpoint has no {wanted!r} weights; it has {', '.join(have)}")
    return checkpoint[wanted]


def strip_prefixes(state: dict, prefixes: Iterable[str] = WRAPPER_PREFIXES) -> dict:
    """Remove wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``, ...) shared by
    every key, repeatedly and in any order."""
    prefixes = tuple(prefixes)
    while state and (prefix := next((p for p in prefixes if all(k.startswith(p) for k in state)), None)):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def tensors_only(state: dict, what: str) -> dict[str, torch.Tensor]:
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{what}: key {bad!r} holds a {type(state[bad]).__name__}, not a tensor: "
                              "not a state dict (give the model's weights)")
    return state


def checkpoint_state(source: str | Path | dict, what: str, wanted: str = "", containers: Iterable[str] = (),
                     subfolders: Iterable[str] = (), prefixes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The state dict in ``source`` (a state dict, or what ``read_checkpoint`` reads there or in one
    of ``subfolders``): ``wanted`` of a training checkpoint with ``containers`` (``select_weights``),
    ``WRAPPER_PREFIXES`` and ``prefixes`` stripped, every value a tensor."""
    checkpoint = source if isinstance(source, dict) else read_checkpoint(source, subfolders)
    state = select_weights(checkpoint, wanted, containers)
    return tensors_only(strip_prefixes(state, (*WRAPPER_PREFIXES, *prefixes)), what)


def renamed(state: dict[str, torch.Tensor], rename: Callable[[str], str | None], what: str) -> dict:
    """``state`` with every key renamed; a key ``rename`` does not know is an error naming it."""
    out = {}
    for key, value in state.items():
        target = rename(key)
        if target is None:
            raise CheckpointError(f"{what}: source key {key!r} {tuple(value.shape)} is not part of the architecture "
                                  "this converter knows")
        out[target] = value
    return out


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], what: str,
                 rename: Callable[[str], str | None] | None = None) -> nn.Module:
    """Load ``state`` (in the model's names, or in the source's with ``rename``: see ``renamed``) into
    ``model``: every key of ``state`` must be a key of the model, every key of the model must be in
    ``state``, with equal shapes."""
    if rename is not None:
        state = renamed(state, rename, what)
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{what}: converted key {key!r} {tuple(value.shape)} has no place in the model")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{what}: key {key!r} has shape {tuple(value.shape)}; the model expects "
                                  f"{tuple(expected[key].shape)}")
    missing = next((k for k in expected if k not in state), None)
    if missing is not None:
        raise CheckpointError(f"{what}: the model's key {missing!r} {tuple(expected[missing].shape)} has no source "
                              "in the checkpoint")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model


def require(state: dict, key: str, what: str, ndim: int | None = None) -> torch.Tensor:
    """``state[key]``, or an error saying the checkpoint lacks it (an architecture fact read from it)."""
    if key not in state:
        raise CheckpointError(f"{what}: the checkpoint has no {key!r}; it is not this architecture "
                              f"(first keys: {', '.join(list(state)[:4])})")
    value = state[key]
    if ndim is not None and value.ndim != ndim:
        raise CheckpointError(f"{what}: {key!r} has shape {tuple(value.shape)}; expected {ndim} dimensions")
    return value


def count_indexed(state: dict, prefix: str) -> int:
    """How many consecutive ``prefix{i}.`` groups the keys have (a transformer's depth)."""
    depth = 0
    while any(k.startswith(f"{prefix}{depth}.") for k in state):
        depth += 1
    return depth


# ---- the pipeline folder ----------------------------------------------------------------------

INDEX = "model_index.json"


def pipeline_index(out_dir: str | Path) -> dict:
    index = Path(out_dir) / INDEX
    if not index.is_file():
        raise CheckpointError(f"{out_dir} is not a converted pipeline yet (no {INDEX}): run `dlc convert dit` "
                              "into it first")
    return json.loads(index.read_text())


def pipeline_code_shape(out_dir: str | Path) -> tuple[int, int]:
    """(L, V) of the codes the pipeline folder's DiT reads."""
    pipeline_index(out_dir)
    dit = json.loads((Path(out_dir) / "dit" / "config.json").read_text())
    return dit["code_length"], dit["vocab_size"]


def check_code_shape(out_dir: str | Path, code_length: int, vocab_size: int, part: str) -> None:
    """A part's codes must be the pipeline DiT's: same L and V."""
    want = pipeline_code_shape(out_dir)
    if (code_length, vocab_size) != want:
        raise CheckpointError(f"the {part} makes codes of length {code_length} over {vocab_size} values; the DiT in "
                              f"{out_dir} reads length {want[0]} over {want[1]}")


def add_part(out_dir: str | Path, name: str, model, library_class: tuple[str, str] | None) -> Path:
    """Save ``model`` as the pipeline's component ``name`` and record it in ``model_index.json``
    (``library_class`` None: a part the pipeline loads itself, such as a Hugging Face text model)."""
    out_dir = Path(out_dir)
    index = pipeline_index(out_dir)
    model.save_pretrained(out_dir / name)
    index[name] = list(library_class) if library_class else [None, None]
    (out_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out_dir / name
