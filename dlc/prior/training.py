"""Training the code prior (``dlc train prior``, ``python train/prior.py``): MDLM's ELBO on stored,
sharded or synthetic codes, scored in bits per token on held-out codes (see ``dlc.prior``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..codes import check_codes, load_codes, resolve_codes, save_codes
from ..config import NonNegativeFloat, PositiveInt, Probability, TrainConfig
from ..errors import ConfigError
from ..eval.codes import code_statistics
from ..runs import RunDir
from ..training import fit, seed_everything
from .model import PRIOR_SIZES, CodePrior, create_prior, elbo_weight, mask_prob

LN2 = math.log(2.0)

# --------------------------------------------------------------------------------------------
# Loss


def antithetic_times(batch: int, t_min: float = 1e-3, generator=None, device=None) -> torch.Tensor:
    """Stratified times in [t_min, 1]: one uniform offset, B evenly spaced points (MDLM's low-discrepancy
    sampler; lowers the variance of the ELBO's Monte-Carlo estimate)."""
    u = torch.rand(1, generator=generator, device=device)
    t = (u + torch.arange(batch, device=device) / batch) % 1.0
    return t_min + (1.0 - t_min) * t


def diffusion_nll(model, codes: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                  generator=None) -> torch.Tensor:
    """Per-code ELBO terms in nats per token (B,): 1/t * sum of masked cross entropies / L.

    ``mask`` (B, L) bool chooses the masked positions; by default each is masked with probability m(t).
    """
    net = getattr(model, "module", model)  # DDP-wrapped in training
    V, eps = net.config.vocab_size, net.config.noise_eps
    if mask is None:
        u = torch.rand(codes.shape, generator=generator, device=codes.device)
        mask = u < mask_prob(t, eps)[:, None]
    x_t = torch.where(mask, V, codes)
    logits = model(x_t, t)
    ce = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none")
    return elbo_weight(t) * (ce * mask).sum(1) / codes.shape[1]


@torch.no_grad()
def heldout_bits(model: CodePrior, codes: torch.Tensor, samples_per_code: int = 8, seed: int = 0,
                 batch_size: int = 512) -> float:
    """The ELBO in bits per token on ``codes``, averaged over ``samples_per_code`` stratified times
    per code with fixed noise (so the same model always gets the same number)."""
    check_codes(codes, model.config.code_length, model.config.vocab_size, what="held-out codes")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    total = 0.0
    for _ in range(samples_per_code):
        for chunk in codes.split(batch_size):
            t = antithetic_times(len(chunk), generator=generator)
            u = torch.rand(chunk.shape, generator=generator)
            mask = u < mask_prob(t, model.config.noise_eps)[:, None]
            total += diffusion_nll(model, chunk.to(device), t.to(device), mask.to(device)).sum().item()
    return total / (len(codes) * samples_per_code) / LN2


def unigram_bits(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int,
                 alphas: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)) -> dict:
    """The per-position-frequency baseline in bits per token on ``heldout`` (add-alpha smoothing; the
    best alpha is reported, so the baseline is as strong as it can be)."""
    L = train.shape[1]
    counts = torch.zeros(L, vocab_size, dtype=torch.float64)
    counts.scatter_add_(1, train.T, torch.ones_like(train.T, dtype=torch.float64))
    results = {}
    for alpha in alphas:
        logp = torch.log((counts + alpha) / (counts + alpha).sum(1, keepdim=True))
        results[alpha] = -logp.gather(1, heldout.T).mean().item() / LN2
    best = min(results, key=results.get)
    return {"bits": results[best], "alpha": best}


@dataclass
class CodeDataConfig:
    """The ``data:`` section: where the training codes come from."""

    codes: str = "runs/emoji/codes/train.npy"  # .npy (N, L) uint16 | webdataset:PATTERN | synthetic:NAME
    holdout: Probability = 0.05  # fraction of stored codes held out (fixed permutation, seed 0) for bits/token
    eval_codes: str | None = None  # a held-out .npy (default for shards, which have no holdout)
    eval_max: PositiveInt = 2048  # held-out codes scored per evaluation
    synthetic_num: PositiveInt = 4096  # synthetic:markov and synthetic:random: number of codes


