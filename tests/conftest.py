"""Shared fixtures: real servers started once per test session, and configured stores over them.

A server that cannot start fails the tests that need it with a message saying what is missing;
nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (
    AzuriteServer,
    GcsServer,
    MotoServer,
    S3Server,
    azurite,
    fake_gcs,
    moto,
    seaweedfs,
)

from daulat.audit import audit_log
from daulat.audit.continuity import intact_log
from daulat.config import StoreConfig
from daulat.stores import Store, open_store

T = TypeVar("T")
STORE_KINDS = ("fs", "s3", "azure", "gcs")
_counter = itertools.count()


#: Free space the suite needs where its files go (servers' volumes, test data, the
#: kill-and-resume runs' objects): a whole run from a clean clone, its venv included, took
#: at most 10 GB more of a disk it shared with other work (16 GB before passing tests'
#: files were removed as they end).
NEEDS_FREE = 8 << 30


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to start on a nearly full disk: every test after the disk filled would fail
    with an error about something else (a server that cannot start, a store that cannot
    write), and the one real cause would be lost among them."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checked, once
    where = Path(tempfile.gettempdir())
    free = shutil.disk_usage(where).free
    if free < NEEDS_FREE:
        raise pytest.UsageError(
            f"only {free / (1 << 30):.1f} GiB free on {where}; the suite needs about "
            f"{NEEDS_FREE >> 30} GiB there (its servers' volumes and test data): free some "
            "space first"
        )


def begin_audit(state_dir: Path) -> None:
    """Start the project's audit log, as every audited command does before it runs. Tests that
    build state with unaudited internals (``scan_store``, ``run_transfer``, a ``Journal``)
    call this first: an audited command that then finds run state but no log refuses it as
    deleted (daulat.audit.continuity)."""
    intact_log(audit_log(state_dir))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (tests stay plain functions)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs-b")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with moto() as server:
        yield server


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    with azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    with fake_gcs(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


def s3_store_config(
    server: S3Server | MotoServer, name: str, bucket: str, prefix: str = ""
) -> dict[str, Any]:
    """A [stores.NAME] table for a bucket on a local SeaweedFS (or moto)."""
    server.create_bucket(bucket)
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return {
        "name": name,
        "url": url,
        "provider": "self-hosted",
        "country": "ID",
        "endpoint": server.endpoint,
        "credentials": {
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
        },
    }


def azure_store_config(
    server: AzuriteServer, name: str, container: str, prefix: str = ""
) -> dict[str, Any]:
    server.create_container(container)
    url = f"az://{container}/{prefix}" if prefix else f"az://{container}"
    return {
        "name": name,
        "url": url,
        "provider": "azure",
        "region": "indonesiacentral",
        "endpoint": server.endpoint,
        "credentials": {"account_name": server.account_name, "account_key": server.account_key},
    }


def gcs_store_config(server: GcsServer, name: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    """A [stores.NAME] table for a bucket on the local fake-gcs-server (no credentials: an
    emulator endpoint gets none)."""
    server.create_bucket(bucket)
    url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    return {
        "name": name,
        "url": url,
        "provider": "gcp",
        "region": "asia-southeast2",
        "endpoint": server.endpoint,
    }


def fs_store_config(root: Path, name: str) -> dict[str, Any]:
    return {"name": name, "url": f"file://{root}", "provider": "local", "country": "ID"}


StoreMaker = Callable[[], tuple[Store, dict[str, Any]]]


@pytest.fixture(params=STORE_KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """A factory of fresh, empty stores of one kind (each in its own bucket or directory)."""
    return store_maker(request.param, request, tmp_path)


def store_maker(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """A factory of fresh, empty stores of ``kind`` (one of :data:`STORE_KINDS`)."""

    def make() -> tuple[Store, dict[str, Any]]:
        n = next(_counter)
        if kind == "fs":
            # An empty store is an empty directory: a missing one is an error to list.
            (tmp_path / f"fs{n}").mkdir()
            raw = fs_store_config(tmp_path / f"fs{n}", f"fs{n}")
        elif kind == "s3":
            server = request.getfixturevalue("s3_server")
            raw = s3_store_config(server, f"s3-{n}", f"conf{n}")
        elif kind == "gcs":
            gcs: GcsServer = request.getfixturevalue("gcs_server")
            raw = gcs_store_config(gcs, f"gcs-{n}", f"conf{n}")
            # The emulator keeps objects in memory: let each test's large ones go with it.
            request.addfinalizer(lambda bucket=f"conf{n}": gcs.drop_large_objects(bucket))
        else:
            server = request.getfixturevalue("azurite_server")
            raw = azure_store_config(server, f"az-{n}", f"conf{n}")
        return open_store(StoreConfig.model_validate(raw)), raw

    return make


@pytest.fixture
def store(make_store: StoreMaker) -> Store:
    return make_store()[0]


# ------------------------------------------------------------------ running in parallel

#: The slowest tests (a minute or more each on 2 cores). ``./scripts/test -m "not slow"``
#: leaves them out for a quick run while working; the full run (CI) includes them, and starts
#: them first so that none is left running alone at the end. Tests marked ``ray`` are slow too.
SLOW = (
    "test_sharded_listing.py::test_100k_objects_and_hostile_keys_listed_exactly_on_seaweedfs",
    "test_sharded_listing.py::test_every_legal_key_once_by_ranges_and_by_prefixes_on_moto",
    "test_s3raw.py::test_contracts_over_moto[listing_paginates_over_5000_keys]",
    "test_store_contract.py::test_listing_paginates_over_5000_keys[gcs]",
    "test_cli.py::test_demo_in_an_empty_directory_its_suggestion_runs_and_a_second_tour_replaces_it",
    "test_exact_resume.py::test_kill_9_at_random_sends_again_almost_nothing",
    "test_gateway_clients.py::test_aws_cli",
)


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope in ("module", "class", "package")
        for name, defs in info.name2fixturedefs.items()
        if defs and name in item.fixturenames
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests; keep the tests of a module that starts something once per module
    (a server, a large dataset), and all tests that start Ray, on one xdist worker each
    (``--dist loadgroup``, as scripts/test runs the suite); order slow tests first."""
    for item in items:
        nodeid = f"{item.path.name}::{item.nodeid.partition('::')[2]}"
        if item.get_closest_marker("ray") or any(
            nodeid == slow or nodeid.startswith(slow + "[") for slow in SLOW
        ):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("ray"):
            # One local Ray cluster at a time: two would fight over two cores and time out.
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
