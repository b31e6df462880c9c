"""A drill stopped by SIGINT or SIGTERM while it copies its sample: real signals, sent to a real
process once the drill says it is copying.

The source is a SeaweedFS bucket behind the fault proxy, which sends every object back at
16 KiB/s, so the sample's copy lasts seconds and the signal lands inside the transfer engine
(not while probing, nor after). The destination is a directory, where the scratch copy is
easy to look for. What must hold, from the command line and from ``daulat.drill``, on both
event loops:

* the signal's exit code (130 or 143) and one clean line, no traceback;
* ``daulat.drill`` raises :class:`daulat.Interrupted` (a drill has no prediction to carry:
  ``result`` is None), not an ``AttributeError``;
* the audit log records the drill as interrupted by that signal;
* the scratch copy is removed, and the drill's record says it was interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from faultproxy import Proxy, fault_proxy
from servers import S3Server
from test_transfer import fill_config, unique, write_config
from test_transfer_faults import start_daulat

KiB = 1024
# 8 objects of 64 KiB at 16 KiB/s each: every read of the sample takes 4 s.
OBJECTS = {f"o/{i}.bin": bytes([i]) * (64 * KiB) for i in range(8)}
RATE = 16 * KiB
LOOPS = ["uvloop", "asyncio"]
SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.fixture
def slow_source(s3_server: S3Server, tmp_path: Path) -> Iterator[Path]:
    """src: a SeaweedFS bucket read through a proxy at RATE, scanned; dst: an empty directory.
    Returns the configuration's path."""
    direct = s3_store_config(s3_server, "src", unique("drillint"))
    fill_config(direct, OBJECTS)
    (tmp_path / "dst").mkdir()
    with fault_proxy(s3_server.endpoint) as proxy:
        config = write_config(
            tmp_path,
            [{**direct, "endpoint": proxy.endpoint}, fs_store_config(tmp_path / "dst", "dst")],
        )
        scanned = subprocess.run(
            ["daulat", "scan", "src", "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert scanned.returncode == 0, scanned.stderr
        slow(proxy)
        yield config


def slow(proxy: Proxy) -> None:
    proxy.response_rate = RATE


def audit_entries(config: Path) -> list[dict[str, Any]]:
    path = config.parent / ".daulat" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def drill_rows(config: Path) -> list[tuple[str, str | None, int | None]]:
    db = sqlite3.connect(config.parent / ".daulat" / "drills.sqlite")
    try:
        return list(db.execute("SELECT status, error, scratch_removed FROM drills"))
    finally:
        db.close()


def assert_recorded_as_interrupted(config: Path, sig: signal.Signals) -> None:
    """The audit entry, the drill's own record, and no scratch copy left."""
    [entry] = [e for e in audit_entries(config) if e["operation"] == "drill"]
    details = entry["details"]
    assert details["outcome"] == "interrupted", details
    assert details["signal"] == sig.name and details["error"] == "Interrupted", details
    assert details["src"] == "src" and details["dst"] == "dst", details
    assert drill_rows(config) == [("failed", "interrupted", 1)]
    dst = config.parent / "dst"
    assert [p for p in dst.rglob("*") if p.is_file()] == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_while_the_drill_copies_stops_the_command_cleanly(
    slow_source: Path, sig: signal.Signals, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = slow_source
    monkeypatch.setenv("DAULAT_EVENT_LOOP", loop)
    proc = start_daulat(
        ["drill", "src", "dst", "--sample", "100%", "--config", str(config)], config.parent
    )
    deadline = time.monotonic() + 90
    while "copying " not in proc.err:
        assert proc.popen.poll() is None, proc.err
        assert time.monotonic() < deadline, proc.err
        time.sleep(0.02)
    time.sleep(0.3)
    proc.popen.send_signal(sig)
    code = proc.wait(60)
    err = proc.err
    assert code == 128 + sig, (code, err)
    assert "Traceback" not in err and "Error" not in err, err
    [said] = [line for line in err.splitlines() if "interrupted" in line]
    assert f"interrupted by {sig.name}: the drill stopped cleanly" in said, err
    assert "does not resume" in said and "to resume" not in said, err
    assert proc.out == "", proc.out  # no prediction: nothing was measured to the end
    assert_recorded_as_interrupted(config, sig)


# The Python API in a script of its own: the signal goes to the process at the first
# "copying" progress event, then what daulat.drill raised is printed as JSON.
LIBRARY = """
import json, os, signal, sys, threading, time
import daulat
sig = signal.Signals[sys.argv[1]]

def later():
    time.sleep(0.3)
    os.kill(os.getpid(), sig)

def progress(p):
    if p.message.startswith("copying "):
        threading.Thread(target=later, daemon=True).start()

out = {}
try:
    daulat.drill("daulat.toml", "src", "dst", sample="100%", progress=progress)
    out["returned"] = True
except daulat.Interrupted as stopped:
    out["interrupted"] = stopped.signal_name
    out["exit_code"] = stopped.exit_code
    out["result"] = None if stopped.result is None else type(stopped.result).__name__
except BaseException as exc:
    out["raised"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_while_the_drill_copies_raises_interrupted_from_the_api(
    slow_source: Path, sig: signal.Signals, loop: str
) -> None:
    config = slow_source
    script = config.parent / "library.py"
    script.write_text(LIBRARY)
    done = subprocess.run(
        [sys.executable, str(script), sig.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DAULAT_EVENT_LOOP": loop},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    out = json.loads(done.stdout)
    assert out == {"interrupted": sig.name, "exit_code": 128 + sig, "result": None}, out
    assert_recorded_as_interrupted(config, sig)
