"""The paper-scale recipe, rehearsed: the README's ImageNet commands, in order, at a size two CPU
cores run in minutes (``make rehearse``).

    python benchmarks/rehearse.py                       # CPU: 2 processes per launch (torchrun)
    python benchmarks/rehearse.py --device cuda --processes 1 --out benchmarks/results/rehearse_cuda.json

The commands are read from the README's "Training on ImageNet with the paper's settings" block, not
copied here, so the rehearsal runs what a user reads. They run in a scratch folder (``--work``)
laid out as they expect: ``runs/``, ``train/`` and ``configs/`` (links to this checkout), the data
at ``data/imagenet/{train,val}/<class>/*.JPEG`` (``/data/imagenet`` in the README) and the
pretrained parts as local folders under their hub names, so ``stabilityai/sd-vae-ft-ema`` and
``GSAI-ML/LLaDA-8B-Base`` load from disk without a single changed argument:

- images: generated, 256-320 px JPEGs of coloured shapes in 8 class folders (64 train, 8 val), and
  the same images with captions as the text stage's image-caption shards (``data/laion-9m``,
  written by ``dlc data shards``);
- ``stabilityai/sd-vae-ft-ema``: a randomly initialised diffusers ``AutoencoderKL`` with the SD
  VAE's layout (4 levels, 8x down, 4 latent channels, scale 0.18215) at 8 channels a level;
- ``GSAI-ML/LLaDA-8B-Base``: a randomly initialised 1-layer BERT masked LM whose ``config.json``
  maps ``AutoModel`` to a class in the folder, as LLaDA's does, so the preset's ``model_class:
  AutoModel`` with ``trust_remote_code: true`` loads it the way it loads LLaDA; its tokenizer is
  a word-level one trained on the captions;
- ``VIRTUAL_imagenet256_labeled.npz``: a reference batch in the ADM evaluator's format (``arr_0``
  the val images; ``mu``/``sigma`` and ``mu_s``/``sigma_s`` from their Inception features).

What changes from the README, and nothing else:
- sizes, appended as ``key=value`` overrides (``SIZES``): depth, width, heads, code length and
  vocabulary, steps, batch, image and shard counts, sampler steps and sample counts;
  ``model.pretrained=`` (empty: random init) for the encoder, whose DINOv2 weights are not here;
- the launcher on CPU: accelerate starts several CPU processes only through MPI, so
  ``accelerate launch --config_file C`` becomes ``torchrun --standalone --nproc_per_node P`` (what
  the README gives for CPU processes) in front of the same script and arguments. On GPUs the
  accelerate command stays, with ``--num_processes P`` (a DeepSpeed config falls back to
  ``fsdp.yaml``, the README's alternative, where DeepSpeed is not installed).

Every stage is interrupted and resumed: a training launch is killed (SIGKILL to the launcher and to
every process below it: torchrun's workers run in sessions of their own) once its first checkpoint
is on disk and re-run with the same command, which must resume from that
checkpoint ("resuming ... from step K", ``history.jsonl``) and finish; ``dlc encode`` is killed
after its first finished chunk and must keep it (same file, untouched) and write the rest;
``dlc sample`` is killed after its first PNGs and must draw only the missing ones. ``dlc fid`` is
one pass whose features are cached (nothing to resume).

Writes JSON (``--out``, default ``benchmarks/results/rehearse_<device>.json``) with each stage's
commands, wall time and checks, and prints a table. Exits 1 when a stage fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dlc  # noqa: F401  (first: its CPU-torch fix for torchvision, before diffusers and transformers load it)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Training on ImageNet with the paper's settings"

N_CLASSES, N_TRAIN, N_VAL = 8, 8, 1  # per class: 64 training images, 8 validation images
L, V = 16, 32  # the rehearsal's code: length and vocabulary
STEPS, CHECKPOINT_EVERY = 8, 2  # every training stage; killed after its first checkpoint
CHUNK = 8  # images per encoded chunk / shard: 8 shards of latents
N_SAMPLES = 8

# the size overrides of each README command, appended to it (nothing else changes)
COMMON = [f"train.steps={STEPS}", f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.log_every=1",
          "train.num_workers=1"]
SIZES = {
    "encoder": ["model.pretrained=", "model.backbone_kwargs={embed_dim: 32, depth: 2, num_heads: 2}",
                f"model.code_length={L}", f"model.vocab_size={V}", "ssl.head_hidden=64", "ssl.head_bottleneck=32",
                "ssl.prototypes=128", "ssl.freeze_last_layer_steps=2", "train.batch_size=8", "train.warmup_steps=2",
                *COMMON],
    "dit": ["model.depth=2", "model.width=64", "model.heads=2", f"condition.vocab_size={V}",
            f"data.dataset=webdataset:runs/imagenet/latents/shard-{{000000..{N_CLASSES * N_TRAIN // CHUNK - 1:06d}}}.tar",
            "data.shuffle_buffer=16", "train.batch_size=8", "sample.steps=25", "sample.num=4", *COMMON],
    "prior": ["model.size=micro", f"model.code_length={L}", f"model.vocab_size={V}", "train.batch_size=8",
              "train.warmup_steps=2", "sample.steps=32", "sample.num=8", *COMMON],
    "text": [f"data.dataset=webdataset:data/laion-9m/shard-{{000000..{N_CLASSES * N_TRAIN // CHUNK - 1:06d}}}.tar",
             "train.batch_size=4", "train.warmup_steps=2", "sample.steps=16", "sample.num_per_prompt=1", *COMMON],
}
# flags of the other README commands whose values are sizes, by the command's kind
ENCODE_SIZES = {"--chunk": str(CHUNK), "--batch-size": "4"}
FLAG_SIZES = {"codes": ENCODE_SIZES, "shards": ENCODE_SIZES,
              "sample": {"-n": str(N_SAMPLES), "--batch-size": "2", "--chunk-size": "2"}}
# what the README's block must hold, in this order
EXPECTED = ["encoder", "codes", "shards", "dit", "prior", "text", "pipeline", "pipeline", "pipeline", "pipeline",
            "sample", "fid"]
HUB_FOLDERS = ("stabilityai/sd-vae-ft-ema", "GSAI-ML/LLaDA-8B-Base")


class StageFailed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# the README's commands


def readme_commands(readme: Path = README) -> list[list[str]]:
    """The commands of the README's ImageNet block, in order, as argument lists (comments dropped,
    continuation lines joined, ``a && b`` split)."""
    text = readme.read_text()
    start = text.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    if block is None:
        raise StageFailed(f"{readme}: no ```bash block under {SECTION!r}")
    logical, current = [], ""
    for line in block.group(1).splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    commands = []
    for line in logical:
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            commands.append(tokens[:cut])
            tokens = tokens[cut + 1:]
    return commands


def kind(command: list[str]) -> str:
    """encoder, dit, prior, text (training launches), codes, shards (dlc encode), pipeline (mkdir, ln),
    sample, fid; anything else is refused."""
    if command[:2] == ["accelerate", "launch"]:
        script = next((t for t in command if t.startswith("train/") and t.endswith(".py")), None)
        if script:
            return Path(script).stem
        if "-m" in command and command[command.index("-m") + 1:command.index("-m") + 3] == ["dlc", "sample"]:
            return "sample"
    if command[:2] == ["dlc", "encode"]:
        return "codes" if "--out" in command else "shards"
    if command[:2] == ["dlc", "fid"]:
        return "fid"
    if command[0] in ("mkdir", "ln"):
        return "pipeline"
    raise StageFailed(f"the rehearsal does not know this README command: {shlex.join(command)}")


def launch_parts(command: list[str]) -> tuple[dict, list[str]]:
    """``accelerate launch [--opt value ...] TARGET ...`` -> ({opt: value}, [TARGET ...])."""
    options, i = {}, 2
    while i < len(command) and command[i].startswith("--"):
        options[command[i]] = command[i + 1]
        i += 2
    return options, command[i:]


def set_flag(command: list[str], flag: str, value: str) -> list[str]:
    """``command`` with ``flag``'s value replaced (appended when the command has no such flag)."""
    command = list(command)
    if flag in command:
        command[command.index(flag) + 1] = value
    else:
        command += [flag, value]
    return command


