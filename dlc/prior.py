"""The unconditional code prior p(c): masked (absorbing-state) discrete diffusion over the L code
positions (``dlc train prior``, ``python train/prior.py``).

    prior = CodePrior.from_pretrained("runs/emoji/prior/model")
    codes = prior.sample(64, seed=0, steps=128)       # (64, L) long in [0, V); never a mask

Model: a bidirectional transformer (token embedding with a mask token at index V, learned absolute
position embedding, optional rotary attention, adaLN-Zero on the noise level) predicting x0 at every
position. Objective: MDLM's continuous-time ELBO for the absorbing graph with SEDD's log-linear
schedule: a token is masked at time t with probability m(t) = (1 - eps) t, and the loss is

    E_{t ~ U(0,1)} [ 1/t * sum_{masked i} -log p(x0_i | x_t) ]          (nats per code; /L per token)

whose weight 1/t = m'(t) / m(t) is SEDD's dsigma/dt / expm1(sigma) with sigma(t) = -log(1 - m(t)).
For the absorbing graph, SEDD's score entropy with this parameterisation is the same ELBO.

Sampler: ancestral steps on a uniform time grid 1 -> 0 (for the absorbing graph this *is* SEDD's
Tweedie tau-leaping): each masked position unmasks with probability (m_t - m_s) / m_t and takes a
token drawn from p(x0 | x_t) at ``temperature``; the last step has m_s = 0, so nothing stays masked.
The paper's remasking corrector (after ReMDM): for t inside ``window`` each step is lengthened by
eta (1 - m_t) and every already-decoded token goes back to the mask with probability eta, which keeps
the expected masked fraction on schedule. Sample i depends only on (seed, i): all noise comes from
``dlc.seeding.SampleRNG`` with a fixed number of draws per step.

Training data (``data.codes``): a stored ``.npy`` (N, L) uint16, ``webdataset:PATTERN`` shards with
``code.npy``, or ``synthetic:NAME`` (see ``SYNTHETIC``; structured codes to develop with before an
encoder exists). Bits per token on held-out codes: the first ``data.holdout`` fraction of a fixed
permutation (seed 0) of the stored codes is never trained on; it is scored with the ELBO every
``train.sample_every`` steps and at the end (``data.eval_codes`` replaces it, and is needed for shards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from tqdm import tqdm

from .codes import check_codes, load_codes, save_codes
from .dit import DiTBlock, FinalLayer, TimestepEmbedder, zero_init_modulation
from .errors import CodeError, ConfigError
from .runs import RunDir
from .seeding import SampleRNG
from .training import TrainConfig, fit, seed_everything

LN2 = math.log(2.0)

# --------------------------------------------------------------------------------------------
# Log-linear schedule


def mask_prob(t: torch.Tensor, eps: float) -> torch.Tensor:
    """m(t) = (1 - eps) t: the probability that a token is masked at time t (SEDD's log-linear noise,
    total noise sigma(t) = -log(1 - m(t)))."""
    return (1.0 - eps) * t


def elbo_weight(t: torch.Tensor) -> torch.Tensor:
    """The ELBO weight of a masked token's cross entropy at time t: m'(t) / m(t) = 1 / t."""
    return 1.0 / t


# --------------------------------------------------------------------------------------------
# Model


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (length, head_dim/2) of rotary position embeddings."""
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2k, 2k+1) of x (B, H, N, Dh) by the position's angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).to(x.dtype)


