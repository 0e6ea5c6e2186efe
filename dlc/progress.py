"""Progress that reads well both on a terminal and in a log file.

``tqdm(...)`` takes tqdm's arguments. On a terminal it is tqdm's bar. When the output is not a
terminal (``nohup``, a cluster job's log, ``2> train.log``) a redrawn bar would fill the file with
carriage returns, so it writes a plain line instead, every ``DLC_PROGRESS_SECONDS`` seconds
(default 30) or every tenth of the total (at most one line per tenth of that time), and a final
line when the work ends::

    train dit: 40% 1200/3000 [02:31<03:47, 7.93it/s, loss=0.5210]
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm as terminal_bar

LINE_FORMAT = "{desc}{percentage:.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
PERCENT_STEP = 10.0


def tqdm(iterable=None, *args, file=None, **kwargs):
    """tqdm's bar when ``file`` (default stderr) is a terminal, else a ``LogProgress``."""
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty and isatty():
        return terminal_bar(iterable, *args, file=stream, **kwargs)
    return LogProgress(iterable, *args, file=stream, **kwargs)


class LogProgress:
    """The part of tqdm's interface the library uses (iterate, ``update``, ``set_postfix``,
    ``set_description``, ``close``, a context manager), written as whole lines."""

    def __init__(self, iterable=None, desc: str | None = None, total: float | None = None, leave: bool = True,
                 file=None, disable: bool = False, unit: str = "it", initial: float = 0,
                 every_seconds: float | None = None, **_terminal_only):  # ncols, dynamic_ncols, ...
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.n, self.initial = iterable, total, initial, initial
        self.desc, self.unit, self.leave, self.disable = desc or "", unit, leave, disable
        self.file = file if file is not None else sys.stderr
        self.every_seconds = every_seconds if every_seconds is not None else float(
            os.environ.get("DLC_PROGRESS_SECONDS", 30))
        self.postfix = ""
        self.start = self.last_time = time.monotonic()
        self.last_percent = self._percent()
        self.lines, self.written, self.closed = 0, None, False

    def __iter__(self):
        if self.disable:
            yield from self.iterable
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.disable and self._due(time.monotonic()):
            self._write()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass  # lines are written on their schedule, not on demand

    def close(self) -> None:
        """The final line (for a bar with ``leave=False``, only when it already wrote one)."""
        if self.closed or self.disable:
            return
        self.closed = True
        if (self.leave or self.lines) and self.written != (self.n, self.postfix):
            self._write()

    def _percent(self) -> float | None:
        return 100.0 * self.n / self.total if self.total else None

    def _due(self, now: float) -> bool:
        since = now - self.last_time
        if since >= self.every_seconds:
            return True
        percent = self._percent()
        return (percent is not None and percent - self.last_percent >= PERCENT_STEP
                and since >= self.every_seconds / PERCENT_STEP)

    def _write(self) -> None:
        now = time.monotonic()
        self.file.write(self.line(now - self.start) + "\n")
        self.file.flush()
        self.last_time, self.last_percent, self.lines = now, self._percent(), self.lines + 1
        self.written = (self.n, self.postfix)

    def line(self, elapsed: float) -> str:
        """One progress line in tqdm's words (rate from the work done since this bar started)."""
        return terminal_bar.format_meter(
            self.n, self.total, elapsed, prefix=f"{self.desc}: " if self.desc else "", unit=self.unit, initial=self.initial,
            postfix=self.postfix or None, bar_format=LINE_FORMAT if self.total else LINE_FORMAT_NO_TOTAL)
