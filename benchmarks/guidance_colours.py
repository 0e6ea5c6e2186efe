"""Where off-palette colours in a DiT's pictures come from: colour statistics against the guidance scale.

    python benchmarks/guidance_colours.py --run runs/demo/dit --test-codes runs/demo/codes/test.npy --scales 1 2 3

The run's EMA DiT draws every test image from its code at each guidance scale (same seeds, the run's
sampler), and for each scale records:
- ``out_of_range``: the share of the final pixel values outside [-1, 1], per channel (R, G, B): the
  sampler's own in pixel space, the VAE decoder's for a latent DiT; images are clamped to the range
  afterwards, so these are the values pushed too far;
- ``green_in_yellow``: of the pixels that are yellow in the source image (the image whose code made
  the picture), the share drawn green: the green marks on yellow faces;
- ``green_share`` and ``green_share_real``: the share of green pixels in the pictures and in their sources;
- ``recon_mse``: the mean squared error to the source, in [-1, 1] units.
Yellow: hue 35-70 degrees, saturation > 0.5, value > 0.6; green: hue 75-165 degrees, saturation > 0.35,
value > 0.25 (HSV of the uint8 images).
Writes JSON (keyed by run, and the interval when not all) and prints a table.
"""

from __future__ import annotations

import argparse

import torch
from _results import merge_into

from dlc.codes import load_codes
from dlc.config import load_config
from dlc.data import to_float, to_uint8
from dlc.dit import DiTRunConfig
from dlc.dit.config import load_dit_run
from dlc.dit.diffusion import sample
from dlc.dit.latents import PixelSpace
from dlc.progress import tqdm
from dlc.runs import RunDir


def hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (B, 3, H, W) -> hue in degrees, saturation and value in [0, 1], each (B, H, W)."""
    rgb = images.float() / 255
    value, argmax = rgb.max(1)
    chroma = value - rgb.min(1).values
    r, g, b = rgb.unbind(1)
    safe = chroma.clamp_min(1e-8)
    hue = torch.stack([((g - b) / safe) % 6, (b - r) / safe + 2, (r - g) / safe + 4], 1).gather(1, argmax[:, None])[:, 0]
    return hue * 60, chroma / value.clamp_min(1e-8), value


def colour_masks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(yellow, green) pixel masks (B, H, W) of uint8 images."""
    hue, saturation, value = hsv(images)
    yellow = (hue >= 35) & (hue <= 70) & (saturation > 0.5) & (value > 0.6)
    green = (hue >= 75) & (hue <= 165) & (saturation > 0.35) & (value > 0.25)
    return yellow, green


def colour_stats(raw: torch.Tensor, sources: torch.Tensor) -> dict:
    """Statistics of the sampler's final values ``raw`` (B, 3, H, W) against their uint8 ``sources``."""
    pictures = to_uint8(raw.clamp(-1, 1))
    yellow_src, green_src = colour_masks(sources)
    _, green = colour_masks(pictures)
    return {"out_of_range": [round(float((c.abs() > 1).float().mean()), 4) for c in raw.unbind(1)],
            "green_in_yellow": round(float(green[yellow_src].float().mean()), 4),
            "green_share": round(float(green.float().mean()), 4),
            "green_share_real": round(float(green_src.float().mean()), 4),
            "recon_mse": round(float((to_float(pictures) - to_float(sources)).pow(2).mean()), 4)}


@torch.no_grad()
def unclamped_pixels(space, z: torch.Tensor) -> torch.Tensor:
    """Pixel values before the final clamp: the sampler's own, or what the VAE decodes from latents."""
    return z if isinstance(space, PixelSpace) else space.vae.decode(z / space.scale).sample.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a DiT run directory (pixels or latents)")
    parser.add_argument("--test-codes", required=True, help="codes of the test split (.npy, row i = test image i)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--interval", type=float, nargs=2, default=[0.0, 1.0],
                        help="noise levels where guidance applies (default: all)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default: %(default)s)")
    parser.add_argument("--num", type=int, default=0, help="test images (default: 0, all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/guidance_colours.json")
    args = parser.parse_args()

    run = RunDir(args.run)
    config = load_config(DiTRunConfig, run.config_path)
    model, objective, space = load_dit_run(run.root)
    test = config.data.load("test")
    count = min(args.num or len(test), len(test))
    codes, sources = load_codes(args.test_codes)[:count], test.images[:count]
    rows = []
    for scale in args.scales:
        raw = torch.cat([unclamped_pixels(space, sample(
            model, objective, codes[i : i + 64], indices=range(i, min(i + 64, count)), seed=args.seed, steps=args.steps,
            sampler=config.sample.sampler, guidance_scale=scale, guidance_interval=tuple(args.interval)))
            for i in tqdm(range(0, count, 64), desc=f"guidance {scale:g}", unit="batch")])
        rows.append({"guidance_scale": scale, **colour_stats(raw, sources)})
        print(rows[-1], flush=True)
    key = str(run.root) + (f" interval {args.interval[0]:g}-{args.interval[1]:g}" if args.interval != [0.0, 1.0] else "")
    merge_into(args.out, key, {"command": "python benchmarks/guidance_colours.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "images": count, "sampler": f"{config.sample.sampler or objective.default_sampler}, {args.steps} steps",
        "interval": args.interval, "rows": rows})
    print(f"\n{'scale':>6} {'out of range R/G/B':>22} {'green in yellow':>16} {'green':>7} {'real':>7} {'mse':>7}")
    for r in rows:
        ranges = "/".join(f"{v:.3f}" for v in r["out_of_range"])
        print(f"{r['guidance_scale']:>6g} {ranges:>22} {r['green_in_yellow']:>16.4f} {r['green_share']:>7.4f} "
              f"{r['green_share_real']:>7.4f} {r['recon_mse']:>7.4f}")


if __name__ == "__main__":
    main()
