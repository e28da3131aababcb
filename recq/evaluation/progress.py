"""Progress of ``recq evaluate``'s stages: rich bars on a terminal; in a log (output to
a file or a pipe, where transient bars print nothing) one line per stage every
``interval`` seconds with its count, rate and ETA, and one when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]


class StageLog:
    """Line-per-interval progress of one stage at a time (the non-terminal view)."""

    def __init__(self, console: Console, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.console, self.interval, self.clock = console, interval, clock

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Advance]:
        started = last = self.clock()
        done = 0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = self.clock()
            if now - last >= self.interval and done < total:
                last = now
                self.console.print(self.line(description, done, total, now - started))

        yield advance
        elapsed = self.clock() - started
        rate = f", {done / elapsed:,.1f}/s" if elapsed > 0 and done > 1 else ""
        self.console.print(f"{description}: done {done:,} in {elapsed:.1f} s{rate}")

    @staticmethod
    def line(description: str, done: int, total: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "?"
        return (f"{description}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), "
                f"{rate:,.1f}/s, ETA {eta}")  # fmt: skip


class StageBars:
    """Transient rich bars, one per stage (the terminal view)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[Advance]:
        task = self.progress.add_task(description, total=total)
        yield lambda n: self.progress.advance(task, n)
        self.progress.update(task, visible=False)


@contextmanager
def stages(console: Console) -> Iterator[StageLog | StageBars]:
    """Bars where the console is a terminal, lines in a log otherwise."""
    if not console.is_terminal:
        yield StageLog(console)
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        yield StageBars(progress)
