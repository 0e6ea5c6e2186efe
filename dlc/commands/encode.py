"""``dlc encode``: a dataset -> Discrete Latent Codes, as one ``.npy`` or as webdataset shards.

Work is done in chunks of ``--chunk`` images (one shard each with ``--shards``). A finished chunk
is written to disk under a temporary name and renamed, so an interrupted run keeps every finished
chunk and a re-run continues after them; with ``--out`` the chunks are joined into the final
``.npy`` (uint16 (N, L), row i = dataset index i) at the end.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codes import save_codes
from ..data import collate, encode_png
from ..errors import DLCError


def register(sub) -> None:
    parser = sub.add_parser(
        "encode", help="encode a dataset to Discrete Latent Codes (.npy or webdataset shards)",
        description="Encode every image of a dataset with a trained SEM encoder. --out writes a uint16 "
        "(N, L) .npy whose row i is the code of dataset image i; --shards writes webdataset shards "
        "(png, cls, txt and code.npy, keyed by dataset index). Interrupted runs resume: finished "
        "chunks are kept and skipped. Example: dlc encode --run runs/emoji/encoder --data emoji "
        "--split train --out runs/emoji/codes/train.npy",
    )
    parser.add_argument("--run", required=True, help="encoder run directory or model folder")
    parser.add_argument("--data", default="emoji", help="dataset name (emoji, fashion-mnist, imagefolder:PATH, ...)")
    parser.add_argument("--split", default="train", help="train, test or all (default: %(default)s)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="the .npy file to write")
    target.add_argument("--shards", help="a folder for webdataset shards")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=10_000, help="images per chunk / shard (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    # --latents VAE: VAE latents for the DiT (``latent.npy`` in the shards) come from dlc.latents;
    # they plug in as one more entry of ``entry_makers`` below.
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data import load
    from ..encoder import DLCEncoder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = DLCEncoder.from_pretrained(args.run).to(device).eval()
    size = encoder.config.input_size or encoder.config.image_size
    options = {"channels": encoder.config.in_channels} if args.data in ("fashion-mnist", "fashion") else {}
    dataset = load(args.data, size=size, split=args.split, **options)
    # name in a sample -> function of a batch of uint8 images giving an array (B, ...) per sample
    entry_makers = {"code.npy": lambda images: encoder.encode(images).cpu().numpy().astype(np.uint16)}
    if args.out:
        encode_to_npy(dataset, entry_makers["code.npy"], Path(args.out), args.batch_size, args.chunk)
        print(f"wrote {args.out}")
    else:
        paths = encode_to_shards(dataset, entry_makers, Path(args.shards), args.batch_size, args.chunk)
        print(f"wrote {len(paths)} shards to {args.shards}")
    return 0


def _chunks(dataset, chunk: int) -> list[range]:
    try:
        n = len(dataset)
    except TypeError as e:
        raise DLCError("dlc encode needs a dataset with a length (emoji, fashion-mnist, imagefolder:...)") from e
    return [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def _batches(dataset, rows: range, batch_size: int):
    for s in range(rows.start, rows.stop, batch_size):
        yield collate([dataset[i] for i in range(s, min(s + batch_size, rows.stop))])


def encode_to_npy(dataset, make_codes: Callable, out: Path, batch_size: int, chunk: int) -> Path:
    """Codes of every image, chunk by chunk into ``OUT.parts/``, then joined into ``out``."""
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(dataset, chunk)
    with tqdm(total=len(dataset), desc="encoding", unit="img", dynamic_ncols=True) as bar:
        for k, rows in enumerate(chunks):
            part = parts / f"{k:06d}.npy"
            if part.exists():
                bar.update(len(rows))
                continue
            codes = []
            for batch in _batches(dataset, rows, batch_size):
                codes.append(make_codes(batch["image"]))
                bar.update(len(batch["image"]))
            tmp = parts / f".tmp-{k:06d}.npy"
            np.save(tmp, np.concatenate(codes))
            tmp.replace(part)
    codes = np.concatenate([np.load(parts / f"{k:06d}.npy") for k in range(len(chunks))])
    save_codes(out, torch.from_numpy(codes.astype(np.int64)))
    shutil.rmtree(parts)
    return out


def encode_to_shards(dataset, entry_makers: dict[str, Callable], out_dir: Path, batch_size: int,
                     chunk: int) -> list[Path]:
    """One shard per chunk: ``png`` (lossless), ``cls``, ``txt`` and each entry of ``entry_makers``
    (e.g. ``code.npy``), keyed by dataset index (``%08d``) so they join with other files."""
    import webdataset as wds

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with tqdm(total=len(dataset), desc="encoding", unit="img", dynamic_ncols=True) as bar:
        for k, rows in enumerate(_chunks(dataset, chunk)):
            path = out_dir / f"shard-{k:06d}.tar"
            paths.append(path)
            if path.exists():
                bar.update(len(rows))
                continue
            tmp = out_dir / f".tmp-shard-{k:06d}.tar"
            with wds.TarWriter(str(tmp)) as sink:
                index = rows.start
                for batch in _batches(dataset, rows, batch_size):
                    entries = {name: make(batch["image"]) for name, make in entry_makers.items()}
                    for j, image in enumerate(batch["image"]):
                        sample = {"__key__": f"{index:08d}", "png": encode_png(image)}
                        label, caption = batch["label"][j], batch["caption"][j]
                        if label is not None:
                            sample["cls"] = int(label)
                        if caption is not None:
                            sample["txt"] = caption
                        sample.update({name: values[j] for name, values in entries.items()})
                        sink.write(sample)
                        index += 1
                    bar.update(len(batch["image"]))
            tmp.replace(path)
    return paths
