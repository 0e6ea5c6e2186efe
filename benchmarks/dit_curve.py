"""What a DiT has learned after how many minutes: FID and reconstruction error at each checkpoint.

    python benchmarks/dit_curve.py --run runs/demo/dit --test-codes runs/demo/codes/test.npy --minutes 5 10 15

For every checkpoint of a DiT run (train with ``train.keep_checkpoints=0`` to keep them all), or for
the last checkpoint reached by each of ``--minutes``, the EMA weights generate images from the codes of
the held-out test images (all of them: 372 test emoji; ``--num`` fewer) and as many from the codes of
training images (the run's ``condition.codes``), with the same sampler settings, then:
- ``fid`` and ``kid`` (with its standard deviation over subsets; unbiased, so comparable across sample
  counts) of the test-code images against the test split (``--reference``, default the run's dataset's
  test split), the standard Inception network; at a few hundred samples FID is biased high
  (real-vs-real is the floor, also recorded);
- ``recon_mse_test`` / ``recon_mse_train``: mean squared error, in [-1, 1] pixel units, between
  each generated image and the emoji whose code made it (image -> code -> image), against
  ``shuffled``: the same images compared with the emoji of another code (the error a model that
  ignores its code would make).
Minutes are wall-clock training minutes read from the run's metrics.jsonl, plus ``--offset-minutes``
(what was spent before the DiT started, e.g. training its VAE: a latent DiT's marks then count the
VAE's minutes against the same budget as a pixel DiT's). Writes JSON (one
entry per run, keyed by run directory, with the guidance scale when it is not 1) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _results import merge_into
from safetensors.torch import load_file

from dlc import eval as dlc_eval
from dlc.codes import load_codes
from dlc.config import load_config
from dlc.data import to_float
from dlc.dit import DiTRunConfig
from dlc.dit.diffusion import get_objective
from dlc.pipeline import DLCPipeline
from dlc.runs import RunDir


def training_minutes(run: RunDir) -> dict[int, float]:
    """step -> wall-clock minutes since the start, from the logged times (the first logged step's
    time is extrapolated back to step 0)."""
    rows = [r for r in run.read_metrics() if "loss" in r]
    (s0, t0), (s1, t1) = (rows[0]["step"], rows[0]["time"]), (rows[1]["step"], rows[1]["time"])
    start = t0 - s0 * (t1 - t0) / (s1 - s0)
    return {r["step"]: (r["time"] - start) / 60 for r in rows}


def chosen_steps(steps: list[int], minutes: dict[int, float], marks: list[float] | None) -> list[int]:
    """Every checkpoint step, or for each mark the last one reached by then (distinct, in order)."""
    if not marks:
        return steps
    reached = [max((s for s in steps if minutes.get(s, float("inf")) <= mark), default=None) for mark in marks]
    return list(dict.fromkeys(s for s in reached if s is not None))


def evaluate(pipe, codes: torch.Tensor, originals: torch.Tensor, args) -> tuple[torch.Tensor, float, float]:
    """(uint8 images from ``codes``, MSE to their originals, MSE to shuffled originals)."""
    images = pipe(codes=codes, guidance_scale=args.guidance_scale, num_inference_steps=args.steps,
                  generator=torch.Generator().manual_seed(args.seed), batch_size=64, output_type="uint8").images
    generated, real = to_float(images), to_float(originals)
    shuffled = real.roll(1, dims=0)
    return images, (generated - real).pow(2).mean().item(), (generated - shuffled).pow(2).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a DiT run directory (config.yaml, checkpoints/)")
    parser.add_argument("--test-codes", required=True, help="codes of the test split (.npy, row i = test image i)")
    parser.add_argument("--num", type=int, default=0, help="images per evaluation (default: 0, every test image)")
    parser.add_argument("--minutes", type=float, nargs="*", default=None,
                        help="evaluate the last checkpoint reached by each of these training minutes (default: all)")
    parser.add_argument("--offset-minutes", type=float, default=0.0,
                        help="minutes spent before the DiT's training, added to its own (e.g. its VAE's training)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default: %(default)s)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="(default: %(default)s, no guidance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=None, help="(default: the run's dataset's test split, e.g. emoji-32-test)")
    parser.add_argument("--every", type=int, default=1, help="evaluate every k-th checkpoint (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/dit_curve.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    run = RunDir(args.run)
    config = load_config(DiTRunConfig, run.config_path)
    test, train = config.data.load("test"), config.data.load("train")
    args.reference = args.reference or f"{config.data.dataset}-{config.data.size}-test"
    pick_test = torch.arange(min(args.num or len(test), len(test)))
    count = len(pick_test)  # as many training images as test images
    test_codes, train_codes = load_codes(args.test_codes)[pick_test], load_codes(config.condition.codes)[:count]
    test_images, train_images = test.images[pick_test], train.images[:count]
    objective = get_objective(config.objective)
    pipe = DLCPipeline.from_runs(run.root)  # the run's DiT, sampler and VAE (a latent DiT decodes through it)
    pipe.set_progress_bar_config(disable=True)
    model = pipe.dit
    minutes = {step: m + args.offset_minutes for step, m in training_minutes(run).items()}
    floor = dlc_eval.fid(train.images[: len(pick_test)], args.reference, kid=False, isc=False, progress=False)["fid"]

    rows = []
    for step in chosen_steps(run.checkpoint_steps(), minutes, args.minutes)[:: args.every]:
        model.load_state_dict(load_file(run.checkpoints / str(step) / "ema.safetensors"))
        start = time.perf_counter()
        images, mse_test, shuffled_test = evaluate(pipe, test_codes, test_images, args)
        _, mse_train, shuffled_train = evaluate(pipe, train_codes, train_images, args)
        scores = dlc_eval.fid(images, args.reference, kid=True, isc=False, progress=False)
        rows.append({"step": step, "minutes": round(minutes.get(step, float("nan")), 2), "fid": round(scores["fid"], 1),
                     "kid": round(scores["kid"], 4), "kid_std": round(scores["kid_std"], 4),
                     "recon_mse_test": round(mse_test, 4), "shuffled_mse_test": round(shuffled_test, 4),
                     "recon_mse_train": round(mse_train, 4), "shuffled_mse_train": round(shuffled_train, 4),
                     "eval_seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)

    result = {
        "command": "python benchmarks/dit_curve.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "run": str(run.root), "arch": config.model.arch, "objective": config.objective,
        "batch_size": config.train.batch_size, "lr": config.train.lr, "condition": config.condition.kind,
        "sampler": f"{config.sample.sampler or objective.default_sampler}, {args.steps} steps, "
                   f"guidance {args.guidance_scale}",
        "fid_samples": len(pick_test), "reference": args.reference, "real_vs_real_fid_floor": round(floor, 1),
        "torch_threads": torch.get_num_threads(), "load_average_after": round(os.getloadavg()[0], 2),
        "curve": rows,
    }
    merge_into(args.out, str(run.root) + (f" guidance {args.guidance_scale:g}" if args.guidance_scale != 1 else ""),
               result)
    print(f"\n{config.model.arch}, {config.objective}, batch {config.train.batch_size}, lr {config.train.lr}: "
          f"FID@{len(pick_test)} (floor {floor:.1f}) and reconstruction MSE (shuffled-code MSE)")
    print(f"{'step':>6} {'min':>6} {'FID':>7} {'KID':>16} {'test mse':>16} {'train mse':>16}")
    for r in rows:
        print(f"{r['step']:>6} {r['minutes']:>6.1f} {r['fid']:>7.1f} {r['kid']:>7.4f} ± {r['kid_std']:.4f}"
              f" {r['recon_mse_test']:>7.4f} ({r['shuffled_mse_test']:.4f})"
              f" {r['recon_mse_train']:>7.4f} ({r['shuffled_mse_train']:.4f})")


if __name__ == "__main__":
    main()
