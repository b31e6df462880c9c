"""The public Python API (``import daulat``, ``daulat.aio``), on real directory stores.

README's examples run in tests/test_readme_python.py; here: the exception tree, the sync and
async twins, the audit record of library calls, options that mirror the command line, and the
errors bad arguments give.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import inspect
import json
import pkgutil
import warnings
from pathlib import Path
from typing import Any

import pytest

import daulat
import daulat.aio
from daulat.audit import audit_log
from daulat.cli import run
from daulat.crypto import new_identity

# Exceptions defined in daulat that are not DaulatErrors, each with why. Only private control
# flow belongs here: an exception a caller of daulat can meet must be a DaulatError.
NOT_DAULAT_ERRORS = {
    "daulat.cli._shared.ExitCode": "the command line's way to end with an exit code, after printing; "
    "never raised by a library function",
    "daulat.filters._GlobError": "private: turned into a ConfigError naming the rule",
    "daulat.crypto.errors._Aborted": "private: stops pyrage's worker thread; turned into "
    "EncryptError/DecryptError",
    "daulat.audit.log._BadLine": "private: turned into a reported problem of the log's verification",
    "daulat.transfer.names._Found": "private: ends reading a manifest at its first stored name",
}

SYNC_NAMES = ("copy", "sync", "exit", "restore", "verify", "check", "scan", "drill")


def daulat_modules() -> list[str]:
    names = ["daulat"]
    for info in pkgutil.walk_packages(daulat.__path__, "daulat."):
        if info.name != "daulat.__main__":  # running it runs the command line
            names.append(info.name)
    return names


def test_every_exception_daulat_defines_is_a_daulat_error() -> None:
    found: dict[str, type[BaseException]] = {}
    for name in daulat_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{value.__qualname__}"] = value
    assert len(found) > 40, sorted(found)
    outside = sorted(
        name
        for name, cls in found.items()
        if not issubclass(cls, daulat.DaulatError) and name not in NOT_DAULAT_ERRORS
    )
    assert not outside, f"exceptions outside the DaulatError tree: {outside}"
    stale = sorted(
        name
        for name in NOT_DAULAT_ERRORS
        if name not in found or issubclass(found[name], daulat.DaulatError)
    )
    assert not stale, f"NOT_DAULAT_ERRORS lists what no longer needs listing: {stale}"


def test_old_bases_still_catch_what_joined_the_tree() -> None:
    from daulat.plan import ModelError, TableError
    from daulat.providers import CatalogueError, UnknownProvider, UnknownRegion, load_catalogue
    from daulat.risk import RegisterError
    from daulat.stores.fstemp import TempDirUnusable
    from daulat.stores.fstree import SymlinkRefused

    for cls, old in (
        (ModelError, ValueError),
        (TableError, ValueError),
        (CatalogueError, ValueError),
        (RegisterError, ValueError),
        (UnknownProvider, KeyError),
        (UnknownRegion, LookupError),
        (SymlinkRefused, OSError),
        (TempDirUnusable, OSError),
    ):
        assert issubclass(cls, daulat.DaulatError) and issubclass(cls, old), cls
    with pytest.raises(daulat.DaulatError, match="unknown provider 'nimbus'"):
        load_catalogue().provider("nimbus")
    refused = SymlinkRefused(40, "'x' is a symbolic link")
    assert refused.errno == 40 and refused.strerror == "'x' is a symbolic link"


def test_api_names_stay_functions_after_every_module_is_imported() -> None:
    # daulat.drill is also a module name: importing the modules must not replace the functions.
    for name in daulat_modules():
        importlib.import_module(name)
    for name in SYNC_NAMES:
        assert inspect.isfunction(getattr(daulat, name)), name
    from daulat.drill import DrillResult
    from daulat.transfer.verify import VerifyReport

    assert daulat.DrillResult is DrillResult and daulat.VerifyReport is VerifyReport


def test_sync_functions_are_their_coroutines_run() -> None:
    for name in SYNC_NAMES:
        sync_fn, async_fn = getattr(daulat, name), getattr(daulat.aio, name)
        assert inspect.iscoroutinefunction(async_fn), name
        assert not inspect.iscoroutinefunction(sync_fn), name
        assert inspect.signature(sync_fn) == inspect.signature(async_fn), name
        assert f"daulat.aio.{name}" in (sync_fn.__doc__ or ""), name
    assert daulat.open_store is daulat.aio.open_store
    assert daulat.load_config is daulat.aio.load_config


# --- on real directory stores ----------------------------------------------------------------

CONFIG = """\
[stores.src]
url = "file:src"
provider = "local"
country = "ID"

