"""Code quality of a trained SEM encoder against the same architecture at random init.

Trains the encoder first when the run has no model yet, then measures on the dataset's test split:
linear-probe and k-NN accuracy of the one-hot codes and of the continuous features, and code usage
on the training split (distinct codes against distinct images). Writes JSON and prints a table.

    python benchmarks/encoder_quality.py --config emoji
    python benchmarks/encoder_quality.py --config fashion --out benchmarks/results/encoder_quality_fashion.json
    python benchmarks/encoder_quality.py --config emoji model.code_length=16 run_dir=runs/sweep/l16

On a dataset with known factors (the glyphs' letter, colour, background, font) every factor is probed
too. ``--key NAME`` stores the run as one entry of the JSON file (a sweep of variants in one file);
``--inception-probe`` also probes the FID network's 2048-d pool features (Inception-v3, pretrained on
ImageNet): what a pretrained backbone already knows about the dataset, the ceiling a frozen one could
hand the SEM.

    python benchmarks/encoder_quality.py --config glyphs --key preset run_dir=runs/sweep/glyphs/preset \
        --out benchmarks/results/encoder_quality_glyphs.json --inception-probe
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from _results import merge_into

from dlc.encoder import DLCEncoder
from dlc.eval.codes import evaluate_codes, factor_labels, linear_probe
from dlc.runs import RunDir
from dlc.stages import STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="emoji", help="encoder config preset or YAML path")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/encoder_quality_<dataset>.json)")
    parser.add_argument("--train-limit", type=int, default=0, help="use the first N training images for probes (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--key", default=None, help="store the results under this name in --out, beside other runs'")
    parser.add_argument("--inception-probe", action="store_true",
                        help="also probe Inception-v3's pool features (about 8 minutes for 4,160 images on 2 cores)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    stage = STAGES["encoder"]
    config = stage.load_config(args.config, args.overrides)
    run = RunDir(config.run_dir)

    train_seconds = None
    if not (run.model_dir / "config.json").is_file():
        started = time.time()
        stage.train(config)
        train_seconds = time.time() - started
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = DLCEncoder.from_pretrained(run.root).to(device).eval()
    torch.manual_seed(0)
    random_init = DLCEncoder.from_config(trained.config).to(device).eval()

    train, test = config.data.load("train"), config.data.load("test")
    if args.train_limit:
        train = train.subset(range(min(args.train_limit, len(train))))
    results = {
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),  # quoted: keys may have spaces
        "dataset": config.data.dataset, "train_images": len(train), "test_images": len(test),
        "code_length": trained.config.code_length, "vocab_size": trained.config.vocab_size,
        "steps": config.train.steps, "train_seconds": train_seconds, "device": device,
        "torch_threads": torch.get_num_threads(),
        "trained": evaluate_codes(trained, train, test),
        "random_init": evaluate_codes(random_init, train, test),
        "overrides": args.overrides,
    }
    if args.inception_probe:
        results["inception_features"] = inception_probe(train, test)
    out = Path(args.out or f"benchmarks/results/encoder_quality_{config.data.dataset}.json")
    if args.key:
        merge_into(out, args.key, results)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"wrote {out}")


def inception_probe(train, test) -> dict:
    """Linear probes (label and every factor) on Inception-v3's 2048-d pool features, and the time
    the features took."""
    from dlc.eval.fidelity import image_features

    started = time.time()
    x_train, x_test = image_features(train.images), image_features(test.images)
    out = {"seconds": round(time.time() - started, 1), "images": len(train) + len(test),
           "linear_probe": linear_probe(x_train, train.labels, x_test, test.labels, standardize=True)["accuracy"]}
    for f in getattr(train, "factors", {}):
        out[f] = linear_probe(x_train, factor_labels(train, f), x_test, factor_labels(test, f), standardize=True)["accuracy"]
    return out


def print_table(r: dict) -> None:
    print(f"\n{r['dataset']}: L={r['code_length']} V={r['vocab_size']}, {r['steps']} steps"
          + (f" in {r['train_seconds']:.0f} s" if r["train_seconds"] else ""))
    print(f"{'encoder':<12} {'probe codes':>12} {'probe feats':>12} {'ratio':>6} {'kNN codes':>10} {'kNN feats':>10} "
          f"{'distinct':>9} {'entropy':>8}")
    for name in ("trained", "random_init"):
        e = r[name]
        print(f"{name:<12} {e['codes']['linear_probe']:>12.3f} {e['features']['linear_probe']:>12.3f} "
              f"{e['probe_ratio']:>6.3f} {e['codes']['knn']:>10.3f} {e['features']['knn']:>10.3f} "
              f"{e['usage']['distinct_code_ratio']:>9.3f} {e['usage']['entropy_fraction']:>8.3f}")
    factors = r["trained"].get("factors", {})
    if factors:
        print(f"\n{'factor':<12} {'chance':>7} {'codes':>7} {'feats':>7} {'ratio':>6}"
              + (f" {'inception':>10}" if "inception_features" in r else ""))
    for f, e in factors.items():
        print(f"{f:<12} {e['chance']:>7.3f} {e['codes']:>7.3f} {e['features']:>7.3f} {e['ratio']:>6.3f}"
              + (f" {r['inception_features'][f]:>10.3f}" if "inception_features" in r else ""))


if __name__ == "__main__":
    main()
