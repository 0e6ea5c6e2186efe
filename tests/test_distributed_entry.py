"""Scale-out proof with the entry scripts users launch: ``train/dit.py`` and ``train/encoder.py``
under ``python -m torch.distributed.run --nproc_per_node 2`` on CPU (accelerate over gloo), then
resumed in one process with ``python train/<stage>.py``.

The scripts run unchanged. To see what each rank holds (only rank 0 writes the run directory),
torchrun starts them through tests/observed_launch.py, which wraps ``dlc.training.fit`` to write each
rank's parameters, EMA, extra state and a digest of every batch it trained on, then runs the script.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from dlc.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).parent / "observed_launch.py"

# Not marked slow: this is the scale-out proof CI must run (two launches per test, about 30 s each on 2 cores).

DIT_OVERRIDES = [
    "model.arch=DiT-N/8", "condition.kind=random", "condition.code_length=4", "condition.random_vocab=8",
    "train.batch_size=4", "train.checkpoint_every=1", "train.log_every=1", "train.sample_every=0",
    "sample.num=2", "sample.steps=2",
]
ENCODER_OVERRIDES = [
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2, reg_tokens: 1}",
    "model.code_length=4", "model.vocab_size=8", "ssl.prototypes=32", "ssl.head_hidden=32",
    "ssl.head_bottleneck=16", "crops.local_crops=1", "train.batch_size=4", "train.warmup_steps=0",
    "train.checkpoint_every=1", "train.log_every=1",
    "train.lr_schedule=constant",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list[str], nproc: int | None = None, observe: Path | None = None) -> str:
    """Run ``train/<script>`` as a user would: under torchrun with ``nproc`` processes, or plainly."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runner = [sys.executable]
    if nproc is not None:
        runner += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    if observe is not None:
        observe.mkdir(parents=True, exist_ok=True)
        runner += [str(LAUNCHER), str(observe)]
    result = subprocess.run([*runner, str(ROOT / "train" / script), "--config", "emoji", *args],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: {name} differs"


def check_two_process_run(run: RunDir, seen: Path, steps: int) -> dict:
    """The checks every stage shares; returns the final checkpoint's model weights."""
    assert run.checkpoint_steps() == list(range(1, steps + 1))[-2:]  # checkpoint_every=1, keep 2
    assert [r["step"] for r in run.read_metrics()] == list(range(1, steps + 1))
    assert (run.model_dir / "config.json").exists()

    # each rank got half of every global batch, and different images
    batches = [json.loads((seen / f"batches-{r}.json").read_text()) for r in range(2)]
    assert [b["step"] for b in batches[0]] == [b["step"] for b in batches[1]] == list(range(steps))
    for b0, b1 in zip(*batches):
        assert b0["size"] == b1["size"] == 2
        assert b0["digest"] != b1["digest"]

    # both ranks ended with the same parameters, EMA and extra state, and that is what was saved
    last = run.latest_checkpoint()
    saved, saved_ema = load_file(last / "model.safetensors"), load_file(last / "ema.safetensors")
    for kind, reference in (("model", saved), ("ema", saved_ema), ("extra", None)):
        held = [load_file(seen / f"{kind}-{r}.safetensors") for r in range(2)]
        assert_same(held[0], held[1], f"{kind} of rank 0 vs rank 1")
        if reference is not None:
            assert_same(held[0], reference, f"{kind} held vs checkpoint {last.name}")

    # trained: finite, and moved away from the (same on both ranks) initialisation
    init = [load_file(seen / f"init-{r}.safetensors") for r in range(2)]
    assert_same(init[0], init[1], "initial parameters")
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert any(not torch.equal(saved[k], init[0][k]) for k in saved)
    return saved


def check_resume_in_one_process(run: RunDir, log: str, before: dict, steps: int) -> None:
    assert f"from step {steps - 1}" in log  # resumed, did not start over
    assert run.checkpoint_steps() == [steps - 1, steps]
    assert [r["step"] for r in run.read_metrics()] == list(range(1, steps + 1))
    after = load_file(run.latest_checkpoint() / "model.safetensors")
    assert after.keys() == before.keys()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k], before[k]) for k in after)


def test_dit_entry_script_two_processes_then_resume_in_one(tmp_path, emoji_train):
    run, seen = RunDir(tmp_path / "run"), tmp_path / "seen"
    args = [f"run_dir={run.root}", *DIT_OVERRIDES]
    launch("dit.py", [*args, "train.steps=2"], nproc=2, observe=seen)
    saved = check_two_process_run(run, seen, steps=2)
    exported = load_file(run.model_dir / "diffusion_pytorch_model.safetensors")
    assert_same(exported, load_file(seen / "ema-0.safetensors"), "exported model vs EMA")

    log = launch("dit.py", [*args, "train.steps=3"])
    check_resume_in_one_process(run, log, saved, steps=3)


def test_encoder_entry_script_two_processes_then_resume_in_one(tmp_path, emoji_train):
    run, seen = RunDir(tmp_path / "run"), tmp_path / "seen"
    args = [f"run_dir={run.root}", *ENCODER_OVERRIDES]
    launch("encoder.py", [*args, "train.steps=2"], nproc=2, observe=seen)
    saved = check_two_process_run(run, seen, steps=2)
    # the DINO centre is all-reduced: the same on both ranks (checked above) and in the checkpoint
    extra = load_file(seen / "extra-0.safetensors")
    state = torch.load(run.latest_checkpoint() / "state.pt", weights_only=True)
    assert torch.equal(state["extra"]["center"]["center"], extra["center.center"])
    # the exported model is the EMA teacher's encoder
    ema = load_file(seen / "ema-0.safetensors")
    exported = load_file(run.model_dir / "diffusion_pytorch_model.safetensors")
    assert_same(exported, {k.removeprefix("encoder."): v for k, v in ema.items() if k.startswith("encoder.")},
                "exported encoder vs EMA")

    log = launch("encoder.py", [*args, "train.steps=3"])
    check_resume_in_one_process(run, log, saved, steps=3)
