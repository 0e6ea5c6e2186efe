"""``dlc sample``: images from a trained pipeline, with codes from the prior, a ``.npy`` or images.

This module also holds what ``dlc compose`` and ``dlc text2img`` share: the generation options,
loading the pipeline, splitting sample indices across processes (accelerate), and the output
folder (``dlc.sample_folder``)::

    OUT/settings.json           every setting that decides the pictures, written before the first image
    OUT/images/000000.png ...   numbered lossless PNGs (index = global sample index)
    OUT/grid.png                the first 64 samples (beside their input images, or below their parents)
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

from ..errors import DLCError
from ..progress import tqdm
from ..sample_folder import SampleFolder

SCHEDULERS = ["dpm", "ddim", "ddpm", "euler", "heun"]


def add_generation_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("model", help="a pipeline folder (save_pretrained), a project run root with encoder/, "
                        "dit/, prior/, text/ sub-runs, or a single DiT run directory")
    parser.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sample i depends only on (seed, i) (default: %(default)s)")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first sample, to redraw part of an earlier run (default: %(default)s)")
    add_sampling_args(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (this process's GPU under accelerate, else cuda, else cpu), cpu, cuda:1, ... "
                        "(default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="samples drawn per process between writes to disk; a kill loses at most one chunk "
                        "(default: %(default)s)")
    parser.add_argument("--npz", action="store_true", help="also write OUT/samples.npz (uint8 NHWC) for the ADM evaluator")
    parser.add_argument("--grid-cols", type=int, default=None, help="images per grid row (default: square)")
    parser.add_argument("--grid-scale", type=int, default=None, metavar="K",
                        help="draw grid.png's images K times larger, nearest neighbour (default: small images at "
                        "about 96 px, 32 px ones 3x). The grid shows a regenerated image beside its input and "
                        "composed images below their parents")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a text model that ships its own Python code (LLaDA) to run it; only for "
                        "pipelines from a source you trust (default: refused)")


SAVED = " (default: the pipeline's saved setting; see settings.json)"


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """One flag per sampling setting; each left unset takes the pipeline's saved setting (the runs'
    ``sample:`` sections, the paper's values in the ImageNet presets)."""
    dit = parser.add_argument_group("DiT sampling", "how images are drawn from codes")
    dit.add_argument("--guidance-scale", "--cfg", type=float, default=None, dest="guidance_scale",
                     help="classifier-free guidance scale; 1 disables it (the paper: 1.4)" + SAVED)
    dit.add_argument("--steps", type=int, default=None, help="DiT sampler steps (the paper: ddpm 250)" + SAVED)
    dit.add_argument("--sampler", choices=SCHEDULERS, default=None, help="diffusers scheduler" + SAVED)
    dit.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                     help="noise levels (0 clean, 1 noise) where guidance applies" + SAVED)
    dit.add_argument("--guidance-channels", type=int, default=None, metavar="K",
                     help="guide only the first K latent channels; 0: all" + SAVED)
    prior = parser.add_argument_group("prior sampling", "how the code prior draws codes")
    prior.add_argument("--prior-steps", type=int, default=None, help="prior denoising steps (the paper: 4096)" + SAVED)
    prior.add_argument("--prior-temperature", type=float, default=None, help="prior temperature" + SAVED)
    prior.add_argument("--eta", type=float, default=None,
                       help="remasking strength inside --remask-window; 0: none (the paper: 0.01)" + SAVED)
    prior.add_argument("--remask-window", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                       help="times t where remasking applies (the paper: 0.3 0.55)" + SAVED)
    text = parser.add_argument_group("text sampling", "how the text model draws codes from a prompt")
    text.add_argument("--text-steps", type=int, default=None, help="text model denoising steps" + SAVED)
    text.add_argument("--text-temperature", type=float, default=None, help="text model temperature" + SAVED)
    text.add_argument("--remasking", choices=["low_confidence", "random"], default=None,
                      help="which tokens the text model keeps each step" + SAVED)
    text.add_argument("--text-guidance", type=float, default=None, help="text model guidance scale" + SAVED)


def sampling_overrides(args) -> dict:
    """The flags given, as ``Sampling.updated`` stages (unset flags are None: the saved setting)."""
    flags = vars(args)
    return {"dit": {"sampler": flags.get("sampler"), "steps": flags.get("steps"),
                    "guidance_scale": flags.get("guidance_scale"), "guidance_interval": flags.get("guidance_interval"),
                    "guidance_channels": flags.get("guidance_channels")},
            "prior": {"steps": flags.get("prior_steps"), "temperature": flags.get("prior_temperature"),
                      "eta": flags.get("eta"), "window": flags.get("remask_window")},
            "text": {"steps": flags.get("text_steps"), "temperature": flags.get("text_temperature"),
                     "remasking": flags.get("remasking"), "guidance_scale": flags.get("text_guidance")},
            "composition": {"method": flags.get("method"), "tau": flags.get("tau")}}


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


