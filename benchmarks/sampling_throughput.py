"""Throughput of the paper's whole sampling path on CPU, where the time goes, and how many prior
steps the same code statistics need.

    python benchmarks/sampling_throughput.py                      # about 3 minutes on 2 shared cores
    python benchmarks/sampling_throughput.py --device cuda --batch 16

1. **Throughput.** The ImageNet presets' architectures with random weights: the SEDD-medium-shaped
   code prior (width 1024, 16 heads, L=512, V=256), DiT-XL/2 (width 1152, 16 heads, 32x32x4
   latents, DLC512 codes) and the Stable Diffusion VAE's decoder (its real architecture), sampled
   through ``DLCPipeline`` with the ImageNet presets' settings: prior 4,096 steps with remasking
   (eta 0.01 inside t in [0.3, 0.55]), DiT 250 DDPM steps at CFG 1.4 (batch doubled). The prior
   and the DiT run at 1 and 2 of their 24 / 28 blocks, and each for a few of its steps: a step's
   cost does not depend on which step it is, and it grows linearly with depth, so the time of the
   full-depth, full-step path is extrapolated as t(1) + (D - 1) (t(2) - t(1)) per step, times the
   step count. The VAE decodes once, at full size.
2. **Prior steps for the same statistics.** A micro prior trained here on ``synthetic:markov``
   codes (no trained demo prior ships with the repository; pass ``--prior-run`` for one) samples
   with the paper's remasking at 16 ... 4,096 steps; each row's code statistics
   (``dlc.eval.codes.code_statistics`` against held-out codes) are compared with the 4,096-step
   row, and the smallest step count within the real-vs-real noise floor is reported.

Timings share the machine with other work: the shares and ratios are measured side by side and
are the robust numbers; absolute seconds are an upper bound. JSON: benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import dlc  # noqa: F401  (torchvision fix before anything else)
from dlc.eval.codes import code_statistics
from dlc.pipeline import DiTSampling, DLCPipeline, PriorSampling, Sampling

PAPER = Sampling(dit=DiTSampling(sampler="ddpm", steps=250, guidance_scale=1.4),
                 prior=PriorSampling(steps=4096, eta=0.01, window=(0.3, 0.55)))
FULL_DEPTH = {"prior": 24, "dit": 28}
L, V = 512, 256


def build(depth: int) -> DLCPipeline:
    """The ImageNet preset's pipeline at ``depth`` blocks (prior and DiT), random weights."""
    from diffusers import AutoencoderKL

    from dlc.dit import create_dit
    from dlc.dit.diffusion import get_objective
    from dlc.prior.model import CodePrior

    torch.manual_seed(0)
    dit = create_dit("DiT-XL/2", depth=depth, image_size=32, in_channels=4, code_length=L, vocab_size=V,
                     learn_sigma=True).eval()
    prior = CodePrior(code_length=L, vocab_size=V, hidden_size=1024, depth=depth, num_heads=16, rotary=True,
                      time_conditioning=True).eval()  # SEDD-medium's width and heads
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        block_out_channels=[128, 256, 512, 512], layers_per_block=2).eval()
    pipe = DLCPipeline(dit=dit, scheduler=get_objective("ddpm").make_scheduler("ddpm"), vae=vae, prior=prior,
                       objective="ddpm", sampling=PAPER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@torch.no_grad()
def stage_seconds(pipe: DLCPipeline, batch: int, prior_steps: int, dit_steps: int) -> dict:
    """Seconds per step of the prior and the DiT, and per call of the VAE, for ``batch`` images."""
    prior = PriorSampling(**{**vars(PAPER.prior), "steps": prior_steps})
    dit = DiTSampling(**{**vars(PAPER.dit), "steps": dit_steps})
    t_prior, codes = timed(lambda: pipe.make_codes(num_images=batch, prior_sampling=prior))
    t_dit, latents = timed(lambda: pipe.denoise(codes.to(pipe.device), batch, 0, range(batch), dit))
    t_vae, _ = timed(lambda: pipe.decode(latents))
    return {"prior_step": t_prior / prior_steps, "dit_step": t_dit / dit_steps, "vae": t_vae}


def throughput(args) -> dict:
    measured = {}
    for depth in (1, 2):
        pipe = build(depth).to(args.device)
        stage_seconds(pipe, 1, 2, 1)  # warm-up
        measured[depth] = stage_seconds(pipe, args.batch, args.prior_steps, args.dit_steps)
        print(f"  depth {depth}: " + ", ".join(f"{k} {v:.3f} s" for k, v in measured[depth].items()))
    one, two = measured[1], measured[2]
    per_step = {name: one[f"{name}_step"] + (FULL_DEPTH[name] - 1) * (two[f"{name}_step"] - one[f"{name}_step"])
                for name in ("prior", "dit")}
    seconds = {"prior": per_step["prior"] * PAPER.prior.steps, "dit": per_step["dit"] * PAPER.dit.steps,
               "vae": (one["vae"] + two["vae"]) / 2}
    total = sum(seconds.values())
    reduced = {"prior": two["prior_step"] * PAPER.prior.steps, "dit": two["dit_step"] * PAPER.dit.steps,
               "vae": two["vae"]}
    return {"batch": args.batch, "measured_steps": {"prior": args.prior_steps, "dit": args.dit_steps},
            "measured": {str(d): m for d, m in measured.items()},
            "full_depth": {"seconds_per_batch": seconds, "seconds_per_image": total / args.batch,
                           "images_per_second": args.batch / total,
                           "share": {k: v / total for k, v in seconds.items()}},
            "depth_2": {"seconds_per_batch": reduced, "images_per_second": args.batch / sum(reduced.values()),
                        "share": {k: v / sum(reduced.values()) for k, v in reduced.items()}}}


def trained_micro_prior(folder: Path) -> Path:
    """A micro prior trained for a few hundred steps on synthetic:markov codes (L=32, V=16)."""
    from dlc.stages import STAGES

    stage = STAGES["prior"]
    config = stage.load_config("emoji", [
        "data.codes=synthetic:markov", "data.synthetic_num=4096", "model.size=micro", "model.code_length=32",
        "model.vocab_size=16", "train.steps=400", "train.sample_every=0", "train.checkpoint_every=400",
        "train.log_every=100", f"run_dir={folder / 'prior'}"])
    stage.train(config)
    return folder / "prior"


def steps_for_the_same_statistics(args) -> dict:
    from dlc.config import load_config
    from dlc.prior import load_prior
    from dlc.prior.training import PriorRunConfig, load_data

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.prior_run) if args.prior_run else trained_micro_prior(Path(tmp))
        _, heldout, train_codes, _, _ = load_data(load_config(PriorRunConfig, run / "config.yaml"))
        prior = load_prior(run).to(args.device)
    reference = train_codes[args.num:]
    torch.set_grad_enabled(False)
    rows = [{"steps": "real", **code_statistics(train_codes[: args.num], reference)}]
    for steps in args.sweep:
        seconds, codes = timed(lambda steps=steps: prior.sample(args.num, seed=1, steps=steps, eta=PAPER.prior.eta,
                                                    window=PAPER.prior.window).cpu())
        rows.append({"steps": steps, "ms_per_code": 1000 * seconds / args.num, **code_statistics(codes, reference)})
        print(f"  {steps:>5} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if k != "steps"))
    return {"prior": args.prior_run or "micro prior, 400 steps on synthetic:markov (L=32, V=16)",
            "num": args.num, "rows": rows, "enough": enough_steps(rows)}


def enough_steps(rows: list[dict], keys=("marginal_tv", "pair_tv", "agreement_err")) -> int:
    """The fewest steps whose statistics match the last (4,096-step) row's: each statistic s within
    a tenth of its real-vs-real noise floor, |s - s_4096| <= 0.1 s_real."""
    real, final = rows[0], rows[-1]
    for row in rows[1:]:
        if all(abs(row[k] - final[k]) <= 0.1 * real[k] for k in keys):
            return row["steps"]
    return final["steps"]


def table(result: dict) -> str:
    full, reduced = result["throughput"]["full_depth"], result["throughput"]["depth_2"]
    lines = ["| path | prior | DiT | VAE | images/s |", "|---|---|---|---|---|"]
    for name, part in (("full depth (extrapolated)", full), ("depth 2 (measured)", reduced)):
        s = part["seconds_per_batch"]
        lines.append(f"| {name} | {s['prior']:.0f} s ({part['share']['prior']:.0%}) | {s['dit']:.0f} s "
                     f"({part['share']['dit']:.0%}) | {s['vae']:.1f} s ({part['share']['vae']:.1%}) | "
                     f"{part['images_per_second']:.2g} |")
    lines += ["", "| prior steps | marginal TV | pair TV | agreement err | ms/code |", "|---|---|---|---|---|"]
    for row in result["prior_steps"]["rows"]:
        lines.append(f"| {row['steps']} | {row['marginal_tv']:.4f} | {row['pair_tv']:.4f} | "
                     f"{row['agreement_err']:.4f} | {row.get('ms_per_code', float('nan')):.1f} |")
    lines.append(f"\nsame code statistics as 4,096 steps from {result['prior_steps']['enough']} steps")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (default: %(default)s)")
    parser.add_argument("--prior-steps", type=int, default=8, help="prior steps timed (default: %(default)s)")
    parser.add_argument("--dit-steps", type=int, default=4, help="DiT steps timed (default: %(default)s)")
    parser.add_argument("--prior-run", default=None, help="a trained prior run (default: train a micro one here)")
    parser.add_argument("--sweep", type=int, nargs="+", default=[16, 32, 64, 128, 256, 1024, 4096])
    parser.add_argument("--num", type=int, default=128, help="codes per step count (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/sampling_throughput_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("throughput of the paper's sampling path (ImageNet preset architectures, random weights)")
    result = {"device": args.device, "threads": args.threads, "settings": PAPER.to_dict(),
              "throughput": throughput(args)}
    print("prior steps for the same code statistics as 4,096")
    result["prior_steps"] = steps_for_the_same_statistics(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
