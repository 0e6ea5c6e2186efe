"""Sampler quality against network evaluations on one trained DiT: can a fast solver match the slow one?

    python benchmarks/dit_samplers.py --run runs/demo/dit --test-codes runs/demo/codes/test.npy

Generates ``--num`` images from the codes of held-out test emoji with every (sampler, steps) pair
(the reference: the paper's 250-step DDPM for a ``ddpm`` model, 250 Euler steps for a ``flow``
model; against DPM-Solver++ at 25 and 50 steps and the others) from the same seeds, and records
FID against the test emoji, the number of network evaluations (counted, guidance passes included
in one batched call each), seconds, and the mean squared difference to the reference sampler's
images (same noise, same codes). Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _results import merge_into

import dlc
from dlc import eval as dlc_eval
from dlc.codes import load_codes
from dlc.data import to_float
from dlc.pipeline import DLCPipeline

PLANS = {  # objective -> (reference, others): (sampler, steps)
    "ddpm": (("ddpm", 250), [("dpm", 25), ("dpm", 50), ("ddim", 50), ("ddpm", 50)]),
    "flow": (("euler", 250), [("dpm", 25), ("dpm", 50), ("euler", 25), ("euler", 50), ("heun", 25)]),
}


class CountingForward:
    """Wraps the DiT's forward and counts its calls."""

    def __init__(self, model):
        self.model, self.forward, self.calls = model, model.forward, 0
        model.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.forward(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a DiT run directory")
    parser.add_argument("--test-codes", required=True, help="codes of the test split (.npy)")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="emoji-32-test")
    parser.add_argument("--out", default="benchmarks/results/dit_samplers.json")
    args = parser.parse_args()

    pipe = DLCPipeline.from_pretrained(args.run)
    pipe.set_progress_bar_config(disable=True)
    counter = CountingForward(pipe.dit)
    objective = pipe.config.objective
    reference_plan, others = PLANS[objective]
    test = dlc.data.load("emoji", size=32, split="test")
    codes = load_codes(args.test_codes)[torch.arange(args.num) % len(test)]

    rows, reference_images = [], None
    for sampler, steps in [reference_plan, *others]:
        counter.calls = 0
        start = time.perf_counter()
        images = pipe(codes=codes, scheduler=sampler, num_inference_steps=steps, guidance_scale=args.guidance_scale,
                      generator=torch.Generator().manual_seed(args.seed), batch_size=args.num,
                      output_type="uint8").images
        seconds = time.perf_counter() - start
        reference_images = images if reference_images is None else reference_images
        fid = dlc_eval.fid(images, args.reference, kid=False, isc=False, progress=False)["fid"]
        rows.append({"sampler": sampler, "steps": steps, "network_evaluations": counter.calls, "fid": round(fid, 1),
                     "mse_to_reference": round((to_float(images) - to_float(reference_images)).pow(2).mean().item(), 5),
                     "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    result = {
        "command": "python benchmarks/dit_samplers.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "run": args.run, "objective": objective, "num_samples": args.num, "guidance_scale": args.guidance_scale,
        "reference_sampler": f"{reference_plan[0]} {reference_plan[1]} steps",
        "torch_threads": torch.get_num_threads(), "load_average_after": round(os.getloadavg()[0], 2), "rows": rows,
    }
    merge_into(args.out, args.run, result)
    print(f"\n{'sampler':>8} {'steps':>6} {'NFE':>5} {'FID':>7} {'MSE to ref':>11} {'s':>6}")
    for r in rows:
        print(f"{r['sampler']:>8} {r['steps']:>6} {r['network_evaluations']:>5} {r['fid']:>7.1f} "
              f"{r['mse_to_reference']:>11.5f} {r['seconds']:>6.1f}")


if __name__ == "__main__":
    main()
