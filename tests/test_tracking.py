"""Experiment tracking: train.log_with sends the logged metrics and the sample grids to
TensorBoard through accelerate; none writes nothing; a missing tracker package is a clear error."""

import pytest
import torch
from test_runs import Points, TinyNet, noisy_loss

from dlc.config import TrainConfig
from dlc.errors import ConfigError
from dlc.runs import RunDir
from dlc.tracking import hyperparameters, resolve_trackers
from dlc.training import fit, seed_everything


def write_grid(ema_model, step, run):
    from dlc.imageio import save_grid

    save_grid(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8), run.samples / f"step-{step:07d}.png")


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_gets_the_loss_lr_throughput_and_sample_grids(tmp_path):
    pytest.importorskip("tensorboard")
    run = RunDir(tmp_path / "run")
    seed_everything(0)
    cfg = TrainConfig(steps=4, batch_size=8, log_every=2, checkpoint_every=4, sample_every=2, log_with="tensorboard")
    fit(run, cfg, TinyNet(), Points(), noisy_loss, sample_fn=write_grid)
    logs = next((run.root / "logs").rglob("events.out.tfevents.*")).parent
    events = read_events(logs)
    scalars = events.Tags()["scalars"]
    assert {"loss", "lr", "grad_norm", "samples_per_second"} <= set(scalars)
    assert [e.step for e in events.Scalars("loss")] == [2, 4]
    logged = [row["loss"] for row in run.read_metrics()]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx(logged)
    images = events.Images("samples/step")
    assert [e.step for e in images] == [2, 4, 4]  # step 4 twice: the final samples rewrite its grid


def test_log_with_none_writes_no_tracker_files(tmp_path):
    run = RunDir(tmp_path / "run")
    seed_everything(0)
    fit(run, TrainConfig(steps=2, batch_size=8, checkpoint_every=2, log_with="none"), TinyNet(), Points(), noisy_loss)
    assert not (run.root / "logs").exists()


def test_an_uninstalled_tracker_is_a_clear_error(monkeypatch):
    import dlc.tracking

    monkeypatch.setattr(dlc.tracking, "_installed", lambda package: False)
    with pytest.raises(ConfigError, match="pip install wandb"):
        resolve_trackers("wandb")
    assert resolve_trackers("auto") == []  # auto falls back to none


def test_hyperparameters_are_flat_scalars():
    flat = hyperparameters({"train": {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay_end": None}, "run_dir": "r"})
    assert flat == {"train.lr": 1e-3, "train.betas": "[0.9, 0.99]", "train.weight_decay_end": "None", "run_dir": "r"}
