"""Configs as typed dataclasses, read from YAML, overridden with ``key=value`` from the command line.

Every stage defines one dataclass (nested dataclasses for sections). ``load_config`` reads a YAML
file into it, applies dotted overrides (``train.lr=3e-4``), checks every key and type, and says
which keys are valid when one is not. ``save_config`` writes the fully resolved config, which
``load_config`` reads back as is: that is what a run directory keeps.

Numbers are checked as well as typed: every float must be finite, and a field annotated with a
range (``steps: PositiveInt``, ``lr: PositiveFloat``, ``dropout: Probability``) must lie in it, so a
bad value is one line naming the key and the valid range, not a traceback or a silent no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The valid range of a numeric setting: ``Annotated[int, Range(1)]`` is ``>= 1``;
    ``above=True`` makes ``low`` itself invalid (``> low``)."""

    low: float | None = None
    high: float | None = None
    above: bool = False

    def check(self, value, where: str) -> None:
        too_low = self.low is not None and (value <= self.low if self.above else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            raise ConfigError(f"{where}: {value!r} is out of range; expected {self}")

    def __str__(self) -> str:
        low = f"{'>' if self.above else '>='} {self.low}" if self.low is not None else ""
        high = f"<= {self.high}" if self.high is not None else ""
        return " and ".join(part for part in (low, high) if part)


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, above=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        value = _coerce(value, args[0], where)
        for rule in tp.__metadata__:
            rule.check(value, where)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: {value!r} is not allowed")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp in (bool, str):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {'true or false' if tp is bool else 'a string'}, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):  # YAML 1.1 reads "3e-4" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:  # named by its whole path, as a type error is (load_config finds the override that set it)
        raise ConfigError(
            f"{where + '.' if where else ''}{unknown[0]}: unknown key {unknown[0]!r}"
            + (f" (and {unknown[1:]})" if unknown[1:] else "")
            + f"; valid keys are: {', '.join(fields)}"
        )
    return cls(**{name: _coerce(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()})


def plain(value):
    """``value`` as YAML-ready data: tuples become lists, inside lists and mappings too."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def to_dict(config) -> dict:
    """The config (a dataclass) as plain YAML-ready data (tuples become lists)."""
    return plain(dataclasses.asdict(config))


def flat_keys(data: dict, prefix: str = "") -> dict:
    """Nested mappings as one level of dotted keys: {"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    out = {}
    for key, value in data.items():
        out.update(flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested mapping (validation happens in ``from_dict``)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Read ``path`` (YAML) into ``cls``, then apply ``key=value`` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(cls, data, where="")
    except ConfigError as e:
        raise ConfigError(f"{_source_of(str(e).split(':', 1)[0], path, overrides)}: {e}" if path else str(e)) from None


def _source_of(key: str, path: Path, overrides: Sequence[str]) -> str:
    """Where the setting ``key`` was written: the override that set it (or a section above it, or a key
    inside it: ``trian.steps=5`` for the unknown key ``trian``), else the file."""
    for text in reversed(overrides):  # the last override of a key is the one that counts
        name = text.partition("=")[0].strip()
        if key == name or key.startswith(name + ".") or name.startswith(key + "."):
            return f"override {text!r} (on top of {path})"
    return str(path)


def save_config(config, path: str | Path) -> None:
    """Write the resolved config as YAML (re-runnable as is with ``load_config``)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def validated(config: T, where: str = "config") -> T:
    """``config`` checked as if it had been read from YAML (for configs built in code)."""
    return from_dict(type(config), to_dict(config), where)


def replace(config: T, **changes) -> T:
    """Nested-aware ``dataclasses.replace``: ``replace(cfg, **{"train.lr": 1e-3})``."""
    data = to_dict(config)
    apply_overrides(data, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in changes.items()])
    return from_dict(type(config), data, where="")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every stage (the ``train:`` section of a config)."""

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 64  # global: split across processes
    lr: PositiveFloat = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: Probability = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: NonNegativeFloat = 0.0
    weight_decay_end: NonNegativeFloat | None = None  # cosine from weight_decay to this over the run (DINO's 0.04 -> 0.4)
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    grad_clip: NonNegativeFloat = 0.0  # max gradient norm; 0 turns clipping off
    ema_decay: Probability = 0.999
    ema_warmup: bool = True  # decay = min(ema_decay, (1+step)/(10+step)): short runs need it
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, none on CPU
    log_every: PositiveInt = 25
    log_with: Literal["auto", "tensorboard", "wandb", "none"] = "auto"  # tracker; auto: tensorboard when installed
    checkpoint_every: PositiveInt = 500
    keep_checkpoints: NonNegativeInt = 2  # 0 keeps all
    sample_every: NonNegativeInt = 0  # 0: only at the end
    seed: NonNegativeInt = 0
    num_workers: NonNegativeInt = 0
    time_limit_minutes: NonNegativeFloat = 0.0  # 0: none; else stop (and save) at the first step past it
    allow_changed: list[str] = field(default_factory=list)  # keys a resume may change (e.g. [train.lr])
    # stop when the smoothed loss exceeds this multiple of its lowest value so far (0: never)
    divergence_factor: NonNegativeFloat = 100.0