[stores.dst]
url = "file:dst"
provider = "local"
country = "ID"

[stores.cli]
url = "file:cli"
provider = "local"
country = "ID"

[[policies]]
name = "two copies in Indonesia"
stores = ["src", "dst"]
residency = ["ID"]
"""

FILES = {
    "a/one.csv": b"1,2,3\n",
    "a/two.csv": b"4,5,6\n" * 100,
    "b/photo.jpg": bytes(range(256)) * 40,
    "b/notes.txt": b"hello\n",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "daulat.toml").write_text(CONFIG)
    for key, data in FILES.items():
        path = tmp_path / "src" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def entries(home: Path) -> list[dict[str, Any]]:
    return [e.to_dict() for e in audit_log(home / ".daulat").entries()]


def test_exit_verify_and_check_from_python(home: Path) -> None:
    cfg = daulat.load_config()  # ./daulat.toml, as the command line
    events: list[daulat.TransferProgress] = []
    summary = daulat.exit(cfg, "src", "dst", progress=events.append)
    assert isinstance(summary, daulat.Summary)
    assert summary.ok and summary.verified_objects == summary.source_objects == len(FILES)
    for key, data in FILES.items():
        assert (home / "dst" / key).read_bytes() == data
    # Snapshots, not the engine's one object updated in place.
    assert events and len({id(e) for e in events}) == len(events)
    assert events[-1].done_objects == len(FILES)

    report = daulat.verify(home / "daulat.toml", "src", "dst", full=True)  # cfg as a path
    assert isinstance(report, daulat.VerifyReport) and report.ok
    assert report.verified == len(FILES)

    (home / "dst" / "a" / "one.csv").write_bytes(b"planted\n")
    changed = daulat.verify(cfg, "src", "dst", full=True)
    assert not changed.ok
    assert [key for key, _ in changed.problems] == ["a/one.csv"]

    result = daulat.check(str(home / "daulat.toml"))
    assert isinstance(result, daulat.PolicyResult)
    assert all(isinstance(f, daulat.Finding) for f in result.findings)
    assert result.ok == (result.exit_code == 0)
    assert [e["operation"] for e in entries(home)] == ["exit", "verify", "verify", "check"]


def test_library_calls_are_audited_as_the_command_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["exit", "src", "cli", "--exclude", "*.txt", "--json"]) == 0
    assert run(["check", "--json"]) in (0, 1)
    capsys.readouterr()
    daulat.exit("daulat.toml", "src", "dst", exclude=["*.txt"])
    daulat.check("daulat.toml")
    by_cli, by_api = entries(home)[:2], entries(home)[2:]
    assert [e["operation"] for e in by_api] == [e["operation"] for e in by_cli]
    for cli_entry, api_entry in zip(by_cli, by_api, strict=True):
        cli_details, api_details = cli_entry["details"], api_entry["details"]
        assert isinstance(cli_details, dict) and isinstance(api_details, dict)
        assert set(api_details) == set(cli_details)
        for field in ("outcome", "filter", "excluded_objects", "status", "findings"):
            assert api_details.get(field) == cli_details.get(field), field


def test_a_refusal_is_raised_and_audited(home: Path) -> None:
    with pytest.raises(daulat.OverlappingLocations):
        daulat.sync("daulat.toml", "src", "src:mirror", delete=True)
    (last,) = entries(home)
    assert last["operation"] == "sync"
    details = last["details"]
    assert isinstance(details, dict)
    assert details["outcome"] == "failed" and details["error"] == "OverlappingLocations"


def test_options_mirror_the_command_line(home: Path) -> None:
    plan = daulat.copy("daulat.toml", "src", "dst", dry_run=True, include=["a/**"])
    assert plan.ok and plan.dry_run and plan.planned_objects == 2
    assert plan.excluded_objects == 2 and plan.filter is not None
    assert not (home / "dst").exists()

    rules = home / "rules.txt"
    rules.write_text("- *.jpg\n")
    copied = daulat.copy("daulat.toml", "src", "dst", filter_from=[rules], bwlimit=10e6)
    assert copied.ok and copied.copied_objects == 3
    assert not (home / "dst" / "b" / "photo.jpg").exists()

    (home / "src" / "a" / "two.csv").unlink()
    with pytest.raises(daulat.TooManyDeletions):
        daulat.sync("daulat.toml", "src", "dst", delete=True, max_delete=0)
    assert (home / "dst" / "a" / "two.csv").exists()
    mirrored = daulat.sync("daulat.toml", "src", "dst", delete=True, max_delete="50%")
    assert mirrored.ok and not (home / "dst" / "a" / "two.csv").exists()


def test_encrypted_exit_and_restore(home: Path) -> None:
    key_file = home / "key.txt"
    recipient = new_identity(key_file)
    summary = daulat.exit("daulat.toml", "src", "dst", encrypt_to=[recipient])
    assert summary.ok and summary.encrypted
    assert (home / "dst" / "b" / "notes.txt").read_bytes() != FILES["b/notes.txt"]
    assert daulat.verify("daulat.toml", "src", "dst", full=True, identity=key_file).ok
    with pytest.raises(daulat.ConfigError, match="no pinned signer"):
        daulat.restore("daulat.toml", "dst", "cli", identity=key_file)
    restored = daulat.restore("daulat.toml", "dst", "cli", identity=key_file, allow_unsigned=True)
    assert restored.ok and restored.copied_objects == len(FILES)
    for key, data in FILES.items():
        assert (home / "cli" / key).read_bytes() == data


def test_scan_and_drill_report_typed_progress(home: Path) -> None:
    scanned: list[daulat.ScanProgress] = []
    results = daulat.scan("daulat.toml", "src", progress=scanned.append)
    assert isinstance(results, daulat.ScanResults) and results.ok
    (summary,) = results.summaries
    assert isinstance(summary, daulat.ScanSummary) and summary.objects == len(FILES)
    assert scanned[-1] == daulat.ScanProgress("src", len(FILES), sum(map(len, FILES.values())))

    steps: list[daulat.DrillProgress] = []
    drill = daulat.drill("daulat.toml", "src", "dst", sample="50%", seed=1, progress=steps.append)
    assert isinstance(drill, daulat.DrillResult) and drill.ok
    assert drill.sampled_objects >= 1
    assert steps and all(isinstance(s.message, str) and s.message for s in steps)
    assert not any((home / "dst").rglob("*.csv")), "the drill's scratch copy is removed"


def test_scan_reports_stores_it_could_not_scan(home: Path) -> None:
    results = daulat.scan("daulat.toml")  # every store; dst and cli do not exist yet
    assert not results.ok
    assert sorted(f.store for f in results.failures) == ["cli", "dst"]
    assert all(isinstance(f, daulat.ScanFailure) for f in results.failures)


def test_open_store_lists_and_reads(home: Path) -> None:
    async def read_all() -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with daulat.open_store("daulat.toml", "src") as store:
            assert isinstance(store, daulat.Store)
            async for batch in store.list("a/"):
                for info in batch:
                    assert isinstance(info, daulat.ObjectInfo)
                    found[info.key] = await (await store.get(info.key)).read_all()
        return found

    assert asyncio.run(read_all()) == {k: v for k, v in FILES.items() if k.startswith("a/")}

    async def head_then_close() -> int:
        store = daulat.aio.open_store(daulat.load_config("daulat.toml"), "src")
        try:
            return (await store.head("b/notes.txt")).size
        finally:
            await store.aclose()

    assert asyncio.run(head_then_close()) == len(FILES["b/notes.txt"])
    with pytest.raises(daulat.ConfigError, match="whole stores"):
        daulat.open_store("daulat.toml", "src:a")
    with pytest.raises(daulat.ConfigError, match="unknown store 'nowhere'"):
        daulat.open_store("daulat.toml", "nowhere")


def test_an_opened_store_is_read_only_unless_asked_and_its_writes_are_audited(
    home: Path,
) -> None:
    """open_store is for listing and reading: put and delete are refused (naming the opt-in)
    and change nothing; writable=True writes and deletes, each recorded in the audit log, and
    daulat's reserved .daulat/ objects stay out of reach."""
    src = home / "src"

    async def read_only() -> None:
        async with daulat.open_store("daulat.toml", "src") as store:
            assert store.writable is False
            with pytest.raises(daulat.SafetyRefusal, match=r"writable=True"):
                await store.put("planted.txt", b"not asked for")
            with pytest.raises(daulat.SafetyRefusal, match=r"read-only"):
                await store.delete("b/notes.txt")
            assert (await store.head("b/notes.txt")).size == len(FILES["b/notes.txt"])
            for start, end in ((5, 2), (-3, None)):
                with pytest.raises(daulat.ConfigError, match="invalid range"):
                    await store.get("b/notes.txt", start=start, end=end)
            assert await (await store.get("b/notes.txt", start=1, end=3)).read_all() == b"el"

    asyncio.run(read_only())
    assert not (src / "planted.txt").exists() and (src / "b" / "notes.txt").exists()
    assert entries(home) == []  # a refusal changed nothing, so nothing to record

    async def writable() -> None:
        async with daulat.aio.open_store("daulat.toml", "src", writable=True) as store:
            res = await store.put("new/one.txt", b"written on purpose")
            assert res.size == len(b"written on purpose")
            await store.delete("b/notes.txt")
            for key in (".daulat/x", "deep/.daulat/manifest.json", ".DAULAT/x", "a/.Daulat/y"):
                with pytest.raises(daulat.SafetyRefusal, match="reserved"):
                    await store.put(key, b"into daulat's namespace")
                with pytest.raises(daulat.SafetyRefusal, match="reserved"):
                    await store.delete(key)
            with pytest.raises(daulat.InvalidKey):
                await store.put("../outside.txt", b"escape")

    asyncio.run(writable())
    assert (src / "new" / "one.txt").read_bytes() == b"written on purpose"
    assert not (src / "b" / "notes.txt").exists()
    assert not (src / ".daulat").exists() and not (home / "outside.txt").exists()
    log = [(e["operation"], e["details"]) for e in entries(home)]
    digest = hashlib.sha256(b"written on purpose").hexdigest()
    assert log[0] == (
        "store put",
        {"store": "src", "key": "new/one.txt", "size": 18, "sha256": digest, "outcome": "ok"},
    )
    assert log[1] == ("store delete", {"store": "src", "key": "b/notes.txt", "outcome": "ok"})
    # The refused write that reached the store is recorded as failed; reserved ones never ran.
    assert log[2][0] == "store put" and log[2][1]["outcome"] == "failed"
    assert log[2][1]["error"] == "InvalidKey" and len(log) == 3
    with pytest.raises(daulat.ConfigError, match="writable must be"):
        daulat.open_store("daulat.toml", "src", writable="yes")  # type: ignore[arg-type]


