"""A complete audit trail: the library entry points record themselves, so Python callers are
audited like the command line; a run that fails or raises is recorded with its error class;
``sync --delete`` records what it deleted, in a bounded form. (Interrupted runs: see
test_interrupts.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from daulat.audit import audit_log
from daulat.cli import run
from daulat.config import load_config
from daulat.drill import run_drill
from daulat.errors import ConfigError, InvalidKey
from daulat.inventory import Manifest, scan
from daulat.report import write_report
from daulat.stores.fs import FsStore
from daulat.transfer import Kind, Options, run_transfer, run_verify
from daulat.transfer.engine import DELETED_KEYS_KEPT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src"
    for i in range(20):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"{i:02d}.txt").write_bytes(b"y" * (50 + i))
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def entries(project: Path) -> list[dict[str, Any]]:
    return [e.to_dict() for e in audit_log(project / ".daulat").entries()]


def test_library_calls_are_audited_like_the_cli(project: Path) -> None:
    config = load_config(project / "daulat.toml")

    async def calls() -> None:
        with Manifest.in_state_dir(config.state_dir) as manifest:
            await scan(config, "src", manifest)
        await run_transfer(config, Kind.EXIT, "src", "dst")
        await run_verify(config, "src", "dst", full=True)
        await run_drill(config, "src", "dst", sample=4, seed=1)

    asyncio.run(calls())
    write_report(config, project / "r.html")
    log = entries(project)
    assert [e["operation"] for e in log] == ["scan", "exit", "verify", "drill", "report"]
    assert all(e["details"]["outcome"] == "ok" for e in log), log
    assert log[1]["details"]["copied"] == 20 and log[1]["details"]["ok"] is True
    assert log[2]["details"]["verified"] == 20
    assert log[4]["details"]["file"] == str((project / "r.html").resolve())
    assert audit_log(project / ".daulat").verify().ok


def test_a_run_that_raises_is_audited_with_its_error_class(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(project / "daulat.toml")
    with pytest.raises(ConfigError):
        asyncio.run(run_transfer(config, Kind.EXIT, "src", "dst", Options(encrypt_names=True)))
    [entry] = entries(project)
    assert entry["operation"] == "exit"
    assert entry["details"]["outcome"] == "failed"
    assert entry["details"]["error"] == "ConfigError"
    assert "--encrypt-names" in entry["details"]["message"]

    # The same through the CLI, and a run the engine itself ends with an exception: an object the
    # destination lists but refuses to delete.
    assert run(["exit", "src", "dst"]) == 0
    (project / "dst" / "stale.txt").write_bytes(b"x")

    async def refuse(self: FsStore, key: str) -> None:
        raise InvalidKey(f"store {self.name!r} refuses to delete {key!r}", store=self.name, key=key)

    monkeypatch.setattr(FsStore, "delete", refuse)
    code = run(["sync", "src", "dst", "--delete"])
    assert code == 1
    last = entries(project)[-1]
    assert last["operation"] == "sync"
    assert last["details"]["outcome"] == "failed"
    assert last["details"]["error"] == "InvalidKey"
    assert "Traceback" not in capsys.readouterr().err


def _expected_sha256(keys: list[str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update((json.dumps(key, ensure_ascii=False) + "\n").encode())
    return digest.hexdigest()


@pytest.mark.parametrize("extra", [3, DELETED_KEYS_KEPT + 50])
def test_sync_delete_records_what_it_deleted(
    project: Path, capsys: pytest.CaptureFixture[str], extra: int
) -> None:
    assert run(["sync", "src", "dst"]) == 0
    gone = sorted(f"old/{i:04d}-ü.txt" for i in range(extra))
    for key in gone:
        (project / "dst" / key).parent.mkdir(parents=True, exist_ok=True)
        (project / "dst" / key).write_bytes(b"removed from the source long ago")
    capsys.readouterr()
    assert run(["sync", "src", "dst", "--delete", "--max-delete", "100%", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["deleted_objects"] == extra
    record = entries(project)[-1]["details"]["deleted"]
    assert summary["deleted"] == record
    assert record["count"] == extra
    assert record["keys"] == gone[:DELETED_KEYS_KEPT]  # the first ones, in key order
    assert record["complete"] is (extra <= DELETED_KEYS_KEPT)
    # Anyone holding the full list can check it against the record.
    assert record["sha256"] == _expected_sha256(gone)
    assert not (project / "dst" / "old").exists() or not any((project / "dst" / "old").iterdir())


def test_a_refused_drill_and_a_check_are_recorded(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["drill", "src", "dst"]) == 2  # no scan yet
    assert run(["check"]) == 0
    log = entries(project)
    assert [e["operation"] for e in log] == ["drill", "check"]
    assert log[0]["details"]["outcome"] == "failed"
    assert log[0]["details"]["error"] == "ConfigError"
    assert log[1]["details"]["outcome"] == "ok"


def test_keys_new_checks_the_whole_audit_chain_before_making_keys(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry edited in the middle of the log (its last line intact) stops ``keys new``
    before it writes a key or pins one in daulat.toml, as it stops every run."""
    assert run(["keys", "new", "--out", "a.txt"]) == 0
    assert run(["keys", "new", "--out", "b.txt"]) == 0
    log = project / ".daulat" / "audit.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    first["details"]["file"] = "/somewhere/else.txt"  # rewritten history, hash left as it was
    log.write_text(json.dumps(first) + "\n" + lines[1] + "\n", encoding="utf-8")
    config_before = (project / "daulat.toml").read_bytes()
    capsys.readouterr()

    assert run(["keys", "new", "--out", "c.txt"]) == 2
    err = capsys.readouterr().err
    assert "audit log is damaged" in err and "entry 0" in err and "Traceback" not in err, err
    assert not (project / "c.txt").exists() and not (project / "c.txt.sign").exists()
    assert (project / "daulat.toml").read_bytes() == config_before
