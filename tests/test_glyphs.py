"""The glyphs dataset (rendered letters with known factors), its held-out pairs, the judges that
classify glyph images, and the composition / prompt scores they feed."""

import numpy as np
import pytest
import torch

from dlc.data import load
from dlc.data.glyphs import FACTORS, glyph_plan, parse_glyph_caption, render_glyph, render_glyphs
from dlc.data.holdout import HELDOUT_GLYPHS, heldout_glyphs, is_heldout
from dlc.errors import DataError


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
    assert all(is_heldout(c) for c in captions) and is_heldout("red K") and not is_heldout("red A")
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
