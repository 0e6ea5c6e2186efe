"""``dlc train STAGE``: train one stage from a config (the same as ``python train/STAGE.py``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError

# stage -> module defining ``CONFIG`` (its config dataclass) and ``train(config)``
STAGES = {
    "encoder": "dlc.encoder_training",
    "dit": "dlc.dit_training",
    "prior": "dlc.prior",
    "text": "dlc.text",
    "vae": "dlc.vae_training",
}
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def resolve_config(stage: str, name: str) -> Path:
    """A YAML path, or a preset name: ``emoji`` -> configs/emoji/<stage>.yaml."""
    path = Path(name)
    if path.is_file():
        return path
    preset = CONFIG_ROOT / name / f"{stage}.yaml"
    if preset.is_file():
        return preset
    matches = sorted(CONFIG_ROOT.glob(f"{name}/{stage}*.yaml")) if (CONFIG_ROOT / name).is_dir() else []
    if len(matches) == 1:
        return matches[0]
    presets = sorted(p.relative_to(CONFIG_ROOT).as_posix() for p in CONFIG_ROOT.glob(f"*/{stage}*.yaml"))
    raise ConfigError(f"no config {name!r} for stage {stage}: give a YAML path or one of {presets}")


def register(sub) -> None:
    parser = sub.add_parser(
        "train", help="train a stage: encoder, dit, prior, text or vae",
        description="Train one stage. Settings come from --config (a YAML file or a preset name such as "
        "'emoji', 'fashion' or 'imagenet') with key=value overrides, e.g. "
        "'dlc train dit --config emoji train.steps=2000 train.lr=1e-3'. "
        "A run directory that already has a checkpoint resumes from it.",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="which model to train")
    parser.add_argument("--config", default="emoji", help="YAML path or preset name (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    parser.set_defaults(func=run)


def load_stage_config(stage: str, config: str, overrides: list[str]):
    path = resolve_config(stage, config)
    module = importlib.import_module(STAGES[stage])
    return module, load_config(module.CONFIG, path, overrides)


def run(args) -> int:
    module, config = load_stage_config(args.stage, args.config, args.overrides)
    module.train(config)
    return 0


def script_main(stage: str, argv: list[str] | None = None) -> int:
    """What ``train/<stage>.py`` runs: the same as ``dlc train <stage>``."""
    from ..cli import main

    return main(["train", stage, *(argv if argv is not None else __import__("sys").argv[1:])])
