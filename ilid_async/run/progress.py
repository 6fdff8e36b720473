"""Progress while a run goes on: one line per running stage with done/total, rate, ETA and
failures, read from the store (the same counts as `ilid-async status`).

On a terminal the lines are a live rich display; elsewhere (containers, CI, a log file) a plain
line per stage goes to stderr every ``interval`` seconds, since a redrawn display would fill a
log with escape codes. "total" is the work known so far: it grows while sitemaps are walked,
so the ETA is for the known work.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from ilid_async.run.summary import stage_summary
from ilid_async.run.queries import StoreQueries

__all__ = [
    "RATE_WINDOW", "LIVE_REFRESH", "MAX_COUNT_SHARE", "StageProgress", "format_seconds", "RateWindow", "Progress",
    "is_terminal"
]

RATE_WINDOW = 60.0  # seconds of history behind the rate: the current speed, not the run's mean
LIVE_REFRESH = 1.0  # seconds between redraws of the live display
# Counting is a GROUP BY over the state tables; on a large store the live display backs off so
# that counting never takes more than this share of the event loop.
MAX_COUNT_SHARE = 0.05


@dataclass(frozen=True)
class StageProgress:
    stage: str
    done: int  # items finished: done, rejected or failed
    total: int  # items known so far
    failed: int
    rate: float | None  # items per second over the last RATE_WINDOW seconds
    finished: bool

    @property
    def eta(self) -> float | None:
        left = self.total - self.done
        if left <= 0:  # nothing known yet is not "done in no time"
            return 0.0 if self.total or self.finished else None
        return left / self.rate if self.rate else None

    def line(self) -> str:
        rate = "-" if self.rate is None else f"{self.rate:.1f}/s"
        eta = "done" if self.finished else f"ETA {format_seconds(self.eta)}"
        return f"{self.stage}: {self.done}/{self.total} done, {rate}, {eta}, failed {self.failed}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class RateWindow:
    """Items per second over the last RATE_WINDOW seconds, from (time, count) samples."""

    def __init__(self, samples: Iterable[tuple[float, int]] = ()):
        self._history: deque[tuple[float, int]] = deque(samples)

    def rate(self, now: float, done: int) -> float | None:
        history = self._history
        history.append((now, done))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW:
            history.popleft()
        t0, d0 = history[0]
        return (done - d0) / (now - t0) if now > t0 else None


class Progress:
    """Counts per stage from the store, with rates from their history.

    ``stages`` are (name, finished) pairs: the pipeline's running stages by name, and a callable
    saying whether that stage has ended."""

    def __init__(self, store: StoreQueries, stages: Iterable[tuple[str, Callable[[], bool]]], *,
                 interval: float = 10.0, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.stages = list(stages)
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self._rates = {name: RateWindow() for name, _ in self.stages}
        if live is None:
            live = is_terminal(self.stream)
        self.live = live

    def snapshot(self) -> list[StageProgress]:
        now = self.clock()
        rows = {row["stage"]: row for row in stage_summary(self.store)}
        out = []
        for name, finished in self.stages:
            row = rows[name]
            done = row["found"] - row["pending"]
            out.append(StageProgress(name, done, row["found"], sum(row["failed"].values()),
                                     self._rates[name].rate(now, done), finished()))
        return out

    def plain_lines(self) -> list[str]:
        elapsed = self.clock() - self.started
        return [f"progress [{elapsed:6.0f}s] {p.line()}" for p in self.snapshot()]

    def print_plain(self) -> None:
        print("\n".join(self.plain_lines()), file=self.stream, flush=True)

    def render(self):
        """The live display: a table with one row per stage."""
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for _ in range(5):
            table.add_column(justify="right")
        table.columns[0].justify = "left"
        for p in self.snapshot():
            rate = "-" if p.rate is None else f"{p.rate:.1f}/s"
            eta = "[green]done[/]" if p.finished else f"ETA {format_seconds(p.eta)}"
            failed = f"[red]failed {p.failed}[/]" if p.failed else "failed 0"
            table.add_row(f"[bold]{p.stage}[/]", f"{p.done}/{p.total}", rate, eta, failed)
        return table

    async def run(self, every_interval: Callable[[], None] = lambda: None) -> None:
        """Report until cancelled, then once more with the final counts. ``every_interval`` is
        called every ``interval`` seconds in both modes (the pipeline saves host stats there)."""
        if self.interval <= 0:  # progress off; the callback still runs
            while True:
                await asyncio.sleep(10.0)
                every_interval()
        if self.live:
            await self._run_live(every_interval)
        else:
            await self._run_plain(every_interval)

    async def _run_plain(self, every_interval: Callable[[], None]) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                every_interval()
                self.print_plain()
        finally:  # cancelled when the stages end: the last lines show where they ended
            self.print_plain()

    async def _run_live(self, every_interval: Callable[[], None]) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream)
        last_interval = self.clock()
        with Live(self.render(), console=console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    took = self.clock()
                    live.update(self.render(), refresh=True)
                    took = self.clock() - took
                    await asyncio.sleep(max(LIVE_REFRESH, took / MAX_COUNT_SHARE))
                    if self.clock() - last_interval >= self.interval:
                        last_interval = self.clock()
                        every_interval()
            finally:
                live.update(self.render(), refresh=True)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
