"""The training stages, by name: what ``dlc train STAGE``, ``train/STAGE.py`` and ``dlc demo`` run.

    stage = STAGES["dit"]
    config = stage.load_config("emoji", ["train.steps=100"])   # a preset name or a YAML path
    stage.train(config)

Each stage is its config dataclass and its train function; presets ship inside the package
(``dlc/configs/<preset>/<stage>*.yaml``) and are read with ``importlib.resources``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import config as configs
from .dit import training as dit_training
from .dit import vae as vae_training
from .encoder import training as encoder_training
from .errors import ConfigError
from .prior import training as prior_training
from .runs import RunDir
from .text import training as text_training


@dataclass(frozen=True)
class Stage:
    """One training job: its name, config class, train function and a line of help."""

    name: str
    config: type
    train: Callable[[object], RunDir]
    help: str

    def preset_names(self) -> list[str]:
        """The shipped presets of this stage, as ``preset`` or ``preset/file`` names."""
        names = []
        for preset in sorted((p for p in presets().iterdir() if p.is_dir()), key=lambda p: p.name):
            names += [f"{preset.name}/{f.name}" for f in sorted(preset.iterdir(), key=lambda f: f.name)
                      if f.name.startswith(self.name) and f.name.endswith(".yaml")]
        return names

    def config_file(self, name: str):
        """A YAML path, or a preset: ``emoji`` -> configs/emoji/<stage>.yaml (or the one file of the
        preset whose name starts with the stage, e.g. imagenet/dit_xl2_dlc512.yaml)."""
        if Path(name).is_file():
            return Path(name)
        names = self.preset_names()
        exact = [n for n in (name, f"{name}/{self.name}.yaml") if n in names]
        in_preset = [n for n in names if n.split("/")[0] == name]
        chosen = exact or (in_preset if len(in_preset) == 1 else [])
        if chosen:
            return presets() / chosen[0]
        raise ConfigError(f"no config {name!r} for stage {self.name}: give a YAML path or one of {names}")

    def load_config(self, name: str = "emoji", overrides: Sequence[str] = ()):
        """The resolved config of preset or file ``name`` with ``key=value`` overrides."""
        with resources.as_file(self.config_file(name)) as path:
            return configs.load_config(self.config, path, list(overrides))


def presets():
    """The folder of shipped presets (a ``Traversable`` inside the installed package)."""
    return resources.files("dlc") / "configs"


STAGES = {stage.name: stage for stage in (
    Stage("encoder", encoder_training.EncoderTrainingConfig, encoder_training.train,
          "the SEM encoder, self-supervised (DINOv2-style self-distillation through the SEM)"),
    Stage("dit", dit_training.DiTRunConfig, dit_training.train, "the DiT p(image | code)"),
    Stage("prior", prior_training.PriorRunConfig, prior_training.train, "the masked-diffusion code prior p(code)"),
    Stage("text", text_training.TextRunConfig, text_training.train, "the text-to-code model p(code | caption)"),
    Stage("vae", vae_training.VAERunConfig, vae_training.train, "a small VAE: a latent space for the DiT"),
)}
