"""Facts of the paper's recipe (the authors' DINOv2 fork and DiT code) that the presets rely on."""

import math

import pytest
import torch

from dlc.dit.diffusion import DDPMObjective


def test_learned_variance_bound_does_not_clip_x0_outside_minus_one_one():
    """DiT/ADM fit the variance with clip_denoised=False: the predicted x0 of latents outside
    [-1, 1] enters the posterior mean as it is. Hand computation of the KL term (in bits) at t=500."""
    objective = DDPMObjective()
    x0 = torch.full((1, 1, 1, 1), 3.0)
    xt = torch.full((1, 1, 1, 1), 2.0)
    eps = torch.full((1, 1, 1, 1), -0.5)
    frac = torch.full((1, 1, 1, 1), 0.2)
    t = torch.tensor([500])

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    a, a_prev, b = ab[500].item(), ab[499].item(), betas[500].item()
    c1, c2 = b * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - b) / (1 - a)
    pred_x0 = (2.0 - math.sqrt(1 - a) * -0.5) / math.sqrt(a)  # about 3.2: a clamp would make it 1
    true_mean, pred_mean = c1 * 3.0 + c2 * 2.0, c1 * pred_x0 + c2 * 2.0
    true_logvar = math.log(b * (1 - a_prev) / (1 - a))
    pred_logvar = 0.6 * math.log(b) + 0.4 * true_logvar
    kl = 0.5 * (-1 + pred_logvar - true_logvar + math.exp(true_logvar - pred_logvar)
                + (true_mean - pred_mean) ** 2 * math.exp(-pred_logvar))
    expected = kl / math.log(2.0)

    got = objective._vlb(x0, xt, t, eps, frac).item()
    assert got == pytest.approx(expected, rel=1e-4)
