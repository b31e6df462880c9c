"""Connecting to Ray: an existing cluster, or a local one for the run."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from daulat.errors import ConfigError

INSTALL_HINT = "pip install 'daulat[ray]'"
# A local Ray's object store: shards return small result batches, never object bytes.
LOCAL_OBJECT_STORE = 100 * 1000 * 1000


class RayUnavailable(ConfigError):
    """Ray is not installed, or the cluster cannot be reached (CLI exit 2)."""


def ray_available() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: import ray fails
        return False


def require_ray() -> ModuleType:
    """The ``ray`` module, or :class:`RayUnavailable` naming how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


@dataclass
class Connection:
    """A connection to Ray for one run; :meth:`close` stops a Ray this run started."""

    ray: Any
    address: str
    started_here: bool

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        self.ray.shutdown()


def connect(address: str | None, *, local_cpus: int | None = None) -> Connection:
    """Connect to ``address`` (else ``RAY_ADDRESS``); without either, start a local Ray with
    ``local_cpus`` CPUs (default: this machine's) that :meth:`Connection.close` stops."""
    ray = require_ray()
    target = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        # Worker output stays in Ray's own logs, not in the middle of the progress bar.
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if target is None:
        cpus = os.cpu_count() or 1
        kwargs.update(
            address="local",
            # No more task slots than this machine has CPUs: Ray starts a worker process per
            # slot it sees work for, and --workers 500 on a laptop would start hundreds.
            num_cpus=min(local_cpus or cpus, cpus),
            object_store_memory=LOCAL_OBJECT_STORE,
            include_dashboard=False,
        )
    else:
        kwargs["address"] = target
    try:
        ray.init(**kwargs)
    except Exception as exc:
        # Ray raises a bare Exception when a local node does not come up in time ("The
        # current node timed out during startup"): any failure here is Ray not being there.
        with contextlib.suppress(Exception):
            ray.shutdown()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if target is None:
            raise RayUnavailable(
                f"could not start a local Ray for the run: {first}; start one with "
                "`ray start --head` and pass --ray-address 127.0.0.1:6379"
            ) from None
        raise RayUnavailable(f"cannot connect to Ray at {target}: {first}") from None
    _errors_to_stderr(ray)
    return Connection(ray, target or "local", started_here=target is None)


def _errors_to_stderr(ray: Any) -> None:
    """Ray prints the cluster's error messages ("a worker died ...") to the driver's stdout,
    which would break ``--json``: send them to stderr (Ray 2.x internals; left alone if they
    moved)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if worker is None or original is None or getattr(original, "_daulat", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr._daulat = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr
