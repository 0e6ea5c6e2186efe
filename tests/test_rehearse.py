"""The rehearsal of the paper-scale recipe (``make rehearse``, ``benchmarks/rehearse.py``) runs the
README's ImageNet commands with nothing but sizes and the CPU launcher changed; the slow test runs
it whole. Also the GPU check's speed benchmark at a tiny size on CPU."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# every key the rehearsal may override: sizes (and random init for the encoder, whose DINOv2 weights are
# not here); data.dataset only to name the shards' count
SIZE_KEYS = {
    "model.pretrained", "model.backbone_kwargs", "model.code_length", "model.vocab_size", "model.depth",
    "model.width", "model.heads", "model.size", "ssl.head_hidden", "ssl.head_bottleneck", "ssl.prototypes",
    "ssl.freeze_last_layer_steps", "condition.vocab_size", "train.batch_size", "train.warmup_steps", "train.steps", "train.checkpoint_every",
    "train.log_every", "train.num_workers", "data.dataset", "data.shuffle_buffer", "sample.steps", "sample.num",
    "sample.num_per_prompt",
}
SIZE_FLAGS = {"--chunk", "--batch-size", "-n", "--chunk-size"}


@pytest.fixture(scope="module")
def rehearse():
    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "benchmarks" / "rehearse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakePlan:
    def __init__(self, device, processes, has_deepspeed=False):
        self.device, self.processes, self.has_deepspeed = device, processes, has_deepspeed


def flag_values(command: list[str]) -> dict:
    return {t: command[i + 1] for i, t in enumerate(command[:-1]) if t.startswith("-") and not command[i + 1].startswith("-")}


def test_the_readme_block_is_the_rehearsal_sequence(rehearse):
    commands = rehearse.readme_commands()
    assert [rehearse.kind(c) for c in commands] == rehearse.EXPECTED
    # the pretrained parts the presets and commands name are the hub folders the rehearsal fakes
    text = " ".join(shlex.join(c) for c in commands)
    assert "stabilityai/sd-vae-ft-ema" in text and "imagefolder:/data/imagenet" in text
    assert "GSAI-ML/LLaDA-8B-Base" in (ROOT / "dlc/configs/imagenet/text_llada.yaml").read_text()


def test_on_cpu_only_sizes_and_the_launcher_change(rehearse):
    """accelerate launch --config_file C TARGET... -> torchrun --standalone --nproc_per_node 2 TARGET...; the
    README's arguments all stay, in order; what is added are size overrides (SIZE_KEYS, SIZE_FLAGS)."""
    for command in rehearse.readme_commands():
        readme = [t.replace("/data/imagenet", "data/imagenet") for t in command]
        ran = rehearse.rehearsal_command(command, FakePlan("cpu", 2))
        if command[:2] == ["accelerate", "launch"]:
            options, target = rehearse.launch_parts(readme)
            assert set(options) == {"--config_file"}
            assert ran[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"]
            readme, ran = target, ran[4:]
        flags = flag_values(readme)
        changed = {flag for flag, value in flag_values(ran).items() if flags.get(flag) != value}
        assert changed <= SIZE_FLAGS, (command, changed)
        kept = [t for i, t in enumerate(ran) if not (ran[i - 1] in changed and i > 0) and t not in changed]
        original = [t for i, t in enumerate(readme) if not (readme[i - 1] in changed and i > 0) and t not in changed]
        assert kept[:len(original)] == original, (kept, original)
        overrides = kept[len(original):]
        assert all("=" in o and o.split("=", 1)[0] in SIZE_KEYS for o in overrides), overrides
        if rehearse.kind(command) == "encoder":
            assert "model.pretrained=" in overrides  # random init: the DINOv2 weights are not here


def test_on_gpus_the_accelerate_command_stays(rehearse):
    commands = {rehearse.kind(c): c for c in rehearse.readme_commands()}
    dit = rehearse.rehearsal_command(commands["dit"], FakePlan("cuda", 1))
    assert dit[:6] == ["accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml", "--num_processes", "1"]
    assert dit[8:11] == ["train/dit.py", "--config", "imagenet"]
    text = rehearse.rehearsal_command(commands["text"], FakePlan("cuda", 1, has_deepspeed=True))
    assert text[3] == "configs/accelerate/deepspeed_zero3.yaml"
    text = rehearse.rehearsal_command(commands["text"], FakePlan("cuda", 1, has_deepspeed=False))
    assert text[3] == "configs/accelerate/fsdp.yaml"  # the README's alternative where DeepSpeed is missing
    sample = rehearse.rehearsal_command(commands["sample"], FakePlan("cuda", 1))
    assert sample[8:11] == ["-m", "dlc", "sample"]


def test_the_speed_benchmark_runs_on_cpu_at_a_tiny_size_and_judges_the_goal(tmp_path):
    """benchmarks/dit_speed.py as gpu_check.sh runs it (4 latent channels, learned variance, --goal),
    at a size a CPU times in seconds: the JSON is written, and a goal it cannot meet exits 3."""
    out = tmp_path / "speed.json"
    command = [sys.executable, "benchmarks/dit_speed.py", "--arch", "DiT-N/8", "--image-size", "16", "--channels", "4",
               "--code-length", "4", "--vocab-size", "8", "--learn-sigma", "--batch", "2", "--warmup", "1",
               "--steps", "1", "--threads", "1", "--no-memory", "--device", "cpu", "--goal", "1000", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "GOAL MISSED" in done.stderr
    run = json.loads(out.read_text())["runs"][-1]
    assert (run["arch"], run["channels"], run["goal"], run["goal_met"]) == ("DiT-N/8", 4, 1000.0, False)
    assert run["results"]["ours"]["step_ms_median"] > 0 and run["results"]["diffusers"]["step_ms_median"] > 0


def test_gpu_check_says_why_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: gpu_check.sh would run")
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WHEELS": "/nonexistent"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "torch.cuda.is_available() is False" in done.stderr


def test_gpu_check_help_explains_and_a_bad_argument_is_one_line():
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and "--prepare" in done.stdout and "Exit status" in done.stdout
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--bogus" in done.stderr


@pytest.mark.slow
def test_make_rehearse_runs_every_stage_resumes_each_and_fits_15_minutes(rehearse, tmp_path):
    out = tmp_path / "rehearse.json"
    done = subprocess.run([sys.executable, "benchmarks/rehearse.py", "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    result = json.loads(out.read_text())
    assert done.returncode == 0 and result["ok"], done.stdout[-4000:]
    stages = {}
    for s in result["stages"]:
        stages.setdefault(s["stage"], []).append(s)
    assert [s["stage"] for s in result["stages"]] == rehearse.EXPECTED
    for name in ("encoder", "dit", "prior", "text"):
        resume = stages[name][0]["resume"]
        assert 0 < resume["checkpoint_at_kill"] < resume["final_checkpoint"], resume
        assert resume["resumed_from"] == resume["checkpoint_at_kill"] and resume["starts"] == 2, resume
    assert stages["shards"][0]["resume"]["first_chunk_kept"]
    assert stages["sample"][0]["resume"]["drawn_after"] > 0
    assert stages["fid"][0]["checks"]["protocol"] == "adm"
    assert result["seconds"] < 900, result["seconds"]  # 15 minutes on 2 cores (shared ones: see the JSON's load)


def test_a_vocabulary_other_than_the_shards_encoder_is_refused_before_training(tmp_path):
    """Found by the rehearsal: the DiT preset pins condition.vocab_size=256 (DLC512's V). Shards encoded
    with another V trained without complaint and the pipeline refused the pair only at sampling; now
    training refuses it at once, naming both."""
    import torch

    from dlc.codes.sources import shard_codes_shape
    from dlc.data import write_shards
    from dlc.errors import ConfigError

    images = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "label": None, "caption": None} for _ in range(2)]
    write_shards(images, tmp_path, {"code.npy": lambda x: torch.zeros(len(x), 4, dtype=torch.int16).numpy()},
                 manifest={"code_length": 4, "vocab_size": 32}, progress=False)
    pattern = str(tmp_path / "shard-000000.tar")
    assert shard_codes_shape(pattern)[:2] == (4, 32)
    assert shard_codes_shape(pattern, vocab_size=32)[:2] == (4, 32)
    with pytest.raises(ConfigError, match="vocab_size 256, but .* was encoded with V=32"):
        shard_codes_shape(pattern, vocab_size=256)
