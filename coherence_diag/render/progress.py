"""A Rich progress bar on stderr for batch commands: `done` of `total` traces and the last one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
