"""Progress bars for long work (rich, on stderr so stdout stays clean for data)."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def progress_bar(description: str, total: int, disable: bool = False):
    """Yield ``advance(done, total)``, a callback that moves a rich progress bar to ``done``."""
    if disable:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def advance(done: int, total_: int) -> None:
            progress.update(task, completed=done, total=total_)

        yield advance
