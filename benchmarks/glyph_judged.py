"""Glyph samples judged by their factors, across sampler settings, on a finished glyph demo.

    python benchmarks/glyph_judged.py --run runs/glyphs-demo --guidance 1 2 3

For each guidance scale, the demo's judge stage (``Demo.judge``): 64 test
glyphs drawn from their own codes (right letter and colour: what the DiT keeps of a code), 8 parent
pairs composed 8 times each (a cross: the letter of one parent in the colour of the other) and 32
images each for held-out and trained prompts, every image read by the glyph factor classifiers; the
composed and prompted codes are also read by linear probes fitted on the training codes ("codes: ..."),
which tells what the text model or the composition loses from what the DiT loses.
Writes JSON (one entry per run) and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _results import merge_into

from dlc.demo import Demo


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/glyphs-demo", help="a finished `dlc demo --data glyphs` directory")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="guidance scales to judge at")
    parser.add_argument("--quick", action="store_true", help="the run was made with `dlc demo --quick` (its sampler)")
    parser.add_argument("--out", default="benchmarks/results/glyph_judged.json")
    args = parser.parse_args(argv)
    missing = [part for part in ("codes/test.npy", "dit/model", "text/model") if not (Path(args.run) / part).exists()]
    if missing:
        parser.error(f"{args.run} is not a finished glyph demo: it has no {', '.join(missing)} "
                     "(run `dlc demo --data glyphs --out DIR` first)")

    demo = Demo(args.run, quick=args.quick, dataset="glyphs")
    rows = []
    for guidance in args.guidance:
        start = time.perf_counter()
        judged = demo.judge(guidance)
        rows.append({"guidance": guidance,
                     "reconstructed both": judged["reconstructions"]["both"],
                     "reconstructed letter": judged["reconstructions"]["letter"],
                     "reconstructed colour": judged["reconstructions"]["colour"],
                     "cross": judged["composition"]["cross"], "parent A": judged["composition"]["parent_a"],
                     "parent B": judged["composition"]["parent_b"],
                     "held-out prompts both": judged["heldout_prompts"]["both"],
                     "trained prompts both": judged["train_prompts"]["both"],
                     "codes: cross": judged["composed_codes"]["cross"],
                     "codes: held-out prompts both": judged["heldout_prompt_codes"]["both"],
                     "codes: trained prompts both": judged["train_prompt_codes"]["both"],
                     "seconds": round(time.perf_counter() - start, 1)})
        print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
              flush=True)
    result = {"command": "python benchmarks/glyph_judged.py --run " + args.run + " --guidance "
              + " ".join(map(str, args.guidance)), "rows": rows}
    merge_into(args.out, args.run, result)
    return result


if __name__ == "__main__":
    main()
