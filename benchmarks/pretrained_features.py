"""What a pretrained network's features know about a dataset's factors, and at what input size.

    python benchmarks/pretrained_features.py --data glyphs --sizes 75 107 139 299

The FID network (Inception-v3 pretrained on ImageNet: the TorchScript copy that ``dlc data assets``
unpacks offline) runs on the dataset's images resized to each size (TensorFlow-style bilinear, FID's
own input path, which is the 299 row), and its last Inception block's map is averaged into 2,048
features. Linear probes on the test split, for the label and every known factor (the glyphs' letter,
colour, background, font), and the seconds per image on this machine's threads: the ceiling that a
frozen pretrained backbone could hand the SEM, and its price. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import merge_into

from dlc import data
from dlc.eval.codes import factor_labels, linear_probe
from dlc.eval.fidelity import inception_pool, inception_trunk
from dlc.progress import tqdm


@torch.no_grad()
def pooled_features(trunk, images: torch.Tensor, size: int, batch: int = 64) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> (N, 2048): the Inception trunk at input ``size``, averaged."""
    return torch.cat([inception_pool(trunk, images[start:start + batch], size)
                      for start in tqdm(range(0, len(images), batch), desc=f"inception at {size} px", leave=False)])


def probe_at(trunk, train, test, size: int) -> dict:
    started = time.time()
    x_train, x_test = pooled_features(trunk, train.images, size), pooled_features(trunk, test.images, size)
    seconds = time.time() - started
    targets = {"label": (train.labels, test.labels)} if train.labels is not None else {}
    targets.update({f: (factor_labels(train, f), factor_labels(test, f)) for f in getattr(train, "factors", {})})
    return {"size": size, "seconds_per_image": round(seconds / (len(train) + len(test)), 5),
            **{name: linear_probe(x_train, y_train, x_test, y_test)["accuracy"]
               for name, (y_train, y_test) in targets.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="glyphs", help="a dataset name (glyphs, emoji, ...) or imagefolder:PATH")
    parser.add_argument("--image-size", type=int, default=32, help="the size the dataset is loaded at")
    parser.add_argument("--sizes", type=int, nargs="+", default=[75, 107, 139, 299],
                        help="Inception input sizes (75 is the smallest its stem accepts)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/pretrained_features.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = (data.in_memory(data.load(args.data, size=args.image_size, split=s, channels=3))
                   for s in ("train", "test"))
    trunk = inception_trunk()
    rows = [probe_at(trunk, train, test, size) for size in args.sizes]
    merge_into(args.out, f"{args.data}-{args.image_size}", {
        "network": "Inception-v3 (FID), last block averaged", "train_images": len(train), "test_images": len(test),
        "torch_threads": torch.get_num_threads(), "rows": rows})
    names = [k for k in rows[0] if k not in ("size", "seconds_per_image")]
    print(f"{'size':>5} {'s/image':>8} " + " ".join(f"{n:>10}" for n in names))
    for r in rows:
        print(f"{r['size']:>5} {r['seconds_per_image']:>8.4f} " + " ".join(f"{r[n]:>10.3f}" for n in names))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