def test_inside_an_event_loop_the_sync_functions_point_to_aio(home: Path) -> None:
    async def inside() -> daulat.Summary:
        with pytest.raises(daulat.InsideEventLoop, match=r"await daulat\.aio\.exit\("):
            daulat.exit("daulat.toml", "src", "dst")
        with pytest.raises(daulat.InsideEventLoop, match=r"daulat\.aio\.check"):
            daulat.check("daulat.toml")
        return await daulat.aio.exit("daulat.toml", "src", "dst")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine created and never awaited would warn
        summary = asyncio.run(inside())
        gc.collect()
    assert summary.ok and summary.copied_objects == len(FILES)
    # The refused calls did nothing, not even an audit record.
    assert [e["operation"] for e in entries(home)] == ["exit"]


def test_cancelling_a_coroutine_stops_the_run_cleanly(home: Path) -> None:
    big = home / "src" / "big"
    big.mkdir()
    for i in range(200):
        (big / f"{i:03}.bin").write_bytes(bytes([i % 256]) * 50_000)

    async def cancel_after_first_progress() -> None:
        started = asyncio.Event()

        def on_progress(p: daulat.TransferProgress) -> None:
            if p.done_objects:
                started.set()

        task = asyncio.create_task(
            daulat.aio.exit(
                "daulat.toml",
                "src",
                "dst",
                concurrency=2,
                bwlimit=2e6,
                progress=on_progress,
            )
        )
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_first_progress())
    (stopped,) = entries(home)
    details = stopped["details"]
    assert isinstance(details, dict) and details["outcome"] == "interrupted"
    summary = daulat.exit("daulat.toml", "src", "dst")
    assert summary.ok and summary.verified_objects == len(FILES) + 200
    assert summary.skipped_objects > 0, "the rerun resumed from what the first had finished"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: daulat.load_config("missing.toml"), daulat.ConfigError, "does not exist"),
        (lambda: daulat.exit("daulat.toml", "src", "nowhere"), daulat.ConfigError, "nowhere"),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", concurrency=0),
            daulat.ConfigError,
            "concurrency",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", bwlimit=0),
            daulat.ConfigError,
            "bwlimit",
        ),
        (
            # A str is a Sequence[str] to a type checker: refused when the call runs.
            lambda: daulat.copy("daulat.toml", "src", "dst", include="*.csv"),
            daulat.ConfigError,
            "list of patterns",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", include=["[a"]),
            daulat.ConfigError,
            "invalid filter pattern",
        ),
        (
            lambda: daulat.exit("daulat.toml", "src", "dst", encrypt_to=["age1nope"]),
            daulat.RecipientError,
            "age1nope",
        ),
        (
            lambda: daulat.restore("daulat.toml", "dst", "cli", identity="no-such-key.txt"),
            daulat.KeyFileError,
            "no-such-key.txt",
        ),
        (
            lambda: daulat.sync("daulat.toml", "src", "dst", delete=True, max_delete="lots"),
            daulat.ConfigError,
            "lots",
        ),
        (
            lambda: daulat.verify("daulat.toml", "src", "dst", request_timeout=0),
            daulat.ConfigError,
            "request_timeout",
        ),
        (
            lambda: daulat.drill("daulat.toml", "src", "dst", sample="lots"),
            daulat.ConfigError,
            "lots",
        ),
        (
            lambda: daulat.drill("daulat.toml", "src", "dst", workers=0),
            daulat.ConfigError,
            "workers",
        ),
        # Wrong types are refused up front, naming the parameter, never a bare TypeError.
        (lambda: daulat.verify(42, "src", "dst"), daulat.ConfigError, "cfg must be"),
        (lambda: daulat.copy(None, "src", "dst"), daulat.ConfigError, "cfg must be"),
        (lambda: daulat.verify("daulat.toml", None, "dst"), daulat.ConfigError, "src must be"),
        (lambda: daulat.exit("daulat.toml", "src", 7), daulat.ConfigError, "dst must be"),
        (lambda: daulat.drill("daulat.toml", "src", ""), daulat.ConfigError, "dst must be"),
        (lambda: daulat.scan("daulat.toml", ["src", 3]), daulat.ConfigError, "stores must be"),
        (lambda: daulat.open_store("daulat.toml", None), daulat.ConfigError, "name must be"),
        (
            lambda: daulat.verify("daulat.toml", "src", "dst", full=True, identity=123),
            daulat.ConfigError,
            "identity must be",
        ),
        (
            lambda: daulat.restore("daulat.toml", "dst", "cli", identity=b"id.txt"),
            daulat.ConfigError,
            "identity must be",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", bwlimit="fast"),
            daulat.ConfigError,
            "bwlimit: 'fast' is not a rate",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", bwlimit=[1]),
            daulat.ConfigError,
            "bwlimit must be",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", bwlimit=float("nan")),
            daulat.ConfigError,
            "bwlimit must be",
        ),
        (
            lambda: daulat.drill("daulat.toml", "src", "dst", sample=0),
            daulat.ConfigError,
            "sample",
        ),
        (
            lambda: daulat.drill("daulat.toml", "src", "dst", sample=1.5),
            daulat.ConfigError,
            "sample 1.5",
        ),
        (
            lambda: daulat.drill("daulat.toml", "src", "dst", sample=True),
            daulat.ConfigError,
            "sample must be",
        ),
        (
            lambda: daulat.exit("daulat.toml", "src", "dst", engine="spark"),
            daulat.ConfigError,
            "engine must be 'local' or 'ray', not 'spark'",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", workers=4),
            daulat.ConfigError,
            "ray_address and workers need engine='ray'",
        ),
        (
            lambda: daulat.verify("daulat.toml", "src", "dst", ray_address="127.0.0.1:6379"),
            daulat.ConfigError,
            "ray_address and workers need engine='ray'",
        ),
        (
            lambda: daulat.sync("daulat.toml", "src", "dst", engine="ray", workers=0),
            daulat.ConfigError,
            "workers must be a whole number from 1 to 100,000",
        ),
        (
            lambda: daulat.exit("daulat.toml", "src", "dst", engine="ray", ray_address=""),
            daulat.ConfigError,
            "ray_address must be",
        ),
        # Checked before the run starts, never a TypeError once objects are being written.
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", progress=5),
            daulat.ConfigError,
            "progress must be a function",
        ),
        (
            lambda: daulat.scan("daulat.toml", "src", progress="print"),
            daulat.ConfigError,
            "progress must be a function",
        ),
        (
            lambda: daulat.restore("daulat.toml", "src", "dst", overwrite="yes"),
            daulat.ConfigError,
            "overwrite must be True or False, not 'yes'",
        ),
        (
            lambda: daulat.verify("daulat.toml", "src", "dst", full="no"),
            daulat.ConfigError,
            "full must be True or False",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", abort_uploads_older_than=3600),
            daulat.ConfigError,
            "abort_uploads_older_than must be a datetime.timedelta",
        ),
        (
            lambda: daulat.copy("daulat.toml", "src", "dst", workers=-1),
            daulat.ConfigError,
            "workers must be a whole number from 1 to 100,000, not -1",
        ),
        (
            lambda: daulat.scan("daulat.toml", "src", shards=0),
            daulat.ConfigError,
            "shards must be a whole number from 1 to 10,000, not 0",
        ),
        (
            lambda: daulat.scan("daulat.toml", "src", shards=1_000_000),
            daulat.ConfigError,
            "shards must be a whole number from 1 to 10,000, not 1000000",
        ),
        (
            lambda: daulat.scan("daulat.toml", from_inventory="s3://inv/manifest.json"),
            daulat.ConfigError,
            "exactly one store",
        ),
        (
            lambda: daulat.scan("daulat.toml", "src", from_inventory="inv.json", include=["a/**"]),
            daulat.ConfigError,
            "leave out filters",
        ),
        (
            lambda: daulat.scan("daulat.toml", "src", from_inventory="inv/manifest.json"),
            daulat.ConfigError,
            "store 'src' is file://",
        ),
    ],
)
def test_bad_arguments_raise_daulat_errors(
    home: Path, call: object, error: type[daulat.DaulatError], match: str
) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()
    assert not (home / "dst").exists()