def rehearsal_command(command: list[str], plan: Plan) -> list[str]:
    """The README command as the rehearsal runs it: data path, sizes and the launcher (module docstring)."""
    command = [t.replace("/data/imagenet", "data/imagenet") for t in command]
    what = kind(command)
    command = command + SIZES.get(what, [])
    for flag, value in FLAG_SIZES.get(what, {}).items():
        command = set_flag(command, flag, value)
    if command[:2] == ["accelerate", "launch"]:
        options, target = launch_parts(command)
        if plan.device == "cpu":
            return ["torchrun", "--standalone", "--nproc_per_node", str(plan.processes), *target]
        config = options.get("--config_file", "configs/accelerate/ddp.yaml")
        if "deepspeed" in config and not plan.has_deepspeed:
            config = "configs/accelerate/fsdp.yaml"
        return ["accelerate", "launch", "--config_file", config, "--num_processes", str(plan.processes),
                "--main_process_port", str(free_port()), *target]
    return command


# ------------------------------------------------------------------------------------------------
# the scratch folder: data, tiny pretrained parts, the reference batch


class Plan:
    def __init__(self, work: Path, device: str, processes: int, log):
        self.work, self.device, self.processes, self.log = work, device, processes, log
        self.has_deepspeed = importlib.util.find_spec("deepspeed") is not None  # found, not imported (slow)
        bin_dir = work / "bin"
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                    f"{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "5"}
        if device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""
        # the commands import this checkout's dlc (also where it is not installed, as on a GPU machine's image)
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (140, 50, 180), "orange": (240, 140, 30), "white": (235, 235, 235), "black": (25, 25, 25)}
SHAPES = ("circle", "square", "triangle", "ring")


