"""Rich progress on stderr: a bar for batch commands (`done` of `total` traces and the last one),
and for one analysis its steps, with a bar over work units when a large trace is read in units."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:  # the bar only reads its fields; importing it would load Polars
    from coherence_diag.scale.reduce import UnitTick

BarCallback = Callable[[int, int, str], None]


@contextmanager
def progress_bar(console: Console, enabled: bool) -> Iterator[BarCallback | None]:
    """Yields a callback `(done, total, message)` drawing the bar, or None when disabled or when
    the console is not a terminal (a CI log gets no bar)."""
    if not (enabled and console.is_terminal):
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("analyzing traces", total=None)

        def update(done: int, total: int, message: str) -> None:
            # The message names a trace, whose path may hold Rich markup characters: escaped.
            bar.update(task, completed=done, total=total, description=escape(f"analyzing traces ({message})"))

        yield update


class StepProgress:
    """Progress of one analysis on stderr: a spinner naming the current step (`step(message)`,
    the library's ProgressCallback), and while a trace is read in work units a bar over them
    (`units(tick)`, scale.reduce.UnitTick): units done of all, rows read per second, time left."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("starting", total=None)
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        # Messages may carry trace-derived text (env names): escaped.
        self.bar.update(self.task, description=escape(message), total=None, completed=0)

    def units(self, tick: UnitTick) -> None:
        rate = tick.rows_done / max(time.monotonic() - self.started, 1e-9)
        what = "first pass over" if tick.stage == "census" else "analyzing"
        self.bar.update(
            self.task,
            description=escape(f"{what} work units {tick.done}/{tick.total} · {rate:,.0f} rows/s"),
            completed=tick.rows_done,
            total=tick.rows_total,
        )


@contextmanager
def step_progress(console: Console, enabled: bool) -> Iterator[StepProgress | None]:
    """A StepProgress on `console`, or None when disabled or not a terminal."""
    if not (enabled and console.is_terminal):
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield StepProgress(bar)
