"""``dlc sample``: images from a trained pipeline, with codes from the prior, a ``.npy`` or images.

This module also holds what ``dlc compose`` and ``dlc text2img`` share: the generation options,
loading the pipeline, splitting sample indices across processes (accelerate), and the output
folder::

    OUT/images/000000.png ...   numbered lossless PNGs (index = global sample index)
    OUT/grid.png                all samples in a grid
    OUT/codes.npy               the codes used (uint16, row i = sample i), when known
    OUT/settings.json           every setting, so any image can be regenerated exactly
    OUT/samples.npz             with --npz: arr_0 uint8 (N, H, W, C) for the ADM evaluator

Sample i depends only on (seed, i): the same seed and codes regenerate image i whatever the batch
size or the number of processes (``--start I --num 1`` redraws just that one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DLCError

SCHEDULERS = ["dpm", "ddim", "ddpm", "euler", "heun"]


def add_generation_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("model", help="a pipeline folder (save_pretrained), a project run root with encoder/, "
                        "dit/, prior/, text/ sub-runs, or a single DiT run directory")
    parser.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends only on (seed, i) (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first sample, to redraw part of an earlier run (default: %(default)s)")
    parser.add_argument("--guidance-scale", "--cfg", type=float, default=1.4, dest="guidance_scale",
                        help="classifier-free guidance scale; 1 disables it (default: %(default)s, the paper's)")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps (default: %(default)s; the paper: ddpm 250)")
    parser.add_argument("--sampler", choices=SCHEDULERS, default=None,
                        help="diffusers scheduler (default: the model's objective's default)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (this process's GPU under accelerate, else cuda, else cpu), cpu, cuda:1, ... "
                        "(default: %(default)s)")
    parser.add_argument("--npz", action="store_true", help="also write OUT/samples.npz (uint8 NHWC) for the ADM evaluator")
    parser.add_argument("--grid-cols", type=int, default=None, help="images per grid row (default: square)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a text model that ships its own Python code (LLaDA) to run it; only for "
                        "pipelines from a source you trust (default: refused)")


def register(sub) -> None:
    parser = sub.add_parser(
        "sample", help="generate images: codes from the prior, a .npy, or images",
        description="Generate images with a trained DLC pipeline and write numbered PNGs, a grid and a "
        "settings JSON into --out. Codes come from --codes FILE.npy (stored uint16 (N, L), e.g. from "
        "'dlc encode'), from --images (encoded, then regenerated), or else from the code prior "
        "(--num samples). Runs under 'accelerate launch' (or torchrun): each process draws its share of "
        "the indices and the images are identical to a one-process run.",
    )
    add_generation_args(parser, "samples")
    parser.add_argument("-n", "--num", type=int, default=None,
                        help="how many samples (default: 16 from the prior, else every row/image from --start)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--codes", default=None, metavar="FILE.npy", help="stored codes, one image per row")
    source.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                        help="image files or folders: encode each and regenerate it")
    source.add_argument("--prior", action="store_true", help="codes from the prior (the default without --codes/--images)")
    parser.set_defaults(func=run)


# --------------------------------------------------------------------------------------------
# Shared machinery


def load_pipeline(path: str, device: str, trust_remote_code: bool = False):
    from ..pipeline import DLCPipeline

    return DLCPipeline.from_pretrained(path, trust_remote_code=trust_remote_code).to(resolve_device(device))


def resolve_device(device: str) -> str:
    from accelerate import PartialState

    return str(PartialState().device) if device == "auto" else device


def distributed() -> tuple[int, int]:
    """(rank, world size): under accelerate/torchrun each process takes every world-th index."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


def wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def generation_kwargs(args) -> dict:
    kwargs = {"guidance_scale": args.guidance_scale, "num_inference_steps": args.steps,
              "generator": torch.Generator().manual_seed(args.seed), "batch_size": args.batch_size}
    if args.sampler:
        kwargs["scheduler"] = args.sampler
    return kwargs


