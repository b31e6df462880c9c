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
journal commits atomically and a rerun resumes from its last commit. Only a signal received
after the first was handled counts as a second one: ``timeout -s INT`` (and other supervisors)
signal both the process and its process group, so one expiry delivers the signal twice, moments
apart. Copies that arrive before the run was cancelled, or within :data:`REPEAT_WINDOW` seconds
of the first, are the same request. A run whose stop takes long and whose main thread stays free
to handle signals at once (``daulat serve``'s drain) passes a shorter ``repeat_window``.

A signal that arrives before the coroutine has started does not skip it: the coroutine starts
already cancelled, so that its first ``await`` raises the cancellation inside its own clean-up
(an entry point's audit record says it was interrupted).

Python callers who run daulat's coroutines with their own event loop keep asyncio's usual
behaviour (cancellation propagates as :class:`asyncio.CancelledError`); the journal and the
audit log record the interruption all the same.

The synchronous library functions (``daulat.exit`` …) run with ``polite=True``: they are guests
in someone else's process, so they take over a signal only where its handling is still
Python's default (SIGINT raising ``KeyboardInterrupt``, SIGTERM killing the process unrecorded),
put the caller's handlers back when the call returns, and leave a handler the caller installed
(or ``SIG_IGN``) in charge. When such a handler raises an exception to stop the work, the call
is cancelled cleanly (recorded as interrupted) and the exception is raised to the caller, on
either event loop (uvloop would otherwise log it and run on). A second signal during such a
call gets the process's own handling (a ``KeyboardInterrupt``, or SIGTERM's default death)
instead of ending the process with :func:`os._exit`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from daulat.errors import ConfigError, Interrupted

if TYPE_CHECKING:
    # Imported by run(): the command line imports this module in every process, and one that
    # runs no coroutine (`daulat --help`, `daulat keys new`) has no use for asyncio.
    import asyncio

__all__ = [
    "REPEAT_WINDOW",
    "SIGNALS",
    "begin",
    "begun",
    "note",
    "received",
    "repeated",
    "reset",
    "run",
]

T = TypeVar("T")

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
#: Seconds after the first signal during which another one is the same request delivered again.
#: Measured from when Python ran the first handler, not from the signal's arrival: on a busy
#: machine the two deliveries of one ``timeout`` expiry reach the handlers a second or more
#: apart, and a deliberate second Ctrl-C within two seconds only waits for the clean stop.
REPEAT_WINDOW: Final = 2.0

_received: int | None = None
# When the first signal arrived, and when it was handled (the run cancelled, or the caller's
# KeyboardInterrupt raised): a later signal is a second one only after both.
_received_at: float | None = None
_handled = False
_begun = False
_window = REPEAT_WINDOW  # the current run's (see run())


def received() -> int | None:
    """The signal that is stopping the current :func:`run`, if one arrived."""
    return _received


def reset() -> None:
    """Forget a signal an earlier run received (a process may run several commands)."""
    global _received, _received_at, _handled, _begun, _window
    _received, _received_at, _handled, _begun = None, None, False, False
    _window = REPEAT_WINDOW


def note(signum: int, *, handled: bool = True) -> None:
    """Record that ``signum`` arrived outside :func:`run` (the CLI's own handler does)."""
    global _received, _received_at, _handled
    _received, _received_at, _handled = signum, time.monotonic(), handled


def repeated() -> bool:
    """Whether a signal arriving now is a *second* one: a first arrived, was handled, and
    the run's repeat window (:data:`REPEAT_WINDOW` unless it gave another) has passed since
    (see the module doc)."""
    return (
        _received is not None
        and _handled
        and _received_at is not None
        and time.monotonic() - _received_at >= _window
    )


def begin() -> None:
    """Note that the command reached its work (a library call): an interrupt from now on may
    have left something done, and is recorded where the work is audited."""
    global _begun
    _begun = True


def begun() -> bool:
    """Whether :func:`begin` was called since the last :func:`reset`."""
    return _begun


def _default_handling(signum: int, handler: object) -> bool:
    """Whether ``handler`` is what Python does with ``signum`` unless told otherwise."""
    # getsignal() gives a plain 0 for SIG_DFL where the interpreter never set the handler.
    return handler == signal.SIG_DFL or (
        signum == signal.SIGINT and handler is signal.default_int_handler
    )


def run(
    coro: Coroutine[Any, Any, T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    polite: bool = False,
    repeat_window: float = REPEAT_WINDOW,
) -> T:
    """Run ``coro`` to completion; SIGINT/SIGTERM cancel it cleanly (see the module doc).

    Raises :class:`~daulat.errors.Interrupted` when a signal stopped it. Off the main thread
    (where signal handlers cannot be installed) this is plain :func:`asyncio.run`.
    ``loop_factory`` makes the event loop (as :class:`asyncio.Runner`'s does); by default
    daulat's (:func:`daulat.loops.loop_factory`: uvloop's where installed).
    ``polite``: take over only signals whose handling is Python's default, and let a second
    signal reach the handling the process had (the library's calls; see the module doc).
    ``repeat_window``: seconds after the first signal during which another is a copy of it.
    """
    global _received, _received_at, _handled, _window
    import asyncio

    from daulat import loops

    if loop_factory is None:
        try:
            loop_factory = loops.loop_factory()
        except ConfigError:
            coro.close()  # never started: no "was never awaited" warning after the error line
            raise
    begin()
    if threading.current_thread() is not threading.main_thread():
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    _received, _received_at, _handled, _window = None, None, False, repeat_window
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        main: list[asyncio.Task[T]] = []

        def cancel() -> None:
            global _handled
            if main and not main[0].done():
                main[0].cancel()
                _handled = True

        def on_signal(signum: int, frame: FrameType | None) -> None:
            global _received, _received_at
            if _received is not None:
                if not repeated():
                    return  # the first one again (see the module doc): already being handled
                name = signal.Signals(signum).name
                os.write(2, f"\n{name} again: stopping now\n".encode())
                if polite:
                    # The caller's process decides: its handler, KeyboardInterrupt, or death.
                    signal.signal(signum, previous[signal.Signals(signum)])
                    signal.raise_signal(signum)
                    return
                os._exit(128 + signum)
            _received, _received_at = signum, time.monotonic()
            loop.call_soon_threadsafe(cancel)

        async def wrapper() -> T:
            global _handled
            task = asyncio.current_task()
            assert task is not None
            main.append(task)
            if _received is not None:
                # The signal came before the task existed: it starts cancelled, so the
                # cancellation reaches the coroutine at its first await, inside its clean-up.
                task.cancel()
                _handled = True
            return await coro

        # What the caller's own handlers raised (polite runs): see guarded().
        raised: list[Exception] = []

        def guarded(handler: Callable[[int, FrameType | None], Any]) -> Callable[..., None]:
            def on_callers_signal(signum: int, frame: FrameType | None) -> None:
                try:
                    handler(signum, frame)
                except Exception as exc:
                    # The caller's handler raised to stop the call. uvloop would hand the
                    # exception to its exception handler and run on; asyncio lets it tear
                    # through the loop at whatever line it reached. Cancel the run cleanly
                    # instead (the journal and the audit log record the interruption), then
                    # raise it to the caller. KeyboardInterrupt and SystemExit stop either
                    # loop already.
                    if not raised:
                        raised.append(exc)
                        loop.call_soon_threadsafe(cancel)

            return on_callers_signal

        previous: dict[signal.Signals, Any] = {}
        for s in SIGNALS:
            current = signal.getsignal(s)
            if not polite or _default_handling(s, current):
                previous[s] = signal.signal(s, on_signal)
            elif callable(current):
                previous[s] = signal.signal(s, guarded(current))
        try:
            result = runner.run(wrapper())
        except asyncio.CancelledError:
            if raised:
                raise raised[0] from None
            if _received is None:
                raise
            raise Interrupted(_received) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if raised:
            raise raised[0]  # the run ended before the cancellation reached it
        return result