def test_request_timeout_reaches_every_store(home: Path) -> None:
    cfg = daulat.load_config("daulat.toml").with_request_timeout(2.5)
    assert {s.request_timeout for s in cfg.stores.values()} == {2.5}
    assert (
        daulat.load_config("daulat.toml").with_request_timeout(None).stores["src"]
        == (daulat.load_config("daulat.toml").stores["src"])
    )
    assert json.dumps(daulat.__all__)  # plain strings


def test_bwlimit_takes_the_command_lines_text(home: Path) -> None:
    dry = daulat.copy("daulat.toml", "src", "dst", bwlimit="50M", dry_run=True)
    assert dry.ok and not (home / "dst").exists()
    copied = daulat.copy("daulat.toml", "src", "dst", bwlimit="64MB/s")
    assert copied.ok and copied.copied_objects == len(FILES)


# --- every option of the command line, from Python -------------------------------------------

# Commands whose options the API mirrors, by the function that runs each.
MIRRORED = ("copy", "sync", "exit", "verify", "restore", "drill", "scan", "check")
# A command-line option whose API parameter has another name: the CLI's --filter is a keyword
# Python programmers would shadow a builtin with.
RENAMED = {"filter_rule": "filter_rules"}
# Options of those commands that the API has no parameter for, each with why.
CLI_ONLY = {
    "config": "the first argument, cfg (a Config or the path of a daulat.toml), says which",
    "as_json": "the API returns typed results; their to_json() is the command's --json",
    "quiet": "the API prints nothing; progress= callbacks report what the command shows",
    "history": "drill --history is another question (past drills against the real exits), "
    "not an option of a drill",
}


