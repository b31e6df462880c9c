"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM.

:func:`run` runs a coroutine as :func:`asyncio.run` does, except that the first SIGINT or
SIGTERM *cancels* it rather than killing the process or raising ``KeyboardInterrupt`` at a
random line. The library's entry points catch that cancellation where they keep state: the
transfer engine stops its workers (an upload in flight is aborted by its store, or left for the
next run to resume or clean up), flushes the journal, marks the run ``interrupted`` and raises
:class:`~daulat.errors.Interrupted` with what it had done; every entry point records the
interruption in the audit log. :func:`run` turns a cancellation that nobody converted into
:class:`~daulat.errors.Interrupted` too, so the caller always learns which signal stopped it
(exit code 128 + signal: 130 for SIGINT, 143 for SIGTERM).

A second signal ends the process at once with that code: nothing is lost by it, because the
journal commits atomically and a rerun resumes from its last commit.

Python callers who run daulat's coroutines with their own event loop keep asyncio's usual
behaviour (cancellation propagates as :class:`asyncio.CancelledError`); the journal and the
audit log record the interruption all the same.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, Final, TypeVar

from daulat.errors import Interrupted

__all__ = ["SIGNALS", "note", "received", "reset", "run"]

T = TypeVar("T")

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None


def received() -> int | None:
    """The signal that is stopping the current :func:`run`, if one arrived."""
    return _received


def reset() -> None:
    """Forget a signal an earlier run received (a process may run several commands)."""
    global _received
    _received = None


def note(signum: int) -> None:
    """Record that ``signum`` arrived outside :func:`run` (the CLI's own handler does)."""
    global _received
    _received = signum


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion; SIGINT/SIGTERM cancel it cleanly (see the module doc).

    Raises :class:`~daulat.errors.Interrupted` when a signal stopped it. Off the main thread
    (where signal handlers cannot be installed) this is plain :func:`asyncio.run`.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    _received = None
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        main: list[asyncio.Task[T]] = []

        def cancel() -> None:
            if main and not main[0].done():
                main[0].cancel()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            global _received
            if _received is not None:
                name = signal.Signals(signum).name
                os.write(2, f"\n{name} again: stopping now\n".encode())
                os._exit(128 + signum)
            _received = signum
            loop.call_soon_threadsafe(cancel)

        async def wrapper() -> T:
            task = asyncio.current_task()
            assert task is not None
            main.append(task)
            if _received is not None:  # the signal came before the task existed
                coro.close()
                raise asyncio.CancelledError
            return await coro

        previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
        try:
            return runner.run(wrapper())
        except asyncio.CancelledError:
            if _received is None:
                raise
            raise Interrupted(_received) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
