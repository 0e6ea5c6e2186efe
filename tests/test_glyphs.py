"""The glyphs dataset (rendered letters with known factors), its held-out pairs, the judges that
classify glyph images, and the composition / prompt scores they feed."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlc.data import dataset_defaults, load
from dlc.data.glyphs import FACTORS, glyph_plan, parse_glyph_caption, render_glyph, render_glyphs
from dlc.data.holdout import HELDOUT_GLYPHS, heldout_glyphs, is_heldout
from dlc.errors import CodeError, DataError


@pytest.fixture(scope="module")
def glyphs():
    return {split: load("glyphs", size=32, split=split) for split in ("train", "test", "all")}


def pairs(dataset) -> set[tuple[str, str]]:
    return set(zip(dataset.fields["letter_name"], dataset.fields["colour_name"]))


def test_rendering_is_deterministic_and_matches_the_cache(glyphs):
    items, _ = glyph_plan()
    again = render_glyphs(items[:24], 32)
    assert np.array_equal(again, render_glyphs(items[:24], 32))
    assert torch.equal(torch.from_numpy(again), glyphs["all"].images[:24])
    other_seed = np.asarray(render_glyph(items[0], 32, seed=1)).transpose(2, 0, 1)
    assert not np.array_equal(other_seed, again[0])


def test_split_sizes_and_the_split_is_a_partition(glyphs):
    assert (len(glyphs["train"]), len(glyphs["test"]), len(glyphs["all"])) == (3264, 896, 4160)
    assert glyphs["all"].images.shape[1:] == (3, 32, 32)
    assert set(glyphs["train"].captions).isdisjoint(glyphs["test"].captions)
    # every (letter, colour, background) combination is in the test split, once or (held out) five times
    combos = list(zip(*(glyphs["test"].fields[f] for f in ("letter", "colour", "background"))))
    assert len(set(combos)) == 26 * 8 * 4


def test_heldout_pairs_are_absent_from_train_and_present_in_test(glyphs):
    assert pairs(glyphs["train"]).isdisjoint(HELDOUT_GLYPHS)
    assert set(HELDOUT_GLYPHS) <= pairs(glyphs["test"])
    indices, captions = heldout_glyphs(glyphs["test"])
    assert len(indices) == len(HELDOUT_GLYPHS) * 4 * 5 and heldout_glyphs(glyphs["train"]) == ([], [])
    held_out = dataset_defaults("glyphs").heldout  # what text training leaves out of the glyphs
    assert all(held_out(c) for c in captions) and held_out("red K") and not held_out("red A")
    assert not any(is_heldout(c) for c in captions)  # the emoji's held-out names are theirs alone
    # each held-out letter and colour is still trained on in other combinations
    train = pairs(glyphs["train"])
    for letter, colour in HELDOUT_GLYPHS:
        assert any(p[0] == letter for p in train) and any(p[1] == colour for p in train)


def test_captions_labels_and_factor_fields_agree(glyphs):
    test = glyphs["test"]
    assert test.factors == FACTORS and test.subset([0, 1]).factors == FACTORS
    for i in range(0, len(test), 37):
        item = test[i]
        names = {f: item[f"{f}_name"] for f in FACTORS}
        assert parse_glyph_caption(item["caption"]) == names
        assert all(FACTORS[f][item[f]] == names[f] for f in FACTORS)
        assert item["label"] == item["letter"]
    assert parse_glyph_caption("blue S") == {"colour": "blue", "letter": "S"}
    assert parse_glyph_caption("grinning face") is None


def test_letter_and_background_pixels_are_the_named_colours(glyphs):
    # the corner is the background, the pixel furthest from it the letter (up to the seeded tint)
    from dlc.data.glyphs import BACKGROUNDS, COLOURS

    data = glyphs["all"]
    for i in range(0, len(data), 101):
        image = data.images[i].float()
        corner = image[:, 0, 0]
        far = image.flatten(1)[:, (image.flatten(1) - corner[:, None]).abs().sum(0).argmax()]
        assert (corner - torch.tensor(BACKGROUNDS[data.fields["background_name"][i]])).abs().max() <= 6
        assert (far - torch.tensor(COLOURS[data.fields["colour_name"][i]])).abs().max() <= 14


def test_grey_channels_and_bad_requests():
    assert load("glyphs", size=32, split="test", channels=1).images.shape[1] == 1
    with pytest.raises(DataError, match="size >= 8"):
        load("glyphs", size=4)
    with pytest.raises(DataError, match="unknown split"):
        load("glyphs", split="val")


class ColourOnlyEncoder:
    """A stand-in encoder whose codes hold the letter's colour (its most distinct pixel, 4 levels a
    channel) and whose features are the image in grey at 8x8: the probe must find the colour in the
    codes, and the letter in the features far more than in the codes."""

    config = SimpleNamespace(vocab_size=4)

    @staticmethod
    def encode(images):
        flat = images.flatten(2).float()
        far = (flat - flat[:, :, :1]).abs().sum(1).argmax(1)
        return (flat[torch.arange(len(flat)), :, far] / 64).long().clamp(max=3)

    @staticmethod
    def features(images):
        return torch.nn.functional.avg_pool2d(images.float().mean(1, keepdim=True), 4).flatten(1)


def test_the_code_probe_scores_each_factor_the_dataset_declares(glyphs):
    from dlc.eval.codes import evaluate_codes

    train, test = glyphs["train"].subset(range(0, 3264, 8)), glyphs["test"].subset(range(0, 896, 2))
    for split in (train, test):  # two of the four factors, to keep the test fast
        split.factors = {f: FACTORS[f] for f in ("letter", "colour")}
    result = evaluate_codes(ColourOnlyEncoder(), train, test, progress=False)
    scores = result["factors"]
    assert set(scores) == {"letter", "colour"} and result["codes"]["linear_probe"] == scores["letter"]["codes"]
    assert scores["colour"]["codes"] > 0.95 and scores["letter"]["codes"] < 0.2
    assert scores["letter"]["features"] > 2 * scores["letter"]["codes"]
    assert scores["letter"]["ratio"] == pytest.approx(scores["letter"]["codes"] / scores["letter"]["features"])
    assert scores["colour"]["chance"] == pytest.approx(1 / 8, abs=0.03)
    with pytest.raises(CodeError, match="no factor 'shape'"):
        evaluate_codes(ColourOnlyEncoder(), train, test, progress=False, factors=["shape"])


@pytest.fixture(scope="module")
def quick_judges():
    """Judges trained for seconds (1,024 images, 4 epochs): colour and background already learnt."""
    from dlc.eval.glyphs import GlyphJudges, train_glyph_judges

    return GlyphJudges(train_glyph_judges(32, epochs=4, limit=1024), 32)


def test_quick_judges_see_colour_and_background_on_real_test_glyphs(glyphs, quick_judges):
    from dlc.eval.glyphs import judge_accuracy

    accuracy = judge_accuracy(quick_judges, glyphs["test"].subset(range(0, 896, 4)))
    assert accuracy["colour"] >= 0.95 and accuracy["background"] >= 0.95


def test_judges_take_uint8_float_grey_and_other_sizes(glyphs, quick_judges):
    from dlc.data.images import to_float

    images = glyphs["test"].images[:16]
    judged = quick_judges.predict(images)
    assert set(judged) == set(FACTORS) and judged["letter"].shape == (16,)
    assert all(torch.equal(judged[f], quick_judges.predict(to_float(images))[f]) for f in FACTORS)
    big = torch.nn.functional.interpolate(images.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    assert (quick_judges.predict(big)["colour"] == judged["colour"]).float().mean() >= 0.9
    assert quick_judges.predict(images[:, :1])["letter"].shape == (16,)
    names = quick_judges.names(judged)
    assert names["colour"][0] == FACTORS["colour"][int(judged["colour"][0])]
    probabilities = quick_judges.probabilities(images)
    assert torch.allclose(probabilities["font"].sum(1), torch.ones(16))
    with pytest.raises(DataError, match="judges take images"):
        quick_judges.predict(images[0])


def test_kid_in_the_judges_features_is_near_zero_for_like_sets_and_grows_with_a_wrong_colour(glyphs, quick_judges):
    from dlc.eval.fidelity import kid_from_features

    def judge_kid(images, reference):
        return kid_from_features(quick_judges.features(images), quick_judges.features(reference))

    test = glyphs["test"]
    red = torch.as_tensor(np.array(test.fields["colour_name"]) == "red")
    halves = torch.randperm(len(test), generator=torch.Generator().manual_seed(0)).chunk(2)
    like = judge_kid(test.images[halves[0]], test.images[halves[1]])  # two random halves of one split
    shifted = judge_kid(test.images[red], test.images)  # one colour against all eight
    assert quick_judges.features(test.images[:4]).shape == (4, 64)
    assert abs(like["kid"]) < 3 * like["kid_std"] + 1e-3 and shifted["kid"] > 10 * max(like["kid"], 1e-4)


@pytest.mark.slow
def test_cached_judges_reach_98_percent_on_letter_and_colour(tmp_path, monkeypatch, glyphs):
    from dlc.eval.glyphs import judge_accuracy, load_glyph_judges

    monkeypatch.setenv("DLC_CACHE", str(tmp_path))
    judges = load_glyph_judges(32)  # trains (a few minutes), measures on the test split, saves
    assert judges.accuracy["letter"] >= 0.98 and judges.accuracy["colour"] >= 0.98
    again = load_glyph_judges(32)  # from the cache
    assert again.accuracy == judges.accuracy
    assert judge_accuracy(again, glyphs["test"]) == pytest.approx(judges.accuracy)


def test_composition_scores_count_crosses_and_parents():
    from dlc.eval.glyphs import composition_scores

    judged = {"letter": ["K", "S", "K", "S", "A", "K", "S", "K"],
              "colour": ["blue", "red", "red", "blue", "red", "green", "red", "blue"]}
    scores = composition_scores(("K", "red"), ("S", "blue"), judged)
    assert scores["cross"] == 4 / 8 and scores["parent_a"] == 1 / 8 and scores["parent_b"] == 1 / 8
    assert scores["letter_of_a"] == 4 / 8 and scores["colour_of_b"] == 3 / 8
    as_indices = composition_scores((10, 0), (18, 4), {"letter": torch.tensor([10, 18]), "colour": torch.tensor([4, 4])})
    assert as_indices["cross"] == 0.5 and as_indices["parent_b"] == 0.5
    with pytest.raises(DataError, match="differ in letter and colour"):
        composition_scores(("K", "red"), ("K", "blue"), judged)
    with pytest.raises(DataError, match="as many letters as colours"):
        composition_scores(("K", "red"), ("S", "blue"), {"letter": ["K"], "colour": []})


def test_prompt_scores_need_both_letter_and_colour():
    from dlc.eval.glyphs import prompt_scores

    targets = [("K", "red")] * 4 + [("S", "blue")] * 2
    judged = {"letter": ["K", "K", "A", "K", "S", "S"], "colour": ["red", "blue", "red", "red", "blue", "red"]}
    scores = prompt_scores(targets, judged)
    assert scores["both"] == 3 / 6 and scores["letter"] == 5 / 6 and scores["colour"] == 4 / 6
    assert scores["per_prompt"] == {("K", "red"): 2 / 4, ("S", "blue"): 1 / 2}
    with pytest.raises(DataError, match="6 prompt targets for 2"):
        prompt_scores(targets, {"letter": ["K", "S"], "colour": ["red", "red"]})
