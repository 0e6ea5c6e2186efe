"""A small VAE trained on the dataset (``dlc train vae``, ``python train/vae.py``): a latent space for
the DiT where no pretrained VAE fits (the paper's SD VAE leaves a 4x4 latent at 32 px).

The model is a diffusers ``AutoencoderKL`` built from a config, trained with a reconstruction loss
(L1 + MSE on pixels in [-1, 1]) and a small KL term. At the end the latents' scaling factor (1 / std
of the training set's latent means, as Stable Diffusion's 0.18215) is measured and written into the
exported model's config, so ``latent=<run>/model`` in a DiT config works like any diffusers VAE.

    dlc train vae --config emoji
    dlc train dit --config emoji latent=runs/emoji/vae/model model.arch=DiT-N/1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import NonNegativeFloat, PositiveInt, TrainConfig
from ..data import DataConfig, some_images, to_float
from ..data.folder import MissingSplitError
from ..imageio import save_grid
from ..runs import RunDir
from ..training import fit, seed_everything


@dataclass
class VAEModelConfig:
    """``AutoencoderKL`` arguments: each entry of ``block_out_channels`` after the first halves the size."""

    block_out_channels: tuple[int, ...] = (64, 128, 128)
    latent_channels: PositiveInt = 4
    layers_per_block: PositiveInt = 1
    norm_num_groups: PositiveInt = 32


@dataclass
class VAERunConfig:
    run_dir: str = "runs/emoji/vae"
    data: DataConfig = field(default_factory=DataConfig)
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    kl_weight: NonNegativeFloat = 1e-6
    sample_num: PositiveInt = 16  # reconstructions in the sample grids
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, batch_size=32, warmup_steps=100))



def build_vae(config: VAERunConfig, channels: int, size: int):
    from diffusers import AutoencoderKL

    m = config.model
    blocks = len(m.block_out_channels)
    return AutoencoderKL(in_channels=channels, out_channels=channels, block_out_channels=tuple(m.block_out_channels),
                         down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                         latent_channels=m.latent_channels, layers_per_block=m.layers_per_block,
                         norm_num_groups=m.norm_num_groups, sample_size=size, scaling_factor=1.0)


def vae_loss(vae, images: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """Reconstruction (L1 + MSE) of a posterior sample plus ``kl_weight`` x KL to the unit Gaussian."""
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample()).sample.float()
    l1, mse = (recon - images).abs().mean(), (recon - images).pow(2).mean()
    kl = posterior.kl().mean() / images[0].numel()
    return l1 + mse + kl_weight * kl, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


STATISTICS_IMAGES = 4096  # the scaling factor and the test error are measured on at most this many images


@torch.no_grad()
def latent_scale(vae, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of the latent means of uint8 ``images``: latents scaled by it have unit variance."""
    device = next(vae.parameters()).device
    means = [vae.encode(to_float(chunk).to(device)).latent_dist.mean.float().cpu() for chunk in images.split(batch_size)]
    return float(1 / torch.cat(means).std())


def train(config: VAERunConfig) -> RunDir:
    seed_everything(config.train.seed)
    dataset = config.data.load("train")
    image = dataset[0]["image"]
    vae = build_vae(config, image.shape[0], image.shape[-1])
    run = RunDir(config.run_dir)
    reference = torch.stack([dataset[i]["image"] for i in range(min(config.sample_num, len(dataset)))])

    def loss_fn(net, batch, info):
        return vae_loss(net, to_float(batch["image"]), config.kl_weight)

    def sample_fn(ema_vae, step, run_dir):
        with torch.no_grad():
            x = to_float(reference).to(next(ema_vae.parameters()).device)
            recon = ema_vae.decode(ema_vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        save_grid(torch.cat([reference, ((recon.cpu() + 1) * 127.5).round().to(torch.uint8)]),
                  run_dir.samples / f"step-{step:07d}.png", nrow=len(reference), scale=2)

    ema = fit(run, config.train, vae, dataset, loss_fn, config=config, sample_fn=sample_fn, desc="train vae")
    ema.model.register_to_config(scaling_factor=latent_scale(ema.model, some_images(dataset, STATISTICS_IMAGES)))
    ema.model.save_pretrained(run.model_dir)
    metrics = {"scaling_factor": ema.model.config.scaling_factor}
    try:
        test = some_images(config.data.load("test"), STATISTICS_IMAGES)
        metrics["test_mse"] = F.mse_loss(*_reconstruct(ema.model, test)).item()
    except MissingSplitError:  # an image folder without a test/ subfolder: no test error to report
        pass
    run.log_metrics(config.train.steps, **metrics)
    return run


@torch.no_grad()
def _reconstruct(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions, originals) as floats in [-1, 1], through the latent means."""
    device = next(vae.parameters()).device
    x = to_float(images)
    recon = torch.cat([vae.decode(vae.encode(chunk.to(device)).latent_dist.mean).sample.clamp(-1, 1).cpu()
                       for chunk in x.split(256)])
    return recon, x