def make_image(rng, colour: str, shape: str, background: str):
    """A JPEG-able PIL image, 256-320 px a side, of one shape on a noisy background."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = (int(x) for x in rng.integers(256, 321, 2))
    base = np.array(COLOURS[background], np.float32)
    pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(50, 100))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    box = [cx - r, cy - r, cx + r, cy + r]
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.ellipse(box, outline=fill, width=max(8, r // 4))
    return image


def make_data(plan: Plan) -> dict:
    """ImageNet's layout (train/val, class folders of JPEGs) and the captioned copy for the text stage."""
    import numpy as np

    work = plan.work
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    captions = []
    for split, per_class in (("train", N_TRAIN), ("val", N_VAL)):
        for c in range(N_CLASSES):
            folder = work / "data" / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour, shape = names[c], SHAPES[c % len(SHAPES)]
            for i in range(per_class):
                background = names[(c + 1 + int(rng.integers(0, N_CLASSES - 1))) % N_CLASSES]
                image = make_image(rng, colour, shape, background)
                name = f"{split}_{c:02d}_{i:03d}.JPEG"
                image.save(folder / name, quality=90)
                if split == "train":
                    captioned = work / "data" / "laion-images" / f"{c:02d}_{i:03d}.jpg"
                    captioned.parent.mkdir(parents=True, exist_ok=True)
                    image.save(captioned, quality=90)
                    captions.append({"file": captioned.name, "caption": f"a {colour} {shape} on a {background} background"})
    (work / "data" / "laion-images" / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    return {"train_images": N_CLASSES * N_TRAIN, "val_images": N_CLASSES * N_VAL, "classes": N_CLASSES,
            "captions": [c["caption"] for c in captions]}


def make_vae(folder: Path) -> dict:
    """A random AutoencoderKL with the SD VAE's layout: 4 levels (8x down), 4 latent channels, 0.18215."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=256,
                        scaling_factor=0.18215)
    vae.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in vae.parameters())}


REMOTE_CODE = '''"""A tiny masked LM standing in for LLaDA-8B-Base in the rehearsal: like LLaDA's folder, config.json
maps AutoModel to this file, so it loads through AutoModel with trust_remote_code."""

from transformers import BertForMaskedLM


class RehearsalMaskedLM(BertForMaskedLM):
    pass
'''


def make_text_model(folder: Path, captions: list[str]) -> dict:
    """A random 1-layer BERT masked LM behind LLaDA's loading path (AutoModel + remote code), with a
    word-level tokenizer trained on the captions."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions + ["a red apple on a wooden table", "a golden retriever playing in the snow"],
                            trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                                     eos_token="[SEP]")
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "modeling_rehearsal.py").write_text(REMOTE_CODE)
    meta = json.loads((folder / "config.json").read_text())
    meta["auto_map"] = {"AutoModel": "modeling_rehearsal.RehearsalMaskedLM"}
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    return {"vocab": len(tokenizer), "layers": 1, "width": 32}


