"""``dlc eval codes``: how good an encoder's codes are (linear probe, k-NN, usage statistics)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DLCError


def register(sub) -> None:
    parser = sub.add_parser(
        "eval", help="evaluate a trained model (codes: linear probe, k-NN, code usage)",
        description="Evaluate a trained model. 'dlc eval codes' encodes a labelled dataset's train and test "
        "splits and reports linear-probe and k-NN accuracy of the one-hot codes against the same encoder's "
        "continuous features, plus code usage (values used per position, entropy, distinct codes, images "
        "sharing a code). Example: dlc eval codes --run runs/emoji/encoder --data emoji",
    )
    what = parser.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    codes = what.add_parser("codes", help="code quality of an SEM encoder",
                            description="Linear probe and k-NN on one-hot codes vs continuous features, "
                            "and code usage statistics, on a labelled dataset. An image folder is labelled "
                            "by its class folders; its train/ and test/ (or val/) subfolders are the splits. "
                            "A folder without them has no test split: give --holdout 0.1 to probe on a "
                            "stratified tenth of its images instead.")
    codes.add_argument("--run", required=True, help="encoder run directory or model folder")
    codes.add_argument("--data", default="emoji",
                       help="a labelled dataset: emoji, glyphs, fashion-mnist, imagefolder:PATH (default: %(default)s)")
    codes.add_argument("--train-split", default="train",
                       help="the split the probe is fitted on; for an image folder its subfolder (default: %(default)s)")
    codes.add_argument("--test-split", default="test",
                       help="the split the probe is scored on; for an image folder its subfolder, e.g. val "
                       "(default: %(default)s)")
    codes.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                       help="score on this fraction of the training split (per class, fixed seed) instead of "
                       "--test-split; for data without a test split (default: off)")
    codes.add_argument("--train-limit", type=int, default=0, help="use the first N training images (0: all)")
    codes.add_argument("--k", type=int, default=20, help="neighbours for k-NN (default: %(default)s)")
    codes.add_argument("--out", default=None, help="also write the results as JSON here")
    codes.set_defaults(func=run_codes)


def probe_splits(args, size: int, channels: int):
    """(train, test) in memory: the two splits, or with --holdout the training split cut in two."""
    from ..data import in_memory, load
    from ..data.memory import stratified_split

    train = in_memory(load(args.data, size=size, split=args.train_split, channels=channels))
    if not args.holdout:
        return train, in_memory(load(args.data, size=size, split=args.test_split, channels=channels))
    if train.labels is None:
        raise DLCError(f"{args.data} has no labels to probe (an image folder needs class folders)")
    is_test = stratified_split(train.labels.tolist(), args.holdout, seed=0)
    if not is_test.any():
        raise DLCError(f"--holdout {args.holdout} leaves no test image: each class has too few images")
    return train.split(is_test, "train"), train.split(is_test, "test")


def run_codes(args) -> int:
    import torch

    from ..encoder import DLCEncoder
    from ..eval.codes import evaluate_codes

    if args.holdout and not 0 < args.holdout < 1:
        raise DLCError(f"--holdout must be a fraction between 0 and 1; got {args.holdout}")
    encoder = DLCEncoder.from_pretrained(args.run).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    c = encoder.config
    train, test = probe_splits(args, c.input_size or c.image_size, c.in_channels)
    if args.train_limit:
        train = train.subset(range(min(args.train_limit, len(train))))
    result = evaluate_codes(encoder, train, test, k=args.k)
    for name in ("codes", "features"):
        print(f"{name:<9} linear probe {result[name]['linear_probe']:.3f}   k-NN {result[name]['knn']:.3f}")
    print(f"probe ratio (codes / features): {result['probe_ratio']:.3f}")
    for factor, scores in result.get("factors", {}).items():  # e.g. the glyphs' letter, colour, ...
        print(f"{factor:<11} linear probe: codes {scores['codes']:.3f}, features {scores['features']:.3f}, "
              f"ratio {scores['ratio']:.3f}, chance {scores['chance']:.3f}")
    print("usage: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result["usage"].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0
