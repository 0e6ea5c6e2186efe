"""``dlc encode``: a dataset -> Discrete Latent Codes, as one ``.npy`` or as webdataset shards
(``dlc.codes.encoding`` and ``dlc.data.write_shards`` do the work)."""

from __future__ import annotations

from pathlib import Path

import torch

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
    parser.add_argument("--split", default="train",
                        help="train, test or all; for an image folder its train/, val/ or test/ subfolder (one without "
                        "split subfolders has only train, which is all) (default: %(default)s)")
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
    from ..codes.encoding import code_maker, encode_to_npy, make_entry_makers
    from ..data import load, write_shards
    from ..data.shards import describe_source
    from ..encoder import DLCEncoder

    if args.out and (args.latents or args.hflip or not args.png):
        raise DLCError("--latents, --hflip and --no-png go with --shards (a .npy holds codes only)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = DLCEncoder.from_pretrained(args.run).to(device).eval()
    size = encoder.config.input_size or encoder.config.image_size
    dataset = load(args.data, size=size, split=args.split, channels=encoder.config.in_channels)
    if args.out:
        encode_to_npy(dataset, code_maker(encoder), Path(args.out), args.batch_size, args.chunk)
        print(f"wrote {args.out}")
        return 0
    space = None
    if args.latents:
        from ..dit.latents import VAESpace

        space = VAESpace.from_pretrained(args.latents, image_size=size)
        space.vae.to(device)
    entry_makers = make_entry_makers(encoder, space, args.hflip)
    manifest = {
        "encoder": describe_source(args.run), "data": args.data, "split": args.split, "image_size": size,
        "code_length": encoder.config.code_length, "vocab_size": encoder.config.vocab_size,
        "latents": describe_source(args.latents) if args.latents else None,
        "latent_shape": [space.channels, space.size, space.size] if space else None,
    }
    paths = write_shards(dataset, args.shards, entry_makers, chunk=args.chunk, batch_size=args.batch_size,
                         png=args.png, manifest=manifest)
    print(f"wrote {len(paths)} shards to {args.shards}")
    return 0
