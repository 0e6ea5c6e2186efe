"""Files that appear under their name only once complete."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so ``np.save`` adds none) to write to; it
    replaces ``path`` when the block ends, and is removed if the block raises. A kill leaves either
    the old file or the new one, never half of one (at most a hidden ``.partial-NAME``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
