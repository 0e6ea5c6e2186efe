"""The SEM encoder: a ViT whose CLS and register tokens pass through a Simplicial Embedding to
become a Discrete Latent Code (``model``, ``sem``), and its self-supervised training (``training``)."""

from diffusers import ConfigMixin, ModelMixin  # noqa: F401  diffusers' pipeline loader looks up the base classes here

from .model import DLCEncoder, create_backbone
from .sem import SimplicialEmbedding

__all__ = ["DLCEncoder", "SimplicialEmbedding", "create_backbone"]
