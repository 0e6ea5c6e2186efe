"""Run directories and checkpoints.

    runs/<name>/config.yaml          the full resolved config (re-runnable as is)
    runs/<name>/checkpoints/<step>/  model, EMA, optimizer, scheduler, RNG and data position
    runs/<name>/model/               the EMA weights in save_pretrained form (what sampling loads)
    runs/<name>/metrics.jsonl        one JSON object per logged step
    runs/<name>/samples/             grids and samples written during and after training
    runs/<name>/history.jsonl        one line per training start: versions, git revision, changed keys
    runs/<name>/training.lock        while a training runs: who holds the directory

A checkpoint is written under a temporary name and renamed once complete, so a run killed while
writing leaves the previous checkpoint intact. Starting a run whose directory has a checkpoint
resumes from the latest one; ``RunDir.start`` first checks that the new settings are the ones
that made the checkpoint (only the keys in ``RESUMABLE_KEYS`` or ``train.allow_changed`` may
differ), and nothing is written until every check has passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import save_config, to_dict
from .errors import CheckpointError, ConfigError, RunLocked

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.pt")
MODEL_CONFIGS = ("config.json", "dlc_text.json")  # a diffusers/transformers model folder; a saved HF text model
# settings a resume may change without asking: how long, how often, in what precision; never what is learned
RESUMABLE_KEYS = ("run_dir", "train.steps", "train.time_limit_minutes", "train.log_every", "train.log_with",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.sample_every", "train.num_workers",
                  "train.allow_changed", "train.divergence_factor", "train.mixed_precision")
PACKAGES = ("dlc", "torch", "torchvision", "diffusers", "accelerate", "timm", "transformers", "numpy")


def model_folder(path: str | Path) -> Path:
    """A run directory's ``model/`` folder, or ``path`` itself when it is already a model folder."""
    path = Path(path)
    model = path / "model"
    return model if any((model / name).is_file() for name in MODEL_CONFIGS) else path


def local_folder(name_or_path: str | Path) -> Path:
    """A local folder as it is; a Hugging Face hub repo id downloaded (a snapshot, as diffusers does)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as e:  # a bad repo id, no network, no access: huggingface_hub raises several types
        raise CheckpointError(f"{name_or_path} is neither a local folder nor a Hugging Face hub repo that could "
                              f"be downloaded ({type(e).__name__}: {e})") from e


def is_run(path: str | Path) -> bool:
    """True for a finished run directory: its config and its exported model."""
    path = Path(path)
    return (path / "config.yaml").is_file() and model_folder(path) != path


@dataclass
class RunDir:
    """Paths of one run. ``RunDir("runs/demo-dit")`` creates nothing until written to."""

    root: Path
    on_metrics: Callable[[int, dict], None] | None = field(default=None, repr=False, compare=False)  # e.g. a tracker

    def __post_init__(self):
        self.root = Path(self.root)
        self.config_path = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.model_dir = self.root / "model"
        self.metrics_path = self.root / "metrics.jsonl"
        self.samples = self.root / "samples"
        self.lock_path = self.root / "training.lock"

    def create(self, config=None) -> RunDir:
        for path in (self.root, self.checkpoints, self.samples):
            path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            save_config(config, self.config_path)
        return self

    def start(self, config=None, allow_changed=()) -> dict:
        """Check that training may start here, then record it: refuse to overwrite an exported
        model that has no checkpoint to resume from, and to resume with settings other than the
        checkpoint's unless each changed key is in ``RESUMABLE_KEYS`` or ``allow_changed``. Only
        then write ``config.yaml`` and a ``history.jsonl`` line. Returns the changed keys."""
        resuming = self.latest_checkpoint() is not None
        if not resuming and any(self.model_dir.glob("*")):
            raise CheckpointError(f"{self.root} holds a trained model/ but no checkpoints/ to resume from: training "
                                  f"would start over and overwrite it. Use another run_dir, or delete {self.model_dir} "
                                  "to retrain here")
        changed = {}
        if config is not None and resuming:
            changed = config_changes(self.saved_config(), to_dict(config))
            refused = [key for key in changed if key not in RESUMABLE_KEYS and key not in allow_changed]
            if refused:
                said = "; ".join(f"{key}: {changed[key][0]!r} then, {changed[key][1]!r} now" for key in refused)
                raise ConfigError(f"{self.root} was trained with other settings ({said}). Resume with the saved "
                                  f"settings, use another run_dir, or allow the change: train.allow_changed=[{','.join(refused)}]")
        self.create(config)
        with (self.root / "history.jsonl").open("a") as f:
            f.write(json.dumps({**provenance(), "resumed_from": self.checkpoint_steps()[-1] if resuming else None,
                                "changed": changed}) + "\n")
        return changed

    @contextlib.contextmanager
    def lock(self):
        """Hold this run directory for one training: a second one is refused, naming the first."""
        self.root.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                with open(self.lock_path, "x") as f:
                    json.dump(me, f)
                break
            except FileExistsError:
                holder = _lock_holder(self.lock_path)
                if holder is not None:
                    raise RunLocked(f"{self.root} is being trained by process {holder.get('pid')} on "
                                    f"{holder.get('host')} since {holder.get('since')}; wait for it to finish or use "
                                    f"another run_dir (if no training runs there, delete {self.lock_path})") from None
                self.lock_path.unlink(missing_ok=True)  # left by a process that no longer runs
        try:
            yield self
        finally:
            self.lock_path.unlink(missing_ok=True)

    def saved_config(self) -> dict:
        """``config.yaml`` as plain data ({} when there is none, e.g. a bare model folder)."""
        return (yaml.safe_load(self.config_path.read_text()) or {}) if self.config_path.is_file() else {}

    def checkpoint_steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first (temporary folders are ignored)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(p.name) for p in self.checkpoints.iterdir() if p.is_dir() and p.name.isdigit())

    def latest_checkpoint(self) -> Path | None:
        steps = self.checkpoint_steps()
        return self.checkpoints / str(steps[-1]) if steps else None

    def log_metrics(self, step: int, **values) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        if self.on_metrics is not None:
            self.on_metrics(step, values)

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metrics logged after ``after_step`` (they belong to work a resume will redo)."""
        rows = [r for r in self.read_metrics() if r["step"] <= after_step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def config_changes(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    """Dotted keys whose values differ between two config dicts: ``{"train.lr": (old, new)}``. A key
    on one side only is a setting another version of dlc did not have: not a change."""
    changes = {}
    for key in sorted(set(old) & set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            changes[f"{prefix}{key}"] = (a, b)
    return changes


def provenance() -> dict:
    """Who trained, with what: time, host, command, Python and package versions, the git revision."""
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "command": sys.argv,
            "python": platform.python_version(), "versions": versions, "git": git_revision()}


def git_revision() -> str | None:
    """The source's git commit (with ``+dirty`` for local changes), or None outside a checkout."""
    source = Path(__file__).resolve().parent
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "runs.py"], cwd=source, capture_output=True)
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if tracked.returncode or rev.returncode:  # not a checkout of this code (e.g. installed inside another repo)
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty else "")


