"""The Python API's arguments, checked as the command line checks its options.

:mod:`daulat.aio` takes keyword options named after the commands' options; a wrong one (a
string where a list belongs, a negative count, an engine that does not exist) is a
:class:`~daulat.errors.ConfigError` naming the parameter, raised before anything is read or
written, never a bare ``TypeError`` from deep inside a run.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from daulat.config import Config
from daulat.crypto import Identity, Recipient, load_identities, parse_recipients
from daulat.defaults import RAY_CONNECT_TIMEOUT as RAY_CONNECT_TIMEOUT
from daulat.drill import parse_sample
from daulat.drill.units import parse_byte_rate
from daulat.errors import CallbackFailed, ConfigError
from daulat.filters import Filter, build_filter

if TYPE_CHECKING:
    from daulat.transfer.engine import Runner

#: Where a copy runs: in this process, or sharded over a Ray cluster (``pip install
#: 'daulat[ray]'``), as the command line's ``--engine``.
Engine = Literal["local", "ray"]

log = logging.getLogger("daulat.api")

# The command line's bounds on --concurrency and --workers.
MAX_CONCURRENCY = 1024
MAX_WORKERS = 100_000

# The port of a Ray cluster's GCS, and of its client server (ray://), when none is given.
RAY_GCS_PORT = 6379
RAY_CLIENT_PORT = 10001

E = TypeVar("E")


def shown(value: object) -> str:
    """A wrong argument as an error names it: its repr, cut short, and its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def store_spec(name: str, value: object) -> str:
    """``src``/``dst``: a store as the command line names it (``"kpu"``, ``"kpu:c1/"``)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{name} must be a store name such as 'kpu' or 'kpu:prefix', not {shown(value)}"
        )
    return value


def flag(name: str, value: object) -> bool:
    """A yes/no option (``dry_run``, ``overwrite`` …): a bool, never a string such as ``"yes"``
    (which is true, whatever it says)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, not {shown(value)}")
    return value


def age_limit(name: str, value: object) -> timedelta | None:
    """``abort_uploads_older_than``: a :class:`~datetime.timedelta`, or None for never."""
    if value is not None and not isinstance(value, timedelta):
        raise ConfigError(f"{name} must be a datetime.timedelta or None, not {shown(value)}")
    return value


def callback(name: str, fn: Callable[[E], object] | None) -> Callable[[E], None] | None:
    """``progress``: None or a callable, checked before the run starts. An exception the
    callback raises stops the run as :class:`~daulat.errors.CallbackFailed` (its cause), which
    the audit log records; what was finished is kept and a rerun resumes."""
    if fn is None:
        return None
    if not callable(fn):
        raise ConfigError(
            f"{name} must be a function taking one argument, or None, not {shown(fn)}"
        )
    user = fn

    def call(event: E) -> None:
        try:
            user(event)
        except Exception as exc:
            raise CallbackFailed(
                f"the {name} callback raised {type(exc).__name__}: {exc}; the run stopped "
                "there (what was finished is kept: run it again to resume)"
            ) from exc

    return call


def filter_of(
    include: Sequence[str],
    exclude: Sequence[str],
    filter_rules: Sequence[str],
    filter_from: Sequence[str | os.PathLike[str]],
) -> Filter:
    """The filter of the rclone-style options; its warnings are logged, as the command prints
    them."""
    for name, value in (
        ("include", include),
        ("exclude", exclude),
        ("filter_rules", filter_rules),
    ):
        if isinstance(value, str):
            # One pattern given where a list is expected would be read as one rule per letter.
            raise ConfigError(f"{name} takes a list of patterns, not the string {value!r}")
    if isinstance(filter_from, (str, os.PathLike)):
        raise ConfigError(f"filter_from takes a list of files, not {str(filter_from)!r}")
    flt = build_filter(
        include=include,
        exclude=exclude,
        filter_rules=filter_rules,
        filter_from=[Path(p) for p in filter_from],
    )
    for warning in flt.warnings:
        log.warning("daulat: %s", warning)
    return flt


def recipients(values: str | Iterable[str | Recipient]) -> list[Recipient]:
    items = [values] if isinstance(values, str) else [str(v) for v in values]
    return parse_recipients(items) if items else []


def identities(identity: str | os.PathLike[str] | None) -> list[Identity]:
    if identity is None:
        return []
    if not isinstance(identity, (str, os.PathLike)):
        raise ConfigError(
            f"identity must be the path of an age identity file, not {shown(identity)}"
        )
    return load_identities(identity)


