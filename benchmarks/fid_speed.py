"""Inception feature throughput and the time of a full FID on this machine.

    nice .venv/bin/python benchmarks/fid_speed.py --num 256 --reference emoji-32-test

Measures (1) images/s of the FID Inception's 2048-d features on emoji at 32 px (upsampled to
299 px inside the network, so the input size barely matters), (2) a full ``dlc.eval.fid`` of
``--num`` random training emoji against the reference with a cold reference cache, and (3) the
same with the reference features cached. The FID itself is real-vs-real at a small N (biased
high), a floor for generated samples scored the same way. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import dlc
from dlc import eval as dlc_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=256, help="samples in the FID (default: %(default)s)")
    parser.add_argument("--reference", default="emoji-32-test", help="reference set (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/fid_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    train = dlc.data.load("emoji", size=32, split="train").images
    samples = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.num]]
    extractor = dlc_eval.fidelity.find_inception()
    start = time.perf_counter()
    features = dlc_eval.image_features(samples, batch_size=args.batch_size)
    feature_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as cache_root:
        cold = dlc_eval.fid(samples, args.reference, batch_size=args.batch_size, cache_root=cache_root, progress=False)
        warm = dlc_eval.fid(samples, args.reference, batch_size=args.batch_size, cache_root=cache_root, progress=False)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}",
        "network": f"{extractor.name} ({extractor.source})",
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # shared machine
        "num_samples": args.num,
        "reference": args.reference,
        "num_reference": cold["num_reference"],
        "batch_size": args.batch_size,
        "features_seconds": round(feature_s, 2),
        "images_per_second": round(features.shape[0] / feature_s, 2),
        "fid_cold_cache_seconds": cold["seconds"],
        "fid_warm_cache_seconds": warm["seconds"],
        "fid": round(cold["fid"], 3),
        "kid": round(cold["kid"], 5),
        "command": f"benchmarks/fid_speed.py --num {args.num} --reference {args.reference} --batch-size {args.batch_size}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:{width}s}  {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