def make_reference(plan: Plan, path: Path) -> dict:
    """An ADM-format reference batch of the val images: arr_0 (N, 256, 256, 3) uint8, mu/sigma of
    their Inception pool features and mu_s/sigma_s of the spatial ones (sFID)."""
    import numpy as np
    import torch

    from dlc import data
    from dlc.eval import adm
    from dlc.eval.fidelity import resolve_extractor

    val = data.load("imagefolder:" + str(plan.work / "data" / "imagenet"), size=256, split="val")
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    extractor = resolve_extractor("inception", allow_download=False)
    device = "cuda" if plan.device == "cuda" else "cpu"
    features = adm.image_features(images, extractor, ("pool", "spatial"), device=device, progress=False)
    mu, sigma = adm.statistics(features["pool"])
    mu_s, sigma_s = adm.statistics(features["spatial"])
    np.savez(path, arr_0=images.permute(0, 2, 3, 1).numpy(), mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return {"images": len(images), "inception": extractor.source}


def prepare(plan: Plan) -> dict:
    work = plan.work
    for name in ("train", "configs"):
        link = work / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not shutil.which("dlc", path=plan.env["PATH"]):  # dlc importable but not installed (a GPU machine's image)
        (bin_dir / "dlc").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dlc \"$@\"\n")
        (bin_dir / "dlc").chmod(0o755)
    info = {"data": make_data(plan)}
    info["data"].pop("captions")
    captions = [json.loads(line)["caption"] for line in (work / "data/laion-images/captions.jsonl").read_text().splitlines()]
    info["vae"] = make_vae(work / HUB_FOLDERS[0])
    info["text_model"] = make_text_model(work / HUB_FOLDERS[1], captions)
    # the LAION stand-in: image-caption webdataset shards at 256 px
    run(plan, ["dlc", "data", "shards", "imagefolder:data/laion-images", "--size", "256", "--out", "data/laion-9m",
               "--max-count", str(CHUNK)])
    return info


# ------------------------------------------------------------------------------------------------
# running, interrupting, resuming


