"""The text-to-code model's sequence, loss and sampler, and the small model trained from scratch
(see ``dlc.text``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..codes import check_codes
from ..errors import ConfigError
from ..runs import local_folder
from ..saved import CheckedLoading
from ..seeding import SampleRNG, Seed, seed_slice
from .tokenizers import CaptionTokenizer

MASK_EPS = 1e-3  # LLaDA: p = (1 - eps) t + eps, so no token is masked with probability 0
SEPARATOR = "<START-DLC>"

# --------------------------------------------------------------------------------------------
# Sequences, masking, loss


@dataclass(frozen=True)
class TokenLayout:
    """Where codes, the separator, mask and padding live in a model's token ids.

    Code value v is token ``code_offset + v`` (the V code tokens are contiguous)."""

    code_length: int
    code_vocab: int
    code_offset: int
    sep_id: int
    mask_id: int
    pad_id: int

    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        return codes + self.code_offset


def build_sequences(layout: TokenLayout, codes: torch.Tensor | None, text_ids: list[list[int]],
                    length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[codes, <START-DLC>, caption, pad...]`` -> (ids (B, N) long, padding (B, N) bool).

    ``codes`` None puts mask tokens in the code positions (generation). The caption part is padded
    to ``length`` (default: the longest caption of the batch)."""
    batch, L = len(text_ids), layout.code_length
    width = max([len(t) for t in text_ids] + [0]) if length is None else length
    ids = torch.full((batch, L + 1 + width), layout.pad_id, dtype=torch.long)
    ids[:, :L] = layout.mask_id if codes is None else layout.code_tokens(codes.long().cpu())
    ids[:, L] = layout.sep_id
    padding = torch.ones_like(ids, dtype=torch.bool)
    padding[:, : L + 1] = False
    for row, text in enumerate(text_ids):
        text = text[:width]
        ids[row, L + 1 : L + 1 + len(text)] = torch.as_tensor(text, dtype=torch.long)
        padding[row, L + 1 : L + 1 + len(text)] = False
    return ids, padding


