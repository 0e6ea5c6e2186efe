"""``dlc train STAGE``: train one stage from a config (the same as ``python train/STAGE.py``)."""

from __future__ import annotations

import sys

import yaml

from ..config import to_dict
from ..stages import STAGES


def register(sub) -> None:
    parser = sub.add_parser(
        "train", help="train a stage: " + ", ".join(STAGES),
        description="Train one stage. Settings come from --config (a YAML file or a preset name such as "
        "'emoji', 'fashion' or 'imagenet') with key=value overrides, e.g. "
        "'dlc train dit --config emoji train.steps=2000 train.lr=1e-3'. "
        "A run directory that already has a checkpoint resumes from it. "
        "--print-config shows every key with its resolved value.",
        epilog="stages: " + "; ".join(f"{s.name}: {s.help}" for s in STAGES.values()),
    )
    parser.add_argument("stage", choices=list(STAGES), help="which model to train")
    parser.add_argument("--config", default="emoji", help="YAML path or preset name (default: %(default)s)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (every valid key) and exit without training")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    parser.set_defaults(func=run)


def run(args) -> int:
    stage = STAGES[args.stage]
    config = stage.load_config(args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    stage.train(config)
    return 0


def script_main(stage: str, argv: list[str] | None = None) -> int:
    """What ``train/<stage>.py`` runs: the same as ``dlc train <stage>``."""
    from . import main

    return main(["train", stage, *(argv if argv is not None else sys.argv[1:])])
