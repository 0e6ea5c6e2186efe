"""The SEM encoder: a timm ViT whose CLS and register tokens become a Discrete Latent Code.

    enc = DLCEncoder.from_pretrained("runs/emoji/encoder")     # a run directory or a model folder
    codes = enc.encode(images)          # (B, L) long
    probs = enc.probs(images, tau=0.5)  # (B, L, V)
    feats = enc.features(images)        # (B, D) continuous features (the normed CLS token)

``images`` are (B, C, input_size, input_size), either uint8 in [0, 255] or float in [-1, 1]
(the library's convention); the encoder centre-crops them to ``image_size`` (or, with
``resize_input``, resizes the whole image to it, as the authors do) and normalises them with its
``mean``/``std``. As in the paper, the SEM reads the backbone's tokens BEFORE its final
norm (CLS and registers, concatenated); during training, the code's probabilities are mapped back
to the backbone width by a bias-free linear layer and the backbone's final norm, and that vector
stands in for the CLS output in the self-supervised losses.

With ``backbone="fid_inception"`` the backbone is instead the frozen FID Inception
(``dlc.encoder.inception``): the SEM reads one token, the standardised averaged maps of a few of its
blocks; only the SEM and the final norm train, and the backbone's weights are read from the FID
network's file, never saved with the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..data import to_float
from ..errors import ConfigError, DataError
from ..saved import CheckedLoading
from .inception import FROZEN_BACKBONES, FrozenInception
from .sem import SimplicialEmbedding


def create_backbone(name: str, image_size: int, in_channels: int, pretrained: bool | str = False,
                    **kwargs) -> nn.Module:
    """A timm ViT by name, headless, accepting any crop size (position embeddings are resampled), or
    ``fid_inception``: the frozen FID Inception read at a few blocks (``FrozenInception``; kwargs
    ``blocks``, a list of block names, and ``input_px``), already pretrained.

    ``pretrained``: False (random init), True (the public weights, from the hub or timm's cache) or
    the path of a local weights file (.safetensors/.bin/.pth)."""
    import timm

    if name == "fid_inception":
        if pretrained:
            raise ConfigError("fid_inception is the FID network's own pretrained trunk: leave model.pretrained empty")
        if in_channels != 3:
            raise ConfigError(f"fid_inception reads colour images (3 channels); this data has {in_channels}")
        return FrozenInception(**kwargs)

    if not timm.is_model(name):
        raise ConfigError(f"unknown timm backbone {name!r}: give a ViT such as vit_tiny_patch16_224 "
                          f"(timm.list_models('vit_*') lists them) or one of {', '.join(FROZEN_BACKBONES)}")
    options = {"pretrained_cfg_overlay": {"file": str(pretrained)}} if isinstance(pretrained, str) else {}
    try:
        model = timm.create_model(name, pretrained=bool(pretrained), img_size=image_size, in_chans=in_channels,
                                  num_classes=0, dynamic_img_size=True, **options, **kwargs)
    except TypeError as e:  # not a ViT (no img_size), or backbone_kwargs it does not take
        raise ConfigError(f"backbone {name} does not take these arguments ({e}): the encoder needs a timm "
                          "VisionTransformer") from e
    if getattr(model, "cls_token", None) is None:
        raise ConfigError(f"{name} is not a ViT with a CLS token (timm VisionTransformer)")
    return model


class DLCEncoder(CheckedLoading, ModelMixin, ConfigMixin):
    """A ViT backbone + Simplicial Embedding; see the module docstring for inputs and outputs.

    ``backbone`` is any timm ViT name (e.g. ``vit_large_patch14_reg4_dinov2``); ``backbone_kwargs``
    override its architecture (tiny CPU models: patch_size, embed_dim, depth, num_heads,
    reg_tokens). ``fid_inception`` is instead the frozen FID Inception (``FrozenInception``, kwargs
    ``blocks`` and ``input_px``): only the SEM and its norm train, on the standardised averaged maps
    of those blocks. ``input_size`` is the size images arrive at (default ``image_size``); larger
    inputs are centre-cropped to ``image_size``, or with ``resize_input`` resized whole to it (the
    authors' ImageNet encoding: 256 -> 224, so the code sees every pixel the DiT generates; an
    antialiased bicubic resize, which commutes with a horizontal flip). ``use_mask_token`` adds the
    learned token that replaces masked patches for the iBOT loss. ``sem_eps`` is the epsilon of the
    SEM's LayerNorm (1e-6 in the authors' DINOv2 models, ``dlc convert encoder``).
    """

    @register_to_config
    def __init__(self, backbone: str = "vit_tiny_patch16_224", backbone_kwargs: dict | None = None,
                 image_size: int = 32, input_size: int | None = None, in_channels: int = 3,
                 code_length: int = 32, vocab_size: int = 64,
                 mean: tuple = (0.5, 0.5, 0.5), std: tuple = (0.5, 0.5, 0.5), use_mask_token: bool = False,
                 sem_eps: float = 1e-5, resize_input: bool = False):
        super().__init__()
        self.vit = create_backbone(backbone, image_size, in_channels, **(backbone_kwargs or {}))
        width, prefix = self.vit.embed_dim, self.vit.num_prefix_tokens
        self.sem = SimplicialEmbedding(prefix * width, code_length, vocab_size, eps=sem_eps)
        self.project = nn.Linear(code_length * vocab_size, width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(width)) if use_mask_token else None

    def load_backbone_weights(self, pretrained: bool | str = True) -> DLCEncoder:
        """Replace the backbone's weights with public ones (``True``) or a local file (a path)."""
        c = self.config
        source = create_backbone(c.backbone, c.image_size, c.in_channels, pretrained, **(c.backbone_kwargs or {}))
        self.vit.load_state_dict(source.state_dict())
        return self

    # ---- training: normalised crops of any size (a multiple of the patch size) -----------------

    def tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised crops (B, C, h, w) -> all tokens before the final norm (B, prefix + patches, D).
        ``masks`` (B, patches) bool replaces those patches by the mask token (iBOT)."""
        bb = self.vit
        if self.frozen_backbone:
            if masks is not None:
                raise ValueError("a frozen backbone has no patches to mask: iBOT needs a ViT")
            return bb(x)
        x = bb.patch_embed(x)  # (B, h', w', D): timm keeps the grid with dynamic image sizes
        if masks is not None:
            if self.mask_token is None:
                raise ValueError("masked inputs need an encoder built with use_mask_token=True")
            x = torch.where(masks.view(*x.shape[:-1], 1), self.mask_token.to(x.dtype), x)
        return bb.blocks(bb.norm_pre(bb.patch_drop(bb._pos_embed(x))))

    @property
    def frozen_backbone(self) -> bool:
        """True when the backbone never trains (``fid_inception``): its tokens can be computed once
        for the student and the teacher (``from_tokens``)."""
        return isinstance(self.vit, FrozenInception)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None, tau: float = 1.0) -> dict:
        """Training outputs: ``probs`` (B, L, V), ``embedding`` (B, D) (the SEM output mapped back
        through the final norm: the CLS stand-in for the DINO loss) and ``patches`` (B, N, D)
        (normed patch tokens, which bypass the SEM, for iBOT)."""
        return self.from_tokens(self.tokens(x, masks), tau)

    def from_tokens(self, tokens: torch.Tensor, tau: float = 1.0) -> dict:
        """``forward`` from the backbone's ``tokens`` (B, prefix + patches, D)."""
        prefix = self.vit.num_prefix_tokens
        probs = self.sem(tokens[:, :prefix].flatten(1), tau)
        embedding = self.vit.norm(self.project(probs.flatten(1)))
        return {"probs": probs, "embedding": embedding, "patches": self.vit.norm(tokens[:, prefix:])}

    # ---- inference: images as the library holds them --------------------------------------------

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] -> the backbone's input (per-channel mean/std)."""
        mean = torch.tensor(self.config.mean, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.config.std, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [-1, 1] (B, C, input_size, input_size) -> normalised crops."""
        c = self.config
        size = c.input_size or c.image_size
        if images.ndim != 4 or images.shape[1] != c.in_channels or tuple(images.shape[2:]) != (size, size):
            raise DataError(f"the encoder expects images of shape (B, {c.in_channels}, {size}, {size}) "
                            f"(uint8 in [0, 255] or float in [-1, 1]); got {tuple(images.shape)}")
        x = to_float(images) if images.dtype == torch.uint8 else images.float()
        if c.resize_input and size != c.image_size:
            x = F.interpolate(x, size=(c.image_size, c.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp(-1, 1)  # as PIL's bicubic resize to uint8
        else:
            top = (size - c.image_size) // 2
            x = x[:, :, top:top + c.image_size, top:top + c.image_size]
        return self.normalize((x.to(self.device, self.dtype) + 1) / 2)

    def _prefix(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(self.preprocess(images))
        return tokens[:, :self.vit.num_prefix_tokens].flatten(1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> Discrete Latent Codes (B, L) long, values in [0, V)."""
        return self.sem.codes(self._prefix(images))

    @torch.no_grad()
    def probs(self, images: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """Images -> the SEM's probabilities (B, L, V) at temperature ``tau`` (argmax = ``encode``)."""
        return self.sem(self._prefix(images), tau)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> continuous features (B, D): the CLS token after the backbone's final norm."""
        tokens = self.tokens(self.preprocess(images))
        return self.vit.norm(tokens[:, 0])


# model_index.json records this import path: the public one, as before the package was split
DLCEncoder.__module__ = "dlc.encoder"
