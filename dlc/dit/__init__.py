"""The code-conditioned DiT: the model (``model``), its objectives and samplers (``diffusion``), the
space it works in (``latents``: pixels or a VAE's latents), its run config (``config``), and
training (``training``; ``vae`` trains a small VAE for the latent space)."""

from diffusers import ConfigMixin, ModelMixin  # noqa: F401  diffusers' pipeline loader looks up the base classes here

from .config import DiTRunConfig, load_dit_run
from .diffusion import OBJECTIVES, get_objective, sample
from .latents import PixelSpace, VAESpace, make_latent_space
from .model import DIT_MODELS, DiT, create_dit

__all__ = ["DIT_MODELS", "OBJECTIVES", "DiT", "DiTRunConfig", "PixelSpace", "VAESpace", "create_dit",
           "get_objective", "load_dit_run", "make_latent_space", "sample"]
