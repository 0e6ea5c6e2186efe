"""Self-supervised training of the SEM encoder (DINOv2-style self-distillation through the SEM).

A student (encoder + DINO head) sees every crop of a multi-crop view; its EMA, the teacher, sees
the global crops. Losses, as in the paper:
- DINO on the SEM output (the code's probabilities mapped back through the final norm) with
  teacher centring and a teacher temperature warm-up;
- KoLeo on the same SEM output (spreads the codes out: no collapse);
- iBOT (optional): masked patch tokens of the student predict the teacher's, bypassing the SEM;
- distillation from a pretrained network (optional): the SEM output of each global crop predicts the
  frozen FID Inception's features of the same crop, so that the code learns what a network trained on
  ImageNet already sees (the glyphs' letters) instead of only what self-distillation finds first
  (their colour). Inception is then no longer an independent judge of this encoder's pictures.

With a frozen backbone (``model.backbone: fid_inception``) only the SEM, the final norm and the
heads train: the backbone's channels are standardised on 4,096 training images spread over the set
before the first step, and its tokens of each crop are computed once and read by student and teacher.

    dlc train encoder --config emoji            # or: python train/encoder.py --config emoji

The run's ``model/`` folder holds the DLCEncoder alone (the EMA teacher's): what ``dlc encode``,
the DiT and composition load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import config as configs
from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability, TrainConfig
from ..data import DataConfig, dataset_defaults, some_images, to_float
from ..errors import ConfigError
from ..runs import RunDir
from ..training import fit, seed_everything
from .model import DLCEncoder


@dataclass
class ModelConfig:
    """The encoder's architecture (``DLCEncoder`` arguments) and where its backbone starts from."""

    backbone: str = "vit_tiny_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str = ""  # "": random init; "timm": the backbone's public weights; else a weights file
    image_size: PositiveInt = 32
    input_size: PositiveInt | None = None
    code_length: PositiveInt = 32
    vocab_size: PositiveInt = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize_input: bool = False  # codes: resize the whole input to image_size (the authors) instead of a centre crop
    sem_eps: PositiveFloat = 1e-5  # the SEM LayerNorm's epsilon (the authors: 1e-6)
    drop_path: Probability = 0.0  # stochastic depth of every student block (DINOv2: 0.3, uniform over depth)


@dataclass
class CropConfig:
    """Multi-crop augmentation, done in batches on the training device (``multicrop``)."""

    global_size: PositiveInt = 32
    global_scale: tuple[Probability, Probability] = (0.32, 1.0)
    local_crops: NonNegativeInt = 4
    local_size: PositiveInt = 16
    local_scale: tuple[Probability, Probability] = (0.05, 0.32)
    # augmentations: null = the dataset's choice (dlc/data/defaults.py; an image folder's dataset.json),
    # else the generic one of GENERIC_AUGMENTATIONS (DINO's, for natural images)
    flip: bool | None = None  # random horizontal flips (generic: true)
    jitter_prob: Probability | None = None  # share of views with brightness/contrast/saturation jitter (generic: 0.8)
    brightness: NonNegativeFloat | None = None  # jitter strength (generic: 0.4)
    contrast: NonNegativeFloat | None = None  # (generic: 0.4)
    saturation: NonNegativeFloat | None = None  # (generic: 0.2)
    grayscale_prob: Probability | None = None  # share of views turned grey (generic: 0.2)

    def resolved(self, dataset_choice: Mapping[str, Any] | None = None) -> CropConfig:
        """These crops with every augmentation left null taken from ``dataset_choice`` (a
        dataset's ``augmentations``), else from ``GENERIC_AUGMENTATIONS``."""
        choice = dict(dataset_choice or {})
        unknown = set(choice) - set(GENERIC_AUGMENTATIONS)
        if unknown:
            raise ConfigError(f"unknown augmentation {', '.join(sorted(unknown))} in the dataset's defaults; "
                              f"known: {', '.join(GENERIC_AUGMENTATIONS)}")
        unset = {k: choice.get(k, generic) for k, generic in GENERIC_AUGMENTATIONS.items() if getattr(self, k) is None}
        return configs.replace(self, **unset) if unset else self


