"""The space the DiT works in: pixels (the CPU default) or the latents of a diffusers VAE.

    space = make_latent_space("pixel", image_size=32, channels=3)
    space = make_latent_space("stabilityai/sd-vae-ft-ema", image_size=256)   # or a local folder
    z = space.encode(images)        # images float [-1, 1] (B, 3, H, W) -> model space
    images = space.decode(z)
"""

from __future__ import annotations

import torch

from ..saved import loading_errors


class PixelSpace:
    """The identity: the DiT sees images in [-1, 1]."""

    def __init__(self, image_size: int, channels: int = 3):
        self.size, self.channels = image_size, channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(-1, 1)


class VAESpace:
    """A diffusers ``AutoencoderKL``: 8x downsampling, latents scaled by the VAE's scaling factor
    (0.18215 for the Stable Diffusion VAE the paper uses)."""

    def __init__(self, vae, image_size: int):
        self.vae = vae.eval().requires_grad_(False)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.size, self.channels = image_size // factor, vae.config.latent_channels
        self.scale = vae.config.scaling_factor

    @classmethod
    def from_pretrained(cls, name_or_path: str, image_size: int, **kwargs) -> VAESpace:
        from diffusers import AutoencoderKL

        with loading_errors(AutoencoderKL, name_or_path, kwargs.get("subfolder")):
            return cls(AutoencoderKL.from_pretrained(name_or_path, **kwargs), image_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.vae.dtype) / self.scale).sample.float().clamp(-1, 1)


def make_latent_space(spec: str, image_size: int, channels: int = 3):
    """``"pixel"``, or a diffusers VAE by hub name or local folder."""
    return PixelSpace(image_size, channels) if spec == "pixel" else VAESpace.from_pretrained(spec, image_size)
