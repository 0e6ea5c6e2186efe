"""Your own images: every form of image folder (flat, class folders, train/test subfolders,
captions.jsonl, dataset.json) through the library and the commands that take a dataset."""

import json

import pytest
import torch
from PIL import Image

from dlc import data
from dlc.errors import DataError

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_classes(root, per_class=3, size=12):
    """ROOT/red/*.png and ROOT/blue/*.png, each image a flat colour with a shade per index."""
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), tuple(min(255, c + 8 * i) for c in rgb)).save(root / name / f"{i}.png")
    return root


def write_splits(root, train=3, test=2):
    """ROOT/train/{red,blue}/*.png and ROOT/test/{red,blue}/*.png."""
    write_classes(root / "train", train)
    write_classes(root / "test", test)
    return root


def test_a_class_folder_layout_is_one_training_set_and_asking_for_test_is_an_error(tmp_path):
    write_classes(tmp_path)
    train = data.load(f"imagefolder:{tmp_path}", size=8, split="train")
    assert len(train) == 6 and train.class_names == ["blue", "red"]
    assert len(data.load(f"imagefolder:{tmp_path}", size=8, split="all")) == 6
    with pytest.raises(DataError, match=r"has no 'test' split: it has no test/ subfolder"):
        data.load(f"imagefolder:{tmp_path}", size=8, split="test")


def test_split_folders_pick_splits_and_labels_agree_across_them(tmp_path):
    write_splits(tmp_path)
    (tmp_path / "train" / "green").mkdir()  # a class that only the training split has
    Image.new("RGB", (12, 12), (0, 200, 0)).save(tmp_path / "train" / "green" / "0.png")
    train = data.load(f"imagefolder:{tmp_path}", size=8, split="train")
    test = data.load(f"imagefolder:{tmp_path}", size=8, split="test")
    assert len(train) == 7 and len(test) == 4
    assert train.class_names == test.class_names == ["blue", "green", "red"]
    assert {test.class_names[it["label"]] for it in (test[i] for i in range(len(test)))} == {"blue", "red"}
    every = data.load(f"imagefolder:{tmp_path}", size=8, split="all")
    assert len(every) == 11 and "train" not in every.class_names  # labels are classes, never split names
    with pytest.raises(DataError, match=r"no 'val' split: its split folders are train, test"):
        data.load(f"imagefolder:{tmp_path}", size=8, split="val")


def test_captions_come_from_the_root_or_the_split_folder(tmp_path):
    write_splits(tmp_path)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "test/red/0.png", "caption": "a red square"}) + "\n")
    (tmp_path / "train" / "captions.jsonl").write_text(json.dumps({"file": "blue/1.png", "caption": "blue"}) + "\n")
    test = data.load(f"imagefolder:{tmp_path}", size=8, split="test")
    train = data.load(f"imagefolder:{tmp_path}", size=8, split="train")
    assert [c for c in test.captions if c] == ["a red square"]
    assert [c for c in train.captions if c] == ["blue"]


def test_image_files_finds_images_at_any_depth_and_skips_hidden_ones(tmp_path):
    write_classes(tmp_path / "a" / "b", per_class=1)
    (tmp_path / ".thumbnails").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".thumbnails" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [f.relative_to(tmp_path).as_posix() for f in data.image_files(tmp_path)] == ["a/b/blue/0.png", "a/b/red/0.png"]


def test_an_image_folder_reads_into_memory(tmp_path):
    write_classes(tmp_path)
    folder = data.load(f"imagefolder:{tmp_path}", size=8)
    memory = data.in_memory(folder)
    assert memory.images.shape == (6, 3, 8, 8) and memory.images.dtype == torch.uint8
    assert memory.labels.tolist() == folder.labels and memory.class_names == ["blue", "red"]
    assert data.in_memory(memory) is memory
    with pytest.raises(DataError, match="needs a size"):
        data.in_memory(data.load(f"imagefolder:{tmp_path}"))


def test_dataset_json_gives_prompts_heldout_captions_and_augmentations(tmp_path):
    write_classes(tmp_path)
    assert data.dataset_defaults(f"imagefolder:{tmp_path}") == data.DatasetDefaults()
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"prompts": ["red"], "heldout": ["dark red"], "augmentations": {"flip": False}}))
    defaults = data.dataset_defaults(f"imagefolder:{tmp_path}")
    assert defaults.prompts == ("red",) and defaults.augmentations == {"flip": False}
    assert defaults.heldout("dark red") and not defaults.heldout("red")
    (tmp_path / "dataset.json").write_text(json.dumps({"prompt": ["red"]}))
    with pytest.raises(DataError, match="expected a JSON object with some of the keys prompts, heldout"):
        data.dataset_defaults(f"imagefolder:{tmp_path}")