def mask_tokens(ids: torch.Tensor, padding: torch.Tensor, mask_id: int, t: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLaDA forward process: (noisy ids, masked (B, N) bool, p (B, 1)); padding is never masked."""
    if t is None:
        t = torch.rand(len(ids), generator=generator, device=ids.device)
    p = ((1 - MASK_EPS) * t + MASK_EPS)[:, None]
    masked = (torch.rand(ids.shape, generator=generator, device=ids.device) < p) & ~padding
    return torch.where(masked, torch.full_like(ids, mask_id), ids), masked, p


def llada_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, p: torch.Tensor,
               padding: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on masked tokens weighted 1/p, averaged over the batch's non-pad tokens."""
    ce = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    weights = (1.0 / p).expand_as(masked)[masked]
    return (ce * weights).sum() / (~padding).sum().clamp_min(1)


def _commit_counts(code_length: int, steps: int) -> list[int]:
    """How many code tokens each step commits: as even as possible, earlier steps take the rest."""
    base, extra = divmod(code_length, steps)
    return [base + (s < extra) for s in range(steps)]


@torch.no_grad()
def generate_codes(logits_fn: Callable, layout: TokenLayout, text_ids: list[list[int]], rng: SampleRNG,
                   steps: int, temperature: float = 0.2, remasking: str = "low_confidence",
                   guidance_scale: float = 0.0, text_length: int | None = None, device="cpu") -> torch.Tensor:
    """Fill the L masked code positions; ``logits_fn(ids, padding) -> (B, N, vocab)``.

    Row i's randomness comes only from ``rng`` row i (Gumbel noise for the temperature, and the
    random remasking order), so sample i depends only on (seed, i)."""
    if remasking not in REMASKING:
        raise ConfigError(f"remasking={remasking!r}: expected one of {sorted(REMASKING)}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"text temperature must be a finite number >= 0 (0: greedy); got {temperature}")
    L, V, lo = layout.code_length, layout.code_vocab, layout.code_offset
    ids, padding = build_sequences(layout, None, text_ids, text_length)
    ids, padding = ids.to(device), padding.to(device)
    uncond = torch.where(~padding & (torch.arange(ids.shape[1], device=device) > L), layout.mask_id, ids)
    steps = max(1, min(int(steps), L))
    for count in _commit_counts(L, steps):
        logits = logits_fn(ids, padding)[:, :L, lo : lo + V].float()  # only code tokens can come out
        if guidance_scale:
            free = logits_fn(torch.cat([ids[:, :L], uncond[:, L:]], 1), padding)[:, :L, lo : lo + V].float()
            logits = free + (guidance_scale + 1) * (logits - free)
        gumbel = -torch.log(-torch.log(rng.rand(L, V).clamp(1e-20, 1.0).to(device)))
        chosen = (logits + temperature * gumbel).argmax(-1) if temperature > 0 else logits.argmax(-1)
        confidence = REMASKING[remasking](logits, chosen, rng).to(device)
        still_masked = ids[:, :L] == layout.mask_id
        confidence = confidence.masked_fill(~still_masked, -float("inf"))
        commit = torch.zeros_like(still_masked)
        commit.scatter_(1, confidence.topk(count, dim=1).indices, True)
        commit &= still_masked
        ids[:, :L] = torch.where(commit, chosen + lo, ids[:, :L])
    return check_codes(ids[:, :L] - lo, L, V, what="generated codes")


REMASKING = {
    "low_confidence": lambda logits, chosen, rng: logits.softmax(-1).gather(-1, chosen[..., None])[..., 0],
    "random": lambda logits, chosen, rng: rng.rand(chosen.shape[1]),
}


def sequence_loss(net: Callable, layout: TokenLayout, codes: torch.Tensor, text_ids: list[list[int]],
                  generator: torch.Generator | None = None, text_length: int | None = None,
                  caption_dropout: float | None = None) -> tuple[torch.Tensor, dict]:
    """Build, mask and score a batch; ``net(ids, padding) -> logits``. Also logs the accuracy on
    masked code tokens (how well captions and visible tokens predict the code). Captions are
    padded to ``text_length`` (default: the batch's longest; ``padded_text_length``).

    ``caption_dropout`` None: LLaDA's pre-training loss, on the whole sequence. A probability q: its
    supervised fine-tuning loss, where the prompt (separator and caption) is never masked and the loss
    is on the codes alone; the whole caption is masked in a fraction q of the rows, which trains the
    unconditional branch of classifier-free guidance."""
    ids, padding = build_sequences(layout, codes, text_ids, text_length)
    ids, padding = ids.to(codes.device), padding.to(codes.device)
    position = torch.arange(ids.shape[1], device=ids.device)  # (N,)
    frozen = padding if caption_dropout is None else padding | (position >= layout.code_length)  # never masked
    noisy, masked, p = mask_tokens(ids, frozen, layout.mask_id, generator=generator)
    if caption_dropout:
        dropped = torch.rand(len(ids), generator=generator, device=ids.device) < caption_dropout  # (B,)
        noisy = torch.where(dropped[:, None] & (position > layout.code_length) & ~padding, layout.mask_id, noisy)
    logits = net(noisy, padding)
    loss = llada_loss(logits, ids, masked, p, frozen)
    code_masked = masked[:, : layout.code_length]
    hits = logits[:, : layout.code_length].argmax(-1) == ids[:, : layout.code_length]
    return loss, {"code_acc": float(hits[code_masked].float().mean()) if code_masked.any() else 0.0}


def padded_text_length(model) -> int | None:
    """The caption width to train at: the batch's longest (None) for a model that honours its
    padding mask (``honours_padding``), else the width generation uses, ``max_text_length``.
    LLaDA's released model ignores ``attention_mask`` (ML-GSAI/LLaDA issue 90): its pads are
    tokens it attends to, so a prompt gives the same codes only if training and generation pad it
    to the same width."""
    return None if getattr(model, "honours_padding", False) else model.config.max_text_length


# --------------------------------------------------------------------------------------------
# Models


class CodeGenerationMixin:
    """``generate`` for any model with ``layout``, ``text_ids(captions)``, ``config.max_text_length``
    and ``forward(ids, padding) -> logits``."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], num_per_prompt: int = 1, seed: Seed = 0, steps: int | None = None,
                 temperature: float = 0.2, remasking: str = "low_confidence", guidance_scale: float = 0.0,
                 batch_size: int = 256, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Codes (len(prompts) * num_per_prompt, L) long in [0, V); row i = prompt i // num_per_prompt.
        ``steps`` defaults to L (one token per step); row i depends only on (seed, i), or on
        (seed, indices[i]) when a caller generates a shard of a larger run."""
        layout = self.layout
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        text = [ids for ids in self.text_ids(prompts) for _ in range(num_per_prompt)]
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        indices = list(range(len(text)) if indices is None else indices)
        if len(indices) != len(text):
            raise ConfigError(f"{len(indices)} sample indices for {len(text)} samples")
        out = []
        for start in range(0, len(text), batch_size):
            rows = range(start, min(start + batch_size, len(text)))
            rng = SampleRNG(seed_slice(seed, rows.start, rows.stop), [indices[i] for i in rows], device)
            out.append(generate_codes(self, layout, [text[i] for i in rows], rng,
                                      steps or layout.code_length, temperature, remasking, guidance_scale,
                                      self.config.max_text_length, device).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, layout.code_length, dtype=torch.long)


def bidirectional_blocks(width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    """``depth`` pre-norm transformer layers without a causal mask (every token sees every other)."""
    layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class TextToCode(CheckedLoading, ModelMixin, ConfigMixin, CodeGenerationMixin):
    """A small bidirectional transformer over [codes, <START-DLC>, caption] (trained from scratch).

    Token ids: caption pieces 0..T-1 (the trimmed tokenizer, pad = 0), codes T..T+V-1, then the
    separator and the mask. ``save_pretrained`` writes the tokenizer too (``tokenizer/``)."""

    honours_padding = True  # padded positions are masked out of attention: any pad width gives the same logits

    @register_to_config
    def __init__(self, code_length: int = 16, vocab_size: int = 64, text_vocab_size: int = 258,
                 max_text_length: int = 24, width: int = 256, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.tokens = nn.Embedding(text_vocab_size + vocab_size + 2, width)
        self.positions = nn.Parameter(torch.randn(1, code_length + 1 + max_text_length, width) * 0.02)
        self.blocks = bidirectional_blocks(width, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, text_vocab_size + vocab_size + 1)  # the mask is never a target
        nn.init.normal_(self.tokens.weight, std=0.02)
        self.tokenizer: CaptionTokenizer | None = None

    @property
    def layout(self) -> TokenLayout:
        T, V = self.config.text_vocab_size, self.config.vocab_size
        return TokenLayout(self.config.code_length, V, T, T + V, T + V + 1, 0)

    def text_ids(self, captions: Sequence[str]) -> list[list[int]]:
        if self.tokenizer is None:
            raise ConfigError("this TextToCode has no tokenizer: set model.tokenizer or load it with from_pretrained")
        return self.tokenizer.encode(captions, self.config.max_text_length)

    def forward(self, input_ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(input_ids) + self.positions[:, : input_ids.shape[1]]
        return self.head(self.norm(self.blocks(x, src_key_padding_mask=padding)))

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save(Path(save_directory) / "tokenizer")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        model.tokenizer = CaptionTokenizer.load(local_folder(pretrained_model_name_or_path) / "tokenizer")
        return model


# model_index.json records this import path: the public one, as before the package was split
TextToCode.__module__ = "dlc.text"
