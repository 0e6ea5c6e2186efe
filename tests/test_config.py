from dataclasses import dataclass, field
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
