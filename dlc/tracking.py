"""Experiment tracking through accelerate's trackers: TensorBoard (the default when installed) or
Weights & Biases, chosen with ``train.log_with``.

Every value ``RunDir.log_metrics`` writes to ``metrics.jsonl`` (loss, learning rate, gradient
norm, throughput, a stage's evaluations) goes to the trackers too, and the sample grids a stage
writes into ``samples/`` are logged as images. TensorBoard's event files live in
``RUN/logs/``: ``tensorboard --logdir runs`` shows every run.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from .config import flat_keys, to_dict
from .errors import ConfigError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def resolve_trackers(log_with: str) -> list[str]:
    """``train.log_with`` -> accelerate's tracker names (``auto``: tensorboard when installed)."""
    if log_with == "none":
        return []
    if log_with == "auto":
        return ["tensorboard"] if _installed("tensorboard") else []
    if log_with not in TRACKER_PACKAGES:
        raise ConfigError(f"train.log_with={log_with!r}: expected auto, none or one of {', '.join(TRACKER_PACKAGES)}")
    if not _installed(TRACKER_PACKAGES[log_with]):
        raise ConfigError(f"train.log_with={log_with} needs the {TRACKER_PACKAGES[log_with]} package "
                          f"(pip install {TRACKER_PACKAGES[log_with]}), or train.log_with=none")
    return [log_with]


def start_tracking(accelerator, run, config) -> None:
    """Open the trackers (main process) with the run's config as hyper-parameters, and route the
    run's logged metrics to them."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers("dlc", config=hyperparameters(config),
                              init_kwargs={"wandb": {"name": run.root.name, "dir": str(run.root / "logs")}})
    run.on_metrics = lambda step, values: accelerator.log(
        {k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)


def png_times(folder: Path) -> dict[Path, int]:
    """Modification times of the PNGs in ``folder`` (to tell which ones a sampler wrote)."""
    return {p: p.stat().st_mtime_ns for p in folder.glob("*.png")} if folder.is_dir() else {}


def log_sample_images(accelerator, folder: Path, before: dict[Path, int], step: int) -> None:
    """Log the PNGs in ``folder`` that are new or changed since ``before`` (``png_times``) as
    images; the tag is the file name without its step number."""
    if not accelerator.log_with:
        return
    from PIL import Image

    for path in sorted(p for p, mtime in png_times(folder).items() if before.get(p) != mtime):
        tag = "samples/" + (re.sub(r"[-_]?\d+$", "", path.stem) or "grid")
        image = np.asarray(Image.open(path).convert("RGB"))[None]  # (1, H, W, 3)
        for tracker in accelerator.trackers:
            options = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images({tag: image}, step=step, **options)


def hyperparameters(config) -> dict:
    """The config as flat ``section.key`` -> number / string / bool (what trackers accept)."""
    if config is None:
        return {}
    values = flat_keys(to_dict(config) if not isinstance(config, dict) else config)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None