GENERIC_AUGMENTATIONS = {"flip": True, "jitter_prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                         "grayscale_prob": 0.2}


@dataclass
class SSLConfig:
    """Self-distillation: heads, temperatures, loss weights and the teacher's momentum."""

    head_hidden: PositiveInt = 512
    head_bottleneck: PositiveInt = 128
    prototypes: PositiveInt = 1024
    student_temp: PositiveFloat = 0.1
    teacher_temp: tuple[PositiveFloat, PositiveFloat] = (0.04, 0.07)  # warm-up from the first to the second
    teacher_temp_warmup: Probability = 0.3  # fraction of the steps
    center_momentum: Probability = 0.9
    momentum: tuple[Probability, Probability] = (0.992, 1.0)  # the teacher's EMA, cosine from first to second
    sem_tau: PositiveFloat = 1.0
    dino_weight: NonNegativeFloat = 1.0
    koleo_weight: NonNegativeFloat = 0.1
    ibot_weight: NonNegativeFloat = 0.0  # > 0 turns on the masked-patch loss (and the encoder's mask token)
    mask_prob: Probability = 0.5  # fraction of global crops that are masked
    mask_ratio: tuple[Probability, Probability] = (0.1, 0.5)  # of the patches of a masked crop
    distill_weight: NonNegativeFloat = 0.0  # > 0: the SEM output also predicts the FID Inception's features
    distill_size: PositiveInt = 75  # Inception's input size for the crops (75 px and up; 299: FID's own)
    # DINOv2's fine-tuning recipe (the defaults: one rate for every parameter)
    layer_decay: Probability = 1.0  # block i of n learns at layer_decay ** (n + 1 - i); embeddings at ** (n + 1)
    patch_embed_lr_scale: PositiveFloat = 1.0  # the patch embedding's extra rate factor (DINOv2: 0.2)
    freeze_last_layer_steps: NonNegativeInt = 0  # the DINO head's prototypes stay fixed this long (DINOv2: 1 epoch)
    lr_batch_scaling: bool = False  # train.lr is for a batch of 1024: scaled by sqrt(batch_size / 1024)


@dataclass
class EncoderTrainingConfig:
    run_dir: str = "runs/emoji/encoder"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(ema_warmup=False, lr=5e-4, weight_decay=0.04))



# ---- multi-crop augmentation ------------------------------------------------------------------


