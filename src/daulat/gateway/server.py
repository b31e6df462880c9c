"""``daulat serve``: the gateway on uvicorn.

uvicorn is a maintained, production ASGI server (HTTP/1.1 keep-alive, TLS, flow control): the
gateway hands it one ASGI callable and never parses HTTP itself. Its h11 and httptools
protocols both pass the request target's path through untouched as ``raw_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterator

from daulat.config import Config
from daulat.errors import ConfigError, DaulatError
from daulat.gateway.app import Gateway
from daulat.gateway.config import GatewayConfig
from daulat.gateway.fanout import ABORT_WAIT
from daulat.gateway.runtime import Runtime

log = logging.getLogger("daulat.gateway")

#: Seconds uvicorn lets the requests in flight run once a signal stops the gateway.
GRACEFUL = 5

#: ``daulat serve``'s repeat window (:func:`daulat.interrupts.run`): a signal this long after
#: the first is a second one, which ends the gateway at once. Shorter than the commands' 2 s:
#: the copy of one signal (``timeout -s INT`` signals the process and its group) is handled
#: as soon as the main thread is free, and during the drain that thread only runs the event
#: loop, where a command's stop works in it (the journal, the audit log) and delays the copy;
#: and the drain lasts up to GRACEFUL + ABORT_WAIT s, too long to be deaf to a second Ctrl-C.
REPEAT_WINDOW = 0.5


class GatewayError(DaulatError):
    """The gateway could not start."""


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Limit glibc's malloc to ``arenas`` arenas for the threads started from now on.

    The pieces of a read are allocated in obstore's and hashlib's worker threads and freed in
    others; glibc gives each thread an arena of its own (up to 8 per CPU), and memory freed
    into one arena is not reused by the others, so with many concurrent reads the resident
    memory grows well past what the reads hold (measured: 293 → 250 MiB for 64 concurrent
    reads, with MALLOC_ARENA_MAX=2 in the environment). A no-op where the C library is not glibc. Call it before threads are started."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_arena_max = -8  # glibc's malloc.h
    mallopt(m_arena_max, arenas)


def listen_socket(gw: GatewayConfig) -> socket.socket:
    """The gateway's listening socket, bound before anything says it is serving (so that a
    port in use is one line and exit 1, never a banner followed by uvicorn's own error).
    :class:`GatewayError` when it cannot be bound, :class:`ConfigError` (exit 2) when this
    machine has no such address."""
    where = f"[{gw.host}]:{gw.port}" if ":" in gw.host else f"{gw.host}:{gw.port}"
    family = socket.AF_INET6 if ":" in gw.host else socket.AF_INET
    try:
        # SO_REUSEADDR (set by create_server) lets a restarted gateway bind while the old
        # one's connections linger in TIME_WAIT; it never lets two listeners share the port.
        sock = socket.create_server((gw.host, gw.port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (another daulat serve?)"
        elif exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL) or isinstance(exc, socket.gaierror):
            # A listen address this machine does not have (or cannot listen on: a link-local
            # address without its interface) is a mistake in the config or the command line
            # (exit 2), not a passing condition such as a port in use.
            raise ConfigError(
                f"[gateway] listen {where}: no interface of this machine has that address"
                + (
                    ""
                    if exc.errno in (None, errno.EADDRNOTAVAIL)
                    else f" ({os.strerror(exc.errno)})"
                )
            ) from None
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
        else:
            why = exc.strerror or str(exc)
        raise GatewayError(f"[gateway] listen {where}: {why}") from None
    return sock


def banner(gw: GatewayConfig) -> str:
    """The line ``daulat serve`` prints once it listens."""
    scheme = "https" if gw.tls_cert else "http"
    host = f"[{gw.host}]" if ":" in gw.host else gw.host
    writable = [f"{b.name} (quorum {b.quorum})" for b in gw.buckets.values() if b.writable]
    mode = "writes: " + ", ".join(writable) if writable else "read-only"
    line = f"daulat gateway on {scheme}://{host}:{gw.port} ({mode}): " + ", ".join(
        f"{b.name} <- {' > '.join(a.label for a in b.replicas)}" for b in gw.buckets.values()
    )
    if gw.plain_http_exposed:
        line += (
            "\nwarning: plain HTTP on an address other machines can reach (allow_plain_http): "
            "objects cross the network unencrypted"
        )
    return line


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # daulat's own handlers (daulat.interrupts) stay in charge of SIGINT/SIGTERM.
            yield

    return Server


class _QuietCuts(logging.Filter):
    """uvicorn reports a response the app ended early as an error; for the gateway that is
    a deliberate cut (a replica's bytes could not be checked), already logged by the app.
    So is a request it cancelled when stopping past its graceful time (a traceback for a
    shutdown), and its count of those: :func:`serve` hands that to its caller, whose stop
    message says it in daulat's words."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        message = record.getMessage()
        return not (
            "returned without completing response" in message
            or "timeout graceful shutdown exceeded" in message
        )


async def serve(
    cfg: Config,
    gw: GatewayConfig,
    *,
    announce: Callable[[], None] | None = None,
    runtime: Runtime | None = None,
    sock: socket.socket | None = None,
    cut: Callable[[int], None] | None = None,
) -> None:
    """Run the gateway until cancelled (SIGINT/SIGTERM end it). ``runtime``: one made by the
    caller (``daulat demo`` wraps a store in it first); by default a new one. ``sock``: the
    listening socket (:func:`listen_socket`), bound here when not given. ``announce``: called
    once the replicas are open and the identities checked, just before serving (``daulat
    serve`` prints its banner then, so that a refusal at start is never preceded by one).
    ``cut``: called, when a signal stopped it, with how many requests were still running
    after the graceful time and were cancelled."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("daulat serve needs uvicorn: pip install 'daulat[gateway]'") from None
    cap_malloc_arenas()
    sock = sock or listen_socket(gw)
    runtime = runtime or Runtime(cfg, gw)
    await runtime.start()
    if announce is not None:
        announce()
    config = uvicorn.Config(
        Gateway(runtime),
        host=gw.host,
        port=gw.port,
        ssl_certfile=str(gw.tls_cert) if gw.tls_cert else None,
        ssl_keyfile=str(gw.tls_key) if gw.tls_key else None,
        lifespan="off",
        http="auto",  # httptools where installed (the gateway extra brings it), else h11
        proxy_headers=False,  # the gateway does not use the client's address
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=GRACEFUL,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
    server = _server_class()(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # SIGINT/SIGTERM (daulat.interrupts cancels the run): stop taking requests, let those
        # in flight finish (up to the graceful timeout), then end as interrupted.
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await task
        # Past its graceful time uvicorn cancels the requests still running and returns
        # without waiting for them: a write's puts abort their uploads on cancellation
        # (fanout.ABORT_WAIT), and must be given that time before the stores close.
        running = set(server.server_state.tasks)
        if running:
            await asyncio.wait(running, timeout=ABORT_WAIT + 1)
        if cut is not None:
            cut(len(running))
        raise
    finally:
        await runtime.close()
        sock.close()
    if not server.started:
        raise GatewayError(f"cannot listen on {gw.host}:{gw.port} (see the message above)")
