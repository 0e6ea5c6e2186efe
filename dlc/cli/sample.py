"""``dlc sample``: images from a trained pipeline, with codes from the prior, a ``.npy`` or images.

This module also holds what ``dlc compose`` and ``dlc text2img`` share: the generation options,
loading the pipeline, splitting sample indices across processes (accelerate), and the output
folder (``dlc.sample_folder``)::

    OUT/settings.json           every setting that decides the pictures, written before the first image
    OUT/images/000000.png ...   numbered lossless PNGs (index = global sample index)
    OUT/grid.png                the first 64 samples
    OUT/codes.npy               the codes used (uint16, row i = sample i), when known
    OUT/samples.npz             with --npz: arr_0 uint8 (N, H, W, C) of every sample, for the ADM evaluator

Sample i depends only on (seed, i): the same seed and codes regenerate image i whatever the batch
size or the number of processes (``--start I --num 1`` redraws just that one). So ``dlc sample``
writes its PNGs chunk by chunk as they are drawn, and a re-run after a kill draws only the
indices that have no PNG yet; the folder ends byte-identical to an uninterrupted run. A folder
that holds samples made with other settings is refused.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import DLCError
from ..sample_folder import SampleFolder

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
        "(--num samples). PNGs are written chunk by chunk; re-running the same command after a kill draws "
        "only the missing ones (the folder ends byte-identical to an uninterrupted run), and a folder "
        "holding samples made with other settings is refused. Runs under 'accelerate launch' (or "
        "torchrun): each process draws its share of the indices and the images are identical to a "
        "one-process run.",
    )
    add_generation_args(parser, "samples")
    parser.add_argument("-n", "--num", type=int, default=None,
                        help="how many samples (default: 16 from the prior, else every row/image from --start)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="samples drawn per process between writes to disk; a kill loses at most one chunk "
                        "(default: %(default)s)")
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

    pipe = DLCPipeline.from_pretrained(path, trust_remote_code=trust_remote_code).to(resolve_device(device))
    pipe.set_progress_bar_config(leave=False)  # a bar per call, cleared after it: the samples' bar stays
    return pipe


def process_state():
    """accelerate's view of this process: rank, world size, device. The first ``PartialState`` a
    process makes fixes these for good, and one made without ``cpu=True`` on a machine without a
    GPU sees no distributed launch (under torchrun every rank then took itself for the only one
    and drew every sample). So every use goes through here, with ``cpu`` set where there is no GPU."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def resolve_device(device: str) -> str:
    return str(process_state().device) if device == "auto" else device


def distributed() -> tuple[int, int]:
    """(rank, world size) under accelerate launch / torchrun; (0, 1) otherwise."""
    state = process_state()
    return state.process_index, state.num_processes


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


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


def claim_folder(out: str | Path, settings: dict) -> SampleFolder:
    """The output folder, checked by every process against ``settings`` (refused if it holds
    samples made with other settings) and, on the main process, given settings.json first."""
    folder = SampleFolder(out)
    folder.claim(settings, write=distributed()[0] == 0)
    wait_for_everyone()
    return folder


def finish_folder(folder: SampleFolder, settings: dict, codes: torch.Tensor | None = None, npz: bool = False,
                  grid_cols: int | None = None) -> None:
    """After every process has written its PNGs: (on the main process) the grid of the first 64,
    the codes, the npz of every sample and settings.json."""
    wait_for_everyone()
    if distributed()[0] != 0:
        return
    folder.finish(settings, codes=codes, npz=npz, grid_cols=grid_cols)
    print(f"{len(folder.indices())} images in {folder.images}; wrote grid.png{', samples.npz' if npz else ''} "
          f"and settings.json to {folder.root}")


def write_outputs(out: Path, images: torch.Tensor, indices: list[int], settings: dict,
                  codes: torch.Tensor | None = None, npz: bool = False, grid_cols: int | None = None) -> None:
    """Write this process's PNGs of ``indices`` into ``out`` (refused if it holds samples made
    with other settings); then (on the main process) the grid, codes, npz and settings."""
    folder = claim_folder(out, settings)
    folder.write(images, indices)
    finish_folder(folder, settings, codes=codes, npz=npz, grid_cols=grid_cols)


def common_settings(verb: str, args, pipe) -> dict:
    import dlc

    model = Path(args.model).resolve() if Path(args.model).exists() else args.model  # a path, or a hub id
    return {"verb": verb, "model": str(model), "seed": args.seed, "start": args.start,
            "guidance_scale": args.guidance_scale, "num_inference_steps": args.steps,
            "sampler": args.sampler or "default", "batch_size": args.batch_size,
            "device": torch.device(resolve_device(args.device)).type,  # cuda:0 and cuda:1 draw the same images
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
    """Global sample indices ``start .. start+num-1`` (row i of codes/images is sample i)."""
    num = args.num if args.num is not None else (total - args.start if total is not None else 16)
    if num < 1 or (total is not None and args.start + num > total):
        raise DLCError(f"--start {args.start} --num {num} asks for samples beyond the {total} given")
    return list(range(args.start, args.start + num))


def chunks(indices: list[int], size: int) -> list[list[int]]:
    """``indices`` (sorted) cut into runs of consecutive indices of at most ``size``: the pipeline
    draws consecutive indices in one call."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][-1] == i - 1 and len(out[-1]) < size:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def chunk_inputs(chunk: list[int], codes: torch.Tensor | None, files: list[Path] | None) -> dict:
    """The pipeline inputs of the samples ``chunk``: their codes, their images, or prior draws."""
    if codes is not None:
        return {"codes": codes[chunk]}
    if files is not None:
        return {"image": open_images([files[i] for i in chunk])}
    return {"num_images": len(chunk)}


def draw_missing(folder: SampleFolder, pipe, indices: list[int], kwargs: dict, chunk_size: int,
                 codes: torch.Tensor | None = None, files: list[Path] | None = None) -> None:
    """Draw this process's share of ``indices`` that has no PNG yet, writing each chunk as it comes."""
    rank, world = distributed()
    mine = shard(indices)
    todo = folder.missing(mine)
    print(f"process {rank} of {world}: {len(todo)} of its {len(mine)} samples to draw "
          f"({len(mine) - len(todo)} already in {folder.images})")
    with tqdm(total=len(todo), desc="samples", unit="img", disable=rank != 0 or not todo) as bar:
        for chunk in chunks(todo, chunk_size):
            folder.write(generate(pipe, chunk, **chunk_inputs(chunk, codes, files), **kwargs), chunk)
            bar.update(len(chunk))


def run(args) -> int:
    from ..codes import load_codes

    if args.chunk_size < 1:
        raise DLCError(f"--chunk-size must be at least 1; got {args.chunk_size}")
    pipe = load_pipeline(args.model, args.device, args.trust_remote_code)
    settings = common_settings("sample", args, pipe)
    codes = files = None
    if args.codes:
        codes = load_codes(args.codes)
        indices = select(args, len(codes))
        settings.update(codes=str(args.codes), codes_sha256=hashlib.sha256(codes.numpy().tobytes()).hexdigest())
    elif args.images:
        files = image_files(args.images)
        indices = select(args, len(files))
        settings["images"] = [str(f) for f in files]
    else:
        indices = select(args, None)
        settings["codes"] = "prior"
    settings.update(num=len(indices), chunk_size=args.chunk_size)
    folder = claim_folder(args.out, settings)
    draw_missing(folder, pipe, indices, generation_kwargs(args), args.chunk_size, codes=codes, files=files)
    finish_folder(folder, settings, codes=codes, npz=args.npz, grid_cols=args.grid_cols)
    return 0