def cli_options(command: str) -> list[str]:
    """The Python names of the command's options, read from the typer app itself."""
    import typer.main

    from daulat.cli import app

    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return [p.name for p in params if p.param_type_name == "option"]


def test_every_cli_option_has_an_api_parameter() -> None:
    missing = []
    for command in MIRRORED:
        api = inspect.signature(getattr(daulat.aio, command)).parameters
        for option in cli_options(command):
            name = RENAMED.get(option, option)
            if name not in api and option not in CLI_ONLY:
                missing.append(f"daulat {command} --{option.replace('_', '-')}")
            elif name in api:
                assert api[name].kind is inspect.Parameter.KEYWORD_ONLY, (command, name)
    assert not missing, f"command-line options the Python API lacks: {missing}"
    assert "reencrypt" in cli_options("exit") and "engine" in cli_options("verify")
    used = {o for c in MIRRORED for o in cli_options(c)}
    assert set(CLI_ONLY) <= used, f"CLI_ONLY names options no command has: {set(CLI_ONLY) - used}"


def test_reencrypt_moves_a_replica_to_new_recipients(home: Path) -> None:
    old_key, new_key = home / "old.txt", home / "new.txt"
    old, new = new_identity(old_key), new_identity(new_key)
    assert daulat.exit("daulat.toml", "src", "dst", encrypt_to=[old]).ok
    with pytest.raises(daulat.SafetyRefusal, match="other recipients") as refused:
        daulat.exit("daulat.toml", "src", "dst", encrypt_to=[new])
    assert new in str(refused.value)
    # Refused before anything was written: the old identity still reads every object.
    assert daulat.verify("daulat.toml", "src", "dst", full=True, identity=old_key).ok

    moved = daulat.exit("daulat.toml", "src", "dst", encrypt_to=[new], reencrypt=True)
    assert moved.ok and moved.encrypted and moved.copied_objects == len(FILES)
    assert daulat.verify("daulat.toml", "src", "dst", full=True, identity=new_key).ok
    assert not daulat.verify("daulat.toml", "src", "dst", full=True, identity=old_key).ok
    # The refusal is audited as a failed exit, as the command's is.
    operations = [e["operation"] for e in entries(home)]
    assert operations == ["exit", "exit", "verify", "exit", "verify", "verify"]
    refusal = entries(home)[1]["details"]
    assert isinstance(refusal, dict) and refusal["error"] == "RecipientsChanged"