class PriorBlock(DiTBlock):
    """DiT's adaLN-Zero block with rotary embeddings on queries and keys (no attention mask: bidirectional)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, code_length: int, rotary: bool):
        super().__init__(hidden, heads, mlp_ratio)
        self.rotary = rotary
        cos, sin = rotary_tables(code_length, hidden // heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.rotary:
            q, k = apply_rotary(q, self.cos[:N], self.sin[:N]), apply_rotary(k, self.cos[:N], self.sin[:N])
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class CodePrior(ModelMixin, ConfigMixin):
    """p(x0 | x_t) over codes of length ``code_length`` L and vocabulary ``vocab_size`` V.

    Input tokens are in [0, V]; V is the mask. ``forward(x_t, t)`` returns logits (B, L, V): the mask
    is never predicted. ``time_conditioning=False`` drops the noise-level input (MDLM shows the number
    of masks carries it) and lets the sampler skip the network when a sample did not change.
    """

    @register_to_config
    def __init__(self, code_length: int = 32, vocab_size: int = 64, hidden_size: int = 256, depth: int = 6,
                 num_heads: int = 4, mlp_ratio: float = 4.0, rotary: bool = True,
                 time_conditioning: bool = True, noise_eps: float = 1e-3):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size {hidden_size} must split into {num_heads} heads of even width")
        self.mask_index = vocab_size
        self.token_embed = nn.Embedding(vocab_size + 1, hidden_size)
        self.pos_embed = nn.Parameter(torch.randn(1, code_length, hidden_size) * 0.02)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(PriorBlock(hidden_size, num_heads, mlp_ratio, code_length, rotary)
                                    for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, 1, vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        for layer in self.t_embedder.mlp[::2]:
            nn.init.normal_(layer.weight, std=0.02)
        zero_init_modulation([*self.blocks, self.final_layer])  # the untrained model predicts uniform logits
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t`` (B, L) long in [0, V] (V = mask); ``t`` (B,) or scalar time in [0, 1] -> logits (B, L, V)."""
        check_codes(x_t, self.config.code_length, self.config.vocab_size + 1, what="noisy codes (V = mask)")
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).expand(x_t.shape[0])
        if not self.config.time_conditioning:
            t = torch.zeros_like(t)
        c = self.t_embedder(t * 1000)
        h = self.token_embed(x_t) + self.pos_embed
        for block in self.blocks:
            h = block(h, c)
        return self.final_layer(h, c).float()

    def sample(self, num: int, seed: int = 0, steps: int = 128, temperature: float = 1.0, eta: float = 0.0,
               start_index: int = 0, batch_size: int | None = None, window: tuple[float, float] = (0.3, 0.55),
               progress: bool = False) -> torch.Tensor:
        """``num`` codes (num, L) long in [0, V); see ``sample_codes``."""
        return sample_codes(self, num, seed=seed, steps=steps, temperature=temperature, eta=eta,
                            start_index=start_index, batch_size=batch_size, window=window, progress=progress)


# name -> (depth, width, heads). medium is SEDD-medium, the paper's prior; nano is the CPU default.
PRIOR_SIZES = {"medium": (24, 1024, 16), "small": (12, 768, 12), "tiny": (6, 256, 4), "nano": (4, 128, 4),
               "micro": (2, 64, 2)}  # micro: smoke tests


def create_prior(size: str, **kwargs) -> CodePrior:
    """``create_prior("medium", code_length=512, vocab_size=256)``."""
    if size not in PRIOR_SIZES:
        raise ConfigError(f"unknown prior size {size!r}; choose from {', '.join(PRIOR_SIZES)}")
    depth, width, heads = PRIOR_SIZES[size]
    return CodePrior(depth=depth, hidden_size=width, num_heads=heads, **kwargs)


def load_prior(path: str | Path) -> CodePrior:
    """A prior from a run directory (its ``model/``) or a ``save_pretrained`` folder."""
    path = Path(path)
    return CodePrior.from_pretrained(path / "model" if (path / "model" / "config.json").exists() else path).eval()


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


# --------------------------------------------------------------------------------------------
# Sampling


