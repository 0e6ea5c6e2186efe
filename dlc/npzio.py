"""ADM-format ``.npz`` batches (``arr_0``: uint8 (N, H, W, C)) written and read without holding them in memory.

    write_npz("samples.npz", (N, H, W, C), rows)   # rows: an iterable of uint8 (H, W, C) arrays
    images = read_npz_array("samples.npz")         # a read-only memory map when stored uncompressed

``write_npz`` streams the rows into an uncompressed zip member, the layout ``np.savez`` writes and
``np.load`` and the ADM evaluator read; the file's bytes depend only on the rows (a fixed zip
timestamp), and it appears under its name only once complete. ``read_npz_array`` memory-maps an
uncompressed member (50,000 ImageNet samples are 9.8 GB) and loads a compressed one.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import DLCError
from .files import atomic_write

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the same bytes every time
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def write_npz(path: str | Path, shape: tuple[int, ...], rows: Iterable[np.ndarray], key: str = "arr_0",
              dtype=np.uint8) -> Path:
    """Write ``rows`` (each of shape ``shape[1:]``) as the array ``key`` of shape ``shape``."""
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    written = 0
    with atomic_write(path) as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive, \
                archive.open(zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_ZIP_TIME), "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            for row in rows:
                row = np.ascontiguousarray(row, dtype=dtype)
                if row.shape != tuple(shape[1:]):
                    raise DLCError(f"{path}: row {written} has shape {row.shape}; expected {tuple(shape[1:])}")
                member.write(row.tobytes())
                written += 1
        if written != shape[0]:
            raise DLCError(f"{path}: got {written} rows for an array of {shape[0]}")
    return path


def read_npz_array(path: str | Path, key: str = "arr_0") -> np.ndarray:
    """The array ``key`` of an ``.npz``: a read-only memory map if stored uncompressed, else loaded."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            raise DLCError(f"{path} has no array {key!r} (it holds {', '.join(archive.namelist())})") from None
    if info.compress_type != zipfile.ZIP_STORED:
        return np.load(path)[key]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the zip local file header: name and extra-field lengths at bytes 26-29
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        read_header = HEADER_READERS.get(np.lib.format.read_magic(f))
        if read_header is None:  # a newer .npy version: let numpy read it
            return np.load(path)[key]
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        return np.load(path)[key]
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