def generation_kwargs(args, sampling) -> dict:
    """The pipeline call's keywords: every resolved setting passed explicitly, so what settings.json
    records is what draws."""
    d = sampling.dit
    return {"guidance_scale": d.guidance_scale, "num_inference_steps": d.steps, "scheduler": d.sampler,
            "guidance_interval": d.guidance_interval, "guidance_channels": d.guidance_channels or 0,
            "prior_sampling": sampling.prior, "text_sampling": sampling.text, "composition": sampling.composition,
            "generator": torch.Generator().manual_seed(args.seed), "batch_size": args.batch_size}


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


def finish_folder(folder: SampleFolder, settings: dict, args, codes: torch.Tensor | None = None,
                  sources: list[Path] | None = None, parents: list[Path] | None = None) -> None:
    """After every process has written its PNGs: (on the main process) the grid of the first 64
    (beside their ``sources`` or below their ``parents`` when given), the codes, the npz of every
    sample and settings.json."""
    wait_for_everyone()
    if distributed()[0] != 0:
        return
    folder.finish(settings, codes=codes, npz=args.npz, grid_cols=args.grid_cols, grid_scale=args.grid_scale,
                  sources=sources, parents=parents)
    print(f"{len(folder.indices())} images in {folder.images}; wrote grid.png{', samples.npz' if args.npz else ''} "
          f"and settings.json to {folder.root}")


def prepare(verb: str, args):
    """What every generating command starts with: the options checked, the pipeline loaded, the
    settings it samples with (the pipeline's, with the flags given applied) and the settings.json
    entries every command shares. Returns (pipe, sampling, settings)."""
    import dlc

    if args.chunk_size < 1:
        raise DLCError(f"--chunk-size must be at least 1; got {args.chunk_size}")
    pipe = load_pipeline(args.model, args.device, args.trust_remote_code)
    sampling = pipe.resolve_sampling(**sampling_overrides(args))
    model = Path(args.model).resolve() if Path(args.model).exists() else args.model  # a path, or a hub id
    settings = {"verb": verb, "model": str(model), "seed": args.seed, "start": args.start,
                "sampling": sampling.to_dict(), "batch_size": args.batch_size,
                "device": torch.device(resolve_device(args.device)).type,  # cuda:0 and cuda:1 draw the same images
                "pipeline": type(pipe).__name__, "dlc_version": dlc.__version__}
    return pipe, sampling, settings


def image_files(paths: list[str]) -> list[Path]:
    """Image files, and every image under a folder at any depth (class folders too)."""
    from ..data import image_files as images_under

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += images_under(p)
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


def chunk_inputs(chunk: list[int], codes: torch.Tensor | None, files: list[Path] | None,
                 prompts: list[str] | None = None) -> dict:
    """The pipeline inputs of the samples ``chunk``: their codes, images or prompts, or prior draws."""
    if codes is not None:
        return {"codes": codes[chunk]}
    if files is not None:
        return {"image": open_images([files[i] for i in chunk])}
    if prompts is not None:
        return {"prompt": [prompts[i] for i in chunk]}
    return {"num_images": len(chunk)}


def draw_missing(folder: SampleFolder, pipe, indices: list[int], kwargs: dict, chunk_size: int,
                 codes: torch.Tensor | None = None, files: list[Path] | None = None,
                 prompts: list[str] | None = None) -> None:
    """Draw this process's share of ``indices`` that has no PNG yet, writing each chunk as it comes."""
    rank, world = distributed()
    mine = shard(indices)
    todo = folder.missing(mine)
    print(f"process {rank} of {world}: {len(todo)} of its {len(mine)} samples to draw "
          f"({len(mine) - len(todo)} already in {folder.images})")
    with tqdm(total=len(todo), desc="samples", unit="img", disable=rank != 0 or not todo) as bar:
        for chunk in chunks(todo, chunk_size):
            folder.write(generate(pipe, chunk, **chunk_inputs(chunk, codes, files, prompts), **kwargs), chunk)
            bar.update(len(chunk))


def stream(args, pipe, settings: dict, sampling, indices: list[int], codes: torch.Tensor | None = None,
           parents: list[Path] | None = None, **inputs) -> None:
    """Claim --out, draw the missing ``indices`` chunk by chunk, then the grid (reconstructions
    beside the ``files`` they came from, compositions below their ``parents``), codes and npz."""
    settings.update(num=len(indices), chunk_size=args.chunk_size)
    folder = SampleFolder(args.out)
    # every process checks it (refused if it holds samples made with other settings); the main one writes settings.json
    folder.claim(settings, write=distributed()[0] == 0)
    wait_for_everyone()
    draw_missing(folder, pipe, indices, generation_kwargs(args, sampling), args.chunk_size, codes=codes, **inputs)
    finish_folder(folder, settings, args, codes=codes, sources=inputs.get("files"), parents=parents)


def run(args) -> int:
    from ..codes import load_codes

    pipe, sampling, settings = prepare("sample", args)
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
    stream(args, pipe, settings, sampling, indices, codes=codes, files=files)
    return 0
