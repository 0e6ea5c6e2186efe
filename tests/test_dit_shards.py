"""Precomputed DiT training data: `dlc encode --shards --latents VAE --hflip`, then `dlc train dit`
with condition.kind=shards reading latents and codes without re-encoding."""

import io
import json

import numpy as np
import pytest
import torch

from dlc.cli import main
from dlc.data import load, to_float
from dlc.encoder import DLCEncoder
from dlc.errors import ConfigError, DataError

TINY = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=2)
N = 12  # images: shards of 5, 5 and 2 with --chunk 5


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, sample_size=32, layers_per_block=1,
                         norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2).eval()


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, emoji_train):
    """A tiny encoder and VAE saved as folders, 12 emoji in an image folder, and their shards."""
    from PIL import Image

    root = tmp_path_factory.mktemp("dit-shards")
    for i in range(N):  # two class folders, so the shards carry cls too
        folder = root / "images" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(emoji_train[i * 7]["image"].permute(1, 2, 0).numpy()).save(folder / f"{i:02d}.png")
    torch.manual_seed(0)
    DLCEncoder(backbone_kwargs=TINY, image_size=32, code_length=8, vocab_size=16).save_pretrained(root / "enc")
    tiny_vae().save_pretrained(root / "vae")
    args = ["encode", "--run", str(root / "enc"), "--data", f"imagefolder:{root / 'images'}", "--chunk", "5",
            "--batch-size", "4", "--latents", str(root / "vae")]
    assert main([*args, "--shards", str(root / "flips"), "--hflip"]) == 0
    assert main([*args, "--shards", str(root / "plain"), "--no-png"]) == 0
    return root, args


def raw_samples(folder):
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    return list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))


def npy(data):
    return np.load(io.BytesIO(data))


def test_encode_writes_latents_and_consistent_flips(encoded):
    from dlc.dit.latents import VAESpace

    root, args = encoded
    folder = load(f"imagefolder:{root / 'images'}", size=32)
    images = torch.stack([folder[i]["image"] for i in range(len(folder))])
    encoder = DLCEncoder.from_pretrained(root / "enc").eval()
    space = VAESpace.from_pretrained(str(root / "vae"), image_size=32)
    samples = raw_samples(root / "flips")
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(N)]
    assert {"png", "cls", "code.npy", "latent.npy", "code_flip.npy", "latent_flip.npy"} <= set(samples[0])
    codes = np.stack([npy(s["code.npy"]) for s in samples])
    flip_codes = np.stack([npy(s["code_flip.npy"]) for s in samples])
    latents = np.stack([npy(s["latent.npy"]) for s in samples])
    flip_latents = np.stack([npy(s["latent_flip.npy"]) for s in samples])
    assert codes.dtype == np.uint16 and codes.shape == (N, 8)
    assert latents.dtype == np.float16 and latents.shape == (N, 4, 16, 16)
    # the code stored for the flipped image is the encoder's code of the flipped image
    assert np.array_equal(codes, encoder.encode(images).numpy())
    assert np.array_equal(flip_codes, encoder.encode(images.flip(-1)).numpy())
    expected = space.encode(to_float(images))  # latent mean x scaling factor
    assert np.allclose(latents, expected.numpy(), atol=2e-3, rtol=2e-3)
    assert np.allclose(flip_latents, space.encode(to_float(images.flip(-1))).numpy(), atol=2e-3, rtol=2e-3)
    manifest = json.loads((root / "flips" / "encode.json").read_text())
    assert manifest["samples_per_shard"] == [5, 5, 2] and manifest["latent_shape"] == [4, 16, 16]
    assert manifest["code_length"] == 8 and manifest["vocab_size"] == 16 and manifest["latents"] == str((root / "vae").resolve())
    plain = raw_samples(root / "plain")
    assert "png" not in plain[0] and "code_flip.npy" not in plain[0]
    assert all(np.array_equal(npy(a["latent.npy"]), npy(b["latent.npy"])) for a, b in zip(plain, samples))

    # an interrupted run keeps finished shards and writes the missing one again, identically
    before = (root / "flips" / "shard-000001.tar").read_bytes()
    (root / "flips" / "shard-000001.tar").unlink()
    stamp = (root / "flips" / "shard-000000.tar").stat().st_mtime_ns
    assert main([*args, "--shards", str(root / "flips"), "--hflip"]) == 0
    assert (root / "flips" / "shard-000000.tar").stat().st_mtime_ns == stamp
    assert len((root / "flips" / "shard-000001.tar").read_bytes()) == len(before)
    # other settings into the same folder are refused rather than mixed
    assert main([*args, "--shards", str(root / "flips")]) == 1
    assert main(["encode", "--run", str(root / "enc"), "--out", str(root / "x.npy"), "--hflip"]) == 1


