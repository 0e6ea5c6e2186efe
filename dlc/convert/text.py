"""The authors' text-and-code LLaDA (a Hugging Face model folder) -> the pipeline's HF text model.

The authors fine-tuned LLaDA-8B-Base with a separator ``<|start_sem|>`` (added as the tokenizer's
``sep_token``) followed by V added tokens ``<|sem_vocab_0|> .. <|sem_vocab_{V-1}|>``, so code value
v is token ``id(<|start_sem|>) + 1 + v``; a training sequence is ``[code tokens][<|start_sem|>]
[caption]``, and generation fills L masks (LLaDA's ``<|mdm_mask|>``) in front of
``<|start_sem|>`` + prompt. That is our HF text layout ([codes][separator][caption]) with other
token names, so nothing in the weights changes: the folder is copied as it is and
``dlc_text.json`` records the token names, L and V. Checked: the separator and V contiguous code
tokens right after it exist (V read from the tokenizer, equal to the DiT's), a mask token exists,
and the LM's embedding table (``config.json``) covers every token id.

What differs from the authors' sampler (ours, ``dlc.text.generate_codes``): only code tokens can
come out (theirs may draw any token, giving out-of-range codes), low-confidence remasking ranks by
the probability among the code tokens, and guidance masks the caption but keeps the separator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError
from ..text.hf import HF_META
from .common import pipeline_code_shape

WHAT = "text model"
CODE_TOKEN = "<|sem_vocab_{}|>"
SEPARATOR = "<|start_sem|>"
MASK = "<|mdm_mask|>"  # LLaDA's


def code_vocabulary(tokenizer) -> int:
    """V: how many ``<|sem_vocab_i|>`` tokens follow the separator with consecutive ids."""
    vocab = tokenizer.get_vocab()
    if SEPARATOR not in vocab:
        raise CheckpointError(f"{WHAT}: the tokenizer has no {SEPARATOR} separator; not the authors' text-and-code model")
    first = vocab[SEPARATOR] + 1
    count = 0
    while vocab.get(CODE_TOKEN.format(count)) == first + count:
        count += 1
    if count == 0 or CODE_TOKEN.format(count) in vocab:
        raise CheckpointError(f"{WHAT}: the code tokens {CODE_TOKEN.format('i')} are not contiguous right after "
                              f"{SEPARATOR} (found {count} in order)")
    return count


def check_text_folder(source: Path, tokenizer, vocab_size: int) -> dict:
    """The folder's ``config.json``, after checking the tokens against it and the DiT's V."""
    found = code_vocabulary(tokenizer)
    if found != vocab_size:
        raise CheckpointError(f"{WHAT}: the tokenizer has {found} code tokens; the DiT reads V = {vocab_size}")
    if tokenizer.mask_token_id is None and MASK not in tokenizer.get_vocab():
        raise CheckpointError(f"{WHAT}: the tokenizer has no mask token ({MASK} or mask_token)")
    config_path = source / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{source} has no config.json: give the downloaded model folder")
    config = json.loads(config_path.read_text())
    rows = max(config.get("vocab_size", 0), config.get("embedding_size", 0))
    if rows < len(tokenizer):
        raise CheckpointError(f"{WHAT}: the embedding table has {rows} rows but the tokenizer has {len(tokenizer)} "
                              "tokens: the code tokens were not trained")
    return config


def add_text(source: str | Path, out_dir: str | Path, model_class: str | None = None,
             trust_remote_code: bool = False, max_text_length: int = 128) -> Path:
    """Copy the authors' text-and-code model into the pipeline folder ``out_dir`` as its
    ``text_model`` (loaded by ``DLCPipeline.from_pretrained(out_dir, trust_remote_code=True)`` when the
    model ships its own code, as LLaDA does). ``model_class``: the transformers loader (default
    ``AutoModel`` for a model with its own code, as the authors load LLaDA; else
    ``AutoModelForMaskedLM``). ``trust_remote_code`` lets a tokenizer with its own code load here."""
    from transformers import AutoTokenizer

    source, out = Path(source), Path(out_dir) / "text_model"
    length, vocab_size = pipeline_code_shape(out_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the tokenizer in {source}: {e}") from e
    config = check_text_folder(source, tokenizer, vocab_size)
    positions = config.get("max_position_embeddings") or config.get("max_sequence_length")
    if positions and length + 1 + max_text_length > positions:
        raise CheckpointError(f"{WHAT}: the LM takes {positions} positions, fewer than L + 1 + max_text_length = "
                              f"{length + 1 + max_text_length}; lower max_text_length")
    own_code = "auto_map" in config
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(".cache", HF_META))
    meta = dict(code_length=length, vocab_size=vocab_size, max_text_length=max_text_length,
                model_class=model_class or ("AutoModel" if own_code else "AutoModelForMaskedLM"),
                trust_remote_code=own_code, code_token=CODE_TOKEN, separator=SEPARATOR)
    (out / HF_META).write_text(json.dumps(meta, indent=2))
    return out
