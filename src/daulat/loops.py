"""The event loop daulat's coroutines run on.

uvloop's where it is installed (a dependency on every platform it supports), asyncio's own
otherwise. The copy engine spends most of a small object's client CPU in the event loop:
waking the workers whose store requests finished (obstore resolves its futures from its own
threads), timers and queues. uvloop does that work in C, which is what keeps the per-object
cost of signed, checksummed copies near what plain copies cost (bench/RESULTS.md, "Trust
cost"). The gateway's transports also write to sockets with less work per byte on it.

``DAULAT_EVENT_LOOP=asyncio`` chooses asyncio's loop anyway (to rule the loop out when
something misbehaves); any other value is an error, so a typo is not silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from daulat.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

__all__ = ["ENV", "chosen", "loop_factory"]

#: The environment variable that chooses the loop: ``uvloop`` (the default) or ``asyncio``.
ENV = "DAULAT_EVENT_LOOP"


def chosen() -> str:
    """The loop :data:`ENV` chooses: ``uvloop`` (also when unset or empty) or ``asyncio``,
    in any case and with surrounding spaces; anything else is a :class:`ConfigError` quoting
    what was set. The command line checks it before any command does work."""
    raw = os.environ.get(ENV, "")
    value = raw.strip().lower() or "uvloop"
    if value not in ("uvloop", "asyncio"):
        shown = repr(raw[:40]) + (f" (… {len(raw):,} characters)" if len(raw) > 40 else "")
        raise ConfigError(f"{ENV}={shown}: expected 'uvloop' or 'asyncio'")
    return value


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a new event loop for a run; None for asyncio's default."""
    if chosen() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not support (Windows)
        return None
    return uvloop.new_event_loop
