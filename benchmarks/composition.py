"""Composition quality: diversity (the paper's Table 3) and whether composed images carry both parents.

    nice .venv/bin/python benchmarks/composition.py --model runs/demo --pairs 12 --per-pair 8

For each of ``--pairs`` pairs of held-out emoji (from different subgroups), with the pipeline's
encoder and DiT:
- DLC composition: ``--per-pair`` codes composed position by position from the two parents'
  codes (``dlc.compose``), one image each;
- continuous average (the baseline): the average of the two parents' conditioning, i.e. the soft
  code 0.5 a + 0.5 b, whose DiT embedding is exactly the mean of the parents' embeddings; the
  same number of images, differing only in their diffusion noise.
Diversity is the Vendi score of each pair's images, in Inception pool features and in the
encoder's features, as mean +- std over pairs. Parent agreement is the share of code positions
where the encoder's code of a composed image equals parent a's, parent b's, and (chance) the
code of an unrelated held-out emoji. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import dlc
from dlc import eval as dlc_eval
from dlc.compose import compose, interpolate


def images_for(pipe, codes: torch.Tensor, args) -> torch.Tensor:
    """uint8 (B, C, H, W): the input both the encoder and the Inception features read in [0, 255]."""
    return pipe(codes=codes, guidance_scale=args.guidance_scale, num_inference_steps=args.steps,
                generator=torch.Generator().manual_seed(args.seed), batch_size=args.batch_size,
                output_type="uint8").images


def mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 3), "std": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="pipeline folder or run root with encoder/ and dit/")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--per-pair", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=1.4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", default="inception", choices=["inception", "tiny"],
                        help="the image features of the first Vendi column (tiny: a fast random net, smoke runs)")
    parser.add_argument("--out", default="benchmarks/results/composition.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    pipe = dlc.DLCPipeline.from_pretrained(args.model)
    encoder = pipe.encoder.eval()
    test = dlc.data.load("emoji", size=32, split="test")
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(test), generator=g).tolist()
    labels = list(test.labels)
    pairs, used = [], set()
    for i in order:  # parents from different subgroups
        for j in order:
            if i != j and labels[i] != labels[j] and not {i, j} & used:
                pairs.append((i, j))
                used |= {i, j}
                break
        if len(pairs) == args.pairs:
            break
    unrelated = [k for k in order if k not in used][: args.pairs]

    all_codes = encoder.encode(test.images)
    V = encoder.config.vocab_size
    k = args.per_pair
    image_key = f"vendi_{args.features}"
    rows = {name: {image_key: [], "vendi_encoder": []} for name in ("dlc", "average")}
    agree_a, agree_b, agree_chance = [], [], []
    for p, (i, j) in enumerate(pairs):
        a, b = all_codes[i], all_codes[j]
        composed = compose([a, b], n=k, seed=args.seed + p)
        averaged = interpolate(a, b, alphas=[0.5] * k, vocab_size=V)
        for name, codes in (("dlc", composed), ("average", averaged)):
            images = images_for(pipe, codes, args)
            rows[name][image_key].append(dlc_eval.vendi(dlc_eval.image_features(images, args.features)))
            rows[name]["vendi_encoder"].append(dlc_eval.vendi(encoder.features(images)))
            if name == "dlc":
                recoded = encoder.encode(images)
                agree_a.append((recoded == a).float().mean().item())
                agree_b.append((recoded == b).float().mean().item())
                agree_chance.append((recoded == all_codes[unrelated[p]]).float().mean().item())
        print(f"pair {p + 1}/{len(pairs)}: vendi dlc {rows['dlc'][image_key][-1]:.2f} "
              f"average {rows['average'][image_key][-1]:.2f}", flush=True)

    result = {
        "model": args.model, "pairs": len(pairs), "parents": [list(pair) for pair in pairs], "images_per_pair": k, "steps": args.steps,
        "guidance_scale": args.guidance_scale, "sampler": "pipeline default", "seed": args.seed,
        "image_features": args.features,
        "code_length": int(all_codes.shape[1]), "vocab_size": V,
        "vendi": {name: {key: mean_std(v) for key, v in cols.items()} for name, cols in rows.items()},
        "parent_agreement": {"parent_a": mean_std(agree_a), "parent_b": mean_std(agree_b),
                             "unrelated_emoji": mean_std(agree_chance), "uniform_chance": round(1 / V, 4)},
        "seconds": round(time.perf_counter() - start, 1),
        "command": f"benchmarks/composition.py --model {args.model} --pairs {args.pairs} --per-pair {k} "
                   f"--steps {args.steps} --guidance-scale {args.guidance_scale} --seed {args.seed} --features {args.features}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':22s}{f'Vendi ({args.features})':>20s}{'Vendi (encoder)':>20s}")
    for name, cols in result["vendi"].items():
        cells = [f"{c['mean']:.2f} +- {c['std']:.2f}" for c in cols.values()]
        print(f"{name:22s}{cells[0]:>20s}{cells[1]:>20s}")
    for name, c in result["parent_agreement"].items():
        value = c if isinstance(c, float) else "{mean:.3f} +- {std:.3f}".format(**c)
        print(f"agreement {name:16s}{value}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