def split_holdout(codes: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): the held-out part is the last ``fraction`` of a seed-0 permutation."""
    perm = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))
    n_held = int(round(fraction * len(codes)))
    return codes[perm[n_held:]], codes[perm[:n_held]]


# --------------------------------------------------------------------------------------------
# Training stage


@dataclass
class PriorModelConfig:
    size: Literal[tuple(PRIOR_SIZES)] = "tiny"  # a name from PRIOR_SIZES
    code_length: PositiveInt | None = None  # L; None: from the codes
    vocab_size: PositiveInt | None = None  # V; None: the largest stored value + 1 (set it to the encoder's V)
    rotary: bool = True
    time_conditioning: bool = True
    noise_eps: Probability = 1e-3


@dataclass
class PriorSampleConfig:
    steps: PositiveInt = 128
    temperature: NonNegativeFloat = 1.0
    eta: Probability = 0.0
    window: tuple[Probability, Probability] = (0.3, 0.55)  # times t where eta > 0 remasks (the paper's)
    num: PositiveInt = 256


@dataclass
class PriorRunConfig:
    run_dir: str = "runs/prior"
    data: CodeDataConfig = field(default_factory=CodeDataConfig)
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    sample: PriorSampleConfig = field(default_factory=PriorSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)



def load_data(config: PriorRunConfig) -> tuple[torch.utils.data.Dataset, torch.Tensor, torch.Tensor | None, int, int]:
    """(training dataset, held-out codes, training codes or None for shards, L, V)."""
    m, data = config.model, config.data
    source = resolve_codes(data.codes, code_length=m.code_length, vocab_size=m.vocab_size, num=data.synthetic_num)
    if source.stream is not None:
        if not data.eval_codes:
            raise ConfigError("codes from shards have no held-out part: set data.eval_codes=PATH.npy")
        heldout = load_codes(data.eval_codes, source.code_length, source.vocab_size)
        return source.stream, heldout, None, source.code_length, source.vocab_size
    if source.codes is None:
        raise ConfigError(f"data.codes={data.codes!r} gives no stored codes: the prior trains on a .npy, "
                          "webdataset:PATTERN or synthetic:NAME")
    train_codes, heldout = split_holdout(source.codes, data.holdout)
    if data.eval_codes:
        heldout = load_codes(data.eval_codes, source.code_length, m.vocab_size)
    # items {"code": (L,)}
    return torch.utils.data.StackDataset(code=train_codes), heldout, train_codes, source.code_length, source.vocab_size


def build(config: PriorRunConfig) -> tuple[CodePrior, torch.utils.data.Dataset, torch.Tensor, torch.Tensor | None]:
    """(model, training dataset, held-out codes, training codes or None for shards)."""
    m = config.model
    dataset, heldout, train_codes, L, V = load_data(config)
    model = create_prior(m.size, code_length=L, vocab_size=V, rotary=m.rotary,
                         time_conditioning=m.time_conditioning, noise_eps=m.noise_eps)
    return model, dataset, check_codes(heldout, L, V, what="held-out codes"), train_codes


def train(config: PriorRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    model, dataset, heldout, train_codes = build(config)
    heldout = heldout[: config.data.eval_max]
    run = RunDir(config.run_dir)

    def loss_fn(net, batch, info):
        codes = batch["code"]
        nll = diffusion_nll(net, codes, antithetic_times(len(codes), device=codes.device)).mean()
        return nll, {"bits": nll.item() / LN2}

    def evaluate(ema_model, step, run_dir):
        """Held-out bits/token (logged) and a batch of sampled codes with their statistics."""
        ema_model.eval()
        bits = heldout_bits(ema_model, heldout) if len(heldout) else float("nan")
        s = config.sample
        codes = ema_model.sample(s.num, seed=0, steps=s.steps, temperature=s.temperature, eta=s.eta,
                                   window=tuple(s.window)).cpu()
        save_codes(run_dir.samples / f"codes-{step:07d}.npy", codes)
        stats = code_statistics(codes, heldout) if len(heldout) else {}
        run_dir.log_metrics(step, heldout_bits=bits, **{f"sample_{k}": v for k, v in stats.items()})
        print(f"step {step}: held-out {bits:.4f} bits/token")

    if train_codes is not None and len(heldout) and run.latest_checkpoint() is None:
        base = unigram_bits(train_codes, heldout, model.config.vocab_size)
        run.create().log_metrics(0, unigram_bits=base["bits"], unigram_alpha=base["alpha"])  # config: fit writes it
    fit(run, config.train, model, dataset, loss_fn, config=config, sample_fn=evaluate, desc="train prior")
    return run
