"""Training throughput and peak memory of our DiT against diffusers' DiTTransformer2DModel.

    nice .venv/bin/python benchmarks/dit_speed.py                       # CPU: DiT-T/4, 32 px pixels, batch 32
    nice .venv/bin/python benchmarks/dit_speed.py --arch DiT-N/4
    python benchmarks/dit_speed.py --arch DiT-XL/2 --channels 4 --code-length 512 --vocab-size 256 \\
        --batch 64 --dtype bf16                                          # GPU: 256 px as 32x32x4 latents

One training step = zero_grad, forward, the flow-matching MSE, backward and an AdamW step (the same
optimizer settings for both models). Both models have the same width, depth, heads, patch size and
token count and are timed in the same process, alternating step by step (the order flips every
round); after ``--warmup`` rounds, the median of ``--steps`` timed steps gives images/s.

Conditioning differs and cannot be made equal: ours looks up an (L, V+1, width) code table (L code
positions averaged, 10% whole-code dropout as in training); diffusers' DiT is class-conditional
(``num_embeds_ada_norm`` classes, one label per image), the closest equivalent it has.

Peak memory is measured first, for each model alone in a fresh child process, so that neither
model's memory shows up in the other's number: on CUDA ``torch.cuda.max_memory_allocated`` over one
step after two warm-up steps, minus the inputs; on CPU the peak resident set over the warm-up and
one step (/proc's VmHWM, reset through /proc/self/clear_refs; ``resource.getrusage().ru_maxrss``
where that is missing) minus the resident set before the model was built, with a fixed glibc mmap
threshold so freed tensors leave the resident set. Both include parameters, gradients, AdamW state
and activations; the CPU number also counts allocator slack and oneDNN/MKL workspaces.

Writes benchmarks/results/dit_speed_<device>.json (``--out`` to change) and prints a table. With
``--goal X`` it exits with status 3 when ours is below X times diffusers' steps/s (wall-clock), after
writing the result (``goal`` and ``goal_met`` in it): ``benchmarks/gpu_check.sh`` holds it to 1.25.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from dlc.dit import DIT_MODELS, create_dit

MODELS = ("ours", "diffusers")


def arch_shape(name: str) -> dict:
    """(depth, width, heads, patch) of a name in dlc.dit.DIT_MODELS."""
    kw = DIT_MODELS[name].keywords
    return {"depth": kw["depth"], "width": kw["hidden_size"], "heads": kw["num_heads"], "patch": kw["patch_size"]}


def build(which: str, args, device) -> torch.nn.Module:
    shape = arch_shape(args.arch)
    out_channels = args.channels * (2 if args.learn_sigma else 1)
    if which == "ours":
        model = create_dit(args.arch, image_size=args.image_size, in_channels=args.channels,
                           code_length=args.code_length, vocab_size=args.vocab_size, learn_sigma=args.learn_sigma)
    else:
        from diffusers import DiTTransformer2DModel

        model = DiTTransformer2DModel(
            num_attention_heads=shape["heads"], attention_head_dim=shape["width"] // shape["heads"],
            in_channels=args.channels, out_channels=out_channels, num_layers=shape["depth"],
            sample_size=args.image_size, patch_size=shape["patch"], num_embeds_ada_norm=args.classes)
    return model.to(device).train()


def make_inputs(args, device, seed: int = 0) -> dict:
    """One fixed batch: noisy inputs at random times, the velocity target, codes, labels, dropout."""
    g = torch.Generator().manual_seed(seed)
    B, C, S = args.batch, args.channels, args.image_size
    x0 = torch.rand(B, C, S, S, generator=g) * 2 - 1
    noise = torch.randn(B, C, S, S, generator=g)
    t = torch.rand(B, generator=g)
    tt = t.view(-1, 1, 1, 1)
    batch = {
        "xt": (1 - tt) * x0 + tt * noise,
        "target": noise - x0,
        "t": t * 1000,  # ours: float timesteps in [0, 1000)
        "t_long": (t * 1000).long(),  # diffusers: integer timesteps
        "codes": torch.randint(0, args.vocab_size, (B, args.code_length), generator=g),
        "drop": torch.rand(B, generator=g) < 0.1,
        "labels": torch.randint(0, args.classes, (B,), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def forward(which: str, model, batch) -> torch.Tensor:
    if which == "ours":
        return model(batch["xt"], batch["t"], batch["codes"], batch["drop"])
    return model(batch["xt"], timestep=batch["t_long"], class_labels=batch["labels"], return_dict=False)[0]


def make_step(which: str, model, batch, args, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext())
    channels = args.channels

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = forward(which, model, batch)
            loss = F.mse_loss(out[:, :channels].float(), batch["target"])
        loss.backward()
        optimizer.step()
        return loss

    return step


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# peak memory, in a child process per model


def _proc_status(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in bytes (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_probe(which: str, args, device) -> dict:
    batch = make_inputs(args, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
    elif _reset_peak_rss():
        base, method = _proc_status("VmRSS"), "VmHWM"
    else:
        base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    model = build(which, args, device)
    step = make_step(which, model, batch, args, device)
    for _ in range(2):  # AdamW state exists after the first step
        step()
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return {"peak_memory_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)}
    step()
    peak = _proc_status("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_memory_mb": round((peak - base) / 2**20, 1), "memory_counter": method}


def measure_memory(which: str, argv: list[str]) -> dict:
    command = [sys.executable, __file__, *argv, "--memory-probe", which]
    # a fixed mmap threshold stops glibc from keeping freed tensors resident (the dynamic threshold
    # would), so the resident set follows the live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"memory probe for {which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# speed, both models in this process


def time_steps(steps: dict, args, device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds of each timed step, per model."""
    times = {name: [] for name in steps}
    cpu_times = {name: [] for name in steps}
    for r in range(args.warmup + args.steps):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for name in order:
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name]()
            sync(device)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    return times, cpu_times