def test_restore_overwrite_replaces_what_is_there(home: Path) -> None:
    assert daulat.exit("daulat.toml", "src", "dst").ok
    target = home / "cli" / "b" / "notes.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"edited since\n")
    kept = daulat.restore("daulat.toml", "dst", "cli", allow_unsigned=True)
    assert target.read_bytes() == b"edited since\n"
    assert not kept.ok and kept.kept_existing == ["b/notes.txt"]
    assert kept.copied_objects == len(FILES) - 1
    replaced = daulat.restore("daulat.toml", "dst", "cli", allow_unsigned=True, overwrite=True)
    assert replaced.ok and target.read_bytes() == FILES["b/notes.txt"]


def test_scan_in_shards_records_the_same(home: Path) -> None:
    one = daulat.scan("daulat.toml", "src", shards=1)
    many = daulat.scan("daulat.toml", "src", shards=3)
    assert one.ok and many.ok
    assert one.summaries[0].objects == many.summaries[0].objects == len(FILES)
    assert many.summaries[0].added == 0 and many.summaries[0].removed == 0


@pytest.mark.ray
def test_exit_and_verify_on_ray(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """engine="ray" from Python, on a real one-node Ray at ray_address (tests/raycluster.py):
    the exit's shards and verify --full's reading run there. The real runner runs; a subclass
    only remembers each one made."""
    from raycluster import ray_cluster, ray_env

    from daulat.scale import driver

    for name, value in ray_env().items():
        monkeypatch.setenv(name, value)
    runners: list[driver.RayRunner] = []

    class Remembered(driver.RayRunner):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            runners.append(self)

    monkeypatch.setattr(driver, "RayRunner", Remembered)
    with ray_cluster(worker_nodes=0) as cluster:
        summary = daulat.exit(
            "daulat.toml", "src", "dst", engine="ray", ray_address=cluster.address, workers=1
        )
        assert summary.ok and summary.verified_objects == len(FILES)
        for key, data in FILES.items():
            assert (home / "dst" / key).read_bytes() == data
        (runner,) = runners
        assert runner.address == cluster.address and runner.workers == 1
        assert runner.shards_run >= 1 and runner.used_workers == 1

        (home / "dst" / "a" / "one.csv").write_bytes(b"9,9,9\n")  # same size, other content
        report = daulat.verify(
            "daulat.toml", "src", "dst", full=True, engine="ray", ray_address=cluster.address
        )
    assert [key for key, _ in report.problems] == ["a/one.csv"]
    assert report.verified == len(FILES) - 1 and not report.ok
    assert len(runners) == 2 and runners[1].shards_run >= 1


def test_a_progress_callback_that_raises_stops_the_run_as_a_daulat_error(home: Path) -> None:
    """The caller's callback failing is a DaulatError (its exception the cause), audited with
    the callback's error; what was finished is kept and the call again resumes."""

    def broken(p: daulat.TransferProgress) -> None:
        if p.done_objects:
            raise ZeroDivisionError("division by zero")

    with pytest.raises(daulat.CallbackFailed, match="ZeroDivisionError") as failed:
        daulat.copy("daulat.toml", "src", "dst", concurrency=1, progress=broken)
    assert isinstance(failed.value.__cause__, ZeroDivisionError)
    [entry] = entries(home)
    assert entry["details"]["outcome"] == "failed"
    assert entry["details"]["error"] == "CallbackFailed"
    assert "ZeroDivisionError" in entry["details"]["message"]
    again = daulat.copy("daulat.toml", "src", "dst")
    assert again.ok and again.skipped_objects > 0


@pytest.mark.parametrize(
    ("call", "operation", "error"),
    [
        (
            lambda: daulat.verify("daulat.toml", "src", "dst", full=True, identity="nope.txt"),
            "verify",
            "KeyFileError",
        ),
        (lambda: daulat.copy("daulat.toml", "src", "dst", engine="spark"), "copy", "ConfigError"),
        (
            lambda: daulat.restore("daulat.toml", "dst", "cli", overwrite="yes"),
            "restore",
            "ConfigError",
        ),
        (lambda: daulat.exit("daulat.toml", "src", "dst", progress=5), "exit", "ConfigError"),
        (lambda: daulat.drill("daulat.toml", "src", "dst", workers=0), "drill", "ConfigError"),
        (lambda: daulat.scan("daulat.toml", "src", shards=0), "scan", "ConfigError"),
        (lambda: daulat.check("daulat.toml", strict="yes"), "check", "ConfigError"),
        # A failure inside the run (an unknown store) was audited before: the same shape.
        (lambda: daulat.copy("daulat.toml", "srcc", "dst"), "copy", "ConfigError"),
    ],
)
def test_every_failed_call_is_audited_alike(
    home: Path, call: object, operation: str, error: str
) -> None:
    """Whatever failed once the configuration was read (an argument, a missing identity file)
    is one audit entry, of the same shape as a failure inside the run."""
    assert callable(call)
    with pytest.raises(daulat.DaulatError):
        call()
    [entry] = entries(home)
    assert entry["operation"] == operation
    details = entry["details"]
    assert details["outcome"] == "failed" and details["error"] == error, details
    assert details["message"], details


def test_an_unreachable_ray_cluster_is_a_clear_error_soon(home: Path) -> None:
    """engine="ray" at an address where nothing listens: RayUnavailable naming the address
    within seconds (ray.init alone retries for many minutes), audited; nothing copied."""
    pytest.importorskip("ray")
    import socket
    import time

    with socket.socket() as probe:  # a port that was just free, so nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(daulat.ConfigError, match=f"cannot reach the Ray cluster at {address}"):
        daulat.copy("daulat.toml", "src", "dst", engine="ray", ray_address=address)
    assert time.monotonic() - started < 30
    [entry] = entries(home)
    assert entry["details"]["error"] == "RayUnavailable"
    assert not (home / "dst").exists()
