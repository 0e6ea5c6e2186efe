"""The training loop every stage shares: accelerate, AdamW, LR warm-up, EMA, checkpoints,
exact resume, metrics, progress bar, and a stop with a clear message when training diverges.

A stage supplies a model, a dataset and a loss function; ``fit`` does the rest:

    def loss_fn(model, batch, info):           # model may be DDP-wrapped: call it, don't poke it
        loss = ...
        return loss, {"mse": loss.item()}      # the dict is logged

    ema = fit(run, config.train, model, dataset, loss_fn)

Exactness: on CPU with ``num_workers=0`` a resumed run matches an uninterrupted one bit for bit
(model, EMA, optimizer, scheduler, RNG and data position are all restored). The data order is a
function of (seed, step) only: global batch ``s`` is positions ``s*B .. s*B+B-1`` of an endless
stream of per-epoch permutations, and rank ``r`` of ``W`` takes the r-th contiguous slice.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig, validated
from .data import collate
from .errors import TrainingDiverged
from .progress import tqdm
from .runs import RunDir, load_checkpoint, save_checkpoint
from .tracking import log_sample_images, png_times, resolve_trackers, start_tracking


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EMA:
    """An exponential moving average of a model's parameters (buffers are copied as they are).

    A constant ``decay`` of 0 turns it off: no copy is made (an 8B model would cost 16 GB more),
    ``.model`` is the trained model itself and ``update`` does nothing.
    """

    def __init__(self, model: torch.nn.Module, decay: float | Callable[[int], float] = 0.999, warmup: bool = True):
        self.off = not callable(decay) and decay == 0
        self.model = model if self.off else copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup

    def decay_at(self, step: int) -> float:
        decay = self.decay(step) if callable(self.decay) else self.decay
        return min(decay, (1 + step) / (10 + step)) if self.warmup else decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if self.off:
            return
        decay = self.decay_at(step)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class DivergenceGuard:
    """Tells when a finite loss has run away: its exponential moving average (``beta``) has risen
    above ``factor`` times the lowest average seen. Single spikes are smoothed out; a loss that is
    not positive (some self-distillation losses) is not judged."""

    def __init__(self, factor: float, beta: float = 0.9):
        self.factor, self.beta = factor, beta
        self.average, self.lowest = None, math.inf

    def ran_away(self, loss: float) -> bool:
        self.average = loss if self.average is None else self.beta * self.average + (1 - self.beta) * loss
        self.lowest = min(self.lowest, self.average)
        return bool(self.factor) and 0 < self.lowest < self.average / self.factor


class StreamSampler(torch.utils.data.Sampler):
    """This rank's indices of global batches ``start_step, start_step+1, ...`` (endless)."""

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, start_step: int = 0):
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes {world}")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.size, generator=generator), epoch
        return int(self._perm[offset])

    def __iter__(self):
        local = self.global_batch // self.world
        for step in itertools.count(self.start_step):
            first = step * self.global_batch + self.rank * local
            yield [self._index(p) for p in range(first, first + local)]


