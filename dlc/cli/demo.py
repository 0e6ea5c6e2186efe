"""``dlc demo``: the whole pipeline at 32x32 (emoji by default), ending in runs/demo/report.html."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser(
        "demo", help="run the whole pipeline on colour emoji (or other data) and write an HTML report",
        description="Train the encoder, encode the images, train the DiT, the code prior and the text model, "
        "sample, compose, evaluate, and write runs/demo/report.html (and report.md). Finished stages are "
        "reused when re-run; --fresh starts over. Uses a GPU when there is one. --data runs it on the glyphs "
        "(scored by their factor classifiers) or on your own folder: class subfolders give labels (the "
        "probe, the class row of the table), train/ and test/ (or val/) subfolders the splits (without "
        "them the training images stand in for held-out ones), captions.jsonl the text model (none without "
        "it), dataset.json its prompts, held-out captions and augmentations. Budgets shrink for a training "
        "set smaller than the emoji's 3,283 images (to a quarter at the least).",
    )
    parser.add_argument("--data", default="emoji", metavar="DATASET",
                        help="emoji, glyphs, fashion-mnist or imagefolder:PATH, resized to 32x32 (default: %(default)s)")
    parser.add_argument("--out", default="runs/demo", help="run directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in a few minutes (tiny budgets; quality not expected)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every training budget (2 = twice as long, better results)")
    parser.add_argument("--table", action="store_true",
                        help="also the paper's conditioning table: an unconditional and a class-conditioned DiT "
                        "trained as the main one, every row scored on all test images (on a finished demo's directory "
                        "it adds only the table: about 27 min on 2 cores, two DiTs of about 10.6 and the scoring)")
    parser.add_argument("--fresh", action="store_true", help="delete the run directory and start over")
    parser.add_argument("--fid-samples", type=int, default=None, help="samples per FID (default: 128, quick: 24)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..demo import Demo

    Demo(args.out, quick=args.quick, scale=args.scale, fresh=args.fresh, fid_samples=args.fid_samples,
         table=args.table, dataset=args.data).run()
    return 0