def test_built_in_datasets_declare_their_own_defaults():
    emoji = data.dataset_defaults("emoji")
    assert emoji.heldout("woman firefighter") and not emoji.heldout("red apple")
    assert "red apple" in emoji.prompts
    assert data.dataset_defaults("fashion").augmentations["grayscale_prob"] == 0.0
    glyphs = data.dataset_defaults("glyphs")
    assert glyphs.heldout("red K on white, DejaVu Sans") and not glyphs.heldout("red A on white, DejaVu Sans")
    assert glyphs.augmentations["flip"] is False


# ---- the commands, on a class-folder tree ---------------------------------------------------------

TINY = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2, reg_tokens=2)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from dlc.encoder import DLCEncoder

    folder = tmp_path_factory.mktemp("encoder") / "model"
    torch.manual_seed(0)
    DLCEncoder(backbone_kwargs=TINY, image_size=32, code_length=8, vocab_size=16).save_pretrained(folder)
    return folder


def test_eval_codes_on_train_and_test_subfolders_and_on_a_class_folder_hold_out(tmp_path, tiny_encoder, capsys):
    from dlc.cli import main

    write_splits(tmp_path / "split", train=4, test=2)
    out = tmp_path / "probe.json"
    assert main(["eval", "codes", "--run", str(tiny_encoder), "--data", f"imagefolder:{tmp_path / 'split'}",
                 "--k", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["usage"]["images"] == 8 and 0 <= result["codes"]["linear_probe"] <= 1

    write_classes(tmp_path / "classes", per_class=5)
    classes = ["eval", "codes", "--run", str(tiny_encoder), "--data", f"imagefolder:{tmp_path / 'classes'}", "--k", "3"]
    assert main(classes) == 1  # no test/ subfolder: a clear error, not the training images again
    assert "has no 'test' split" in capsys.readouterr().err
    assert main([*classes, "--holdout", "0.2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["usage"]["images"] == 8  # 5 per class, one of each held out
    assert main([*classes[:2], "--run", str(tmp_path / "no-such-run"), *classes[4:], "--holdout", "1.5"]) == 1
    assert "--holdout must be a fraction between 0 and 1; got 1.5" in capsys.readouterr().err  # before any loading


def test_fid_references_a_class_folder_as_a_folder_or_as_imagefolder_and_caches_it(tmp_path):
    from dlc import eval as dlc_eval

    write_splits(tmp_path / "data", train=3, test=3)
    samples = write_classes(tmp_path / "samples", per_class=2, size=8)
    cache = tmp_path / "cache"
    score = lambda reference: dlc_eval.fid(samples, reference, feature_extractor="tiny", progress=False,  # noqa: E731
                                          cache_root=cache)
    folder = score(tmp_path / "data" / "test")
    assert folder["num_reference"] == 6 and folder["num_samples"] == 4
    named = score(f"imagefolder:{tmp_path / 'data'}-8-test")
    assert named["num_reference"] == 6 and named["fid"] == pytest.approx(folder["fid"], rel=1e-4)
    assert score(f"imagefolder:{tmp_path / 'data'}")["num_reference"] == 12  # every split, at the samples' size
    cached = sorted(p.name for p in cache.iterdir())
    assert [n for n in cached if n.startswith("folder-test-8-")]
    assert [n for n in cached if n.startswith("imagefolder-data-8-test-")]

    # the cache follows the files: a changed reference is read again, not served stale; an image
    # of another size is resized to the samples' like the others
    Image.new("RGB", (30, 20), (0, 255, 0)).save(tmp_path / "data" / "test" / "red" / "extra.png")
    assert score(tmp_path / "data" / "test")["num_reference"] == 7
    with pytest.raises(DataError, match="has no 'val' split"):
        score(f"imagefolder:{tmp_path / 'data'}-8-val")


def test_encode_takes_a_split_subfolder_and_refuses_a_split_the_folder_lacks(tmp_path, tiny_encoder, capsys):
    from dlc.cli import main
    from dlc.codes import load_codes

    write_splits(tmp_path / "split", train=3, test=2)
    write_classes(tmp_path / "classes")
    encode = ["encode", "--run", str(tiny_encoder), "--batch-size", "4"]
    assert main([*encode, "--data", f"imagefolder:{tmp_path / 'split'}", "--split", "test",
                 "--out", str(tmp_path / "test.npy")]) == 0
    assert load_codes(tmp_path / "test.npy").shape == (4, 8)
    assert main([*encode, "--data", f"imagefolder:{tmp_path / 'classes'}", "--split", "test",
                 "--out", str(tmp_path / "none.npy")]) == 1
    assert "has no 'test' split" in capsys.readouterr().err and not (tmp_path / "none.npy").exists()


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from test_pipeline import tiny_parts

    from dlc.pipeline import DLCPipeline

    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    DLCPipeline(**tiny_parts()).save_pretrained(folder)
    return folder


def cell_colour(grid, column, row=0, cell=(96, 96 + 12), pad=2):
    """The colour at the centre of one grid cell (96 px images: 32 px drawn 3x; 12 px captions)."""
    return grid.getpixel((pad + column * (cell[0] + pad) + cell[0] // 2, pad + row * (cell[1] + pad) + cell[0] // 2))


def test_sample_images_finds_a_class_folder_and_draws_each_output_beside_its_input(tmp_path, tiny_pipeline):
    from dlc.cli import main

    images = write_classes(tmp_path / "classes")
    out = tmp_path / "out"
    assert main(["sample", str(tiny_pipeline), "--images", str(images), "--steps", "1", "--out", str(out)]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert [f.split("classes/")[1] for f in settings["images"]] == [f"{c}/{i}.png" for c in ("blue", "red")
                                                                     for i in range(3)]
    assert len(list((out / "images").glob("*.png"))) == 6
    grid = Image.open(out / "grid.png").convert("RGB")
    assert grid.size == (8 * 98 + 2, 2 * 110 + 2)  # 4 (input, output) pairs a row, each image 3x: 96 px
    assert cell_colour(grid, 0) == (30, 30, 220) and cell_colour(grid, 6) == (220, 30, 30)  # blue/0, red/0
    generated = Image.open(out / "images" / "000000.png").convert("RGB").resize((96, 96), Image.NEAREST)
    assert cell_colour(grid, 1) == generated.getpixel((48, 48))


def test_compose_draws_the_parents_above_the_compositions(tmp_path, tiny_pipeline):
    from dlc.cli import main

    images = write_classes(tmp_path / "classes", per_class=1)
    out = tmp_path / "out"
    assert main(["compose", str(tiny_pipeline), "--images", str(images / "red" / "0.png"), str(images / "blue" / "0.png"),
                 "-n", "3", "--steps", "1", "--grid-scale", "2", "--out", str(out)]) == 0
    grid = Image.open(out / "grid.png").convert("RGB")
    parent_cell = (64, 64 + 12)
    assert cell_colour(grid, 0, cell=parent_cell) == (220, 30, 30) and cell_colour(grid, 1, cell=parent_cell) == (30, 30, 220)
    assert grid.height == (64 + 12 + 4) + 4 + (2 * 66 + 2)  # the parents' captioned row, a gap, 2 rows of 3 below


# ---- dataset defaults reach the stages ----------------------------------------------------------


def captioned_folder(root, heldout=None, prompts=None):
    """A class-folder tree with a caption per image ("light red 0", ...) and an optional dataset.json."""
    write_classes(root, per_class=3)
    rows = [{"file": f"{c}/{i}.png", "caption": f"light {c} {i}"} for c in COLOURS for i in range(3)]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {k: v for k, v in (("heldout", heldout), ("prompts", prompts)) if v is not None}
    if spec:
        (root / "dataset.json").write_text(json.dumps(spec))
    return root


def text_config(tmp_path, folder, *extra):
    from dlc.config import load_config
    from dlc.text import training as text_training

    return load_config(text_training.TextRunConfig, None, [
        f"run_dir={tmp_path / 'text'}", f"data.dataset=imagefolder:{folder}", "data.size=8",
        "codes.source=synthetic", "codes.code_length=4", "codes.synthetic_vocab=8", "model.width=32",
        "model.depth=1", "model.heads=2", "model.tokenizer=bytes", "train.batch_size=4", "train.steps=1",
        "sample.num_per_prompt=1", "sample.steps=2", *extra])


def test_text_stage_takes_prompts_and_heldout_captions_from_the_dataset(tmp_path):
    from dlc.errors import ConfigError
    from dlc.text import training as text_training

    plain = captioned_folder(tmp_path / "plain")
    config = text_config(tmp_path, plain)
    pairs, *_ = text_training.training_pairs(config)
    assert len(pairs) == 6  # nothing held out: the folder defines no held-out captions
    captions = [pairs.dataset.captions[i] for i in pairs.indices]
    resolved = text_training.resolved(config, captions)
    assert resolved.sample.prompts == ["light blue 0", "light blue 1", "light blue 2", "light red 0"]
    assert resolved.codes.holdout is False
    with pytest.raises(ConfigError, match="codes.holdout: true, but imagefolder:.* defines no held-out captions"):
        text_training.training_pairs(text_config(tmp_path, plain, "codes.holdout=true"))

    declared = captioned_folder(tmp_path / "declared", heldout=["light red 1"], prompts=["light red 1", "light blue"])
    config = text_config(tmp_path, declared)
    pairs, *_ = text_training.training_pairs(config)
    kept = [pairs.dataset.captions[i] for i in pairs.indices]
    assert len(kept) == 5 and "light red 1" not in kept
    resolved = text_training.resolved(config, kept)
    assert resolved.sample.prompts == ["light red 1", "light blue"] and resolved.codes.holdout is True
    assert len(text_training.training_pairs(text_config(tmp_path, declared, "codes.holdout=false"))[0]) == 6


def test_a_text_run_samples_the_dataset_prompts_and_records_them(tmp_path):
    import yaml

    from dlc.text import training as text_training

    folder = captioned_folder(tmp_path / "folder", prompts=["light red 2"])
    run = text_training.train(text_config(tmp_path, folder))
    assert list(json.loads(next(run.samples.glob("codes-*.json")).read_text())) == ["light red 2"]
    assert yaml.safe_load((run.root / "config.yaml").read_text())["sample"]["prompts"] == ["light red 2"]


def test_the_emoji_presets_hold_no_emoji_choices_for_other_data():
    from dlc.stages import STAGES

    text = STAGES["text"].load_config("emoji")
    assert text.sample.prompts is None and text.codes.holdout is None  # the dataset's


def test_encoder_augmentations_come_from_the_dataset_unless_the_config_sets_them(tmp_path):
    import yaml
    from test_encoder import tiny_config

    from dlc.encoder import training as encoder_training
    from dlc.errors import ConfigError
    from dlc.stages import STAGES

    crops = encoder_training.CropConfig()
    assert crops.resolved() == encoder_training.CropConfig(**encoder_training.GENERIC_AUGMENTATIONS)
    fashion = crops.resolved(data.dataset_defaults("fashion").augmentations)
    assert (fashion.saturation, fashion.grayscale_prob, fashion.flip) == (0.0, 0.0, True)
    assert encoder_training.CropConfig(grayscale_prob=0.5).resolved({"grayscale_prob": 0.0}).grayscale_prob == 0.5
    with pytest.raises(ConfigError, match="unknown augmentation hue"):
        crops.resolved({"hue": 0.1})
    assert STAGES["encoder"].load_config("fashion").crops.resolved(
        data.dataset_defaults("fashion-mnist").augmentations).grayscale_prob == 0.0  # the preset leaves it to the data

    folder = write_classes(tmp_path / "letters", per_class=4)
    (folder / "dataset.json").write_text(json.dumps({"augmentations": {"flip": False, "grayscale_prob": 0.0}}))
    run = encoder_training.train(tiny_config(tmp_path, f"data.dataset=imagefolder:{folder}", "train.steps=1",
                                             "train.batch_size=4", "crops.saturation=0.1"))
    recorded = yaml.safe_load((run.root / "config.yaml").read_text())["crops"]
    assert (recorded["flip"], recorded["grayscale_prob"], recorded["saturation"], recorded["jitter_prob"]) == (
        False, 0.0, 0.1, 0.8)  # the folder's, the command line's, the generic


def test_the_vae_trains_on_a_class_folder_with_or_without_a_test_split(tmp_path):
    from test_vae import TINY

    from dlc.stages import STAGES

    for name, folder in (("classes", write_classes(tmp_path / "classes")), ("split", write_splits(tmp_path / "split"))):
        config = STAGES["vae"].load_config("emoji", [f"run_dir={tmp_path / name / 'vae'}", "train.steps=1",
                                                     f"data.dataset=imagefolder:{folder}", *TINY])
        last = STAGES["vae"].train(config).read_metrics()[-1]
        assert last["scaling_factor"] > 0 and (("test_mse" in last) == (name == "split"))