def default_param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Matrices decay, vectors (biases, norms, gains) don't; one learning rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "decay": True},
            {"params": [p for p in params if p.ndim < 2], "decay": False}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's parameter groups: ``model.param_groups(cfg)`` when the model has
    that hook (a stage's recipe: layer-wise rates, frozen parts), else ``default_param_groups``.

    A group is ``{"params", "decay": bool, "lr_scale": float = 1, "frozen_steps": int = 0}``:
    its rate is ``cfg.lr * lr_scale * lr_factor(step)``, zero before ``frozen_steps``
    (``group_lr_factor``), and only ``decay`` groups get the weight decay (and its schedule)."""
    groups = model.param_groups(cfg) if hasattr(model, "param_groups") else default_param_groups(model, cfg)
    for group in groups:
        group["weight_decay"] = cfg.weight_decay if group["decay"] else 0.0
        group.setdefault("lr_scale", 1.0)
        group.setdefault("frozen_steps", 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine down to ``min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def group_lr_factor(group: dict, cfg: TrainConfig) -> Callable[[int], float]:
    """A parameter group's rate over ``cfg.lr`` at a step: its ``lr_scale`` times ``lr_factor``,
    zero before its ``frozen_steps`` (e.g. DINO's last layer during the first epoch)."""
    scale, frozen = group.get("lr_scale", 1.0), group.get("frozen_steps", 0)
    return lambda step: 0.0 if step < frozen else scale * lr_factor(step, cfg)


def set_weight_decay(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> None:
    """The decaying groups' weight decay at ``step`` (``weight_decay_at``); a group saved without a
    ``decay`` flag (an older checkpoint) is the first one, the matrices."""
    for i, group in enumerate(optimizer.param_groups):
        if group.get("decay", i == 0):
            group["weight_decay"] = weight_decay_at(step, cfg)


def weight_decay_at(step: int, cfg: TrainConfig) -> float:
    """The weight decay of the matrices at ``step``: constant, or cosine to ``weight_decay_end``."""
    if cfg.weight_decay_end is None:
        return cfg.weight_decay
    progress = min(1.0, step / max(1, cfg.steps))
    return cfg.weight_decay_end + (cfg.weight_decay - cfg.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * progress))


@functools.cache
def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU that supports it, or a CPU whose flags
    (Linux /proc/cpuinfo) list AVX512-BF16 or AMX-BF16, oneDNN's bf16 kernels. Elsewhere bf16 autocast
    on CPU is emulated and slower than fp32. Read once per process."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def make_accelerator(mixed_precision: str = "auto", log_with: str = "none", logging_dir=None):
    """An ``accelerate.Accelerator``: bf16 on a GPU when ``auto``, full precision on CPU; the
    trackers of ``log_with`` (``dlc.tracking``) writing under ``logging_dir``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda and native_bf16() else "no"
    shared = AcceleratorState._shared_state  # accelerate keeps one precision per process
    if shared and shared.get("_mixed_precision") != mixed_precision and not PartialState().use_distributed:
        AcceleratorState._reset_state()  # one process training stage after stage (the demo), each its own precision
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda, log_with=resolve_trackers(log_with) or None,
                       project_dir=logging_dir)


@dataclass
class StepInfo:
    """What a loss function may want besides the batch."""

    step: int
    total_steps: int
    ema: torch.nn.Module | None = None
    accelerator: Any = None
    extras: dict = field(default_factory=dict)


def fit(
    run: RunDir,
    cfg: TrainConfig,
    model: torch.nn.Module,
    dataset,
    loss_fn: Callable,
    *,
    config=None,
    collate_fn: Callable = collate,
    sample_fn: Callable | None = None,
    ema_decay: float | Callable[[int], float] | None = None,
    extra_state: dict | None = None,
    accelerator=None,
    desc: str = "training",
) -> EMA:
    """Train ``model`` on ``dataset`` for ``cfg.steps`` steps, resuming from the run's latest
    checkpoint when there is one. Returns the EMA (its ``.model`` is the one to sample from).

    ``sample_fn(ema_model, step, run)`` writes samples (main process only, every
    ``cfg.sample_every`` steps and at the end). ``extra_state`` maps names to objects with
    ``state_dict``/``load_state_dict`` saved in checkpoints too (e.g. a loss's running centre).
    ``ema_decay`` overrides ``cfg.ema_decay`` with a number or a schedule ``step -> decay``.
    """
    cfg = validated(cfg, "train")
    accelerator = accelerator or make_accelerator(cfg.mixed_precision, cfg.log_with, run.root / "logs")
    with run.lock() if accelerator.is_main_process else contextlib.nullcontext():
        if accelerator.is_main_process:
            run.start(config, cfg.allow_changed)
            start_tracking(accelerator, run, config)
        accelerator.wait_for_everyone()
        try:
            return _train(run, cfg, model, dataset, loss_fn, accelerator, collate_fn, sample_fn, ema_decay,
                          extra_state or {}, desc)
        finally:
            run.on_metrics = None
            accelerator.end_training()


def _train(run, cfg, model, dataset, loss_fn, accelerator, collate_fn, sample_fn, ema_decay, extra_state, desc):
    main = accelerator.is_main_process
    ema = EMA(model, cfg.ema_decay if ema_decay is None else ema_decay, cfg.ema_warmup)
    optimizer = make_optimizer(model, cfg)
    lr_factors = [group_lr_factor(group, cfg) for group in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factors)

    step = 0
    latest = run.latest_checkpoint()
    if latest is not None:
        state = load_checkpoint(latest, model, None if ema.off else ema)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, obj in extra_state.items():
            obj.load_state_dict(state["extra"][name])
        step = state["step"]
        # the learning rate follows this config's schedule (a resume may extend train.steps)
        scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
        for group, factor in zip(optimizer.param_groups, lr_factors):
            group["lr"] = cfg.lr * factor(step)
        if main:
            run.truncate_metrics(step)
            print(f"resuming {run.root} from step {step}")
    if not ema.off:
        ema.model.to(accelerator.device)
    prepared_model, optimizer = accelerator.prepare(model, optimizer)
    if ema.off:
        ema.model = accelerator.unwrap_model(prepared_model)

    batches = iter(_loader(dataset, cfg, accelerator, step, collate_fn))
    started = last_log_time = time.time()
    last_saved = last_logged = step
    guard = DivergenceGuard(cfg.divergence_factor)
    progress = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not main, dynamic_ncols=True)

    def stop(what: str, at: int) -> None:
        progress.close()
        latest = run.latest_checkpoint()
        raise TrainingDiverged(
            f"{what} at step {at}; stopping. The last good checkpoint is {latest or '(none yet)'}: re-run with a lower "
            "train.lr or with train.grad_clip" + (", allowing the change (e.g. train.allow_changed=[train.lr]), to "
                                                  "resume from it" if latest else "") + ".")

    def sample_and_log(at: int) -> None:
        before = png_times(run.samples)
        training = ema.model.training  # with EMA off this is the trained model: back to train mode after
        sample_fn(ema.model.eval(), at, run)
        ema.model.train(training)
        log_sample_images(accelerator, run.samples, before, at)

    def checkpoint(at: int) -> None:
        nonlocal last_saved
        if not (all_finite(model) and all_finite(ema.model)):
            stop("the weights became NaN or infinite", at)  # never saved: the last checkpoint stays a good one
        accelerator.wait_for_everyone()
        weights = accelerator.get_state_dict(prepared_model)  # every rank: FSDP and ZeRO-3 gather the shards
        if main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "extra": {k: v.state_dict() for k, v in extra_state.items()}}
            save_checkpoint(run, at, weights, None if ema.off else ema, state, cfg.keep_checkpoints)
        last_saved = at

    while step < cfg.steps:
        batch = _to_device(next(batches), accelerator.device)
        info = StepInfo(step, cfg.steps, ema.model, accelerator)
        with accelerator.autocast():
            loss, metrics = loss_fn(prepared_model, batch, info)
        if not torch.isfinite(loss.detach()).all():
            stop(f"the loss became {loss.item()}", step)
        if guard.ran_away(loss.item()):
            stop(f"the loss ran away (smoothed {guard.average:.4g}, over {cfg.divergence_factor:g}x its lowest "
                 f"{guard.lowest:.4g})", step)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        set_weight_decay(optimizer, step, cfg)
        # the total gradient norm, clipped to grad_clip when set (a factor of exactly 1 otherwise)
        metrics["grad_norm"] = float(accelerator.clip_grad_norm_(prepared_model.parameters(), cfg.grad_clip or math.inf))
        if not math.isfinite(metrics["grad_norm"]) and accelerator.mixed_precision != "fp16":  # fp16: the scaler skips
            stop(f"the gradient norm became {metrics['grad_norm']}", step)
        optimizer.step()
        scheduler.step()
        ema.update(accelerator.unwrap_model(prepared_model), step)
        step += 1
        progress.update(1)
        if main and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.time()
            throughput = cfg.batch_size * (step - last_logged) / max(now - last_log_time, 1e-9)
            metrics = {"loss": loss.item(), "lr": scheduler.get_last_lr()[0], **metrics,
                       "samples_per_second": round(throughput, 2)}
            run.log_metrics(step, **metrics)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
            last_logged, last_log_time = step, now
        out_of_time = cfg.time_limit_minutes and (time.time() - started) / 60 > cfg.time_limit_minutes
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            checkpoint(step)
        if main and sample_fn is not None and cfg.sample_every and step % cfg.sample_every == 0:
            sample_and_log(step)
        if out_of_time:
            if main:
                print(f"time limit of {cfg.time_limit_minutes} min reached at step {step}")
            break
    progress.close()
    if last_saved != step:
        checkpoint(step)
    if main:
        export_model(ema.model, run)
        if sample_fn is not None:
            sample_and_log(step)
    accelerator.wait_for_everyone()
    return ema


def all_finite(model: torch.nn.Module) -> bool:
    """True when every parameter of ``model`` is finite."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def export_model(model: torch.nn.Module, run: RunDir) -> None:
    """Write the EMA weights where sampling looks for them (``save_pretrained`` form)."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} has no save_pretrained: models must be ModelMixin, ConfigMixin")
    model.save_pretrained(run.model_dir)


def _loader(dataset, cfg: TrainConfig, accelerator, start_step: int, collate_fn):
    # A DataLoader draws its workers' base seed from the global RNG unless given a generator; its
    # own generator keeps the global stream (restored on resume) untouched.
    generator = torch.Generator().manual_seed(cfg.seed + start_step)
    if isinstance(dataset, torch.utils.data.IterableDataset):
        # sharded data: each rank and worker reads its own shards, looping forever; a stream that
        # can (``set_start``) continues where the checkpoint's step left it
        local = cfg.batch_size // accelerator.num_processes
        if hasattr(dataset, "set_start"):
            dataset.set_start(start_step, local)
        return torch.utils.data.DataLoader(dataset, batch_size=local, num_workers=cfg.num_workers,
                                           collate_fn=collate_fn, generator=generator)
    sampler = StreamSampler(len(dataset), cfg.batch_size, cfg.seed, accelerator.process_index,
                            accelerator.num_processes, start_step)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                       collate_fn=collate_fn, persistent_workers=cfg.num_workers > 0,
                                       generator=generator)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
