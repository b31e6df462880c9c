"""The synchronous Python API: ``daulat.exit(cfg, "kpu", "vault")`` and the others.

Each function is its coroutine in :mod:`daulat.aio` run to completion by :func:`asyncio.run`:
same parameters, same result, same audit record. Called from code that already runs an event
loop (where :func:`asyncio.run` cannot start another), it raises
:class:`~daulat.errors.InsideEventLoop` naming the coroutine to await instead.

Ctrl-C behaves as it does for any ``asyncio.run``: the run is cancelled and stops cleanly (the
journal keeps what was finished, the audit log records the interruption, a rerun resumes) and
then ``KeyboardInterrupt`` reaches the caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from daulat import aio
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
    """``fn`` run by :func:`asyncio.run`, refused inside a running event loop."""
    name = fn.__name__

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kwargs))
        # Checked before the coroutine exists, so none is left never awaited.
        raise InsideEventLoop(
            f"daulat.{name}() cannot run inside a running event loop: "
            f"use `await daulat.aio.{name}(...)` there"
        )

    run.__doc__ = (
        f"{fn.__doc__ or ''}\n\n"
        f"Runs :func:`daulat.aio.{name}` with :func:`asyncio.run`; inside a running event loop, "
        f"await that instead (this raises :class:`~daulat.errors.InsideEventLoop`)."
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
