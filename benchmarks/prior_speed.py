"""Sampling speed of the code prior: milliseconds per code against steps, with and without the
noise-level input (a model without it is re-run only on samples that changed, so its cost stops
growing once steps exceed L). Speed does not depend on the weights: fresh models are timed.

    python benchmarks/prior_speed.py --size nano --L 32 --V 64 --num 256 --steps 16 128 1024
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dlc  # noqa: F401
from dlc.prior import create_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="nano")
    parser.add_argument("--L", type=int, default=32)
    parser.add_argument("--V", type=int, default=64)
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 128, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="prior_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for time_conditioning in (True, False):
        torch.manual_seed(0)
        prior = create_prior(args.size, code_length=args.L, vocab_size=args.V,
                             time_conditioning=time_conditioning).to(args.device).eval()
        for steps in args.steps:
            started = time.perf_counter()
            prior.sample(args.num, seed=0, steps=steps)
            ms = 1000 * (time.perf_counter() - started) / args.num
            rows.append({"time_conditioning": time_conditioning, "steps": steps, "ms_per_code": ms})
            print(f"time_conditioning={time_conditioning!s:<5} steps={steps:<5} {ms:8.2f} ms/code")
    Path(args.out).write_text(json.dumps({**vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
