import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from dlc.errors import CheckpointError, TrainingDiverged
from dlc.runs import load_checkpoint, save_checkpoint
from dlc.training import EMA, StreamSampler, TrainConfig, fit, seed_everything


class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x)


class Points(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = (self.x[:, :1] * self.x[:, 1:]).sin()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def noisy_loss(model, batch, info):
    # uses the global RNG, so exact resume needs the RNG state restored
    x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
    loss = (model(x) - batch["y"]).pow(2).mean()
    return loss, {"mse": loss.item()}


def train_tiny(run, steps, **overrides):
    seed_everything(0)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, checkpoint_every=5, log_every=1, ema_decay=0.9,
                      keep_checkpoints=0, **overrides)
    model = TinyNet()
    ema = fit(run, cfg, model, Points(), noisy_loss)
    return model, ema


def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    from dlc.runs import RunDir

    straight_model, straight_ema = train_tiny(RunDir(tmp_path / "a"), 12)
    interrupted = RunDir(tmp_path / "b")
    train_tiny(interrupted, 7)  # stops at 7 (checkpoint at 5 and 7)
    resumed_model, resumed_ema = train_tiny(interrupted, 12)
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight_ema.state_dict().values(), resumed_ema.state_dict().values()):
        assert torch.equal(a, b)
    steps = [row["step"] for row in interrupted.read_metrics()]
    assert steps == list(range(1, 13))  # no duplicated log lines after the resume
    reloaded = TinyNet.from_pretrained(interrupted.model_dir)  # the exported EMA model
    assert torch.equal(reloaded.net[0].weight, resumed_ema.model.net[0].weight)


def test_extending_a_finished_cosine_run_follows_the_new_schedule(tmp_path):
    from safetensors.torch import load_file

    from dlc.runs import RunDir
    from dlc.training import lr_factor

    run = RunDir(tmp_path / "run")
    train_tiny(run, 4, lr_schedule="cosine")  # ends with the learning rate at 0
    train_tiny(run, 8, lr_schedule="cosine")
    longer = TrainConfig(steps=8, lr=1e-2, lr_schedule="cosine")
    lrs = {r["step"]: r["lr"] for r in run.read_metrics()}
    assert lrs[4] == 0 and all(lrs[s] == pytest.approx(1e-2 * lr_factor(s, longer)) for s in range(5, 9))
    before, after = (load_file(run.checkpoints / str(s) / "model.safetensors") for s in (4, 5))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the first resumed step trains


def test_weight_decay_schedule_reaches_the_optimizer(tmp_path):
    from dlc.runs import RunDir
    from dlc.training import weight_decay_at

    cfg = TrainConfig(steps=10, weight_decay=0.04, weight_decay_end=0.4)
    assert weight_decay_at(0, cfg) == pytest.approx(0.04) and weight_decay_at(10, cfg) == pytest.approx(0.4)
    assert weight_decay_at(5, cfg) == pytest.approx(0.22)
    assert weight_decay_at(7, TrainConfig(weight_decay=0.1)) == 0.1
    run = RunDir(tmp_path / "run")
    train_tiny(run, 10, weight_decay=0.04, weight_decay_end=0.4)
    groups = torch.load(run.checkpoints / "10" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == pytest.approx(weight_decay_at(9, cfg)) and groups[1]["weight_decay"] == 0


def test_loss_decreases_and_run_dir_layout(run_dir):
    train_tiny(run_dir, 30)
    rows = run_dir.read_metrics()
    assert sum(r["mse"] for r in rows[-5:]) < sum(r["mse"] for r in rows[:5])
    assert run_dir.config_path.exists() is False  # no config given: none written
    assert (run_dir.model_dir / "config.json").exists()
    assert run_dir.checkpoint_steps() == [5, 10, 15, 20, 25, 30]


def test_bf16_on_cpu_computes_in_bf16_and_keeps_fp32_weights(run_dir):
    seed_everything(0)
    model, seen = TinyNet(), []
    model.net[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))  # inside the forward
    cfg = TrainConfig(steps=30, batch_size=8, lr=1e-2, checkpoint_every=30, log_every=1, mixed_precision="bf16")
    ema = fit(run_dir, cfg, model, Points(), noisy_loss)
    rows = run_dir.read_metrics()
    assert set(seen) == {torch.bfloat16}  # the layers ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in [*model.parameters(), *ema.model.parameters()])  # weights stay fp32
    assert sum(r["mse"] for r in rows[-5:]) < sum(r["mse"] for r in rows[:5])


