"""Codes on disk: ``.npy`` uint16 (N, L), row i = dataset index i; and the checks every code passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CodeError
from ..files import atomic_write


def check_codes(codes: torch.Tensor, code_length: int | None = None, vocab_size: int | None = None,
                what: str = "codes") -> torch.Tensor:
    """Raise CodeError unless ``codes`` is an integer (N, L) array with values in [0, V)."""
    if codes.ndim != 2:
        raise CodeError(f"{what} must have shape (N, L); got shape {tuple(codes.shape)}")
    if codes.is_floating_point():
        raise CodeError(f"{what} must be integers (token indices); got {codes.dtype}")
    if code_length is not None and codes.shape[1] != code_length:
        raise CodeError(f"{what} have length {codes.shape[1]}, but the model expects L = {code_length}")
    if vocab_size is not None and codes.numel() and (codes.min() < 0 or codes.max() >= vocab_size):
        raise CodeError(f"{what} hold values from {int(codes.min())} to {int(codes.max())}; "
                        f"expected values in [0, {vocab_size}) (V = {vocab_size})")
    return codes


def load_codes(path: str | Path, code_length: int | None = None, vocab_size: int | None = None,
               rows: int | None = None) -> torch.Tensor:
    """Read stored codes as a long tensor (N, L), checking shape, values and row count."""
    path = Path(path)
    if not path.is_file():
        raise CodeError(f"codes file {path} does not exist (write it with `dlc encode`)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CodeError(f"codes file {path} is not a readable .npy array: {e}") from e
    if array.dtype.kind not in "iu":  # never cast first: 5.5 would silently become 5
        raise CodeError(f"codes file {path} holds {array.dtype} values; codes are integers (token indices)")
    codes = check_codes(torch.from_numpy(array.astype(np.int64)), code_length, vocab_size, what=f"codes in {path}")
    if rows is not None and len(codes) != rows:
        raise CodeError(f"codes file {path} has {len(codes)} rows but the dataset has {rows} images "
                        "(row i must be the code of image i)")
    return codes


def save_codes(path: str | Path, codes: torch.Tensor) -> Path:
    """Write codes as uint16 (N, L) ``.npy`` (atomically)."""
    path = Path(path)
    if codes.numel() and int(codes.max()) >= 2**16:
        raise CodeError(f"code values up to {int(codes.max())} do not fit uint16 storage")
    with atomic_write(path) as partial:
        np.save(partial, codes.cpu().numpy().astype(np.uint16))
    return path