def run(plan: Plan, command: list[str], timeout: float = 900) -> str:
    """Run to completion in the work folder; the output (also logged). A non-zero exit fails the stage."""
    plan.log(f"$ {shlex.join(command)}")
    done = subprocess.run(command, cwd=plan.work, env=plan.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    plan.log(done.stdout, raw=True)
    if done.returncode:
        tail = "\n".join(done.stdout.splitlines()[-30:])
        raise StageFailed(f"exit {done.returncode}: {shlex.join(command)}\n{tail}")
    return done.stdout


def run_and_kill(plan: Plan, command: list[str], ready, timeout: float = 900) -> dict:
    """Start ``command``, SIGKILL its whole process group as soon as ``ready()`` is true. Returns
    what happened; fails when the command ended by itself first (nothing was interrupted)."""
    plan.log(f"$ {shlex.join(command)}    # killed once {ready.__doc__}")
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, cwd=plan.work, env=plan.env, stdout=log, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    started = time.time()
    try:
        while process.poll() is None and not ready():
            if time.time() - started > timeout:
                raise StageFailed(f"timed out before {ready.__doc__}: {shlex.join(command)}")
            time.sleep(0.05)
        finished_first = process.poll() is not None
        if not finished_first:
            kill_tree(process.pid)
        process.wait()
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
    log.seek(0)
    output = log.read()
    plan.log(output, raw=True)
    if finished_first:
        raise StageFailed(f"the command finished (exit {process.returncode}) before it could be interrupted "
                          f"({ready.__doc__}): {shlex.join(command)}\n" + "\n".join(output.splitlines()[-20:]))
    return {"killed_after_s": round(time.time() - started, 1), "signal": "SIGKILL to the launcher and all below it"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun's workers run in sessions of their own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, timeout: float = 30) -> None:
    """SIGKILL the process ``pid`` started in its own session, its group and every descendant (a
    crash of the machine or an OOM kill, not a polite stop), and wait until all are gone."""
    victims = [pid, *descendants(pid)]
    for target in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [v for v in victims if Path(f"/proc/{v}").exists() and "zombie" not in _state(v)]
        if not alive:
            return
        time.sleep(0.05)
    raise StageFailed(f"processes {alive} outlived SIGKILL")


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return "zombie"


def training_stage(plan: Plan, command: list[str], run_dir: Path) -> dict:
    """Kill after the first checkpoint, re-run the same command: it must resume from that checkpoint."""
    checkpoints = plan.work / run_dir / "checkpoints"

    def first_checkpoint():
        """the first checkpoint is on disk"""
        return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())

    killed = run_and_kill(plan, command, first_checkpoint)
    kept = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    if not kept or kept[-1] >= STEPS:
        raise StageFailed(f"after the kill {checkpoints} holds {kept}: expected a checkpoint before step {STEPS}")
    output = run(plan, command)
    resumed = f"resuming {run_dir} from step {kept[-1]}"
    if resumed not in output:
        raise StageFailed(f"the re-run did not say {resumed!r}: it did not resume from the checkpoint")
    history = [json.loads(line) for line in (plan.work / run_dir / "history.jsonl").read_text().splitlines()]
    final = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    if final[-1] != STEPS or not (plan.work / run_dir / "model").is_dir():
        raise StageFailed(f"{run_dir} ended with checkpoints {final} and no model/ (expected step {STEPS})")
    return {**killed, "checkpoint_at_kill": kept[-1], "resumed_from": history[-1]["resumed_from"],
            "starts": len(history), "final_checkpoint": final[-1]}


def encode_stage(plan: Plan, command: list[str]) -> dict:
    """Kill after the first finished chunk; the re-run must keep it untouched and write the rest."""
    out = command[command.index("--out") + 1] if "--out" in command else None
    if out is not None:
        parts = plan.work / (out + ".parts")
        first = parts / "000000.npy"
    else:
        folder = plan.work / command[command.index("--shards") + 1]
        first = folder / "shard-000000.tar"

    def first_chunk():
        """the first chunk is written"""
        return first.is_file()

    killed = run_and_kill(plan, command, first_chunk)
    stamp = first.stat().st_mtime_ns, first.stat().st_ino
    done_before = len(list(first.parent.glob("shard-*.tar" if out is None else "0*.npy")))
    run(plan, command)
    result = {**killed, "chunks_done_at_kill": done_before}
    if out is None:
        if (first.stat().st_mtime_ns, first.stat().st_ino) != stamp:
            raise StageFailed(f"the re-run rewrote {first}: finished chunks must be kept")
        result["first_chunk_kept"] = True
    return result


def sample_stage(plan: Plan, command: list[str]) -> dict:
    """Kill after the first PNGs; the re-run must keep them and draw only the missing ones."""
    images = plan.work / command[command.index("--out") + 1] / "images"

    def first_pngs():
        """the first PNGs are written"""
        return images.is_dir() and any(images.glob("[0-9]*.png"))

    killed = run_and_kill(plan, command, first_pngs)
    before = {p.name: p.stat().st_mtime_ns for p in images.glob("[0-9]*.png")}
    run(plan, command)
    after = {p.name: p.stat().st_mtime_ns for p in images.glob("[0-9]*.png")}
    redrawn = [name for name, stamp in before.items() if after.get(name) != stamp]
    if redrawn:
        raise StageFailed(f"the re-run redrew {redrawn}: samples already on disk must be kept")
    if len(after) != N_SAMPLES:
        raise StageFailed(f"{images} holds {len(after)} PNGs, expected {N_SAMPLES}")
    return {**killed, "pngs_at_kill": len(before), "drawn_after": len(after) - len(before)}


# ------------------------------------------------------------------------------------------------
# checks of what each stage wrote


def check_outputs(plan: Plan, what: str, run_dir: Path | None = None) -> dict:
    """What the stage ``what`` wrote, checked; ``run_dir``: a training stage's run directory."""
    import numpy as np

    work = plan.work
    if what == "encoder":
        config = json.loads((work / "runs/imagenet/encoder_dlc512/model/config.json").read_text())
        assert config["backbone"] == "vit_large_patch14_reg4_dinov2" and config["resize_input"], config
        return {"backbone": config["backbone"], "code": [config["code_length"], config["vocab_size"]],
                "input_size": config["input_size"], "image_size": config["image_size"]}
    if what == "codes":
        codes = np.load(work / "runs/imagenet/codes/train.npy")
        assert codes.shape == (N_CLASSES * N_TRAIN, L), codes.shape
        return {"codes": list(codes.shape), "distinct_codes": len({c.tobytes() for c in codes})}
    if what == "shards":
        from dlc.data import ShardDataset

        shards = sorted((work / "runs/imagenet/latents").glob("shard-*.tar"))
        first = ShardDataset(str(shards[0])).first_samples(1)[0]
        entries = sorted(k for k in first if not k.startswith("__"))
        assert {"code.npy", "code_flip.npy", "latent.npy", "latent_flip.npy"} <= set(entries), entries
        assert "png" not in first, "--no-png shards hold no images"
        latent = np.load(io.BytesIO(first["latent.npy"]))
        assert latent.shape == (4, 32, 32), latent.shape
        return {"shards": len(shards), "entries": entries, "latent": list(latent.shape)}
    if what in ("dit", "prior", "text"):
        metrics = [json.loads(line) for line in (work / run_dir / "metrics.jsonl").read_text().splitlines()]
        losses = [m["loss"] for m in metrics if "loss" in m]
        out = {"logged_steps": [m["step"] for m in metrics if "loss" in m], "last_loss": losses[-1]}
        if what == "dit":
            c = json.loads((work / run_dir / "model/config.json").read_text())
            assert (c["patch_size"], c["learn_sigma"], c["in_channels"], c["image_size"]) == (2, True, 4, 32), c
            out["dit"] = {k: c[k] for k in ("depth", "hidden_size", "num_heads", "patch_size", "learn_sigma",
                                            "image_size", "in_channels", "code_length", "vocab_size", "code_init")
                          if k in c}
        return out
    if what == "sample":
        folder = work / "runs/imagenet/samples"
        with np.load(folder / "samples.npz") as batch:
            arr = batch["arr_0"]
        assert arr.shape == (N_SAMPLES, 256, 256, 3) and arr.dtype == np.uint8, (arr.shape, arr.dtype)
        settings = json.loads((folder / "settings.json").read_text())
        return {"arr_0": list(arr.shape), "sampling": settings.get("sampling")}
    if what == "fid":
        metrics = json.loads((work / "runs/imagenet/samples/metrics.json").read_text())
        keep = {k: metrics[k] for k in ("fid", "sfid", "is", "precision", "recall", "num_samples", "num_reference",
                                        "protocol") if k in metrics}
        assert metrics["protocol"] == "adm" and np.isfinite(metrics["fid"]), keep
        return keep
    return {}


# ------------------------------------------------------------------------------------------------


def rehearse(plan: Plan, commands: list[list[str]]) -> list[dict]:
    stages = []
    for command in commands:
        what = kind(command)
        ran = rehearsal_command(command, plan)
        row = {"stage": what, "readme": shlex.join(command), "ran": shlex.join(ran)}
        stages.append(row)
        plan.log(f"\n=== {what}: {row['readme']}")
        started = time.time()
        try:
            run_dir = Path(load_run_dir(what, ran)) if what in SIZES else None
            if run_dir is not None:
                row["resume"] = training_stage(plan, ran, run_dir)
            elif what in ("codes", "shards"):
                row["resume"] = encode_stage(plan, ran)
            elif what == "sample":
                row["resume"] = sample_stage(plan, ran)
            elif what == "fid" and plan.inception_missing:
                row.update(ok=True, skipped=f"no Inception weights on this machine ({plan.inception_missing})",
                           seconds=0.0)
                plan.log(f"skipped: {row['skipped']}")
                continue
            else:
                run(plan, ran)
                if what == "fid":
                    row["resume"] = "one pass; its Inception features are cached, so a re-run reuses them"
            row["checks"] = check_outputs(plan, what, run_dir)
            row["ok"] = True
        except (StageFailed, AssertionError, OSError, subprocess.SubprocessError) as e:
            row["ok"], row["error"] = False, f"{type(e).__name__}: {e}"
            row["seconds"] = round(time.time() - started, 1)
            plan.log(f"FAILED: {row['error']}")
            break
        row["seconds"] = round(time.time() - started, 1)
    return stages


def inception_missing() -> str | None:
    """Why ``dlc fid`` would find no Inception network offline, or None when it finds one (the
    GPU machines' image has none, and its 87 MB file does not travel there)."""
    from dlc.eval.fidelity import InceptionWeightsError, find_inception

    try:
        find_inception(allow_download=False)
    except InceptionWeightsError as e:
        return str(e).split(".")[0]
    return None


def load_run_dir(stage: str, command: list[str]) -> str:
    """The run_dir the stage's preset (with the command's overrides) trains in."""
    from dlc.stages import STAGES

    args = command[command.index("--config") + 1:]
    return STAGES[stage].load_config(args[0], [a for a in args[1:] if "=" in a]).run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu: torchrun, CPU processes; cuda: accelerate launch on the GPUs (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=None, help="per launch (default: 2 on CPU, the GPU count on cuda)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", default=None, help="JSON (default: benchmarks/results/rehearse_<device>.json)")
    parser.add_argument("--log", default=None,
                        help="the commands' whole output (default: WORK/rehearse.log, or beside a temporary WORK)")
    args = parser.parse_args(argv)

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("rehearse: --device cuda, but torch sees no GPU (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
        processes = args.processes or torch.cuda.device_count()
    else:
        processes = args.processes or 2
    if processes < 1:
        parser.error("--processes must be at least 1")
    work = Path(args.work or tempfile.mkdtemp(prefix="dlc-rehearse-")).resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty: the rehearsal starts from nothing")
    work.mkdir(parents=True, exist_ok=True)
    # beside a temporary work folder (removed after a pass), inside one given with --work
    log_path = Path(args.log or (work / "rehearse.log" if args.work else work.with_name(work.name + ".log")))
    log_file = log_path.open("w")

    def log(text: str, raw: bool = False) -> None:
        log_file.write(text if raw else text + "\n")
        log_file.flush()
        if not raw:
            print(text[:300] + (" ..." if len(text) > 300 else ""), flush=True)

    plan = Plan(work, args.device, processes, log)
    plan.inception_missing = inception_missing()
    if plan.inception_missing and args.device == "cpu":
        print(f"rehearse: dlc fid needs the Inception network, and none is here ({plan.inception_missing}); "
              "`make install` unpacks one (dlc data assets)", file=sys.stderr)
        return 2
    started = time.time()
    load_before = os.getloadavg()
    result = {"benchmark": "rehearse: the README's ImageNet commands at a miniature size", "device": args.device,
              "processes_per_launch": processes, "cpu_count": os.cpu_count(), "work": str(work),
              "load_average_1_5_15_before": [round(x, 2) for x in load_before], "host": platform.node(),
              "python": platform.python_version()}
    try:
        import torch

        result["torch"] = torch.__version__
        if args.device == "cuda":
            result["gpu"] = torch.cuda.get_device_name()
        commands = readme_commands()
        kinds = [kind(c) for c in commands]
        if kinds != EXPECTED:
            raise StageFailed(f"the README's ImageNet block runs {kinds}; the rehearsal expects {EXPECTED}")
        t = time.time()
        result["setup"] = prepare(plan)
        result["setup"]["seconds"] = round(time.time() - t, 1)
        t = time.time()
        if plan.inception_missing is None:
            result["setup"]["reference"] = make_reference(plan, work / "VIRTUAL_imagenet256_labeled.npz")
            result["setup"]["reference"]["seconds"] = round(time.time() - t, 1)
        result["stages"] = rehearse(plan, commands)
        ok = all(s["ok"] for s in result["stages"]) and len(result["stages"]) == len(commands)
    except (StageFailed, OSError, subprocess.SubprocessError) as e:
        result.setdefault("stages", [])
        result["error"] = f"{type(e).__name__}: {e}"
        log(f"FAILED: {result['error']}")
        ok = False
    result["ok"] = ok
    result["seconds"] = round(time.time() - started, 1)
    result["load_average_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"rehearse_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {out}; the commands' output is in {log_path}")
    log_file.close()
    if not args.keep and not args.work and ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def print_table(result: dict) -> None:
    print(f"\n{'stage':<10} {'seconds':>8}  {'ok':<4} resume")
    setup = result.get("setup", {})
    if setup:
        print(f"{'setup':<10} {setup.get('seconds', 0) + setup.get('reference', {}).get('seconds', 0):>8.1f}  "
              f"{'yes':<4} data, tiny VAE and LM, ADM reference batch")
    for s in result.get("stages", []):
        resume = s.get("resume")
        if isinstance(resume, dict):
            resume = ", ".join(f"{k}={v}" for k, v in resume.items() if k != "signal")
        print(f"{s['stage']:<10} {s.get('seconds', 0):>8.1f}  {'yes' if s['ok'] else 'NO':<4} {resume or s.get('skipped') or s.get('error', '')}"[:160])
    print(f"{'total':<10} {result['seconds']:>8.1f}  {'yes' if result['ok'] else 'NO':<4} "
          f"({result['device']}, {result['processes_per_launch']} processes a launch, {result['cpu_count']} cores, "
          f"load {result['load_average_1_5_15_before'][0]} -> {result['load_average_1_5_15_after'][0]})")


if __name__ == "__main__":
    raise SystemExit(main())
