"""Discrete Latent Codes as data: storage and checks (``store``), the sources every stage's
training resolves its codes through (``sources``), synthetic sources (``synthetic``), and encoding
a dataset into codes (``encoding``)."""

from .sources import CodeSource, code_decoder, frozen_encoder, resolve_codes
from .store import check_codes, load_codes, save_codes
from .synthetic import SYNTHETIC

__all__ = ["CodeSource", "SYNTHETIC", "check_codes", "code_decoder", "frozen_encoder", "load_codes",
           "resolve_codes", "save_codes"]
