from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from dlc.config import load_config, replace, save_config
from dlc.data import DataConfig
from dlc.errors import ConfigError
from dlc.training import TrainConfig


@dataclass
class StageConfig:
    run_dir: str = "runs/x"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: Literal["flow", "ddpm"] = "flow"
    guidance_channels: int | None = None


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: runs/a\ntrain:\n  steps: 10\n  lr: 1.0e-3\n")
    config = load_config(StageConfig, path, ["train.lr=3e-4", "data.size=64", "objective=ddpm",
                                             "train.betas=[0.9, 0.95]", "guidance_channels=3"])
    assert config.run_dir == "runs/a" and config.train.steps == 10
    assert config.train.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string; we accept it
    assert config.data.size == 64 and config.objective == "ddpm"
    assert config.train.betas == (0.9, 0.95) and config.guidance_channels == 3


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'stpes'.*valid keys are: steps, batch_size"):
        load_config(StageConfig, None, ["train.stpes=5"])
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(StageConfig, None, ["modle.width=5"])


def test_wrong_types_and_choices():
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        load_config(StageConfig, None, ["train.steps=ten"])
    with pytest.raises(ConfigError, match=r"objective: 'edm' is not one of \['flow', 'ddpm'\]"):
        load_config(StageConfig, None, ["objective=edm"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(StageConfig, None, ["train.steps"])
    with pytest.raises(ConfigError, match="run_dir: expected a string"):
        load_config(StageConfig, None, ["run_dir.x=1"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(StageConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(StageConfig, bad)


def test_saved_config_reloads_identically(tmp_path):
    config = load_config(StageConfig, None, ["train.steps=7", "train.betas=[0.8, 0.9]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(StageConfig, tmp_path / "config.yaml") == config
    assert replace(config, **{"train.steps": 9}).train.steps == 9


# --------------------------------------------------------------------------------------------
# The shipped configs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "dlc" / "configs"
SHIPPED = sorted(CONFIG_DIR.glob("*/*.yaml"))


def stage_of(path: Path) -> str:
    from dlc.stages import STAGES

    stages = [s for s in STAGES if path.stem.startswith(s)]
    assert len(stages) == 1, f"{path.name} should start with one stage name of {sorted(STAGES)}"
    return stages[0]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_every_shipped_config_validates_against_its_stage(path, tmp_path):
    from dlc.stages import STAGES

    stage = STAGES[stage_of(path)]
    config = stage.load_config(str(path))
    assert isinstance(config, stage.config)
    save_config(config, tmp_path / "config.yaml")  # what a run directory keeps reloads as is
    assert load_config(stage.config, tmp_path / "config.yaml") == config


def test_presets_resolve_for_every_dataset_and_stage():
    from dlc.errors import ConfigError
    from dlc.stages import STAGES

    assert {p.parent.name for p in SHIPPED} == {"emoji", "fashion", "glyphs", "imagenet"}
    assert STAGES["dit"].config_file("fashion").name == "dit.yaml"
    assert STAGES["dit"].config_file("imagenet").name == "dit_xl2_dlc512.yaml"
    assert STAGES["dit"].config_file("imagenet/dit_xl2_dlc512.yaml").name == "dit_xl2_dlc512.yaml"
    for path in SHIPPED:
        assert Path(STAGES[stage_of(path)].config_file(str(path))) == path
        preset = f"{path.parent.name}/{path.name}"
        assert preset in STAGES[stage_of(path)].preset_names()
    with pytest.raises(ConfigError, match="emoji/dit.yaml"):  # the error lists the presets
        STAGES["dit"].config_file("nonexistent")


def test_imagenet_dit_config_is_the_paper_model_built_without_downloads():
    import torch

    from dlc.dit.training import create_model
    from dlc.stages import STAGES

    config = STAGES["dit"].load_config("imagenet", [])
    assert (config.model.arch, config.objective, config.latent) == ("DiT-XL/2", "ddpm", "stabilityai/sd-vae-ft-ema")
    assert config.condition.kind == "shards" and config.condition.vocab_size == 256 and config.condition.dropout == 0.1
    assert config.hflip and config.data.size == 256 and config.data.dataset.startswith("webdataset:")
    t = config.train
    assert (t.lr, t.weight_decay, t.batch_size, t.ema_decay, t.mixed_precision) == (1e-4, 0.0, 256, 0.9999, "auto")
    s = config.sample
    assert (s.sampler, s.steps, s.guidance_scale) == ("ddpm", 250, 1.4)
    with torch.device("meta"):  # no memory, no weights: the VAE is not touched
        model = create_model(config, in_channels=4, image_size=32, code_length=512,
                             vocab_size=config.condition.vocab_size)
    assert model.code_embedder.table.shape == (512, 257, 1152) and model.out_channels == 8  # learned variance
    assert (model.config.depth, model.config.patch_size) == (28, 2)
    assert 820e6 < sum(p.numel() for p in model.parameters()) < 830e6  # DiT-XL/2 + the 151.6M code table
