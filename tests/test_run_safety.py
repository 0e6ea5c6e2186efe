"""A run directory keeps its provenance and training fails safely: a diverging run stops with a
finite checkpoint that resumes; a failed command leaves the saved config byte-identical; a second
training in the same directory is refused; an exported model without checkpoints is never
overwritten; every numeric setting is range-checked with a one-line error."""

import json

import pytest
import torch
from test_runs import Points, TinyNet, noisy_loss

from dlc.config import TrainConfig, load_config
from dlc.errors import CheckpointError, ConfigError, RunLocked, TrainingDiverged
from dlc.runs import RunDir, load_checkpoint
from dlc.training import fit, seed_everything


def as_config(**train):
    """A stand-in stage config (fit compares and saves any dataclass)."""
    from dataclasses import make_dataclass

    Stage = make_dataclass("Stage", [("train", TrainConfig)])
    cfg = {"steps": 6, "batch_size": 8, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1, "keep_checkpoints": 0,
           **train}
    return Stage(TrainConfig(**cfg)), cfg


def fit_config(run, **train):
    config, cfg = as_config(**train)
    seed_everything(0)
    return fit(run, config.train, TinyNet(), Points(), noisy_loss, config=config)


def test_a_huge_learning_rate_with_clipping_stops_and_names_a_finite_checkpoint_that_resumes(tmp_path):
    run = RunDir(tmp_path / "run")
    fit_config(run, steps=4)  # a good start: checkpoints at 2 and 4
    with pytest.raises(TrainingDiverged, match="last good checkpoint is .*4") as failure:
        fit_config(run, steps=40, lr=1e6, grad_clip=1.0, allow_changed=["train.lr", "train.grad_clip"])
    assert "train.allow_changed" in str(failure.value)
    latest = run.latest_checkpoint()
    model, ema = TinyNet(), TinyNet()
    load_checkpoint(latest, model, ema, restore_rng=False)
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *ema.parameters()])
    fit_config(run, steps=8, allow_changed=["train.lr", "train.grad_clip"])  # the advised re-run resumes
    assert run.checkpoint_steps()[-1] == 8


def test_weights_that_become_nan_are_never_checkpointed(tmp_path):
    run = RunDir(tmp_path / "run")

    def poisoning_loss(model, batch, info):
        loss, metrics = noisy_loss(model, batch, info)
        if info.step == 3:  # a finite loss whose step leaves NaN weights (as an overflowing update does)
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return loss, metrics

    config, _ = as_config(steps=8)
    with pytest.raises(TrainingDiverged):
        fit(run, config.train, TinyNet(), Points(), poisoning_loss, config=config)
    assert run.checkpoint_steps() == [2]
    model = TinyNet()
    load_checkpoint(run.latest_checkpoint(), model, restore_rng=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_refused_resume_leaves_the_saved_config_byte_identical(tmp_path):
    run = RunDir(tmp_path / "run")
    fit_config(run, steps=4)
    saved = run.config_path.read_bytes()
    with pytest.raises(ConfigError, match=r"train.lr: 0.01 then, 0.5 now.*train.allow_changed=\[train.lr\]"):
        fit_config(run, steps=6, lr=0.5)
    assert run.config_path.read_bytes() == saved
    assert run.checkpoint_steps()[-1] == 4


def test_a_resume_may_extend_steps_and_allowed_keys_are_recorded(tmp_path):
    run = RunDir(tmp_path / "run")
    fit_config(run, steps=4)
    fit_config(run, steps=6, lr=5e-3, allow_changed=["train.lr"])
    history = [json.loads(line) for line in (run.root / "history.jsonl").read_text().splitlines()]
    assert [h["resumed_from"] for h in history] == [None, 4]
    assert history[1]["changed"]["train.lr"] == [0.01, 0.005]
    assert {"torch", "dlc"} <= set(history[0]["versions"]) and "git" in history[0]
    assert load_config(type(as_config()[0]), run.config_path).train.lr == 5e-3


def test_a_second_training_in_the_same_directory_is_refused_naming_the_first(tmp_path):
    import os
    import socket

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "2026-12-02 10:00:00"}  # a live process
    run.lock_path.write_text(json.dumps(holder))
    with pytest.raises(RunLocked, match=f"process {os.getppid()} on {socket.gethostname()}"):
        fit_config(run, steps=2)
    assert not run.config_path.exists() and run.lock_path.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.lock_path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
    fit_config(run, steps=2)
    assert run.checkpoint_steps() == [2] and not run.lock_path.exists()