def test_shard_stream_pairs_flips_resumes_and_splits(encoded):
    from dlc.data.shards import ShardDataset
    from dlc.dit.training import shard_decoder

    def stream_of(**options):
        return ShardDataset(pattern, 32, repeat=True, shuffle_buffer=3, seed=3, hflip=True,
                            decode=shard_decoder(8, 16, 32), **options)

    root, _ = encoded
    samples = raw_samples(root / "flips")
    table = [(npy(s["code.npy"]).astype(np.int64), npy(s["latent.npy"]).astype(np.float32),
              npy(s["code_flip.npy"]).astype(np.int64), npy(s["latent_flip.npy"]).astype(np.float32))
             for s in samples]
    pattern = f"{root}/flips/shard-{{000000..000002}}.tar"
    stream = stream_of()
    items = [item for _, item in zip(range(3 * N), stream)]
    flips = []
    for item in items:
        code, latent = item["code"].numpy(), item["latent"].numpy()
        match = [(k, f) for k, row in enumerate(table) for f in (0, 1) if np.array_equal(latent, row[1 + 2 * f])]
        assert match, "every latent is a stored (latent or flipped latent)"
        k, f = match[0]
        assert np.array_equal(code, table[k][2 * f]), "a flipped latent comes with the flipped image's code"
        flips.append(f)
    assert 0 < sum(flips) < len(flips)

    # a resumed stream continues exactly: within the first epoch and past it
    for step, batch in [(3, 2), (7, 2)]:
        resumed = stream_of()
        resumed.set_start(step, batch)
        again = [item for _, item in zip(range(4), resumed)]
        for a, b in zip(again, items[step * batch:]):
            assert torch.equal(a["code"], b["code"]) and torch.equal(a["latent"], b["latent"])

    # ranks read disjoint shards that together cover the data
    keys = []
    for rank in range(2):
        reader = stream_of(rank=rank, world_size=2)
        shards, (r, worker, _) = reader.reader_shards()
        keys += [s["__key__"] for s, _ in reader.epoch_samples(shards, 0, r, worker)]
    assert sorted(keys) == [f"{i:08d}" for i in range(N)]
    with pytest.raises(DataError, match="every reader needs a shard"):
        stream_of(rank=3, world_size=4).reader_shards()


def test_train_dit_on_latent_shards(encoded, tmp_path):
    from dlc.config import load_config
    from dlc.dit import DiTRunConfig, load_dit_run
    from dlc.dit import training as dit_training
    from dlc.dit.latents import VAESpace
    from dlc.stages import STAGES

    root, _ = encoded
    # the paper's config (kind=shards, hflip, ddpm, sampler ddpm with guidance 1.4), tiny
    overrides = [f"data.dataset=webdataset:{root}/flips/shard-{{000000..000002}}.tar", "data.size=32",
                 f"latent={root / 'vae'}", "model.arch=DiT-N/8", "condition.vocab_size=16",
                 "data.shuffle_buffer=4", "train.steps=2", "train.batch_size=4", "train.checkpoint_every=1",
                 "train.log_every=1", "train.num_workers=0", "sample.num=2", "sample.steps=2",
                 f"run_dir={tmp_path / 'run'}"]
    stage = STAGES["dit"]
    config = stage.load_config("imagenet", overrides)
    assert config.condition.kind == "shards" and config.hflip and config.objective == "ddpm"
    run = stage.train(config)
    saved = load_config(DiTRunConfig, run.config_path)
    assert saved.latent == str(root / "vae") and saved.condition.kind == "shards"  # sampling decodes through it
    model, objective, space = load_dit_run(run.root)
    assert isinstance(space, VAESpace) and (space.channels, space.size) == (4, 16)
    cfg = model.config
    assert (cfg.in_channels, cfg.image_size, cfg.code_length, cfg.vocab_size) == (4, 16, 8, 16)
    assert model.out_channels == 8  # learned variance
    assert len(run.read_metrics()) == 2 and (run.samples / "step-0000002.png").exists()

    # a resumed run reads on from its checkpoint's data position
    config = STAGES["dit"].load_config("imagenet", [*overrides, "train.steps=3"])
    stage.train(config)
    assert len(run.read_metrics()) == 3

    # shards without flips or latents that would be decoded as pixels are refused clearly
    plain = [o.replace("/flips/", "/plain/") for o in overrides]
    with pytest.raises(ConfigError, match="hflip=true but the shards have no code_flip.npy"):
        dit_training.build(STAGES["dit"].load_config("imagenet", plain))
    with pytest.raises(ConfigError, match="set latent=<that VAE>"):
        dit_training.build(STAGES["dit"].load_config("imagenet", [*plain, "latent=pixel", "hflip=false"]))
    with pytest.raises(ConfigError, match="set data.size to the image size"):
        dit_training.build(STAGES["dit"].load_config("imagenet", [*plain, "data.size=64", "hflip=false"]))
