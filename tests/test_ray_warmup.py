"""``--engine ray`` connects and warms its workers while the driver lists and plans
(daulat.scale.warmup), and that changes nothing a user sees when it goes wrong: connecting
failing is the same error when the run has something to copy, a run that fails while listing
stops the Ray it connected to, an interrupt does not wait for a Ray still starting.

Ray here is a stand-in that counts what the driver asks of it (a cluster takes a minute to
start); the real cluster runs every exit of tests/test_ray_engine.py through the same path.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daulat.config import Config, load_config
from daulat.errors import AccessDenied, ConfigError
from daulat.scale import cluster, warmup
from daulat.scale.driver import RayRunner
from daulat.stores.base import ObjectInfo
from daulat.stores.fs import FsStore
from daulat.transfer.engine import Endpoint, Kind, Options, transfer
from daulat.transfer.journal import Journal

SRC = Path(__file__).resolve().parents[1] / "src"


class FakeRay:
    """What daulat.scale.cluster.connect and the warm-up use of Ray: init, remote, shutdown."""

    def __init__(self, *, refuse: Exception | None = None, cpus: int = 3) -> None:
        self.refuse = refuse
        self.cpus = cpus
        self.inits = self.shutdowns = 0
        self.submitted: list[tuple[str, tuple[Any, ...]]] = []
        self.may_start = threading.Event()
        self.may_start.set()

    def init(self, **kwargs: Any) -> None:
        self.may_start.wait(30)
        self.inits += 1
        if self.refuse is not None:
            raise self.refuse

    def shutdown(self) -> None:
        self.shutdowns += 1

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.cpus)}

    def remote(self, **options: Any) -> Any:
        ray = self

        class Task:
            def __init__(self, fn: Any) -> None:
                self.fn = fn

            def remote(self, *args: Any) -> None:
                ray.submitted.append((self.fn.__name__, args))

        return Task


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"o{i}").write_bytes(b"x" * (i + 1))
    path = tmp_path / "daulat.toml"
    path.write_text(
        "".join(
            f'[stores.{n}]\nurl = "file://{tmp_path / n}"\nprovider = "local"\ncountry = "ID"\n'
            for n in ("src", "dst")
        )
    )
    return load_config(path)


def fake_ray(monkeypatch: pytest.MonkeyPatch, ray: FakeRay) -> None:
    monkeypatch.setattr(cluster, "require_ray", lambda: ray)


class UnlistableSource(FsStore):
    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        raise AccessDenied("the provider revoked the key")
        yield []  # pragma: no cover - an async generator


def run_exit(config: Config, tmp_path: Path, runner: RayRunner, src: FsStore | None = None) -> Any:
    src_store = src or FsStore("src", tmp_path / "src")
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        return asyncio.run(
            transfer(
                Kind.EXIT,
                Endpoint(src_store, "", label="src:"),
                Endpoint(FsStore("dst", tmp_path / "dst"), "", label="dst:"),
                journal,
                Options(runner=runner),
            )
        )
    finally:
        journal.close()


def test_connecting_failing_is_the_same_error_when_there_is_work(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = FakeRay(refuse=ConnectionError("Could not find any running Ray instance.\nmore"))
    fake_ray(monkeypatch, ray)
    with pytest.raises(
        ConfigError,
        match=r"^cannot connect to Ray at 10\.0\.0\.9:6379: Could not find any running Ray "
        r"instance\.$",
    ):
        run_exit(config, tmp_path, RayRunner(config, address="10.0.0.9:6379"))
    assert ray.inits == 1 and ray.shutdowns == 1  # connect's own clean-up, nothing more
    assert not list((tmp_path / "dst").iterdir())


def test_the_workers_warm_while_the_driver_lists_and_ray_stops_after(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One warm-up per worker slot (the cluster's CPUs without --workers), carrying the config
    file's path and the store names only; a run that fails while listing stops Ray."""
    ray = FakeRay(cpus=3)
    fake_ray(monkeypatch, ray)
    runner = RayRunner(config, address="10.0.0.9:6379")
    summary = run_exit(config, tmp_path, runner, src=UnlistableSource("src", tmp_path / "src"))
    assert summary.stopped and "cannot list the source" in summary.stopped
    assert ray.submitted == [("warm_worker", (str(config.path.resolve()), ("dst", "src")))] * 3
    assert runner.warmed_workers == 3 and runner.shards_run == 0
    assert ray.inits == 1 and ray.shutdowns == 1


