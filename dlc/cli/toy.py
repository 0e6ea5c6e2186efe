"""``dlc toy``: the paper's toy experiment (its Section 3) on 2-D Gaussian mixtures."""

from __future__ import annotations

import os


def register(sub) -> None:
    from ..toy import ToyConfig

    default = ToyConfig()
    parser = sub.add_parser(
        "toy", help="the paper's toy experiment: KL of unconditional vs index-conditioned 2-D diffusion",
        description="2-D mixtures of N Gaussians on a grid (variance 0.1, spacing 1.0). A small MLP "
        "diffusion model (flow matching) is trained unconditionally, conditioned on the oracle mixture "
        "index, and conditioned on the index a fitted Gaussian mixture model assigns; each is scored by "
        "KL(data || model), estimated with a Gaussian KDE on its samples, beside the KDE's floor (the same "
        "estimate for fresh data samples). Writes OUT/results.json, OUT/kl.png (KL against N) and "
        "OUT/samples.png (scatter plots), and prints the table. An N finished by an earlier run with the "
        "same settings is reused. Example: dlc toy --n 9 121 --steps 1000",
    )
    parser.add_argument("--out", default="runs/toy", help="output folder (default: %(default)s)")
    parser.add_argument("--n", type=int, nargs="+", default=None, metavar="N",
                        help=f"numbers of Gaussians, perfect squares (default: {' '.join(map(str, default.ns))})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps per model (default: {default.steps})")
    parser.add_argument("--seed", type=int, default=None, help=f"seed of data, models and samples (default: {default.seed})")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in well under a minute (N=9 and 121, tiny budgets; numbers not meaningful)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes side by side, one N each on one thread: the numbers do not depend on "
                        "it (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="recompute every N instead of reusing finished ones")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import _table_md
    from ..toy import QUICK, ToyConfig, config_with, run, table

    base = QUICK if args.quick else ToyConfig()
    config = config_with(base, ns=tuple(args.n) if args.n else None, steps=args.steps, seed=args.seed)
    results = run(config, args.out, fresh=args.fresh, workers=args.workers)
    print(f"KL(data || model) in nats, Gaussian KDE on {config.kde_samples} samples, averaged over "
          f"{config.eval_samples} data points ({config.steps} steps per model, seed {config.seed}):")
    print(_table_md(table(results)))
    print(f"{results['seconds']:.0f} s; wrote {args.out}/results.json, kl.png, samples.png")
    return 0
