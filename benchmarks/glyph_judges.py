"""The glyphs dataset and its judges: render time, judge training time, and the judges' accuracy per
factor on the real test split (clean, on its held-out pairs, and degraded as in their training:
shifted, rescaled, blurred, noisy), so the scores they give generated images can be trusted.

    python benchmarks/glyph_judges.py --out benchmarks/results/glyph_judges_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from dlc.data.glyphs import glyph_plan, load_glyphs, render_glyphs
from dlc.data.holdout import heldout_glyphs
from dlc.data.images import to_float, to_uint8
from dlc.eval.glyphs import JUDGE_EPOCHS, GlyphJudges, degrade, judge_accuracy, train_glyph_judges


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=JUDGE_EPOCHS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items, _ = glyph_plan()
    _, render_s = timed(render_glyphs, items, args.size)
    net, train_s = timed(train_glyph_judges, args.size, epochs=args.epochs)
    judges = GlyphJudges(net, args.size)
    test = load_glyphs(args.size, "test")
    degraded = test.subset(range(len(test)))
    degraded.images = to_uint8(degrade(to_float(test.images), torch.Generator().manual_seed(0)))
    _, predict_s = timed(judges.predict, test.images)
    result = {
        "size": args.size, "threads": args.threads, "epochs": args.epochs, "images": len(items),
        "render_seconds": round(render_s, 2), "judge_training_seconds": round(train_s, 1),
        "judged_images_per_second": round(len(test) / predict_s),
        "accuracy_test": judge_accuracy(judges, test),
        "accuracy_test_heldout_pairs": judge_accuracy(judges, test.subset(heldout_glyphs(test)[0])),
        "accuracy_test_degraded": judge_accuracy(judges, degraded),
        "accuracy_train": judge_accuracy(judges, load_glyphs(args.size, "train")),
        "load_average": round(os.getloadavg()[0], 1),  # other work on the machine slows the timings
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
