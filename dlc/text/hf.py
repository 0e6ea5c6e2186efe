"""Hugging Face language models as text-to-code models (LLaDA-8B-Base in the paper): V code tokens
and the separator added, embeddings resized, fully fine-tuned or with LoRA (peft)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..runs import local_folder, model_folder
from .minilm import MiniLMTextToCode
from .model import SEPARATOR, CodeGenerationMixin, TextToCode, TokenLayout

HF_META = "dlc_text.json"
CODE_TOKEN = "<dlc_{}>"


class HFTextToCode(nn.Module, CodeGenerationMixin):
    """A Hugging Face LM (e.g. LLaDA-8B-Base) with V code tokens ``<dlc_i>`` and ``<START-DLC>`` added.

    ``from_base`` adds the tokens and resizes the embeddings (LoRA with ``lora_rank`` > 0, else a full
    fine-tune); ``save_pretrained`` writes the LM (LoRA merged), its tokenizer and ``dlc_text.json``.
    ``code_token`` (a format with one ``{}``) and ``separator`` name the tokens (the authors' LLaDA:
    ``<|sem_vocab_{}|>`` and ``<|start_sem|>``, ``dlc convert text``)."""

    def __init__(self, lm, tokenizer, code_length: int, vocab_size: int, max_text_length: int = 128,
                 model_class: str = "AutoModel", trust_remote_code: bool = False, code_token: str = CODE_TOKEN,
                 separator: str = SEPARATOR):
        super().__init__()
        from types import SimpleNamespace

        self.lm, self.tokenizer = lm, tokenizer
        self.config = SimpleNamespace(code_length=code_length, vocab_size=vocab_size, max_text_length=max_text_length,
                                      model_class=model_class, trust_remote_code=trust_remote_code,
                                      code_token=code_token, separator=separator)
        self.layout = _hf_layout(tokenizer, code_length, vocab_size, code_token, separator)

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
    def from_pretrained(cls, directory: str | Path, torch_dtype: str | None = None,
                        trust_remote_code: bool = False) -> HFTextToCode:
        """Load a saved model. Trust comes from the caller, never from the folder: a model whose
        architecture is Python code shipped with it (LLaDA) loads only with ``trust_remote_code=True``,
        since loading runs that code."""
        from transformers import AutoTokenizer

        directory = local_folder(directory)
        if not (directory / HF_META).is_file():
            raise CheckpointError(f"{directory} has no {HF_META}: not a saved HFTextToCode")
        meta = json.loads((directory / HF_META).read_text())
        if meta.get("trust_remote_code") and not trust_remote_code:
            raise CheckpointError(
                f"the text model in {directory} needs its own Python code to load (it was trained with "
                "trust_remote_code): loading it runs that code. Pass trust_remote_code=True (dlc: "
                "--trust-remote-code) only if you trust where the folder came from")
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
        lm = _load_lm(directory, meta["model_class"], trust_remote_code, torch_dtype)
        return cls(lm, tokenizer, meta["code_length"], meta["vocab_size"], meta["max_text_length"],
                   meta["model_class"], trust_remote_code, meta.get("code_token", CODE_TOKEN),
                   meta.get("separator", SEPARATOR))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

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
    return tokenizer.get_vocab().get("<|mdm_mask|>")  # LLaDA's mask token (id 126336)


def _hf_layout(tokenizer, code_length: int, vocab_size: int, code_token: str = CODE_TOKEN,
               separator: str = SEPARATOR) -> TokenLayout:
    vocab = tokenizer.get_vocab()
    first = vocab.get(code_token.format(0))
    if first is None or vocab.get(code_token.format(vocab_size - 1)) != first + vocab_size - 1:
        raise CheckpointError(f"the tokenizer lacks the {vocab_size} contiguous code tokens {code_token.format('i')}: "
                              "build the model with HFTextToCode.from_base")
    if separator not in vocab:
        raise CheckpointError(f"the tokenizer lacks the separator token {separator}")
    return TokenLayout(code_length, vocab_size, first, vocab[separator], _mask_id(tokenizer), tokenizer.pad_token_id)


def _with_lora(lm, rank: int):
    """LoRA on every linear layer; the (resized) input and output embeddings train in full, since
    the code tokens are new."""
    from peft import LoraConfig, get_peft_model

    embeddings = {lm.get_input_embeddings(), lm.get_output_embeddings()}
    names = sorted({name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if module in embeddings})
    return get_peft_model(lm, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                         modules_to_save=names))


def load_text_model(path: str | Path, trust_remote_code: bool = False, **kwargs):
    """A saved text model of either family (a run directory or its ``model/``); ``trust_remote_code``
    as ``HFTextToCode.from_pretrained`` (a model trained from scratch runs no code of its own)."""
    path = model_folder(path)
    if (path / HF_META).is_file():
        return HFTextToCode.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    return SAVED_CLASSES.get(saved_class(path), TextToCode).from_pretrained(path, **kwargs)


SAVED_CLASSES = {cls.__name__: cls for cls in (TextToCode, MiniLMTextToCode)}  # config.json's _class_name -> class


def saved_class(path: Path) -> str | None:
    """The ``_class_name`` a model folder's config.json records (None without one)."""
    config = path / "config.json"
    return json.loads(config.read_text()).get("_class_name") if config.is_file() else None
