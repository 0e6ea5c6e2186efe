"""``dlc encode``: a dataset -> Discrete Latent Codes, as one ``.npy`` or as webdataset shards.

Work is done in chunks of ``--chunk`` images (one shard each with ``--shards``). A finished chunk
is written to disk under a temporary name and renamed, so an interrupted run keeps every finished
chunk and a re-run continues after them; with ``--out`` the chunks are joined into the final
``.npy`` (uint16 (N, L), row i = dataset index i) at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codes import save_codes
from ..data import collate, encode_png, to_float
from ..errors import DLCError


def register(sub) -> None:
    parser = sub.add_parser(
        "encode", help="encode a dataset to Discrete Latent Codes (.npy or webdataset shards)",
        description="Encode every image of a dataset with a trained SEM encoder. --out writes a uint16 "
        "(N, L) .npy whose row i is the code of dataset image i; --shards writes webdataset shards "
        "(png, cls, txt and code.npy, keyed by dataset index), optionally with VAE latents for the DiT "
        "(--latents) and codes/latents of the flipped image (--hflip). Interrupted runs resume: finished "
        "chunks are kept and skipped. Examples: dlc encode --run runs/emoji/encoder --data emoji "
        "--split train --out runs/emoji/codes/train.npy; dlc encode --run runs/imagenet/encoder_dlc512 "
        "--data imagefolder:/data/imagenet --shards runs/imagenet/latents --latents "
        "stabilityai/sd-vae-ft-ema --hflip --no-png",
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
    parser.add_argument("--latents", metavar="VAE", default=None,
                        help="with --shards: also write latent.npy, the latents of this diffusers VAE (hub name "
                        "such as stabilityai/sd-vae-ft-ema, or a local folder) for training the DiT")
    parser.add_argument("--hflip", action="store_true",
                        help="with --shards: also write code_flip.npy (and latent_flip.npy) from the flipped image")
    parser.add_argument("--no-png", dest="png", action="store_false",
                        help="with --shards: leave the images out (latents and codes only; much smaller shards)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data import load
    from ..encoder import DLCEncoder

    if args.out and (args.latents or args.hflip or not args.png):
        raise DLCError("--latents, --hflip and --no-png go with --shards (a .npy holds codes only)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = DLCEncoder.from_pretrained(args.run).to(device).eval()
    size = encoder.config.input_size or encoder.config.image_size
    options = {"channels": encoder.config.in_channels} if args.data in ("fashion-mnist", "fashion") else {}
    dataset = load(args.data, size=size, split=args.split, **options)
    if args.out:
        encode_to_npy(dataset, code_maker(encoder), Path(args.out), args.batch_size, args.chunk)
        print(f"wrote {args.out}")
        return 0
    space = None
    if args.latents:
        from ..latents import VAESpace

        space = VAESpace.from_pretrained(args.latents, image_size=size)
        space.vae.to(device)
    entry_makers = make_entry_makers(encoder, space, args.hflip)
    manifest = {
        "encoder": _describe(args.run), "data": args.data, "split": args.split, "chunk": args.chunk,
        "entries": sorted(entry_makers), "png": args.png, "image_size": size,
        "code_length": encoder.config.code_length, "vocab_size": encoder.config.vocab_size,
        "latents": _describe(args.latents) if args.latents else None,
        "latent_shape": [space.channels, space.size, space.size] if space else None,
    }
    paths = encode_to_shards(dataset, entry_makers, Path(args.shards), args.batch_size, args.chunk,
                             png=args.png, manifest=manifest)
    print(f"wrote {len(paths)} shards to {args.shards}")
    return 0


def _describe(name_or_path: str) -> str:
    """A hub name as it is, a local folder as an absolute path (so a re-run from elsewhere matches)."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else name_or_path


def code_maker(encoder) -> Callable:
    return lambda images: encoder.encode(images).cpu().numpy().astype(np.uint16)


def latent_maker(space, device) -> Callable:
    """uint8 images -> float16 latents (B, C, h, w): the VAE's latent mean times its scaling factor."""
    in_channels = space.vae.config.in_channels

    def make(images):
        x = to_float(images).to(device)
        if x.shape[1] == 1 and in_channels == 3:  # grey images (fashion-mnist) through an RGB VAE
            x = x.expand(-1, 3, -1, -1)
        return space.encode(x).float().cpu().numpy().astype(np.float16)

    return make


def make_entry_makers(encoder, space=None, hflip: bool = False) -> dict[str, Callable]:
    """Shard entry name -> function of a batch of uint8 images (B, C, H, W) giving one array per
    sample: ``code.npy``, with a VAE ``latent.npy``, and with ``hflip`` the same of the flipped
    image (``code_flip.npy``, ``latent_flip.npy``): codes and latents of a flip always agree."""
    makers = {"code.npy": code_maker(encoder)}
    if space is not None:
        makers["latent.npy"] = latent_maker(space, encoder.device)
    if hflip:
        for name, make in list(makers.items()):
            makers[name.replace(".npy", "_flip.npy")] = lambda images, make=make: make(images.flip(-1))
    return makers


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


MANIFEST = "encode.json"


def read_manifest(shard: str | Path) -> dict | None:
    """The ``encode.json`` beside a shard written by ``dlc encode --shards`` (None if there is none)."""
    path = Path(shard).parent / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``encode.json``; if one is there, the settings must match (resume, don't mix)."""
    path = out_dir / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in manifest if old.get(k) != manifest[k])
        if changed:
            raise DLCError(f"{out_dir} holds shards written with other settings ({', '.join(changed)}: "
                           f"{[old.get(k) for k in changed]} then, {[manifest[k] for k in changed]} now); "
                           "use a new --shards folder or delete this one")
        return
    tmp = out_dir / f".tmp-{MANIFEST}"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)


def encode_to_shards(dataset, entry_makers: dict[str, Callable], out_dir: Path, batch_size: int,
                     chunk: int, png: bool = True, manifest: dict | None = None) -> list[Path]:
    """One shard per chunk: ``png`` (lossless, unless ``png=False``), ``cls``, ``txt`` and each entry
    of ``entry_makers`` (e.g. ``code.npy``), keyed by dataset index (``%08d``) so they join with
    other files. ``manifest`` (settings) goes to ``encode.json`` with the samples per shard."""
    import webdataset as wds

    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(dataset, chunk)
    if manifest is not None:
        _check_manifest(out_dir, {**manifest, "shards": [f"shard-{k:06d}.tar" for k in range(len(chunks))],
                                  "samples_per_shard": [len(rows) for rows in chunks]})
    paths = []
    with tqdm(total=len(dataset), desc="encoding", unit="img", dynamic_ncols=True) as bar:
        for k, rows in enumerate(chunks):
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
                        sample = {"__key__": f"{index:08d}"}
                        if png:
                            sample["png"] = encode_png(image)
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
