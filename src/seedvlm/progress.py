"""Progress of a long loop: tqdm's bar on a terminal; elsewhere (a log file, a pipe, CI) one log line every
`interval` seconds with the count, the rate and the time left, so a long run piped to a log is never silent."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("seedvlm.progress")

INTERVAL = 30.0  # seconds between log lines when not on a terminal


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LogProgress:
    """tqdm's `update`/`close` as periodic log lines: 'eval: 160/500 q (32%), 3.1 q/s, ETA 1m50s'."""

    def __init__(self, total: int, desc: str, unit: str, interval: float | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.interval = INTERVAL if interval is None else interval
        self.n = 0
        self.start = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_duration((self.total - self.n) / rate)}" if rate > 0 and self.n < self.total else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {rate:.3g} {self.unit}/s{eta}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            log.info(self.line())

    def close(self) -> None:
        if self.total:
            log.info(self.line() + f", {_duration(time.monotonic() - self.start)} in all")


class _Off:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True, stream=None):
    """A progress reporter for `total` items: a tqdm bar on a terminal, periodic log lines otherwise, nothing
    when disabled (e.g. on every rank but the first)."""
    if not enabled:
        return _Off()
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LogProgress(total, desc, unit)
