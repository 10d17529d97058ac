"""The run's live display: done / failed / total, rate and ETA, then a summary table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RunProgress:
    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
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

    def advance(self, done: int, failed: int) -> None:
        self.failed += failed
        task = self.progress.tasks[0]
        speed = task.speed
        self.progress.update(self.task, advance=done + failed, failed=self.failed,
                             rate=f"{speed:.2f} img/s" if speed else "")


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
