"""The synchronous Python API: ``daulat.exit(cfg, "kpu", "vault")`` and the others.

Each function is its coroutine in :mod:`daulat.aio` run to completion in an event loop of its own:
same parameters, same result, same audit record. Called from code that already runs an event
loop (where another cannot start), it raises
:class:`~daulat.errors.InsideEventLoop` naming the coroutine to await instead.

Called in the main thread, Ctrl-C (SIGINT) or SIGTERM stops the run cleanly, as it stops the
command: the journal keeps what was finished, the audit log records the interruption and its
signal, a rerun resumes, and :class:`~daulat.errors.Interrupted` reaches the caller with what
the run had done (``result``: a transfer's ``Summary``). Only signals still handled as Python
does by default are taken over for the call, and the handlers are put back when it returns; a
handler the caller installed is left in charge (see :mod:`daulat.interrupts`). Off the main
thread no signal is handled: Python delivers signals to the main thread only.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from daulat import aio, interrupts
from daulat.aio import load_config, open_store
from daulat.errors import InsideEventLoop

__all__ = [
    "check",
    "copy",
    "drill",
    "exit",
    "load_config",
    "open_store",
    "restore",
    "scan",
    "sync",
    "verify",
]

P = ParamSpec("P")
T = TypeVar("T")


def _synchronous(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """``fn`` run in an event loop of its own, refused inside a running event loop."""
    name = fn.__name__

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return interrupts.run(fn(*args, **kwargs), polite=True)
        # Checked before the coroutine exists, so none is left never awaited.
        raise InsideEventLoop(
            f"daulat.{name}() cannot run inside a running event loop: "
            f"use `await daulat.aio.{name}(...)` there"
        )

    run.__doc__ = (
        f"{fn.__doc__ or ''}\n\n"
        f"Runs :func:`daulat.aio.{name}` to completion in an event loop of its own; inside a "
        f"running event loop, await that instead (this raises "
        f":class:`~daulat.errors.InsideEventLoop`). SIGINT or SIGTERM stops the run cleanly and "
        f"raises :class:`~daulat.errors.Interrupted` (see :mod:`daulat.api`)."
    )
    return run


copy = _synchronous(aio.copy)
sync = _synchronous(aio.sync)
exit = _synchronous(aio.exit)
restore = _synchronous(aio.restore)
verify = _synchronous(aio.verify)
check = _synchronous(aio.check)
scan = _synchronous(aio.scan)
drill = _synchronous(aio.drill)
