"""``dlc compose``: images from codes composed of several sources (images or stored codes)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DLCError
from . import sample as common


def register(sub) -> None:
    parser = sub.add_parser(
        "compose", help="generate images whose codes mix several source images or codes",
        description="Compose new codes from the tokens of several sources and generate images from them. "
        "Sources are images (--images, encoded by the pipeline's encoder) or rows of a stored codes "
        "file (--codes FILE.npy --rows I J ...). --method random takes each position from one source at "
        "random (the paper); --method average samples from the average of the sources' distributions at "
        "temperature --tau (the authors' code; the same as random for tau -> 0). Positions where all "
        "sources agree never change. The composed codes are saved to OUT/codes.npy.",
    )
    common.add_generation_args(parser, "composed")
    parser.add_argument("-n", "--num", type=int, default=8, help="how many composed images (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="IMAGE", help="two or more source images")
    source.add_argument("--codes", metavar="FILE.npy", help="stored codes; pick the sources with --rows")
    parser.add_argument("--rows", nargs="+", type=int, default=None, help="rows of --codes to compose")
    parser.add_argument("--method", choices=["random", "average"], default=None, help="how tokens mix" + common.SAVED)
    parser.add_argument("--weights", nargs="+", type=float, default=None,
                        help="one weight per source (default: equal); 1 0 returns the first source")
    parser.add_argument("--mask", default=None, metavar="POSITIONS",
                        help="positions taken from the first source, the rest from the second, e.g. '0-15,31'")
    parser.add_argument("--tau", type=float, default=None,
                        help="temperature of image sources' distributions (the authors': 1e-3)" + common.SAVED)
    parser.set_defaults(func=run)


def parse_positions(text: str, length: int) -> torch.Tensor:
    """'0-15,31' -> a bool (L,) mask."""
    mask = torch.zeros(length, dtype=torch.bool)
    try:
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            mask[int(lo): int(hi or lo) + 1] = True
    except (ValueError, IndexError) as e:
        raise DLCError(f"--mask {text!r}: expected positions like '0-15,31' within [0, {length})") from e
    return mask


def sources_from_args(args, pipe) -> tuple[list[torch.Tensor], list[str]]:
    """The sources (codes (L,) or probabilities (L, V)) and a description of each (for images:
    their paths)."""
    if args.codes:
        from ..codes import load_codes

        codes = load_codes(args.codes)
        if not args.rows or min(args.rows) < 0 or max(args.rows) >= len(codes):
            raise DLCError(f"--codes needs --rows: two or more row numbers in [0, {len(codes)})")
        return [codes[r] for r in args.rows], [f"{args.codes}[{r}]" for r in args.rows]
    files = common.image_files(args.images)
    return image_sources(pipe, common.open_images(files)), [str(f) for f in files]


def image_sources(pipe, pil_images) -> list[torch.Tensor]:
    """PIL images -> the pipeline encoder's probabilities (L, V), one per image."""
    from ..compose import encode_sources
    from ..data import pil_to_tensor, resize_center_crop

    encoder = getattr(pipe, "encoder", None)
    if encoder is None:
        raise DLCError("composing images needs a pipeline with an encoder; give --codes FILE.npy --rows I J instead")
    size = encoder.config.input_size or encoder.config.image_size
    images = torch.stack([pil_to_tensor(resize_center_crop(im, size)) for im in pil_images])
    return encode_sources(images, encoder)


def run(args) -> int:
    from ..compose import compose

    pipe, sampling, settings = common.prepare("compose", args)
    sources, described = sources_from_args(args, pipe)
    if len(sources) < 2:
        raise DLCError(f"composition needs two or more sources; got {len(sources)}")
    length = sources[0].shape[0]
    mask = parse_positions(args.mask, length) if args.mask else None
    method, tau = sampling.composition.method, sampling.composition.tau
    codes = compose(sources, n=args.start + args.num, seed=args.seed, method=method, weights=args.weights,
                    mask=mask, tau=tau)
    settings.update(sources=described, weights=args.weights, mask=args.mask)
    parents = [Path(d) for d in described] if args.images else None  # drawn above the compositions
    common.stream(args, pipe, settings, sampling, list(range(args.start, args.start + args.num)), codes=codes,
                  parents=parents)
    return 0
