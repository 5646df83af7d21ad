"""A progress bar with ETA driven from inside ``lax.scan`` by the round index alone.

The compiled loop calls ``report(t)`` through ``jax.debug.callback`` every
``every`` rounds; ``t`` is the unbatched scan index, so a vmapped grid of runs
reports once per round, not once per run. The host side prints to stderr.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream=None, enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.first = None  # time of the first report (excludes compilation)
        self.last = -1
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.printed_decile = -1

    def update(self, t: int) -> None:
        if not self.enabled or t <= self.last:
            return
        self.last = t
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, t)
        done = t + 1
        t0, r0 = self.first
        rate = (done - r0 - 1) / (now - t0) if now > t0 and done - r0 > 1 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        if not self.tty:  # logs: one line per 10%
            decile = 10 * done // max(self.total, 1)
            if decile == self.printed_decile:
                return
            self.printed_decile = decile
        width = 30
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        msg = f"\r{self.label} [{bar}] {done}/{self.total} rounds"
        if rate > 0:
            msg += f"  {rate:.1f} rounds/s  ETA {eta:.0f}s"
        self.stream.write(msg if self.tty else msg[1:] + "\n")
        if self.tty and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


_CURRENT: list[ProgressBar] = []


def _report(t) -> None:
    if _CURRENT:
        _CURRENT[-1].update(int(t))


class active:
    """Context manager making ``bar`` the target of in-scan reports."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar

    def __enter__(self):
        _CURRENT.append(self.bar)
        return self.bar

    def __exit__(self, *exc):
        _CURRENT.remove(self.bar)


def tick(t: jax.Array, total: int, every: int | None = None) -> None:
    """Inside a scan: report round ``t`` to the active bar every ``every`` rounds."""
    every = every or max(1, total // 50)
    jax.lax.cond(
        (t % every == 0) | (t == total - 1),
        lambda: jax.debug.callback(_report, t),
        lambda: None,
    )
