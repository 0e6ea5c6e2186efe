"""A frozen pretrained backbone that installs offline: the FID network's Inception-v3, read at two depths.

The paper fine-tunes DINOv2 under the SEM; no such network can be downloaded here, but the FID
Inception (pretrained on ImageNet, unpacked by ``dlc data assets``) is one. Its middle blocks keep
what small images are made of. Linear probes on the glyphs' test split, each block's map averaged
over space at 75 px input (``benchmarks/pretrained_features.py`` measures the last block):

    block            width   letter  colour  background
    Conv2d_4a_3x3      192    0.992   1.000   1.000
    Mixed_6a           768    1.000   1.000   1.000
    Mixed_7c (FID)    2048    0.941   0.807   0.713

The SEM reads the averaged maps of ``blocks`` side by side (by default an early block, where colour
is plain, and Mixed_6a, where shapes are), each channel standardised with statistics of the training
images (``calibrate``): without it the few large channels decide the codes (measured on glyphs: the
letter probe from codes falls from 0.98 to 0.78).

    trunk = FrozenInception(blocks=("Conv2d_4a_3x3", "Mixed_6a"), input_px=75)
    trunk.calibrate(normalised_training_images)
    tokens = trunk(x)       # (B, 1, 960): one token, the standardised averaged maps

``x`` are crops normalised to [-1, 1] (the encoder's mean and std of 0.5: Inception's own input
scaling), any size; each is resized to ``input_px`` (TensorFlow's bilinear resize, as FID does).
The trunk never trains and stays in eval mode (its batch norms keep their ImageNet statistics);
``norm`` is the trainable LayerNorm that stands in for a ViT's final norm in the SSL losses.
Inception is then no longer an independent judge of this encoder's pictures: the demo says so
beside every FID.
"""

from __future__ import annotations

import torch
from torch import nn

INCEPTION_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
INCEPTION_WIDTHS = (32, 32, 64, 64, 80, 192, 192, 256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048)
FROZEN_BACKBONES = ("fid_inception",)  # the names DLCEncoder's ``backbone`` takes besides timm ViTs


class FrozenInception(nn.Module):
    num_prefix_tokens = 1  # the one token the SEM reads; there are no patch tokens (no iBOT)

    def __init__(self, blocks: tuple[str, ...] | list[str] = ("Conv2d_4a_3x3", "Mixed_6a"), input_px: int = 75,
                 weights: str | None = None):
        super().__init__()
        from ..errors import ConfigError
        from ..eval.fidelity import INCEPTION_MIN_SIZE, inception_trunk

        unknown = [b for b in blocks if b not in INCEPTION_BLOCKS]
        if unknown or not blocks:
            raise ConfigError(f"unknown Inception block {', '.join(map(repr, unknown)) or '(none given)'}; "
                              f"known: {', '.join(INCEPTION_BLOCKS)}")
        if input_px < INCEPTION_MIN_SIZE:
            raise ConfigError(f"Inception takes inputs of {INCEPTION_MIN_SIZE} px and up; got input_px={input_px}")
        self.input_px = input_px
        self.read_at = sorted(INCEPTION_BLOCKS.index(b) for b in set(blocks))
        self.embed_dim = sum(INCEPTION_WIDTHS[i] for i in self.read_at)
        # kept out of the module's parameters (a plain attribute): the trunk is the FID network's own
        # weights, loaded again from its file, so the encoder's model folder and checkpoints hold the
        # trained part alone (diffusers' loader cannot fill a TorchScript module either)
        object.__setattr__(self, "trunk", inception_trunk(weights)[:self.read_at[-1] + 1].eval())
        self.register_buffer("feature_mean", torch.zeros(self.embed_dim))
        self.register_buffer("feature_std", torch.ones(self.embed_dim))
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-6)

    def _apply(self, fn, recurse: bool = True):
        self.trunk._apply(fn)  # .to(device or dtype) reaches the unregistered trunk too
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def averaged_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, h, w) -> (B, D): each read block's map averaged over space, side by side."""
        from ..eval.fidelity import _tf_resize

        x, pooled = _tf_resize(x, self.input_px), []  # (B, 3, input_px, input_px)
        for i, layer in enumerate(self.trunk):
            x = layer(x)  # (B, C_i, h_i, w_i)
            if i in self.read_at:
                pooled.append(x.mean((2, 3)))  # (B, C_i)
        return torch.cat(pooled, 1)  # (B, D)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, batch_size: int = 256) -> None:
        """Set the per-channel standardisation from normalised images (N, 3, h, w): no labels."""
        maps = torch.cat([self.averaged_maps(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])
        self.feature_mean.copy_(maps.mean(0))
        self.feature_std.copy_(maps.std(0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, h, w) in [-1, 1] -> (B, 1, D): the standardised averaged maps."""
        return ((self.averaged_maps(x) - self.feature_mean) / self.feature_std).unsqueeze(1)  # (B, 1, D)
