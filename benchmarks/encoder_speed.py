"""Encoding throughput (images/s) of the SEM encoder: the CPU configs and the paper's ViT-L/14 at
224 px (random init: the speed does not depend on the weights), so users can plan extraction.

    python benchmarks/encoder_speed.py                      # CPU, 2 threads
    python benchmarks/encoder_speed.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dlc.encoder.training import build_model
from dlc.stages import STAGES

CONFIGS = {"emoji": "emoji", "fashion": "fashion", "imagenet-dlc512": "imagenet"}


def throughput(encoder, batch: int, seconds: float, device: str) -> float:
    """Images per second of ``encoder.encode`` on uint8 batches (preprocessing included)."""
    c = encoder.config
    size = c.input_size or c.image_size
    images = torch.randint(0, 256, (batch, c.in_channels, size, size), dtype=torch.uint8, device=device)
    encoder.encode(images)  # warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        encoder.encode(images)
        done += batch
    sync()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        config = STAGES["encoder"].load_config(CONFIGS[name], ["model.pretrained="])
        encoder = build_model(config).encoder.to(args.device, getattr(torch, args.dtype)).eval()
        rate = throughput(encoder, args.batch, args.seconds, args.device)
        rows.append({"model": name, "backbone": config.model.backbone, "image_size": config.model.image_size,
                     "code_length": config.model.code_length, "vocab_size": config.model.vocab_size,
                     "params_m": round(sum(p.numel() for p in encoder.parameters()) / 1e6, 2),
                     "images_per_s": round(rate, 1)})
        print(f"{name:<16} {rows[-1]['params_m']:>8.1f}M params  {rate:>10.1f} images/s", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    result = {"command": " ".join(["benchmarks/encoder_speed.py", *sys.argv[1:]]), "device": device,
              "batch": args.batch, "dtype": args.dtype, "results": rows}
    out = Path(args.out or f"benchmarks/results/encoder_speed_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