def profile(steps: dict, device, rows: int = 15) -> dict[str, list[dict]]:
    """The ops that cost most in one step of each model (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = {}
    for name, step in steps.items():
        with torch_profile(activities=activities) as prof:
            step()
            sync(device)
        averages = prof.key_averages()
        key = "self_cpu_time_total"
        if device.type == "cuda":  # renamed in torch 2.4+
            key = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
        print(f"\n== {name}: top ops by {key} ==")
        print(averages.table(sort_by=key, row_limit=rows))
        total = sum(getattr(e, key) for e in averages) or 1
        top = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:rows]
        out[name] = [{"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key) / 1e3, 2),
                      "share": round(getattr(e, key) / total, 3)} for e in top]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="DiT-T/4", choices=list(DIT_MODELS), help="(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels or latent size (default: %(default)s)")
    parser.add_argument("--channels", type=int, default=3, help="3 for pixels, 4 for SD-VAE latents")
    parser.add_argument("--code-length", type=int, default=32, help="L of our code (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=64, help="V of our code (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=1000, help="diffusers' num_embeds_ada_norm")
    parser.add_argument("--learn-sigma", action="store_true", help="2C output channels (DDPM objective)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default: %(default)s)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--profile", action="store_true", help="also profile one step of each (top ops)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/dit_speed_<device>.json")
    parser.add_argument("--goal", type=float, default=None,
                        help="exit 3 when ours is below this many times diffusers' steps/s (e.g. 1.25)")
    parser.add_argument("--memory-probe", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("dit_speed: --device cuda, but torch sees no GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args, device)))
        return 0

    argv = sys.argv[1:]
    # memory first, before this process holds both models (on a GPU they would crowd the children out)
    memory = {name: ({} if args.no_memory else measure_memory(name, argv)) for name in MODELS}
    load_before = os.getloadavg()
    torch.manual_seed(0)
    batch = make_inputs(args, device)
    models = {name: build(name, args, device) for name in MODELS}
    steps = {name: make_step(name, models[name], batch, args, device) for name in MODELS}
    started = time.perf_counter()
    times, cpu_times = time_steps(steps, args, device)
    timing_seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    profiled = profile(steps, device) if args.profile else None

    shape = arch_shape(args.arch)
    tokens = (args.image_size // shape["patch"]) ** 2
    rows = {}
    for name in MODELS:
        median = statistics.median(times[name])
        rows[name] = {
            "params_m": round(param_count(models[name]) / 1e6, 3),
            "step_ms_median": round(median * 1e3, 2),
            "step_ms_min": round(min(times[name]) * 1e3, 2),
            "step_ms_max": round(max(times[name]) * 1e3, 2),
            "images_per_s": round(args.batch / median, 2),
            # CPU seconds of this process (all threads) per step: on a shared CPU machine less
            # sensitive to other load than wall time (threads spinning at barriers still count)
            "step_cpu_ms_median": round(statistics.median(cpu_times[name]) * 1e3, 2),
            **memory[name],
        }
    speedup = rows["diffusers"]["step_ms_median"] / rows["ours"]["step_ms_median"]
    cpu_speedup = rows["diffusers"]["step_cpu_ms_median"] / rows["ours"]["step_cpu_ms_median"]
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name()
        memory_method = ("torch.cuda.max_memory_allocated over one step after 2 warm-up steps, minus the inputs; "
                         "each model alone in a fresh process")
    else:
        device_name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        memory_method = ("peak RSS of a fresh process (MALLOC_MMAP_THRESHOLD_=131072) over 2 warm-up steps + 1 step, "
                         "minus the RSS before the model was built: /proc VmHWM reset through clear_refs (or "
                         "ru_maxrss where that is missing); includes allocator slack and oneDNN/MKL buffers")
    result = {
        "command": shlex.join(["benchmarks/dit_speed.py", *argv]),
        "device": device_name,
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "arch": args.arch, **shape,
        "image_size": args.image_size, "channels": args.channels, "tokens": tokens, "batch": args.batch,
        "dtype": args.dtype, "warmup_rounds": args.warmup, "timed_steps": args.steps,
        "timing_seconds": round(timing_seconds, 1),
        "conditioning": {
            "ours": f"code (L={args.code_length}, V={args.vocab_size}): (L, V+1, width) table averaged over "
                    "positions, 10% whole-code dropout",
            "diffusers": f"class label, num_embeds_ada_norm={args.classes} (its closest equivalent; conditioning differs)",
        },
        "step": "zero_grad + forward + flow-matching MSE + backward + AdamW (torch defaults, lr 1e-4)",
        "memory_method": None if args.no_memory else memory_method,
        "results": rows,
        "speedup_ours_vs_diffusers": round(speedup, 3),
        "speedup_cpu_time_ours_vs_diffusers": round(cpu_speedup, 3),
        "target": "ours at least as fast as diffusers (goal 1.25x)",
        "notes": [],
    }
    if profiled:
        result["profile_top_ops"] = profiled
    if args.goal is not None:
        result["goal"], result["goal_met"] = args.goal, bool(speedup >= args.goal)

    print(f"\n{args.arch}  {tokens} tokens  batch {args.batch}  {args.dtype}  on {device_name}"
          f"  (torch {torch.__version__}, threads {result['threads']}, load {result['load_average_1_5_15_before'][0]}"
          f" -> {result['load_average_1_5_15_after'][0]})")
    print(f"{'model':<10} {'params M':>9} {'ms/step':>9} {'min':>8} {'max':>8} {'img/s':>9} {'cpu ms':>9} {'peak MB':>9}")
    for name, row in rows.items():
        print(f"{name:<10} {row['params_m']:>9.3f} {row['step_ms_median']:>9.1f} {row['step_ms_min']:>8.1f} "
              f"{row['step_ms_max']:>8.1f} {row['images_per_s']:>9.1f} {row['step_cpu_ms_median']:>9.1f} "
            f"{row.get('peak_memory_mb', float('nan')):>9.1f}")
    print(f"speed-up ours / diffusers: {speedup:.2f}x wall-clock, {cpu_speedup:.2f}x process CPU time")
    out = Path(args.out or f"benchmarks/results/dit_speed_{device.type}.json")
    write_result(out, result)
    print(f"wrote {out}")
    if args.goal is not None and not result["goal_met"]:
        print(f"GOAL MISSED: ours is {speedup:.2f}x diffusers' steps/s, below the goal of {args.goal:g}x", file=sys.stderr)
        return 3
    return 0


KEY = ("arch", "image_size", "channels", "batch", "dtype", "device", "threads")


def write_result(out: Path, result: dict) -> None:
    """Keep one entry per (arch, size, channels, batch, dtype, device, threads) in the file's ``runs``; notes
    written by hand into an entry (``notes``) survive a re-run of the same setting."""
    runs = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    old = [r for r in runs if all(r.get(k) == result[k] for k in KEY)]
    if old and old[0].get("notes") and not result["notes"]:
        result["notes"] = old[0]["notes"]
    runs = [r for r in runs if r not in old] + [result]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "dit_speed: one training step, ours vs diffusers DiTTransformer2DModel",
                               "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