def draw_tokens(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs (B, L, V), one uniform per position (B, L) -> (B, L) in [0, V).
    One uniform per position keeps the noise per sample small and batch-independent."""
    cdf = probs.cumsum(-1)
    token = (cdf < u[..., None] * cdf[..., -1:]).sum(-1)
    return token.clamp_(max=probs.shape[-1] - 1)


def step_probs(m_t: float, m_s: float, remask: float) -> tuple[float, float]:
    """(probability a masked token unmasks, probability a decoded token remasks) for one step from
    mask level m_t to m_s. Remasking lengthens the step by remask * (1 - m_t) so the expected masked
    fraction still ends at m_s."""
    target = max(m_s - remask * (1.0 - m_t), 0.0)
    return (m_t - target) / m_t, remask


@torch.no_grad()
def sample_codes(model: CodePrior, num: int, seed: int = 0, steps: int = 128, temperature: float = 1.0,
                 eta: float = 0.0, start_index: int = 0, batch_size: int | None = None,
                 window: tuple[float, float] = (0.3, 0.55), progress: bool = False) -> torch.Tensor:
    """``num`` codes (num, L) long in [0, V) from ``steps`` ancestral steps; sample i depends only on
    (seed, start_index + i). ``eta`` > 0 turns on the remasking corrector for t inside ``window``."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    if not 0.0 <= eta < 1.0:
        raise ValueError(f"eta must be in [0, 1); got {eta}")
    batch_size = batch_size or num
    out = []
    for first in tqdm(range(0, num, batch_size), desc="sampling codes", disable=not progress, leave=False):
        indices = range(start_index + first, start_index + min(first + batch_size, num))
        out.append(_sample_batch(model, SampleRNG(seed, indices), steps, temperature, eta, window))
    codes = torch.cat(out) if out else torch.zeros(0, model.config.code_length, dtype=torch.long)
    return check_codes(codes, model.config.code_length, model.config.vocab_size, what="sampled codes")


def _sample_batch(model: CodePrior, rng: SampleRNG, steps: int, temperature: float, eta: float,
                  window: tuple[float, float]) -> torch.Tensor:
    L, V, eps = model.config.code_length, model.config.vocab_size, model.config.noise_eps
    device = next(model.parameters()).device
    rng.device = device
    B = len(rng)
    x = torch.full((B, L), V, dtype=torch.long, device=device)
    cached_x, probs = None, None
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for t, s in zip(times[:-1], times[1:]):
        u_unmask, u_remask, u_token = rng.rand(3, L).unbind(1)  # a fixed number of draws per step
        probs = _denoise(model, x, t, temperature, cached_x, probs)
        cached_x = x
        remask = eta if (window[0] < t < window[1] and s > 0) else 0.0
        p_unmask, p_remask = step_probs(mask_prob(t, eps), mask_prob(s, eps), remask)
        masked = x == V
        tokens = draw_tokens(probs, u_token)
        x = torch.where(masked & (u_unmask < p_unmask), tokens, x)
        x = torch.where(~masked & (u_remask < p_remask), V, x)
    if (x == V).any():  # the last step has m_s = 0 and no remasking: unreachable
        raise RuntimeError("the sampler left a masked position")
    return x


def _denoise(model: CodePrior, x: torch.Tensor, t: float, temperature: float,
             cached_x: torch.Tensor | None, cached: torch.Tensor | None) -> torch.Tensor:
    """p(x0 | x_t) at ``temperature``; a model without time input is re-run only on changed samples."""
    if model.config.time_conditioning or cached is None:
        stale = torch.ones(len(x), dtype=torch.bool, device=x.device)
        probs = torch.empty(*x.shape, model.config.vocab_size, device=x.device)
    else:
        stale, probs = (x != cached_x).any(1), cached.clone()
    if stale.any():
        logits = model(x[stale], torch.full((int(stale.sum()),), t, device=x.device))
        probs[stale] = torch.softmax(logits / temperature, dim=-1)
    return probs


# --------------------------------------------------------------------------------------------
# Training data


def markov_codes(num: int, code_length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """Codes from a fixed random first-order Markov chain (sparse Dirichlet(0.1) transitions): a
    source with long-range structure and a known entropy (``markov_entropy_bits``)."""
    start, trans = markov_source(vocab_size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = [torch.multinomial(start.expand(num, -1), 1, generator=g)[:, 0]]
    for _ in range(code_length - 1):
        x.append(torch.multinomial(trans[x[-1]], 1, generator=g)[:, 0])
    return torch.stack(x, 1)


def markov_source(vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(start distribution (V,), transition matrix (V, V)) of ``markov_codes``."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.full(vocab_size, 0.5))
    trans = rng.dirichlet(np.full(vocab_size, 0.1), size=vocab_size)
    return torch.tensor(start), torch.tensor(trans)


def markov_entropy_bits(code_length: int, vocab_size: int, seed: int = 0) -> float:
    """The exact entropy of ``markov_codes`` in bits per token (the floor any model can reach)."""
    start, trans = markov_source(vocab_size, seed)

    def entropy(p):
        return -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)

    marginal, total = start, entropy(start).item()
    for _ in range(code_length - 1):
        total += (marginal * entropy(trans)).sum().item()
        marginal = marginal @ trans
    return total / code_length


def markov_nll_bits(codes: torch.Tensor, vocab_size: int, seed: int = 0) -> float:
    """Mean -log2 p(code) / L under the true ``markov_codes`` source: a sample-quality score for a
    prior trained on it (real codes score ``markov_entropy_bits`` on average)."""
    start, trans = markov_source(vocab_size, seed)
    logp = start.log()[codes[:, 0]] + trans.log()[codes[:, :-1], codes[:, 1:]].sum(1)
    return (-logp.mean() / codes.shape[1] / LN2).item()


def emoji_colour_codes(num: int, code_length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """Codes read off the emoji training images: position i = the mean colour of patch i of an
    h x w grid (h w = L, h the largest divisor of L up to sqrt(L)), each channel quantised to
    V^(1/3) levels (L=32, V=64: 4x8 patches, 4 levels). Image-grounded, spatially correlated codes
    of any length; ``num`` and ``seed`` are unused (one code per training emoji)."""
    from .data import load

    levels = round(vocab_size ** (1 / 3))
    if levels**3 != vocab_size:
        raise ConfigError(f"synthetic:emoji-colours needs V = levels^3 (8, 27, 64, 125, ...); got V={vocab_size}")
    h = max(d for d in range(1, int(code_length**0.5) + 1) if code_length % d == 0)
    images = load("emoji", size=32, split="train").images.float() / 255.0
    means = F.adaptive_avg_pool2d(images, (h, code_length // h))  # (N, 3, h, w)
    q = (means * levels).long().clamp_(max=levels - 1)
    return (q[:, 0] * levels * levels + q[:, 1] * levels + q[:, 2]).flatten(1)


SYNTHETIC = {"markov": markov_codes, "emoji-colours": emoji_colour_codes}


@dataclass
class CodeDataConfig:
    """The ``data:`` section: where the training codes come from."""

    codes: str = "runs/emoji/codes/train.npy"  # .npy (N, L) uint16 | webdataset:PATTERN | synthetic:NAME
    holdout: float = 0.05  # fraction of stored codes held out (fixed permutation, seed 0) for bits/token
    eval_codes: str | None = None  # a held-out .npy (default for shards, which have no holdout)
    eval_max: int = 2048  # held-out codes scored per evaluation
    synthetic_num: int = 4096  # synthetic:markov only: number of codes


class CodeDataset(torch.utils.data.Dataset):
    def __init__(self, codes: torch.Tensor):
        self.codes = codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"code": self.codes[i]}


class ShardCodes(torch.utils.data.IterableDataset):
    """``code`` items from webdataset shards (``code.npy`` per sample), checked against L and V."""

    def __init__(self, pattern: str, code_length: int, vocab_size: int):
        from .data import ShardDataset

        self.shards = ShardDataset(pattern, repeat=True)
        self.code_length, self.vocab_size = code_length, vocab_size

    def __iter__(self):
        for item in self.shards:
            if "code" not in item:
                raise CodeError(f"shard sample {item.get('key')} has no code.npy entry")
            code = check_codes(item["code"].long().view(1, -1), self.code_length, self.vocab_size,
                               what=f"code of shard sample {item.get('key')}")
            yield {"code": code[0]}


def read_codes(data: CodeDataConfig, code_length: int | None, vocab_size: int | None) -> torch.Tensor:
    """All stored (or synthetic) codes as a long tensor (N, L), checked against L and V when given."""
    if data.codes.startswith("synthetic:"):
        name = data.codes.split(":", 1)[1]
        if name not in SYNTHETIC:
            raise ConfigError(f"unknown synthetic codes {name!r}; choose from {', '.join(SYNTHETIC)}")
        codes = SYNTHETIC[name](data.synthetic_num, code_length or 16, vocab_size or 64)
    else:
        codes = load_codes(data.codes)
    return check_codes(codes, code_length, vocab_size, what=f"codes from {data.codes}")


def split_holdout(codes: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): the held-out part is the last ``fraction`` of a seed-0 permutation."""
    perm = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))
    n_held = int(round(fraction * len(codes)))
    return codes[perm[n_held:]], codes[perm[:n_held]]


# --------------------------------------------------------------------------------------------
# Training stage


@dataclass
class PriorModelConfig:
    size: str = "tiny"  # a name from PRIOR_SIZES
    code_length: int | None = None  # L; None: from the codes
    vocab_size: int | None = None  # V; None: the largest stored value + 1 (set it to the encoder's V)
    rotary: bool = True
    time_conditioning: bool = True
    noise_eps: float = 1e-3


@dataclass
class PriorSampleConfig:
    steps: int = 128
    temperature: float = 1.0
    eta: float = 0.0
    num: int = 256


@dataclass
class PriorRunConfig:
    run_dir: str = "runs/prior"
    data: CodeDataConfig = field(default_factory=CodeDataConfig)
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    sample: PriorSampleConfig = field(default_factory=PriorSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CONFIG = PriorRunConfig


def load_data(config: PriorRunConfig) -> tuple[torch.utils.data.Dataset, torch.Tensor, torch.Tensor | None]:
    """(training dataset, held-out codes, training codes or None for shards), checked against L and V."""
    m, data = config.model, config.data
    if data.codes.startswith("webdataset:"):
        if not (m.code_length and m.vocab_size and data.eval_codes):
            raise ConfigError("codes from shards need model.code_length, model.vocab_size and data.eval_codes")
        heldout = load_codes(data.eval_codes, m.code_length, m.vocab_size)
        return ShardCodes(data.codes.split(":", 1)[1], m.code_length, m.vocab_size), heldout, None
    codes = read_codes(data, m.code_length, m.vocab_size)
    train_codes, heldout = split_holdout(codes, data.holdout)
    if data.eval_codes:
        heldout = load_codes(data.eval_codes, codes.shape[1], m.vocab_size)
    return CodeDataset(train_codes), heldout, train_codes


def build(config: PriorRunConfig) -> tuple[CodePrior, torch.utils.data.Dataset, torch.Tensor, torch.Tensor | None]:
    """(model, training dataset, held-out codes, training codes or None for shards)."""
    m = config.model
    dataset, heldout, train_codes = load_data(config)
    L = m.code_length or train_codes.shape[1]
    V = m.vocab_size or int(train_codes.max()) + 1
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
        codes = ema_model.sample(s.num, seed=0, steps=s.steps, temperature=s.temperature, eta=s.eta).cpu()
        save_codes(run_dir.samples / f"codes-{step:07d}.npy", codes)
        stats = code_statistics(codes, heldout) if len(heldout) else {}
        run_dir.log_metrics(step, heldout_bits=bits, **{f"sample_{k}": v for k, v in stats.items()})
        print(f"step {step}: held-out {bits:.4f} bits/token")

    if train_codes is not None and len(heldout) and run.latest_checkpoint() is None:
        base = unigram_bits(train_codes, heldout, model.config.vocab_size)
        run.create(config).log_metrics(0, unigram_bits=base["bits"], unigram_alpha=base["alpha"])
    fit(run, config.train, model, dataset, loss_fn, config=config, sample_fn=evaluate, desc="train prior")
    return run


# --------------------------------------------------------------------------------------------
# Code statistics (sampled codes against real ones)


def code_statistics(generated: torch.Tensor, real: torch.Tensor) -> dict:
    """How close sampled codes are to real ones, by statistics that need no density:

    - ``marginal_tv``: per-position value frequencies, total variation, averaged over positions;
    - ``pair_tv``: joint frequencies of neighbouring positions (i, i+1), total variation, averaged;
    - ``agreement_err``: the L x L matrix P(x_i == x_j), mean absolute difference;
    - ``unique``: fraction of distinct codes among the generated ones.
    Empirical TVs are biased up at small sample counts: compare against real-vs-real at the same
    counts (the noise floor).
    """
    V = int(max(generated.max(), real.max())) + 1
    L = generated.shape[1]
    pair_keys = [(c[:, :-1] * V + c[:, 1:]) for c in (generated, real)]
    return {
        "marginal_tv": float(np.mean([_tv(generated[:, i], real[:, i]) for i in range(L)])),
        "pair_tv": float(np.mean([_tv(pair_keys[0][:, i], pair_keys[1][:, i]) for i in range(L - 1)] or [0.0])),
        "agreement_err": (_agreement(generated) - _agreement(real)).abs().mean().item(),
        "unique": len(torch.unique(generated, dim=0)) / len(generated),
    }


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation between the empirical distributions of two 1-D integer samples."""
    values, inverse = torch.unique(torch.cat([a, b]), return_inverse=True)
    pa = torch.bincount(inverse[: len(a)], minlength=len(values)).double() / len(a)
    pb = torch.bincount(inverse[len(a):], minlength=len(values)).double() / len(b)
    return 0.5 * (pa - pb).abs().sum().item()


def _agreement(codes: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """P(x_i == x_j) over codes, (L, L)."""
    total = sum((c[:, :, None] == c[:, None, :]).double().sum(0) for c in codes.split(chunk))
    return total / len(codes)