def test_with_workers_as_many_warm_ups_as_workers(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = FakeRay(cpus=8)
    fake_ray(monkeypatch, ray)
    runner = RayRunner(config, address="10.0.0.9:6379", workers=2)
    run_exit(config, tmp_path, runner, src=UnlistableSource("src", tmp_path / "src"))
    assert len(ray.submitted) == 2 and ray.shutdowns == 1


def test_no_more_warm_ups_than_the_cluster_has_cpus(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --workers above the CPUs: the extra warm-ups could only queue, and Ray starts a
    # process for each task it sees waiting.
    ray = FakeRay(cpus=3)
    fake_ray(monkeypatch, ray)
    runner = RayRunner(config, address="10.0.0.9:6379", workers=500)
    run_exit(config, tmp_path, runner, src=UnlistableSource("src", tmp_path / "src"))
    assert len(ray.submitted) == 3 and ray.shutdowns == 1


def test_an_interrupt_does_not_wait_for_a_ray_still_starting(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C cancels the run while ray.init hangs: the run ends within INTERRUPTED_WAIT, and
    the Ray that comes up afterwards is stopped by the thread that started it."""
    ray = FakeRay()
    ray.may_start.clear()
    fake_ray(monkeypatch, ray)
    monkeypatch.setattr(warmup, "INTERRUPTED_WAIT", 0.5)
    runner = RayRunner(config, address="10.0.0.9:6379")

    async def cancelled_while_listing() -> None:
        async with runner.warm(
            Endpoint(FsStore("src", tmp_path / "src")), Endpoint(FsStore("dst", tmp_path / "dst"))
        ):
            raise asyncio.CancelledError

    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled_while_listing())
    assert time.monotonic() - started < 5
    assert ray.inits == 0 and ray.shutdowns == 0
    ray.may_start.set()
    deadline = time.monotonic() + 10
    while ray.shutdowns == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.inits == 1 and ray.shutdowns == 1


def test_a_dry_run_does_not_connect(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = FakeRay()
    fake_ray(monkeypatch, ray)
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        asyncio.run(
            transfer(
                Kind.COPY,
                Endpoint(FsStore("src", tmp_path / "src"), "", label="src:"),
                Endpoint(FsStore("dst", tmp_path / "dst"), "", label="dst:"),
                journal,
                Options(runner=RayRunner(config, address="10.0.0.9:6379"), dry_run=True),
            )
        )
    finally:
        journal.close()
    assert ray.inits == 0 and not ray.submitted


def test_the_warm_up_task_imports_what_a_shard_opens_and_keeps_nothing(config: Config) -> None:
    """Run in a fresh process, as on a new Ray worker: the store's module is imported, and
    between filesystems nothing of S3's (its store layer pulls in obstore: about 0.2 CPU s
    of every worker process's start)."""
    code = (
        "import gc, sys\n"
        "from daulat.scale.worker import warm_worker\n"
        "assert 'daulat.stores.fs' not in sys.modules\n"
        f"warm_worker({str(config.path)!r}, ['src', 'dst'])\n"
        "assert 'daulat.stores.fs' in sys.modules\n"
        "s3 = [m for m in sys.modules if m.startswith(('daulat.stores.s3', 'obstore'))]\n"
        "assert s3 == [], s3\n"
        "from daulat.stores.fs import FsStore\n"
        "gc.collect()\n"
        "assert not [o for o in gc.get_objects() if isinstance(o, FsStore)]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