def generate(pipe, indices: list[int], codes: torch.Tensor | None = None, **inputs) -> torch.Tensor:
    """uint8 (N, C, H, W) images for global sample ``indices`` (consecutive), from ``codes`` (rows
    matching ``indices``) or the pipeline's other inputs (prior, prompts, images)."""
    if not indices:
        return torch.zeros(0, dtype=torch.uint8)
    images = pipe(codes=codes, start_index=indices[0], output_type="uint8", **inputs).images
    return torch.stack(list(images)).cpu() if not isinstance(images, torch.Tensor) else images.cpu()


def shard(indices: list[int]) -> list[int]:
    """This process's contiguous block of ``indices`` (contiguous, so a pipeline that numbers its
    noise from a start index reproduces the one-process images)."""
    rank, world = distributed()
    per = -(-len(indices) // world)
    return indices[rank * per: (rank + 1) * per]


def write_outputs(out: Path, images: torch.Tensor, indices: list[int], settings: dict,
                  codes: torch.Tensor | None = None, npz: bool = False, grid_cols: int | None = None) -> None:
    """Write this process's PNGs; then (on the main process) the grid, codes, npz and settings."""
    from PIL import Image

    from ..codes import save_codes
    from ..data import pil_to_tensor
    from ..imageio import save_grid, save_pngs

    for image, index in zip(images, indices):
        save_pngs([image], out / "images", start=index)
    wait_for_everyone()
    if distributed()[0] != 0:
        return
    files = sorted((out / "images").glob("*.png"))
    everything = torch.stack([pil_to_tensor(Image.open(f)) for f in files])
    save_grid(everything, out / "grid.png", nrow=grid_cols)
    if codes is not None:
        save_codes(out / "codes.npy", codes)
    if npz:
        np.savez(out / "samples.npz", arr_0=everything.permute(0, 2, 3, 1).numpy())
    settings = {**settings, "num_images": len(files), "argv": sys.argv[1:],
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "settings.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
    print(f"wrote {len(files)} images, grid.png and settings.json to {out}")


def common_settings(verb: str, args, pipe) -> dict:
    import dlc

    return {"verb": verb, "model": str(args.model), "seed": args.seed, "start": args.start,
            "guidance_scale": args.guidance_scale, "num_inference_steps": args.steps,
            "sampler": args.sampler or "default", "batch_size": args.batch_size, "device": resolve_device(args.device),
            "pipeline": type(pipe).__name__, "dlc_version": dlc.__version__}


def image_files(paths: list[str]) -> list[Path]:
    from ..data import IMAGE_EXTENSIONS

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise DLCError(f"image {p} does not exist")
    if not files:
        raise DLCError(f"no images found in {paths}")
    return files


def open_images(files: list[Path]):
    from PIL import Image

    from ..data import to_rgb

    return [to_rgb(Image.open(f)) for f in files]


# --------------------------------------------------------------------------------------------
# dlc sample


def select(args, total: int | None) -> list[int]:
    """Global sample indices ``start .. start+num-1`` (row i of codes/images is sample i), this
    process's share of them."""
    num = args.num if args.num is not None else (total - args.start if total is not None else 16)
    if num < 1 or (total is not None and args.start + num > total):
        raise DLCError(f"--start {args.start} --num {num} asks for samples beyond the {total} given")
    return shard(list(range(args.start, args.start + num)))


def run(args) -> int:
    from ..codes import load_codes

    pipe = load_pipeline(args.model, args.device, args.trust_remote_code)
    settings = common_settings("sample", args, pipe)
    kwargs = generation_kwargs(args)
    if args.codes:
        codes = load_codes(args.codes)
        indices = select(args, len(codes))
        settings["codes"] = str(args.codes)
        images = generate(pipe, indices, codes[indices], **kwargs)
    elif args.images:
        files = image_files(args.images)
        indices = select(args, len(files))
        settings["images"] = [str(f) for f in files]
        codes, images = None, generate(pipe, indices, image=open_images([files[i] for i in indices]), **kwargs)
    else:
        indices = select(args, None)
        settings["codes"] = "prior"
        codes, images = None, generate(pipe, indices, num_images=len(indices), **kwargs)
    write_outputs(Path(args.out), images, indices, settings, codes=codes, npz=args.npz, grid_cols=args.grid_cols)
    return 0
