"""The authors' SEM encoder (DINOv2 ViT-L/14 with 4 registers and a SEM head) -> our ``DLCEncoder``.

The backbone goes through timm's own conversion of original DINOv2 weights
(``timm.models.vision_transformer.checkpoint_filter_fn``: the CLS position folded into the CLS
token, registers without positions, the position table resampled bicubically with antialiasing to
the crop's grid, as the authors' config does with ``interpolate_offset: 0``). The SEM head maps as

    sem_embed.weight  (L*V, (1+R)*D)  -> sem.linear.weight   (CLS and registers before the final norm)
    sem_norm.*        (L*V,)          -> sem.norm.*          (one LayerNorm over all L*V logits, eps 1e-6)
    sem_out.weight    (D, L*V)        -> project.weight      (training only: probabilities back to width D)
    mask_token        (1, D)          -> mask_token          (iBOT's masked-patch token, training only)

and the code is the per-group argmax of the normed logits viewed as (L, V). Dropped on purpose:
``sem_cls_norm`` (built by the authors' model but unused by its forward) and, in a teacher
checkpoint, the DINO and iBOT projection heads (``dino_head.``/``ibot_head.``: training losses only).

The weights fix L*V but not L and V apart: give ``code_length`` (or ``vocab_size``), or convert into
a pipeline folder, whose DiT's code table fixes both. Heads are not in the weights either: DINOv2's
for the width (ViT-L: 16) unless given.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..encoder import DLCEncoder
from ..errors import CheckpointError
from .common import (
    add_part,
    checkpoint_state,
    count_indexed,
    load_checked,
    pipeline_code_shape,
    renamed,
    require,
    strip_prefixes,
)

WHAT = "SEM encoder checkpoint"
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1536: 24}  # DINOv2 ViT-S, B, L, g
TRAINING_HEADS = ("dino_head.", "ibot_head.")
UNUSED = ("sem_cls_norm.weight", "sem_cls_norm.bias")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEM_KEYS = {"sem_embed.weight": "sem.linear.weight", "sem_norm.weight": "sem.norm.weight",
            "sem_norm.bias": "sem.norm.bias", "sem_out.weight": "project.weight"}


def encoder_state_dict(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """The backbone + SEM state dict of a DINOv2 teacher checkpoint (``{"teacher": ...}``, keys
    ``backbone.*``, possibly ``teacher.backbone.*``) or of a plain state dict in the same names;
    chunked blocks (``blocks.c.i.``, DINOv2's FSDP layout) are flattened to ``blocks.i.``."""
    state = checkpoint_state(source, WHAT, "teacher", containers=("teacher",), prefixes=("teacher.",))
    state = strip_prefixes({k: v for k, v in state.items() if not k.startswith(TRAINING_HEADS)}, ("backbone.",))
    state = {k: v for k, v in state.items() if k not in UNUSED}
    if any(re.match(r"blocks\.\d+\.\d+\.", k) for k in state):
        state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}
    return state


def code_shape(state: dict, code_length: int | None, vocab_size: int | None) -> tuple[int, int]:
    """(L, V): the SEM width L*V from the weights, split by the given L or V."""
    total = require(state, "sem_embed.weight", WHAT, ndim=2).shape[0]
    if code_length is None and vocab_size is None:
        raise CheckpointError(f"{WHAT}: the SEM makes {total} = L*V logits; give the code length L (or V), "
                              "or convert into a pipeline folder with the DiT (its code table fixes L and V)")
    length = code_length or total // vocab_size
    if total % length or (vocab_size is not None and length * vocab_size != total):
        raise CheckpointError(f"{WHAT}: the SEM makes {total} logits, which is not L={length} x V={vocab_size}")
    return length, total // length


def backbone_kwargs(state: dict, num_heads: int | None) -> dict:
    """The timm ViT's sizes, read from the DINOv2 weights."""
    patch = require(state, "patch_embed.proj.weight", WHAT, ndim=4)
    width = patch.shape[0]
    heads = num_heads or HEADS_BY_WIDTH.get(width)
    if heads is None or width % heads:
        raise CheckpointError(f"{WHAT}: width {width} is not a DINOv2 size whose head count is known; give num_heads")
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    mlp = require(state, "blocks.0.mlp.fc1.weight", WHAT, ndim=2).shape[0]
    return dict(patch_size=patch.shape[2], embed_dim=width, depth=count_indexed(state, "blocks."), num_heads=heads,
                reg_tokens=registers, mlp_ratio=mlp / width,
                init_values=1e-5 if "blocks.0.ls1.gamma" in state else None)


def convert_encoder(source: str | Path | dict, code_length: int | None = None, vocab_size: int | None = None,
                    num_heads: int | None = None, image_size: int = 224, input_size: int = 256) -> DLCEncoder:
    """The authors' DINOv2 + SEM checkpoint -> our DLCEncoder (eval mode), every key and shape
    checked. Images arrive at ``input_size`` and are centre-cropped to ``image_size`` (ImageNet's
    256 -> 224), normalised with ImageNet's mean and std."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = encoder_state_dict(source)
    length, vocab = code_shape(state, code_length, vocab_size)
    mask = require(state, "mask_token", WHAT)
    kwargs = backbone_kwargs(state, num_heads)
    encoder = DLCEncoder(backbone="vit_large_patch14_reg4_dinov2", backbone_kwargs=kwargs, image_size=image_size,
                         input_size=input_size, in_channels=state["patch_embed.proj.weight"].shape[1],
                         code_length=length, vocab_size=vocab, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         use_mask_token=True, sem_eps=1e-6)
    head = {k: state[k] for k in SEM_KEYS if k in state}
    backbone = {k: v for k, v in state.items() if k not in SEM_KEYS}
    backbone = checkpoint_filter_fn(backbone, encoder.vit)  # timm's DINOv2 conversion (drops mask_token)
    converted = {f"vit.{k}": v for k, v in backbone.items()} | renamed(head, SEM_KEYS.get, WHAT)
    converted["mask_token"] = mask.reshape(-1)
    return load_checked(encoder, converted, WHAT).eval()


def add_encoder(source: str | Path | dict, out_dir: str | Path, num_heads: int | None = None,
                image_size: int = 224, input_size: int = 256) -> DLCEncoder:
    """Convert the encoder into the pipeline folder ``out_dir``: its DiT's code table gives L and V."""
    length, vocab = pipeline_code_shape(out_dir)
    encoder = convert_encoder(source, length, vocab, num_heads, image_size, input_size)
    add_part(out_dir, "encoder", encoder, ("dlc.encoder", "DLCEncoder"))
    return encoder
