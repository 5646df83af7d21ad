"""A progress bar with ETA driven from inside ``lax.scan`` by the round index alone.

The compiled loop calls ``report(t)`` through ``jax.debug.callback`` every
``every`` rounds; ``t`` is the unbatched scan index, so a vmapped grid of runs
reports once per round, not once per run. The host side prints to stderr.

The callback is put into a program only when it is traced inside ``with ticking(True)``
(``sweep.run_grid`` with ``show_progress``); elsewhere ``tick`` traces to nothing, so a program
without a progress bar has no host callback, and JAX's persistent compilation cache (which does
not store programs with host callbacks) can keep it.

Inside ``with grid(programs)`` (the runner's list of compiled program calls, each with a name
and its work = iterations x runs), every new bar is the next program: it says
"program i of N", names the program (methods, attacks, f) and adds an ETA for the whole grid:
the current program's remaining time plus the later programs' work at the throughput measured
so far (run-iterations per second, compilation excluded).
"""

from __future__ import annotations

import sys
import time

import jax


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream=None, enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.program = _GRID[-1].start_program(self) if _GRID else None
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.first = None  # time of the first report (excludes compilation)
        self.last = -1
        self.last_time = self.start
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.printed_decile = -1

    def update(self, t: int) -> None:
        if not self.enabled or t <= self.last:
            return
        self.last = t
        now = time.perf_counter()
        self.last_time = now
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
        if self.program is None:
            msg = f"\r{self.label} [{bar}] {done}/{self.total} rounds"
        else:
            g, i = self.program
            msg = f"\r{g.label} program {i + 1} of {len(g.programs)}: {g.programs[i][0]} [{bar}] {done}/{self.total}"
        if rate > 0:
            msg += f"  {rate:.1f} rounds/s  ETA {eta:.0f}s"
            if self.program is not None:
                msg += f"  grid ETA {self.program[0].eta(self.program[1], rate, eta):.0f}s"
        self.stream.write(msg if self.tty else msg[1:] + "\n")
        if self.tty and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


_CURRENT: list[ProgressBar] = []
_GRID: list["grid"] = []


class grid:
    """Context manager: the bars created inside it are the programs ``programs`` in order.

    ``programs``: ``[(name, work)]`` with work = iterations x runs of each program call.
    """

    def __init__(self, programs, label: str = ""):
        self.programs = [(str(n), float(w)) for n, w in programs]
        self.label = label
        self.next = 0
        self.bars: list[ProgressBar] = []

    def start_program(self, bar: ProgressBar):
        i = min(self.next, len(self.programs) - 1)
        self.next += 1
        self.bars.append(bar)
        return (self, i)

    def throughput(self) -> float:
        """Work units (run-iterations) per second over the programs finished so far (0 if none)."""
        work = secs = 0.0
        for j, bar in enumerate(self.bars[:-1]):
            if bar.first is not None and bar.last >= 0:
                t0, r0 = bar.first
                done = bar.last + 1
                secs += bar.last_time - t0
                work += self.programs[min(j, len(self.programs) - 1)][1] * (done - r0 - 1) / max(bar.total, 1)
        return work / secs if secs > 0 and work > 0 else 0.0

    def eta(self, i: int, rounds_per_s: float, current_eta: float) -> float:
        """Seconds left for the grid: program ``i``'s ETA plus the later programs' work at the
        measured throughput (program ``i``'s own when no program has finished yet)."""
        later = sum(w for _, w in self.programs[i + 1 :])
        rate = self.throughput() or rounds_per_s * self.programs[i][1] / max(self.bars[-1].total, 1)
        return current_eta + (later / rate if rate > 0 else float("nan"))

    def __enter__(self):
        _GRID.append(self)
        return self

    def __exit__(self, *exc):
        _GRID.remove(self)


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


_TICKING: list[bool] = [False]


class ticking:
    """Context manager for tracing: ``tick`` calls traced inside ``ticking(True)`` put the progress
    callback into the program, inside ``ticking(False)`` (and outside any) they trace to nothing.

    A trace-time switch, so it belongs to the traced function (enter it inside the function that
    is jitted): a jitted function reuses its first trace whatever the switch says later.
    """

    def __init__(self, on: bool = True):
        self.on = bool(on)

    def __enter__(self):
        _TICKING.append(self.on)
        return self

    def __exit__(self, *exc):
        _TICKING.pop()


def tick(t: jax.Array, total: int, every: int | None = None) -> None:
    """Inside a scan: report round ``t`` to the active bar every ``every`` rounds, when traced
    inside ``ticking(True)``; otherwise nothing (no callback in the program)."""
    if not _TICKING[-1]:
        return
    every = every or max(1, total // 50)
    jax.lax.cond(
        (t % every == 0) | (t == total - 1),
        lambda: jax.debug.callback(_report, t),
        lambda: None,
    )
