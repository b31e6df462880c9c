"""Progress for people while a command runs, on stderr.

On a terminal: a live bar that moves with the bytes read from the source, large objects
included while they stream. Elsewhere (a log file, CI, ``nohup``): one short line every
:data:`LINE_INTERVAL` seconds, so a long run shows it is alive without flooding the log. With
``quiet``: nothing. One unit system throughout, IEC (KiB, MiB, GiB), as the summaries use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar
from rich.text import Text

from daulat.plurals import plural
from daulat.terminal import printable

if TYPE_CHECKING:
    # Imported by transfer() when it runs: the command line imports this module to show any
    # progress (a scan's, a drill's), and the engine is for transfers.
    from daulat.transfer.engine import Progress as TransferProgress

__all__ = ["LINE_INTERVAL", "Feedback", "human_bytes", "human_duration"]

LINE_INTERVAL: Final = 10.0


def human_bytes(n: int | float | None) -> str:
    """``n`` bytes in IEC units: ``512 B``, ``1.5 KiB``, ``220.0 MiB``; ``-`` for None."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``42 s``, ``3 m 05 s``, ``2 h 07 m``."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"


class _Speed(ProgressColumn):
    """Bytes per second in IEC units (rich's own column speaks SI)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "-" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed"
        )


class Feedback:
    """How one command shows progress; see the module doc."""

    def __init__(self, console: Console, *, quiet: bool = False, interval: float = LINE_INTERVAL):
        self.console = console
        self.quiet = quiet
        self.interval = interval
        self.live = not quiet and console.is_terminal

    def say(self, message: str) -> None:
        """A one-line event (drill steps), unless quiet."""
        if not self.quiet:
            self.console.print(printable(message, keep_newlines=True))

    @contextmanager
    def _ticker(self, line: Callable[[], str]) -> Iterator[None]:
        """Print ``line()`` every ``interval`` seconds from a helper thread, until the block
        ends; only when the output is not a terminal and not quiet. A thread, so that a line
        comes even while nothing progresses (a stalled endpoint is exactly when one matters)."""
        if self.quiet or self.live:
            yield
            return
        stop = threading.Event()
        started = time.monotonic()

        def tick() -> None:
            while not stop.wait(self.interval):
                elapsed = human_duration(time.monotonic() - started)
                self.console.print(f"{line()}, {elapsed}", soft_wrap=True)

        thread = threading.Thread(target=tick, name="daulat-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1)

    @contextmanager
    def transfer(self, label: str) -> Iterator[Callable[[TransferProgress], None]]:
        """A callback for the transfer engine's progress, shown for the block's duration."""
        from daulat.transfer.engine import Progress as TransferProgress

        latest = TransferProgress()

        def line() -> str:
            p = latest
            if p.waiting_for is not None:
                # Before the plan every count is 0: "0 of 0 objects" would read as nothing to do.
                return f"{printable(label)}: {printable(p.waiting_for)}…"
            share = f" ({p.moved_bytes / p.planned_bytes:.0%})" if p.planned_bytes else ""
            extra = (f", {p.failed:,} failed" if p.failed else "") + (
                f", {plural(p.retries, 'retry', 'retries')}" if p.retries else ""
            )
            return (
                f"{printable(label)}: {p.done_objects:,} of {plural(p.planned_objects, 'object')}, "
                f"{human_bytes(p.moved_bytes)} of {human_bytes(p.planned_bytes)}{share}{extra}"
            )

        if not self.live:

            def remember(p: TransferProgress) -> None:
                nonlocal latest
                latest = p

            with self._ticker(line):
                yield remember
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _Speed(),
            TextColumn("{task.fields[objects]}", markup=False),
            TimeRemainingColumn(),
        )
        with Bar(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(printable(label), total=None, objects="")

            def update(p: TransferProgress) -> None:
                if p.waiting_for is not None:
                    bar.update(task, objects=f"{printable(p.waiting_for)}…")
                    return
                bar.update(
                    task,
                    total=p.planned_bytes or None,
                    completed=p.moved_bytes,
                    objects=f"{p.done_objects:,}/{plural(p.planned_objects, 'object')}"
                    + (f", {p.failed:,} failed" if p.failed else "")
                    + (f", {plural(p.retries, 'retry', 'retries')}" if p.retries else ""),
                )

            yield update

    @contextmanager
    def scanning(self) -> Iterator[Callable[[str, int, int], None]]:
        """A callback ``(store, objects, bytes)`` for listings (scans), shown for the block:
        one line of the display per store."""
        latest: list[tuple[str, int, int]] = []
        started = time.monotonic()

        def line() -> str:
            if not latest:
                return "scan: listing"
            name, objects, size = latest[-1]
            return f"scan {printable(name)}: {plural(objects, 'object')}, {human_bytes(size)}"

        if not self.live:

            def remember(name: str, objects: int, size: int) -> None:
                latest[:] = [(name, objects, size)]

            with self._ticker(line):
                yield remember
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            SpinnerColumn(finished_text="✓"),
            TextColumn("{task.fields[counts]}", markup=False),
            TimeElapsedColumn(),
        )
        with Bar(*columns, console=self.console, transient=False) as bar:
            tasks: dict[str, TaskID] = {}

            # A store's scan began when the previous one last reported (or the display began).
            last = [started]
            started_at: dict[str, float] = {}

            def update(name: str, objects: int, size: int) -> None:
                now = time.monotonic()
                if name not in tasks:
                    for other in tasks.values():
                        bar.update(other, total=1, completed=1)  # the previous store is done
                    tasks[name] = bar.add_task(f"scan {printable(name)}", total=None, counts="")
                    started_at[name] = last[0]
                last[0] = now
                elapsed = now - started_at[name]
                rate = f", {objects / elapsed:,.0f} objects/s" if elapsed >= 1 else ""
                bar.update(
                    tasks[name], counts=f"{plural(objects, 'object')}, {human_bytes(size)}{rate}"
                )

            yield update
            for task in tasks.values():
                bar.update(task, total=1, completed=1)

    @contextmanager
    def waiting(self, label: str) -> Iterator[None]:
        """Work with no measurable progress (verify): a spinner, or a line every interval."""
        if not self.live:
            with self._ticker(lambda: f"{printable(label)}: running"):
                yield
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            SpinnerColumn(),
            TimeElapsedColumn(),
        )
        with Bar(*columns, console=self.console, transient=True) as bar:
            bar.add_task(printable(label), total=None)
            yield
