"""The run's live display: done / failed / total, rate and ETA, then a summary table."""

from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from archive_colorize.core.text import printable


class RunProgress:
    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True, markup=False)
        self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]colorizing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self.task = self.progress.add_task("run", total=total, failed=0, rate="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def note(self, text: str) -> None:
        """A line above the bar (or plain, off a terminal)."""
        self.console.print(printable(text), highlight=False, markup=False)

    def advance(self, done: int, failed: int) -> None:
        self.failed += failed
        task = self.progress.tasks[0]
        speed = task.speed
        self.progress.update(
            self.task, advance=done + failed, failed=self.failed, rate=f"{speed:.2f} img/s" if speed else ""
        )


def summary_table(summary) -> Table:
    t = Table(title="archive-colorize run", show_header=False)
    t.add_row("output", summary.out)
    t.add_row("manifest rows", str(summary.total))
    t.add_row("done", str(summary.done))
    t.add_row("failed", str(summary.failed))
    t.add_row("pending", str(summary.pending))
    t.add_row("processed this run", f"{summary.processed_now} ({summary.failed_now} failed)")
    t.add_row("skipped (already settled)", str(summary.skipped))
    t.add_row("seconds", f"{summary.seconds:.1f}")
    return t


@contextlib.contextmanager
def native_stderr_to(path: str | None):
    """Send what Ray's C++ core writes to fd 2 into `path`; yield a stream on the real
    terminal for our own progress display. Python-level errors still reach the user."""
    if path is None:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    term = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield term
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        term.close()