def _lock_holder(path: Path) -> dict | None:
    """The holder of a lock file, or None when that process is gone (same host) or the file is unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return None
        except (PermissionError, KeyError, ValueError, TypeError):
            pass
    return holder


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so that ``state.pt`` loads with
    ``torch.load(weights_only=True)`` (no pickled objects: a shared checkpoint cannot run code)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                        "gauss": python_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    n, p = state["numpy"], state["python"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunDir, step: int, model: torch.nn.Module | dict, ema: torch.nn.Module | None,
                    state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` (0 keeps all).

    ``model`` is a module or its full state dict (under FSDP or DeepSpeed ZeRO-3 only
    ``accelerator.get_state_dict`` gathers it; a sharded module's own ``state_dict`` holds one shard).

    ``state`` holds everything else to restore (optimizer, scheduler, data position, ...): it is
    saved with ``torch.save`` together with the RNG states, as tensors and plain values only, and is
    read back with ``weights_only=True``.
    """
    final = run.checkpoints / str(step)
    tmp = run.checkpoints / f".tmp-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = model if isinstance(model, dict) else model.state_dict()
    save_file(_contiguous(weights), tmp / "model.safetensors")
    if ema is not None:
        save_file(_contiguous(ema.state_dict()), tmp / "ema.safetensors")
    torch.save({"step": step, "rng": rng_state(), **state}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep:
        for old in run.checkpoint_steps()[:-keep]:
            shutil.rmtree(run.checkpoints / str(old), ignore_errors=True)
    return final


def _contiguous(state_dict: dict) -> dict:
    # safetensors refuses shared or non-contiguous storage; tied weights are saved as copies
    return {k: v.detach().contiguous().clone() for k, v in state_dict.items()}


def load_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module | None = None,
                    restore_rng: bool = True) -> dict:
    """Load weights into ``model`` (and ``ema``); return the saved state (step, optimizer, ...).

    A missing, truncated or corrupt file raises CheckpointError naming the file.
    """
    path = Path(path)
    needed = ["model.safetensors", "state.pt"] + (["ema.safetensors"] if ema is not None else [])
    for name in needed:
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {path / name} is missing")
    model.load_state_dict(_read_tensors(path / "model.safetensors"))
    if ema is not None:
        ema.load_state_dict(_read_tensors(path / "ema.safetensors"))
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged pickle/zip or a forbidden object
        raise CheckpointError(f"checkpoint file {path / 'state.pt'} is corrupt, truncated or holds objects "
                              f"other than tensors and plain values (refused: loading them could run code): {e}") from e
    if restore_rng:
        set_rng_state(state["rng"])
    return state


def _read_tensors(file: Path) -> dict:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {file} is corrupt or truncated: {e}") from e