def random_resized_crops(x: torch.Tensor, size: int, scale: tuple[float, float], flip: bool,
                         ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """One random resized crop (and flip) per image, as a batched affine resampling."""
    n = len(x)
    rand = lambda: torch.rand(n, device=x.device)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * rand()
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand())
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # fractions of the side
    cx, cy = (2 * rand() - 1) * (1 - w), (2 * rand() - 1) * (1 - h)  # centres in [-1, 1] coordinates
    sign = torch.where(rand() < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=x.device)
    zero = torch.zeros(n, device=x.device)
    theta = torch.stack([torch.stack([w * sign, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: torch.Tensor, cfg: CropConfig) -> torch.Tensor:
    """Random brightness, contrast and saturation (each image with probability ``jitter_prob``),
    then random greyscale; ``x`` in [0, 1]."""
    n = len(x)

    def factor(strength: float) -> torch.Tensor:
        f = 1 + strength * (2 * torch.rand(n, 1, 1, 1, device=x.device) - 1)
        return torch.where(torch.rand(n, 1, 1, 1, device=x.device) < cfg.jitter_prob, f, 1.0)

    gray = lambda t: (t * torch.tensor([0.299, 0.587, 0.114], device=t.device).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    x = x * factor(cfg.brightness)
    if x.shape[1] == 3:
        mean = gray(x).mean((2, 3), keepdim=True)
        x = (x - mean) * factor(cfg.contrast) + mean
        g = gray(x)
        x = (x - g) * factor(cfg.saturation) + g
        x = torch.where(torch.rand(n, 1, 1, 1, device=x.device) < cfg.grayscale_prob, gray(x).expand_as(x), x)
    return x.clamp(0, 1)


def multicrop(images: torch.Tensor, cfg: CropConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (B, C, H, W) -> (2B global crops, local_crops*B local crops or None), in [0, 1],
    view-major (rows v*B .. v*B+B-1 are view v). Augmentations left null are the generic ones."""
    cfg = cfg.resolved()
    x = (to_float(images) + 1) / 2
    views = lambda k, size, scale: color_jitter(random_resized_crops(x.repeat(k, 1, 1, 1), size, scale, cfg.flip), cfg)  # noqa: E731
    local = views(cfg.local_crops, cfg.local_size, cfg.local_scale) if cfg.local_crops else None
    return views(2, cfg.global_size, cfg.global_scale), local


def block_mask(grid: int, target: int, min_block: int = 4, aspect: tuple[float, float] = (0.3, 1 / 0.3),
               attempts: int = 10) -> torch.Tensor:
    """(grid * grid,) bool: up to ``target`` patches masked as rectangles (BEiT/DINOv2 block masking).

    Rectangles of a random area in [min_block, patches still to mask] and a log-uniform aspect
    ratio are dropped at random places; one counts if it adds between 1 and the patches still to
    mask. Masking stops at ``target`` or when ``attempts`` rectangles in a row add nothing."""
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    while (left := target - int(mask.sum())) > 0:
        for _ in range(attempts):
            area = min(min_block, left) + (left - min(min_block, left)) * torch.rand(()).item()
            ratio = math.exp(log_lo + (log_hi - log_lo) * torch.rand(()).item())
            h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if not (0 < h < grid and 0 < w < grid):
                continue
            top, side = int(torch.randint(grid - h + 1, ())), int(torch.randint(grid - w + 1, ()))
            added = int((~mask[top:top + h, side:side + w]).sum())
            if 0 < added <= left:
                mask[top:top + h, side:side + w] = True
                break
        else:
            break
    return mask.flatten()


def mask_targets(n: int, patches: int, prob: float, ratio: tuple[float, float]) -> torch.Tensor:
    """(n,) long: how many patches each crop masks. Exactly ``int(n * prob)`` crops, in a random
    order, mask a fraction drawn from successive equal slices of [ratio[0], ratio[1]] (so the
    ratios are spread evenly, as in DINOv2's collate); the others mask none."""
    masked = int(n * prob)
    edges = torch.linspace(ratio[0], ratio[1], masked + 1)
    fractions = edges[:-1] + (edges[1:] - edges[:-1]) * torch.rand(masked)
    targets = torch.zeros(n, dtype=torch.long)
    targets[:masked] = (fractions * patches).long()
    return targets[torch.randperm(n)]


def random_masks(n: int, grid: int, prob: float, ratio: tuple[float, float], device) -> torch.Tensor:
    """(n, grid * grid) bool iBOT masks: block masks of the ``mask_targets`` sizes."""
    targets = mask_targets(n, grid * grid, prob, ratio)
    return torch.stack([block_mask(grid, int(k)) for k in targets]).to(device)


# ---- heads and losses ---------------------------------------------------------------------------


class DINOHead(nn.Module):
    """3-layer MLP -> L2-normalised bottleneck -> prototypes with unit-norm weights (DINO's
    weight-normalised last layer with its gain fixed to 1)."""

    def __init__(self, width: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(self.mlp(x), dim=-1), F.normalize(self.prototypes, dim=-1))


class Centering(nn.Module):
    """The teacher's running centre (a buffer: saved in checkpoints, shared across processes)."""

    def __init__(self, prototypes: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, prototypes))

    def probs(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        return torch.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        mean = teacher_logits.float().mean(0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean)
            mean /= torch.distributed.get_world_size()
        self.center.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)


def dino_loss(student: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float, batch: int) -> torch.Tensor:
    """Cross-entropy between each teacher global view and every student view but the same one."""
    s = F.log_softmax(student.float() / student_temp, dim=-1).split(batch)
    t = teacher_probs.split(batch)
    terms = [-(tq * sv).sum(-1).mean() for iq, tq in enumerate(t) for iv, sv in enumerate(s) if iv != iq]
    return torch.stack(terms).mean()


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate (negated): -mean log distance to the nearest neighbour."""
    x = F.normalize(x.float(), dim=-1)
    dots = x @ x.T
    dots.fill_diagonal_(-2)
    nearest = dots.argmax(1)
    return -torch.log((x - x[nearest]).norm(dim=-1) + eps).mean()


def koleo_over_crops(embedding: torch.Tensor, batch: int) -> torch.Tensor:
    """KoLeo summed over the global crops (DINOv2: never between two crops of one image), so a
    weight of 0.1 applies 0.1 to each crop's term."""
    return sum(koleo(e) for e in embedding.split(batch))


INCEPTION_FEATURES = 2048  # the width of the FID Inception's pool features


def distill_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine distance between predicted and pretrained features (N, F), each target dimension
    standardised over the batch first: the features are averages after a ReLU, all positive, so
    without centring every pair of images would already look alike."""
    target = (target - target.mean(0)) / target.std(0).clamp(min=1e-6)
    return (1 - F.cosine_similarity(prediction.float(), target, dim=-1)).mean()


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """Masked-patch cross-entropy as DINOv2 normalises it: each crop's masked patches are averaged,
    then the crops' terms are summed and divided by ALL global crops (unmasked ones count as 0).

    ``student_logits`` (M, K): the masked patches' head logits; ``teacher_probs`` (M, K) their
    targets; ``masks`` (n, patches) bool, M = masks.sum()."""
    per_patch = -(teacher_probs * F.log_softmax(student_logits.float() / student_temp, -1)).sum(-1)
    weight = (1 / masks.sum(1).clamp(min=1)).unsqueeze(1).expand_as(masks)[masks]
    return (per_patch * weight).sum() / masks.shape[0]


class SSLModel(nn.Module):
    """Encoder + DINO head (shared by iBOT). ``save_pretrained`` writes the encoder alone: the
    heads only serve training and stay in the checkpoints."""

    def __init__(self, encoder: DLCEncoder, ssl: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.head = DINOHead(encoder.vit.embed_dim, ssl.head_hidden, ssl.head_bottleneck, ssl.prototypes)
        self.distill = nn.Linear(encoder.vit.embed_dim, INCEPTION_FEATURES) if ssl.distill_weight else None
        self.ssl = ssl

    def forward(self, crops: list[torch.Tensor], masks: torch.Tensor | None = None, patches: bool = False) -> dict:
        """Crops grouped by size (the first: global crops, masked by ``masks``; with a frozen backbone,
        their tokens) -> head logits of the SEM outputs of all crops, the global crops' SEM outputs,
        with ``patches`` the head logits of every global patch token (2B, N, K) for iBOT, and with
        distillation the global crops' predicted Inception features (2B, 2048)."""
        if self.encoder.frozen_backbone:  # crops arrive as the frozen backbone's tokens (SSLLoss.views)
            outputs = [self.encoder.from_tokens(x, self.ssl.sem_tau) for x in crops]
        else:
            outputs = [self.encoder(x, masks if i == 0 else None, self.ssl.sem_tau) for i, x in enumerate(crops)]
        out = {"logits": self.head(torch.cat([o["embedding"] for o in outputs])), "embedding": outputs[0]["embedding"]}
        if patches:
            out["patch_logits"] = self.head(outputs[0]["patches"])
        if self.distill is not None:
            out["distill"] = self.distill(outputs[0]["embedding"])
        return out

    def save_pretrained(self, path, **kwargs) -> None:
        self.encoder.save_pretrained(path, **kwargs)

    def lr_scale(self, name: str) -> float:
        """DINOv2's rate factor of a parameter: ``layer_decay ** (n + 1 - layer)`` where the
        embeddings (patch, position, CLS, registers, mask token) are layer 0, block i is layer
        i + 1 and the rest (final norm, SEM, heads) layer n + 1; times ``patch_embed_lr_scale``
        for the patch embedding."""
        depth = len(getattr(self.encoder.vit, "blocks", ()))  # a frozen backbone trains no block
        embeddings = ("patch_embed", "pos_embed", "cls_token", "reg_token", "mask_token")
        if name.startswith("encoder.vit.blocks."):
            layer = int(name.split(".")[3]) + 1
        elif any(part in name.split(".") for part in embeddings):
            layer = 0
        else:
            layer = depth + 1
        scale = self.ssl.layer_decay ** (depth + 1 - layer)
        return scale * (self.ssl.patch_embed_lr_scale if ".patch_embed." in f".{name}" else 1.0)

    def param_groups(self, cfg) -> list[dict]:
        """Optimizer groups (``dlc.training.make_optimizer``): one per (rate factor, decay, frozen),
        matrices decaying, the DINO head's prototypes frozen for ``freeze_last_layer_steps``. With
        the defaults (no layer decay, no freeze) these are the two default groups, in their order."""
        groups: dict[tuple, dict] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            frozen = self.ssl.freeze_last_layer_steps if name == "head.prototypes" else 0
            key = (self.lr_scale(name), p.ndim >= 2, frozen)
            groups.setdefault(key, {"params": [], "lr_scale": key[0], "decay": key[1], "frozen_steps": frozen})
            groups[key]["params"].append(p)
        # the full-rate matrices first: fit logs the first group's rate
        return sorted(groups.values(), key=lambda g: (g["frozen_steps"] > 0, -g["lr_scale"], not g["decay"]))


def build_model(config: EncoderTrainingConfig) -> SSLModel:
    m = config.model
    encoder = DLCEncoder(backbone=m.backbone, backbone_kwargs=dict(m.backbone_kwargs), image_size=m.image_size,
                         input_size=m.input_size, in_channels=config.data.channels, code_length=m.code_length,
                         vocab_size=m.vocab_size, mean=tuple(m.mean), std=tuple(m.std),
                         use_mask_token=config.ssl.ibot_weight > 0, sem_eps=m.sem_eps,
                         resize_input=m.resize_input)
    if m.pretrained:
        encoder.load_backbone_weights(True if m.pretrained == "timm" else m.pretrained)
    if m.drop_path and encoder.frozen_backbone:
        raise ConfigError(f"model.drop_path needs a ViT backbone: {m.backbone} is frozen; set model.drop_path=0")
    set_drop_path(encoder.vit, m.drop_path)
    return SSLModel(encoder, config.ssl)


def set_drop_path(vit: nn.Module, rate: float) -> None:
    """Stochastic depth at the same ``rate`` in every block (DINOv2's drop_path_uniform; timm's
    ``drop_path_rate`` would ramp it up with depth). Active in training mode only: the EMA
    teacher, kept in eval mode, never drops. Not saved in the model folder: inference never drops."""
    from timm.layers import DropPath

    if rate:
        for block in vit.blocks:
            block.drop_path1, block.drop_path2 = DropPath(rate), DropPath(rate)


def momentum_schedule(ssl: SSLConfig, steps: int):
    """The teacher's EMA decay at a step: cosine from ``momentum[0]`` to ``momentum[1]``."""
    start, end = ssl.momentum
    return lambda step: end - (end - start) * (math.cos(math.pi * min(step, steps) / steps) + 1) / 2


def teacher_temp(ssl: SSLConfig, step: int, steps: int) -> float:
    warmup = max(1, round(ssl.teacher_temp_warmup * steps))
    start, end = ssl.teacher_temp
    return start + (end - start) * min(1.0, step / warmup)


class SSLLoss:
    """The loss function ``fit`` calls: multi-crop, student and teacher passes, the three losses."""

    def __init__(self, config: EncoderTrainingConfig, grid: int):
        self.config, self.grid = config, grid  # the global crops' patch grid side
        self.center = Centering(config.ssl.prototypes, config.ssl.center_momentum)
        self.patch_center = Centering(config.ssl.prototypes, config.ssl.center_momentum)
        self.pretrained = None  # the frozen Inception trunk, loaded at the first step that needs it

    def pretrained_features(self, crops01: torch.Tensor) -> torch.Tensor:
        """The frozen FID Inception's pool features (2B, 2048) of crops in [0, 1], at ``distill_size``."""
        from ..eval.fidelity import inception_pool, inception_trunk

        if self.pretrained is None:
            self.pretrained = inception_trunk().to(crops01.device)
        with torch.no_grad():
            return inception_pool(self.pretrained, crops01 * 255, self.config.ssl.distill_size)

    @staticmethod
    def views(crops: list[torch.Tensor], model) -> list[torch.Tensor]:
        """What the student and the teacher read: the normalised crops themselves, or with a frozen
        backbone its tokens of them, computed once for both (the trunk is the same in the two)."""
        encoder = getattr(model, "module", model).encoder  # unwrapped from DistributedDataParallel
        if not encoder.frozen_backbone:
            return crops
        with torch.no_grad():
            return [encoder.tokens(x) for x in crops]

    def __call__(self, model, batch: dict, info) -> tuple[torch.Tensor, dict]:
        ssl = self.config.ssl
        images = batch["image"]
        n = len(images)
        global_crops01, local_crops = multicrop(images, self.config.crops)
        normalize = info.ema.encoder.normalize
        crops = self.views([normalize(global_crops01)] + ([normalize(local_crops)] if local_crops is not None else []),
                           model)
        masks = (random_masks(2 * n, self.grid, ssl.mask_prob, ssl.mask_ratio, images.device)
                 if ssl.ibot_weight else None)
        self.center.to(images.device), self.patch_center.to(images.device)
        with torch.no_grad():
            teacher = info.ema(crops[:1], patches=masks is not None)
        student = model(crops, masks, patches=masks is not None)
        temp = teacher_temp(ssl, info.step, info.total_steps)
        dino = dino_loss(student["logits"], self.center.probs(teacher["logits"], temp), ssl.student_temp, n)
        reg = koleo_over_crops(student["embedding"], n)
        loss = ssl.dino_weight * dino + ssl.koleo_weight * reg
        metrics = {"dino": dino.item(), "koleo": reg.item(), "teacher_temp": temp}
        if masks is not None and masks.any():
            target = self.patch_center.probs(teacher["patch_logits"][masks], temp)
            ibot = ibot_loss(student["patch_logits"][masks], target, masks, ssl.student_temp)
            loss = loss + ssl.ibot_weight * ibot
            metrics["ibot"] = ibot.item()
            self.patch_center.update(teacher["patch_logits"][masks])
        if ssl.distill_weight:
            distill = distill_loss(student["distill"], self.pretrained_features(global_crops01))
            loss = loss + ssl.distill_weight * distill
            metrics["distill"] = distill.item()
        self.center.update(teacher["logits"])
        return loss, metrics


def scaled_lr(train: TrainConfig, ssl: SSLConfig) -> TrainConfig:
    """``train`` with DINOv2's square-root rule when ``ssl.lr_batch_scaling``: ``train.lr`` is the
    rate for a global batch of 1024, used at ``lr * sqrt(batch_size / 1024)``."""
    if not ssl.lr_batch_scaling:
        return train
    return dataclasses.replace(train, lr=train.lr * math.sqrt(train.batch_size / 1024))


CALIBRATION_IMAGES = 4096  # training images a frozen backbone's feature statistics are measured on


def ibot_grid(config: EncoderTrainingConfig, encoder: DLCEncoder) -> int:
    """The side of the global crops' patch grid, which the iBOT masks cover (0 without iBOT)."""
    if not config.ssl.ibot_weight:
        return 0
    if encoder.frozen_backbone:
        raise ConfigError(f"ssl.ibot_weight needs a ViT backbone: {config.model.backbone} is frozen and has no "
                          "patches to mask; set ssl.ibot_weight=0")
    return config.crops.global_size // encoder.vit.patch_embed.patch_size[0]


def train(config: EncoderTrainingConfig) -> RunDir:
    # the augmentations the run uses, recorded in its config.yaml: the dataset's where left null
    config = dataclasses.replace(config, crops=config.crops.resolved(dataset_defaults(config.data.dataset).augmentations))
    seed_everything(config.train.seed)
    run = RunDir(config.run_dir)
    model = build_model(config)
    dataset = config.data.load("train")
    if model.encoder.frozen_backbone:  # its channels standardised on the training images, before any step
        model.encoder.vit.calibrate(model.encoder.preprocess(some_images(dataset, CALIBRATION_IMAGES)))
    loss = SSLLoss(config, ibot_grid(config, model.encoder))
    fit(run, scaled_lr(config.train, config.ssl), model, dataset, loss, config=config, desc="encoder",
        ema_decay=momentum_schedule(config.ssl, config.train.steps),
        extra_state={"center": loss.center, "patch_center": loss.patch_center})
    return run
