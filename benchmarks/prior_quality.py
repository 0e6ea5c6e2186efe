"""Code-prior quality and speed: held-out bits/token against the unigram baseline, a sampling-steps
sweep (statistics of sampled codes against real ones, time per code) and optional eta values.

    python benchmarks/prior_quality.py --run runs/emoji/prior --out prior_quality.json
    python benchmarks/prior_quality.py --run RUN --steps 16 32 64 128 256 1024 --etas 0.01 0.05 --temperatures 0.9

Reference and noise floor: the run's training codes are split into ``num`` "real" codes and the
rest (the reference); sampled codes (also ``num``) and the real ones are compared with the same
reference, so the real row is the floor a perfect prior would reach at this sample count.
For ``synthetic:markov`` runs the true source also scores every row (bits/token under the source).
The JSON is written after every row; re-running with the same ``--run``, ``--num`` and ``--out``
skips the rows already there (a 1,024-step row of 1,000 codes takes about an hour on one core).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dlc  # noqa: F401  (torchvision fix before anything else)
from dlc.codes.synthetic import markov_entropy_bits, markov_nll_bits
from dlc.config import load_config
from dlc.eval.codes import code_statistics
from dlc.prior import load_prior
from dlc.prior.training import PriorRunConfig, heldout_bits, load_data, unigram_bits


def row(name: str, codes: torch.Tensor, reference: torch.Tensor, markov_v: int | None, **extra) -> dict:
    out = {"name": name, **extra, **code_statistics(codes, reference)}
    if markov_v:
        out["source_bits"] = markov_nll_bits(codes, markov_v)
    return out


def resumable(out: Path, run: str, num: int) -> dict | None:
    """The partial result of an interrupted sweep of the same run and sample count, if ``out`` holds one."""
    if not out.exists():
        return None
    result = json.loads(out.read_text())
    return result if result.get("run") == run and result.get("num") == num else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained prior run directory")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128, 256, 1024])
    parser.add_argument("--etas", type=float, nargs="*", default=[], help="remasking eta values (at --at-steps)")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[], help="temperatures (at --at-steps)")
    parser.add_argument("--at-steps", type=int, default=128)
    parser.add_argument("--num", type=int, default=1000, help="sampled codes per setting")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--elbo-samples", type=int, default=32, help="noise draws per held-out code")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="prior_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(PriorRunConfig, Path(args.run) / "config.yaml")
    _, heldout, train_codes, _, _ = load_data(config)
    prior = load_prior(args.run).to(args.device)
    V = prior.config.vocab_size
    markov_v = V if config.data.codes == "synthetic:markov" else None
    real, reference = train_codes[: args.num], train_codes[args.num:]

    out = Path(args.out)
    result = resumable(out, args.run, args.num)
    if result is None:
        result = {"run": args.run, "device": args.device, "codes": config.data.codes,
                  "L": prior.config.code_length, "V": V, "num": args.num,
                  "heldout_codes": len(heldout),
                  "heldout_bits": heldout_bits(prior, heldout, samples_per_code=args.elbo_samples),
                  "unigram": unigram_bits(train_codes, heldout, V), "rows": []}
        if markov_v:
            result["source_entropy_bits"] = markov_entropy_bits(prior.config.code_length, V)
        result["rows"].append(row("real", real, reference, markov_v))
        out.write_text(json.dumps(result, indent=2))
    done = {r["name"] for r in result["rows"]}
    settings = ([(s, 0.0, 1.0) for s in args.steps] + [(args.at_steps, e, 1.0) for e in args.etas]
                + [(args.at_steps, 0.0, temp) for temp in args.temperatures])
    for steps, eta, temperature in settings:
        name = f"prior {steps} steps" + (f" eta {eta}" if eta else "") + (f" T {temperature}" if temperature != 1 else "")
        if name in done:
            continue
        started = time.perf_counter()
        codes = prior.sample(args.num, seed=0, steps=steps, eta=eta, temperature=temperature,
                             batch_size=args.batch_size).cpu()
        seconds = time.perf_counter() - started
        result["rows"].append(row(name, codes, reference, markov_v, steps=steps, eta=eta, temperature=temperature,
                                  ms_per_code=1000 * seconds / args.num))
        out.write_text(json.dumps(result, indent=2))  # after every row: a long sweep can be resumed
        print(f"{name}: {seconds:.0f} s", flush=True)

    print(f"{args.run}: held-out {result['heldout_bits']:.3f} bits/token ({len(heldout)} codes); unigram "
          f"{result['unigram']['bits']:.3f} (alpha {result['unigram']['alpha']})"
          + (f"; source entropy {result['source_entropy_bits']:.3f}" if markov_v else ""))
    keys = ["marginal_tv", "pair_tv", "agreement_err", "unique"] + (["source_bits"] if markov_v else [])
    print(f"{'setting':<30}" + "".join(f"{k:>15}" for k in keys) + f"{'ms/code':>10}")
    for r in result["rows"]:
        ms = f"{r['ms_per_code']:>10.2f}" if "ms_per_code" in r else f"{'':>10}"
        print(f"{r['name']:<30}" + "".join(f"{r[k]:>15.4f}" for k in keys) + ms)


if __name__ == "__main__":
    main()
