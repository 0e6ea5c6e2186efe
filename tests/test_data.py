import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import dlc
from dlc import data
from dlc.errors import DataError


def test_emoji_split_counts_and_items(emoji_train):
    test = data.load("emoji", size=32, split="test")
    everything = data.load("emoji", size=32, split="all")
    assert len(everything) == 3655
    assert len(emoji_train) + len(test) == 3655
    assert 0.08 < len(test) / 3655 < 0.12
    assert not set(emoji_train.captions) & set(test.captions)  # names are unique, so splits are disjoint
    item = emoji_train[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["caption"] == "grinning face" and item["subgroup"] == "face-smiling"
    assert item["label"] == emoji_train.class_names.index("face-smiling")
    assert emoji_train.num_classes == 99


def test_emoji_fields_and_stratified_split():
    everything = data.load("emoji", size=32, split="all")
    i = everything.captions.index("woman firefighter: medium skin tone")
    assert everything.fields["base_name"][i] == "woman firefighter"
    assert everything.fields["skin_tone"][i] == "medium skin tone"
    test = data.load("emoji", size=32, split="test")
    # every subgroup with at least 5 emoji contributes to the test split
    counts = np.bincount(everything.labels.numpy(), minlength=99)
    test_counts = np.bincount(test.labels.numpy(), minlength=99)
    assert all(test_counts[c] >= 1 for c in np.flatnonzero(counts >= 5))


def test_emoji_images_are_centred_on_white(emoji_train):
    image = emoji_train.images[0].float()
    assert image[:, 0, 0].tolist() == [255.0, 255.0, 255.0]  # white corner
    assert image[:, 12:20, 12:20].mean() < 230  # coloured centre


def test_fashion_mnist_counts_and_padding():
    train = data.load("fashion-mnist")
    test = data.load("fashion-mnist", split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train[0]["image"].shape == (1, 28, 28)
    padded = data.load("fashion-mnist", size=32, channels=3, split="test")
    item = padded[0]
    assert item["image"].shape == (3, 32, 32)
    assert item["image"][:, :2].sum() == 0  # black padding
    assert torch.equal(item["image"][:, 2:30, 2:30], test[0]["image"].expand(3, -1, -1))
    assert item["caption"] == data.FASHION_CLASSES[item["label"]]


def test_missing_debian_package_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(data.fashion, "FASHION_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion-mnist")


def _write_folder(root):
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(root / "cats" / "transparent.png")
    Image.new("L", (20, 20), 128).save(root / "cats" / "grey.png")
    Image.new("P", (20, 20), 3).save(root / "dogs" / "palette.gif")
    (root / "dogs" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "captions.jsonl").write_text(json.dumps({"file": "cats/grey.png", "caption": "a grey cat"}) + "\n")


def test_image_folder_labels_conversions_and_captions(tmp_path):
    _write_folder(tmp_path)
    ds = data.load(f"imagefolder:{tmp_path}", size=16)
    assert ds.class_names == ["cats", "dogs"]
    assert len(ds) == 4
    readable = [i for i, f in enumerate(ds.files) if f.name != "broken.jpg"]
    items = {it["path"].split("/")[-1]: it for it in (ds[i] for i in readable)}
    assert items["grey.png"]["caption"] == "a grey cat" and items["grey.png"]["label"] == 0
    transparent = items["transparent.png"]["image"]
    assert transparent.shape == (3, 16, 16) and transparent.min() == 255  # transparency -> white
    assert items["palette.gif"]["label"] == 1


def test_image_folder_skips_corrupt_file_with_warning(tmp_path):
    _write_folder(tmp_path)
    ds = data.load(f"imagefolder:{tmp_path}", size=16)
    broken = [i for i, f in enumerate(ds.files) if f.name == "broken.jpg"][0]
    with pytest.warns(UserWarning, match="broken.jpg"):
        item = ds[broken]
    assert item["image"].shape == (3, 16, 16)  # the next readable image stands in
    assert len(ds.skips.skipped) == 1


def test_empty_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="has no images"):
        data.load(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match="does not exist"):
        data.load(f"imagefolder:{tmp_path / 'missing'}")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("cifar")


def test_webdataset_round_trip(tmp_path, emoji_train):
    subset = emoji_train.subset(range(25))
    shards = data.write_shards(subset, tmp_path, chunk=10, progress=False)
    assert len(shards) == 3
    read = list(data.load(f"webdataset:{tmp_path}/shard-{{000000..000002}}.tar"))
    assert [r["key"] for r in read] == [f"{i:08d}" for i in range(25)]
    for i, r in enumerate(read):
        assert torch.equal(r["image"], subset.images[i])  # PNG is lossless
        assert r["caption"] == subset.captions[i] and r["label"] == int(subset.labels[i])


def test_webdataset_ranks_and_workers_see_each_sample_once(tmp_path, emoji_train):
    data.write_shards(emoji_train.subset(range(50)), tmp_path, chunk=7, progress=False)  # 8 shards
    pattern = f"webdataset:{tmp_path}/shard-{{000000..000007}}.tar"
    seen = []
    for rank in range(2):
        ds = data.load(pattern, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=data.collate)
        for batch in loader:
            seen += batch["key"]
    assert sorted(seen) == [f"{i:08d}" for i in range(50)]


def test_webdataset_rank_without_shards_ends_or_says_why_instead_of_hanging(tmp_path, emoji_train):
    data.write_shards(emoji_train.subset(range(5)), tmp_path, chunk=10, progress=False)  # 1 shard
    one_pass = data.load(f"webdataset:{tmp_path}/shard-000000.tar", rank=1, world_size=2)
    assert list(one_pass) == []  # one pass: every sample seen once across ranks, this one has none
    endless = data.load(f"webdataset:{tmp_path}/shard-000000.tar", rank=1, world_size=2, repeat=True)
    with pytest.raises(DataError, match="every reader needs a shard"):
        next(iter(endless))


def test_shard_writer_resumes_and_refuses_other_settings(tmp_path, emoji_train):
    subset = emoji_train.subset(range(12))
    paths = data.write_shards(subset, tmp_path, chunk=5, progress=False, manifest={"data": "emoji"})
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    manifest = data.read_manifest(paths[0])
    assert manifest["samples_per_shard"] == [5, 5, 2] and manifest["data"] == "emoji"
    stamp = paths[0].stat().st_mtime_ns
    paths[2].unlink()  # as if interrupted before the last shard
    again = data.write_shards(subset, tmp_path, chunk=5, progress=False, manifest={"data": "emoji"})
    assert again == paths and paths[2].exists() and paths[0].stat().st_mtime_ns == stamp
    keys = [item["key"] for item in data.load(f"webdataset:{tmp_path}/shard-{{000000..000002}}.tar")]
    assert keys == [f"{i:08d}" for i in range(12)]
    with pytest.raises(DataError, match="other settings"):
        data.write_shards(subset, tmp_path, chunk=4, progress=False, manifest={"data": "emoji"})


def test_corrupt_sample_in_shard_is_skipped(tmp_path, emoji_train):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "bad.tar")) as sink:
        sink.write({"__key__": "good", "png": data.encode_png(emoji_train.images[0]), "cls": 1})
        sink.write({"__key__": "bad", "png": b"garbage", "cls": 2})
    ds = data.load(f"webdataset:{tmp_path}/bad.tar")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = list(ds)
    assert [it["key"] for it in items] == ["good"]
    assert any("bad" in str(w.message) for w in caught) and len(ds.skips.skipped) == 1


def test_float_conversions_round_trip(emoji_train):
    images = emoji_train.images[:4]
    floats = data.to_float(images)
    assert floats.min() >= -1 and floats.max() <= 1
    assert torch.equal(data.to_uint8(floats), images)


def test_top_level_import_prints_train_count():
    assert len(dlc.data.load("emoji", size=32)) == 3283


def test_channels_work_for_every_dataset_and_fashion_is_an_alias(tmp_path, emoji_train):
    grey = data.load("emoji", size=32, split="test", channels=1)
    rgb = data.load("emoji", size=32, split="test")
    assert grey.images.shape[1:] == (1, 32, 32)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.equal(grey.images, (rgb.images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8))
    Image.fromarray(emoji_train.images[0].permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    assert data.load(f"imagefolder:{tmp_path}", size=16, channels=1)[0]["image"].shape == (1, 16, 16)
    fashion = data.load("fashion", size=28, split="test", channels=3)
    assert fashion.name == "fashion-mnist" and fashion.images.shape[1:] == (3, 28, 28)
    assert torch.equal(fashion.images[:, 0], fashion.images[:, 2])
