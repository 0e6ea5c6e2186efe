"""EMA off means no copy; checkpoints hold gathered weights; exact resume without an EMA."""
import torch
from test_runs import Points, TinyNet, noisy_loss

from dlc.runs import RunDir
from dlc.training import EMA, TrainConfig, fit, seed_everything


def train_without_ema(run, steps):
    seed_everything(0)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, checkpoint_every=5, log_every=1, ema_decay=0.0,
                      keep_checkpoints=0)
    model = TinyNet()
    return model, fit(run, cfg, model, Points(), noisy_loss)


def test_ema_with_decay_zero_is_the_model_itself_not_a_copy():
    model = TinyNet()
    ema = EMA(model, decay=0.0)
    assert ema.off and ema.model is model
    before = [p.clone() for p in model.parameters()]
    ema.update(TinyNet(width=8), step=3)  # another model's weights must not leak in
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not EMA(model, decay=0.5).off and EMA(model, decay=0.5).model is not model


def test_without_ema_the_export_is_the_trained_model_and_checkpoints_hold_no_ema(tmp_path):
    run = RunDir(tmp_path / "run")
    model, ema = train_without_ema(run, 6)
    assert ema.model is model and model.training  # sampling put it back in train mode
    exported = TinyNet.from_pretrained(run.model_dir)
    for a, b in zip(model.state_dict().values(), exported.state_dict().values()):
        assert torch.equal(a, b)
    latest = run.latest_checkpoint()
    assert (latest / "model.safetensors").is_file() and not (latest / "ema.safetensors").exists()


def test_resume_without_ema_matches_the_uninterrupted_run_bit_for_bit(tmp_path):
    straight, _ = train_without_ema(RunDir(tmp_path / "a"), 12)
    interrupted = RunDir(tmp_path / "b")
    train_without_ema(interrupted, 7)
    resumed, _ = train_without_ema(interrupted, 12)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