def concurrency(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigError(
            f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, not {value!r}"
        )
    return value


def bwlimit(value: float | str | None) -> float | None:
    """Bytes per second, as a number or as the command line's text (``"50M"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_byte_rate(value)
        except ConfigError as e:
            raise ConfigError(f"bwlimit: {e}") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(
            "bwlimit must be a positive number of bytes per second (or text such as '50M'), "
            f"not {shown(value)}"
        )
    return float(value)


def sample(value: int | float | str | None) -> int | float | None:
    """``drill``'s sample, as the command line takes it: a count of objects (``500``), a
    fraction of each size class in (0, 1] (``0.05``), or the command's text (``"5%"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_sample(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"sample must be a number of objects or a fraction, not {shown(value)}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"sample must be a positive number of objects, not {value!r}")
        return value
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ConfigError(
            f"sample {value!r}: give a number of objects (an int, e.g. 200) or a fraction of "
            "each size class in (0, 1] (e.g. 0.05 for 5%)"
        )
    return value


def whole(name: str, value: object, least: int, most: int | None = None) -> int:
    """A whole-number option (``shards``, ``workers``) within the command line's bounds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < least
        or (most is not None and value > most)
    ):
        bounds = f"from {least} to {most:,}" if most is not None else f">= {least}"
        raise ConfigError(f"{name} must be a whole number {bounds}, not {shown(value)}")
    return value


def runner(
    engine: object, ray_address: object, workers: object
) -> Callable[[Config], Runner] | None:
    """What runs the copy, as ``--engine``, ``--ray-address`` and ``--workers`` choose: None for
    this process; for ``"ray"``, a maker of the Ray runner once the config is loaded. Ray
    missing is a :class:`~daulat.scale.cluster.RayUnavailable` (a ConfigError) now, before
    anything is read."""
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', not {shown(engine)}")
    # Each value is checked before whether it fits the engine: workers=-1 is wrong either way.
    address: str | None = None
    if ray_address is not None:
        if not isinstance(ray_address, str) or not ray_address:
            raise ConfigError(
                "ray_address must be a Ray cluster's address such as '10.0.0.5:6379' or "
                f"'auto', not {shown(ray_address)}"
            )
        address = ray_address
    shards = None if workers is None else whole("workers", workers, 1, MAX_WORKERS)
    if engine == "local":
        if ray_address is not None or workers is not None:
            raise ConfigError("ray_address and workers need engine='ray'")
        return None
    from daulat.scale.cluster import require_ray

    require_ray()

    def make(config: Config) -> Runner:
        from daulat.scale.driver import RayRunner

        reach_ray(address or os.environ.get("RAY_ADDRESS") or None)
        return RayRunner(config, address=address, workers=shards)

    return make


def reach_ray(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Refuse, within ``timeout`` seconds, a Ray address where nothing answers.

    ``ray.init`` retries such an address for many minutes (its C++ client logging each
    attempt), and a signal cannot stop it while it waits: one TCP connection to the host and
    port first turns "nothing there" into a :class:`~daulat.scale.cluster.RayUnavailable`
    (a ConfigError) naming the address. None, ``"auto"`` and ``"local"`` (no address to
    reach: Ray finds or starts its own) are left to Ray."""
    if address is None or address in ("auto", "local"):
        return
    from daulat.scale.cluster import RayUnavailable

    rest = address
    port = RAY_GCS_PORT
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        port = RAY_CLIENT_PORT if scheme == "ray" else port
    rest = rest.split("/", 1)[0]
    host, sep, text = rest.rpartition(":")
    if not sep or not text.isdigit():
        host, text = rest, str(port)
    host = host.strip("[]")  # an IPv6 address in brackets
    try:
        port = int(text)
        with socket.create_connection((host, port), timeout=timeout) as conn:
            speaks = _speaks_grpc(conn, timeout)
    except (OSError, ValueError, OverflowError) as exc:
        if isinstance(exc, socket.timeout) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
            why = f"no answer within {timeout:g} s"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {host!r}"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        else:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} ({why}); check --ray-address "
            "(ray_address) or RAY_ADDRESS, and that `ray status` works there"
        ) from None
    if not speaks:
        # Something else listens there (a typo'd port hitting a web server): Ray would wait
        # on it for many minutes, deaf to Ctrl-C.
        raise RayUnavailable(
            f"{address} answers, but not as a Ray cluster (it does not speak gRPC, as Ray's "
            "GCS and client ports do); check --ray-address (ray_address) or RAY_ADDRESS"
        )


# An HTTP/2 connection's client preface and an empty SETTINGS frame (RFC 9113 3.4, 6.5).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4


def _speaks_grpc(conn: socket.socket, timeout: float) -> bool:
    """Whether the server on ``conn`` answers an HTTP/2 preface with its SETTINGS frame, as
    every gRPC server (Ray's GCS, its client server) must. Ray with TLS (``RAY_USE_TLS``) is
    not probed: an encrypted port answers nothing in clear."""
    if os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true"):
        return True
    conn.settimeout(timeout)
    conn.sendall(_H2_PREFACE)
    head = b""
    while len(head) < 9:
        piece = conn.recv(9 - len(head))
        if not piece:
            return False
        head += piece
    return head[3] == _H2_SETTINGS


def inventory(address: object, stores: object, flt: Filter) -> str:
    """``scan``'s ``from_inventory``: where the report's manifest is, for exactly one store and
    no filters (a report is recorded whole, as a complete scan)."""
    if not isinstance(address, (str, os.PathLike)) or not os.fspath(address):
        raise ConfigError(
            "from_inventory must be the address of an inventory report's manifest "
            f"(s3://BUCKET/KEY, az://CONTAINER/PATH, STORE:PATH or a path), not {shown(address)}"
        )
    one = isinstance(stores, str) or (
        isinstance(stores, Sequence) and not isinstance(stores, str) and len(stores) == 1
    )
    if not one:
        raise ConfigError("from_inventory reads one store's report: give exactly one store")
    if flt.active:
        raise ConfigError("from_inventory records the whole report: leave out filters")
    return str(os.fspath(address))
