"""The toy experiment (`dlc toy`): the mixture's density, the KDE estimate of KL, the GMM, the
conditioned model, and the command at tiny sizes."""

import json
import math

import pytest
import torch

from dlc.cli import main
from dlc.toy import (
    GridMixture,
    ToyConfig,
    agreement,
    fit_gmm,
    kde_log_prob,
    kl_estimate,
    run,
    sample_flow,
    train_model,
)


def test_the_mixture_density_matches_the_formula_and_integrates_to_one():
    one = GridMixture(1, variance=0.1)
    assert one.log_prob(torch.zeros(1, 2)).item() == pytest.approx(-math.log(2 * math.pi * 0.1))

    nine = GridMixture(9, spacing=1.0, variance=0.1)
    assert sorted(set(nine.means[:, 0].tolist())) == [-1.0, 0.0, 1.0]  # a centred 3x3 grid, spacing 1
    at_centre = torch.tensor([[0.0, 0.0]])
    expected = math.log(sum(math.exp(-(a * a + b * b) / 0.2) for a in (-1, 0, 1) for b in (-1, 0, 1))
                        / (9 * 2 * math.pi * 0.1))
    assert nine.log_prob(at_centre).item() == pytest.approx(expected)

    step = 0.02
    axis = torch.arange(-4, 4 + step / 2, step, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    assert float(nine.log_prob(grid).exp().sum() * step**2) == pytest.approx(1.0, abs=1e-3)
    assert nine.scale == pytest.approx(math.sqrt(8 / 12 + 0.1))  # the std of one coordinate of the mixture


def test_samples_come_from_their_gaussian():
    mixture = GridMixture(4, variance=0.1)
    x, index = mixture.sample(20_000, torch.Generator().manual_seed(0))
    for k in range(4):
        mine = x[index == k]
        assert torch.allclose(mine.mean(0), mixture.means[k], atol=0.02)
        assert torch.allclose(mine.var(0), torch.full((2,), 0.1, dtype=torch.float64), rtol=0.08)


def test_the_kde_is_a_normalised_gaussian_kernel_sum():
    centre = torch.zeros(1, 2)
    x = torch.tensor([[0.0, 0.0], [0.3, -0.4]])
    h = 0.2
    expected = -(x.double().pow(2).sum(1)) / (2 * h**2) - math.log(2 * math.pi * h**2)
    assert torch.allclose(kde_log_prob(x, centre, h), expected)
    two = kde_log_prob(x, torch.tensor([[0.0, 0.0], [1.0, 1.0]]), [h, 2 * h])  # several bandwidths at once
    assert two.shape == (2, 2) and two[0, 0].item() == pytest.approx(math.log(0.5) - math.log(2 * math.pi * h**2), abs=1e-6)


def test_the_kl_estimate_is_near_zero_for_data_and_clearly_positive_for_a_shift():
    mixture = GridMixture(9)
    g = torch.Generator().manual_seed(1)
    data, _ = mixture.sample(2_000, g)
    reference, _ = mixture.sample(8_000, g)
    same = kl_estimate(mixture, data, reference, 0.1)
    shifted = kl_estimate(mixture, data, reference + torch.tensor([0.5, 0.0], dtype=torch.float64), 0.1)
    assert abs(same) < 0.03
    assert shifted > 0.3  # half a spacing off: the model's modes sit between the data's


def test_the_gmm_finds_the_grid():
    mixture = GridMixture(9)
    g = torch.Generator().manual_seed(2)
    x, index = mixture.sample(10_000, g)
    gmm = fit_gmm(x, 9, g)
    nearest_true = torch.cdist(gmm.means, mixture.means).min(1).values
    assert nearest_true.max() < 0.1  # every component on a true mean
    assert len(set(torch.cdist(gmm.means, mixture.means).argmin(1).tolist())) == 9  # one each
    assert gmm.weights.sum().item() == pytest.approx(1.0)
    # about the Bayes rate: neighbouring Gaussians overlap (std 0.32, spacing 1)
    assert 0.8 < agreement(gmm.predict(x), index, 9) < 0.9


def test_conditioning_on_the_oracle_index_puts_samples_at_its_mean():
    mixture = GridMixture(4)
    g = torch.Generator().manual_seed(3)
    x, index = mixture.sample(4_000, g)
    config = ToyConfig(ns=(4,), steps=400, batch_size=256)
    model, loss = train_model(config, (x / mixture.scale).float(), index, 4, "oracle")
    for k in range(4):
        samples = sample_flow(model, 400, 32, g, torch.full((400,), k)).double() * mixture.scale
        distances = torch.cdist(samples.mean(0, keepdim=True), mixture.means)[0]
        assert distances.argmin().item() == k and distances[k] < 0.15
        assert 0.05 < samples.var(0).mean().item() < 0.2  # about the variance 0.1, not collapsed


def test_cli_help_and_a_tiny_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "--help"])
    assert exit_info.value.code == 0
    assert "--steps" in capsys.readouterr().out

    out = tmp_path / "toy"
    assert main(["toy", "--quick", "--n", "4", "9", "--steps", "20", "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| N |" in printed and "oracle index" in printed
    results = json.loads((out / "results.json").read_text())
    assert {"config", "rows", "seconds", "kl_estimator"} <= set(results)
    assert results["config"]["ns"] == [4, 9] and results["config"]["steps"] == 20
    assert [r["n"] for r in results["rows"]] == [4, 9]
    for row in results["rows"]:
        assert set(row["kl"]) == {"unconditional", "gmm", "oracle", "floor"}
        assert all(math.isfinite(v) for v in row["kl"].values())
        assert 0 <= row["gmm_agreement"] <= 1 and row["bandwidth"] > 0
    assert (out / "kl.png").stat().st_size > 5000 and (out / "samples.png").stat().st_size > 5000

    # a re-run reuses every N; two worker processes give the same numbers as one
    assert main(["toy", "--quick", "--n", "4", "9", "--steps", "20", "--out", str(out), "--workers", "1"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(r["reused"] for r in again["rows"])
    side_by_side = run(ToyConfig(**{**results["config"], "ns": (4, 9)}), tmp_path / "workers", progress=False, workers=2)
    assert [r["kl"] for r in side_by_side["rows"]] == [r["kl"] for r in results["rows"]]


def test_n_must_be_a_perfect_square(tmp_path, capsys):
    assert main(["toy", "--n", "10", "--out", str(tmp_path)]) == 1
    assert "perfect square" in capsys.readouterr().err


def test_a_setting_out_of_range_is_one_line(tmp_path, capsys):
    assert main(["toy", "--n", "4", "--steps", "0", "--out", str(tmp_path / "toy")]) == 1
    assert capsys.readouterr().err.strip() == "dlc toy: error: steps: 0 is out of range; expected >= 1"
    assert not (tmp_path / "toy").exists()  # refused before any work
