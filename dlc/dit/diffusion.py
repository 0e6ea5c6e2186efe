"""Training objectives and samplers for the DiT.

Two objectives, both with diffusers schedulers for sampling:
- ``ddpm``: the paper's. 1000 steps, linear betas, epsilon prediction plus a learned variance
  (improved DDPM's hybrid loss: MSE on epsilon + the variational bound through the variance only).
  Samplers: ``ddpm`` (the paper: 250 steps, learned variance), ``ddim``, ``dpm`` (DPM-Solver++).
- ``flow``: flow matching with the linear interpolant x_t = (1-t) x0 + t noise and velocity
  target noise - x0 (learned faster on CPU at the same budget). Samplers: ``euler``,
  ``heun``, ``dpm`` (DPM-Solver++ with flow sigmas).

``sample`` runs classifier-free guidance in one batched pass (code and null code stacked), with a
scale, an optional interval of noise levels where guidance applies, and the number of guided
channels (all, or the first 3 as DiT's paper). Sample i's noise depends only on (seed, i).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError
from ..seeding import SampleRNG, Seed

NUM_TRAIN_TIMESTEPS = 1000


# --------------------------------------------------------------------------------------------
# DDPM with learned variance


def linear_betas(n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    scale = 1000 / n
    return torch.linspace(scale * 1e-4, scale * 0.02, n, dtype=torch.float64)


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x, mean, log_scale):
    """-log p(x) for images in [-1, 1] quantised to 256 levels (improved DDPM's decoder)."""

    def cdf(v):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv_std * (centred + 1 / 255)), cdf(inv_std * (centred - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_probs


class DDPMObjective:
    """Epsilon prediction with learned variance (the model outputs 2C channels)."""

    name = "ddpm"
    learn_sigma = True
    samplers = ("ddpm", "ddim", "dpm")
    default_sampler = "dpm"

    def __init__(self):
        betas = linear_betas()
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_var = betas * (1 - prev) / (1 - alphas_cumprod)
        self.tables = {
            "betas": betas,
            "sqrt_ab": alphas_cumprod.sqrt(),
            "sqrt_1m_ab": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_ab": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_ab": (1 / alphas_cumprod - 1).sqrt(),
            "post_logvar": torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])),
            "post_c1": betas * prev.sqrt() / (1 - alphas_cumprod),
            "post_c2": (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
        }

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.tables[name].to(like.device)[t].float().view(-1, *([1] * (like.ndim - 1)))

    def loss(self, model, x0: torch.Tensor, codes, drop) -> tuple[torch.Tensor, dict]:
        B, C = x0.shape[:2]
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (B,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = self._at("sqrt_ab", t, x0) * x0 + self._at("sqrt_1m_ab", t, x0) * noise
        eps, frac = model(xt, t.float(), codes, drop).float().split(C, dim=1)
        mse = (eps - noise).pow(2).mean()
        vlb = self._vlb(x0, xt, t, eps.detach(), frac)  # the bound trains only the variance
        return mse + vlb, {"mse": mse.item(), "vlb": vlb.item()}

    def _vlb(self, x0, xt, t, eps, frac) -> torch.Tensor:
        true_mean = self._at("post_c1", t, x0) * x0 + self._at("post_c2", t, x0) * xt
        true_logvar = self._at("post_logvar", t, x0)
        # x0 is not clipped (DiT/ADM train with clip_denoised=False): latents are not in [-1, 1]
        pred_x0 = self._at("sqrt_recip_ab", t, x0) * xt - self._at("sqrt_recipm1_ab", t, x0) * eps
        pred_mean = self._at("post_c1", t, x0) * pred_x0 + self._at("post_c2", t, x0) * xt
        min_log, max_log = true_logvar, torch.log(self._at("betas", t, x0))
        w = (frac + 1) / 2  # DiT's "learned_range" parametrisation
        pred_logvar = w * max_log + (1 - w) * min_log
        kl = normal_kl(true_mean, true_logvar, pred_mean, pred_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = discretized_gaussian_nll(x0, pred_mean, 0.5 * pred_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        # scaled by the number of steps as in improved DDPM, so the bound is on the same scale as the MSE
        return torch.where(t == 0, nll, kl).mean() * NUM_TRAIN_TIMESTEPS / 1000

    def make_scheduler(self, sampler: str):
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        common = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
        if sampler == "ddpm":
            return DDPMScheduler(**common, variance_type="learned_range", clip_sample=False)
        if sampler == "ddim":
            return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False)
        if sampler == "dpm":
            return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
        raise ConfigError(f"sampler {sampler!r} does not fit the ddpm objective; choose from {self.samplers}")


# --------------------------------------------------------------------------------------------
# Flow matching


class FlowObjective:
    """Velocity prediction on the linear path from data (t=0) to noise (t=1).

    ``time_sampling``: training times uniform in [0, 1], or ``logit_normal`` (sigmoid of a standard
    normal: Stable Diffusion 3's choice, which spends the steps on the middle noise levels)."""

    name = "flow"
    learn_sigma = False
    samplers = ("euler", "heun", "dpm")
    default_sampler = "euler"
    time_samplings = ("uniform", "logit_normal")

    def __init__(self, time_sampling: str = "uniform"):
        if time_sampling not in self.time_samplings:
            raise ValueError(f"unknown time_sampling {time_sampling!r}; choose from {self.time_samplings}")
        self.time_sampling = time_sampling

    def loss(self, model, x0: torch.Tensor, codes, drop) -> tuple[torch.Tensor, dict]:
        B = x0.shape[0]
        logit_normal = self.time_sampling == "logit_normal"
        t = torch.sigmoid(torch.randn(B, device=x0.device)) if logit_normal else torch.rand(B, device=x0.device)
        noise = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * noise
        v = model(xt, t * NUM_TRAIN_TIMESTEPS, codes, drop).float()
        mse = (v - (noise - x0)).pow(2).mean()
        return mse, {"mse": mse.item()}

    def make_scheduler(self, sampler: str):
        from diffusers import (
            DPMSolverMultistepScheduler,
            FlowMatchEulerDiscreteScheduler,
            FlowMatchHeunDiscreteScheduler,
        )

        if sampler in ("euler", "heun"):
            kind = FlowMatchEulerDiscreteScheduler if sampler == "euler" else FlowMatchHeunDiscreteScheduler
            return kind(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=1.0)
        if sampler == "dpm":
            return DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, use_flow_sigmas=True,
                                               prediction_type="flow_prediction", flow_shift=1.0,
                                               algorithm_type="dpmsolver++", solver_order=2)
        raise ConfigError(f"sampler {sampler!r} does not fit the flow objective; choose from {self.samplers}")


OBJECTIVES = {"ddpm": DDPMObjective, "flow": FlowObjective}


def get_objective(name: str, **options):
    """An objective by name; ``options`` go to its constructor (flow: ``time_sampling``)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {list(OBJECTIVES)}")
    return OBJECTIVES[name](**options)


# --------------------------------------------------------------------------------------------
# Sampling


def scheduler_input(scheduler, out: torch.Tensor, channels: int) -> torch.Tensor:
    """What ``scheduler.step`` takes from the model's output: the learned variance channels only
    for a scheduler that uses them (DDPM with ``variance_type="learned_range"``)."""
    learned = getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range")
    return out if learned else out[:, :channels]


def guided_output(model, x, t, codes, scale: float, channels: int | None, apply: bool) -> torch.Tensor:
    """The model's output with classifier-free guidance: null + scale * (code - null), on the
    first ``channels`` channels (None: all of the prediction; learned-variance channels come from
    the conditional half). Scale 1 (or ``apply`` False) is a single conditional pass."""
    tt = torch.full((x.shape[0],), t, device=x.device)
    if scale == 1.0 or not apply or codes is None:
        return model(x, tt, codes)
    B = x.shape[0]
    drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(x.device)
    both = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([codes, codes]), drop)
    cond, null = both.chunk(2)
    pred_channels = x.shape[1]
    k = pred_channels if channels is None else min(channels, pred_channels)
    guided = cond.clone()
    guided[:, :k] = null[:, :k] + scale * (cond[:, :k] - null[:, :k])
    return guided


@torch.no_grad()
def sample(model, objective, codes: torch.Tensor | None, *, num: int | None = None, seed: Seed = 0,
           indices: Sequence[int] | None = None, steps: int = 50, sampler=None,
           guidance_scale: float = 1.0, guidance_channels: int | None = None,
           guidance_interval: tuple[float, float] = (0.0, 1.0), progress: bool = False,
           on_step: Callable[[], object] | None = None) -> torch.Tensor:
    """Generate a batch: returns model-space samples (B, C, H, W) (pixels in [-1, 1], or latents).

    ``codes``: (B, L) long, (B, L, V) soft, or None (unconditional; then give ``num``).
    ``indices``: the global index of each sample (default 0..B-1): noise depends on (seed, index).
    ``sampler``: a name from ``objective.samplers`` (default: the objective's), or a diffusers
    scheduler instance (a pipeline's own).
    ``guidance_interval``: noise levels (0 = clean, 1 = pure noise) where guidance applies.
    ``on_step()`` is called after each denoising step (a pipeline's progress bar).
    """
    from ..progress import tqdm

    cfg = model.config
    device = next(model.parameters()).device
    batch = codes.shape[0] if codes is not None else num
    indices = list(range(batch)) if indices is None else list(indices)
    if len(indices) != batch:
        raise ValueError(f"{len(indices)} indices for a batch of {batch}")
    scheduler = sampler if hasattr(sampler, "set_timesteps") else objective.make_scheduler(
        sampler or objective.default_sampler)
    scheduler.set_timesteps(steps, device=device)
    rng = SampleRNG(seed, indices)
    # every scheduler here starts from unit noise and needs no input scaling
    x = rng.randn(cfg.in_channels, cfg.image_size, cfg.image_size).to(device)
    codes = codes.to(device) if codes is not None else None
    lo, hi = guidance_interval
    for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
        level = float(t) / NUM_TRAIN_TIMESTEPS
        # the scheduler's timestep is the model's time for both objectives (flow: sigma * 1000, as in training)
        out = guided_output(model, x, float(t), codes, guidance_scale,
                            guidance_channels, lo <= level <= hi).float()
        out = scheduler_input(scheduler, out, cfg.in_channels)
        x = scheduler.step(out, t, x, generator=rng.generators, return_dict=False)[0]
        if on_step is not None:
            on_step()
    return x

