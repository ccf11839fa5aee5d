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


@contextlib.contextmanager
def staged_progress(first_stage: str, disable: bool = False):
    """Yield ``progress(done, total, stage=None)`` for library calls: the bars appear at the first
    call (a command refused before it prints nothing), and each new ``stage`` (``train``: one per
    network) starts a new bar below the last."""
    state = {"progress": None, "tasks": {}}

    def report(done: int, total: int, stage: str | None = None) -> None:
        if disable:
            return
        if state["progress"] is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn())
            state["progress"] = Progress(*columns, console=Console(file=sys.stderr), transient=False)
            state["progress"].start()
        stage = stage or first_stage
        if stage not in state["tasks"]:
            state["tasks"][stage] = state["progress"].add_task(stage, total=total)
        state["progress"].update(state["tasks"][stage], completed=done, total=total)

    try:
        yield report
    finally:
        if state["progress"] is not None:
            state["progress"].stop()