def test_truncated_checkpoint_is_a_clear_error(run_dir):
    model = TinyNet()
    path = save_checkpoint(run_dir.create(), 3, model, None, {"optimizer": {}})
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or truncated"):
        load_checkpoint(path, TinyNet())
    (path / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="state.pt is missing"):
        load_checkpoint(path, TinyNet())


class Planted:
    """A pickle that writes a marker file when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_in_a_checkpoint_is_refused_without_running(run_dir, tmp_path):
    path = save_checkpoint(run_dir.create(), 3, TinyNet(), None, {"optimizer": {}})
    state = torch.load(path / "state.pt", weights_only=True)  # what the library writes loads safely
    assert state["step"] == 3 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    marker = tmp_path / "ran"
    torch.save({**state, "extra": Planted(marker)}, path / "state.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path, TinyNet())
    assert not marker.exists()


def test_rng_state_round_trips_every_generator():
    import random

    import numpy as np

    from dlc.runs import rng_state, set_rng_state

    seed_everything(5)
    saved = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(6)
    set_rng_state(saved)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_partial_checkpoint_folder_is_ignored(run_dir):
    run_dir.create()
    save_checkpoint(run_dir, 2, TinyNet(), None, {})
    (run_dir.checkpoints / ".tmp-4").mkdir()  # a write that was interrupted
    assert run_dir.latest_checkpoint().name == "2"


def test_nan_loss_stops_with_message_and_keeps_checkpoint(run_dir):
    def exploding(model, batch, info):
        loss, metrics = noisy_loss(model, batch, info)
        return (loss * float("nan") if info.step == 7 else loss), metrics

    cfg = TrainConfig(steps=20, batch_size=8, checkpoint_every=5)
    with pytest.raises(TrainingDiverged, match="at step 7.*checkpoints/5"):
        fit(run_dir, cfg, TinyNet(), Points(), exploding)
    assert run_dir.checkpoint_steps() == [5]


def test_ema_warmup_and_update():
    model = TinyNet()
    ema = EMA(model, decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.999
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = ema.model.net[0].bias.clone()
    ema.update(model, 0)
    assert torch.allclose(ema.model.net[0].bias, before + 0.9)


def test_stream_sampler_splits_global_batches_across_ranks():
    full = StreamSampler(10, 4, seed=1)
    ranks = [StreamSampler(10, 4, seed=1, rank=r, world=2) for r in range(2)]
    streams = [iter(full), iter(ranks[0]), iter(ranks[1])]
    for _ in range(5):
        batch, b0, b1 = (next(s) for s in streams)
        assert batch == b0 + b1 and len(b0) == 2
    stream = iter(StreamSampler(10, 5, seed=1))
    epoch = next(stream) + next(stream)
    assert sorted(epoch) == list(range(10))  # one epoch: each index once
    resumed = iter(StreamSampler(10, 5, seed=1, start_step=1))
    assert next(resumed) == epoch[5:]


def test_stages_in_one_process_each_get_their_own_precision():
    from dlc.training import make_accelerator

    assert make_accelerator("no").mixed_precision == "no"  # a first stage in full precision (the demo's VAE)
    assert make_accelerator("bf16").mixed_precision == "bf16"  # then a bf16 one in the same process (its DiT)
    assert make_accelerator("auto").mixed_precision == ("bf16" if torch.cuda.is_available() else "no")