def test_a_two_process_race_lets_exactly_one_train(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        holder = json.loads(run.lock_path.read_text())
        with pytest.raises(RunLocked, match=f"process {holder['pid']}"), RunDir(tmp_path / "run").lock():
            pytest.fail("a second lock of the same run was granted")
        assert json.loads(run.lock_path.read_text()) == holder  # the refused one left the holder's lock alone
    assert not run.lock_path.exists()


def test_an_exported_model_without_checkpoints_is_not_overwritten(tmp_path):
    import shutil

    run = RunDir(tmp_path / "run")
    fit_config(run, steps=2)
    shutil.rmtree(run.checkpoints)
    exported = {p.name: p.read_bytes() for p in run.model_dir.iterdir()}
    with pytest.raises(CheckpointError, match="no checkpoints/ to resume from"):
        fit_config(run, steps=2)
    assert {p.name: p.read_bytes() for p in run.model_dir.iterdir()} == exported


@pytest.mark.parametrize("override, message", [
    ("steps=-5", "train.steps: -5 is out of range; expected >= 1"),
    ("lr=-0.1", "train.lr: -0.1 is out of range; expected > 0"),
    ("lr=.nan", "train.lr: expected a finite number"),
    ("batch_size=0", "train.batch_size: 0 is out of range"),
    ("checkpoint_every=0", "train.checkpoint_every: 0 is out of range"),
    ("ema_decay=1.5", "train.ema_decay: 1.5 is out of range; expected >= 0 and <= 1"),
])
def test_bad_numbers_are_one_line_errors_with_the_valid_range(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, overrides=[override])
    assert str(error.value).startswith(message.removeprefix("train."))  # keys relative to TrainConfig
    assert "\n" not in str(error.value)


def test_configs_built_in_code_are_checked_before_training(tmp_path):
    with pytest.raises(ConfigError, match="train.steps: -5 is out of range"):
        fit(RunDir(tmp_path / "run"), TrainConfig(steps=-5), TinyNet(), Points(), noisy_loss)
    assert not (tmp_path / "run").exists()


def test_every_stage_rejects_an_unknown_architecture_and_a_nan_temperature_in_one_line():
    from dlc.config import replace
    from dlc.stages import STAGES

    with pytest.raises(ConfigError, match="model.arch: 'DiT-Q/9' is not one of"):
        replace(STAGES["dit"].load_config("emoji"), **{"model.arch": "DiT-Q/9"})
    with pytest.raises(ConfigError, match="sample.temperature: expected a finite number"):
        replace(STAGES["prior"].load_config("emoji"), **{"sample.temperature": float("nan")})


def test_float_codes_are_refused_not_truncated(tmp_path):
    import numpy as np

    from dlc.codes import load_codes
    from dlc.errors import CodeError

    np.save(tmp_path / "codes.npy", np.array([[5.5, 1.0], [2.0, 3.0]]))
    with pytest.raises(CodeError, match="float64 values; codes are integers"):
        load_codes(tmp_path / "codes.npy")


def test_settings_a_newer_version_added_do_not_block_a_resume(tmp_path):
    import yaml

    run = RunDir(tmp_path / "run")
    fit_config(run, steps=4)
    saved = yaml.safe_load(run.config_path.read_text())
    del saved["train"]["divergence_factor"]  # as written by a dlc that did not have the key
    run.config_path.write_text(yaml.safe_dump(saved))
    fit_config(run, steps=6)
    assert run.checkpoint_steps()[-1] == 6


def test_a_bad_value_is_blamed_on_the_override_that_set_it_not_the_preset_file(tmp_path):
    from dlc.stages import STAGES

    with pytest.raises(ConfigError, match=r"^override 'train.steps=-5' \(on top of \S*prior.yaml\): train.steps: -5"):
        STAGES["prior"].load_config("emoji", ["train.lr=0.01", "train.steps=-5"])
    preset = tmp_path / "train.yaml"
    preset.write_text("steps: -5\n")
    with pytest.raises(ConfigError, match=r"^\S*train.yaml: steps: -5"):  # a bad value in the file itself
        load_config(TrainConfig, preset, overrides=["lr=0.01"])


def test_an_unknown_key_is_blamed_on_the_override_that_wrote_it():
    from dlc.stages import STAGES

    with pytest.raises(ConfigError, match=r"^override 'train.stpes=5' \(on top of \S*prior.yaml\): train.stpes: unknown"):
        STAGES["prior"].load_config("emoji", ["train.stpes=5"])
    with pytest.raises(ConfigError, match=r"^override 'trian.steps=5' \(on top of \S*prior.yaml\): trian: unknown"):
        STAGES["prior"].load_config("emoji", ["trian.steps=5"])
