"""Two runs into one destination at once on one machine: the second is refused (exit 2) naming
the first's process, and the first completes. A real second process, real directories."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fs_store_config
from test_transfer import cli, write_config

from daulat.state import is_locked


def _wait_for_lock(locks: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the first run ended before it was seen running"
        if locks.is_dir() and any(is_locked(p) for p in locks.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("the first run was never seen running")


def test_second_identical_exit_is_refused_while_the_first_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "big", tmp_path / "bdst"
    src.mkdir()
    for i in range(20):
        (src / f"o{i}").write_bytes(os.urandom(20_000))
    # A second name for the same directory shares the lock.
    write_config(
        tmp_path,
        [fs_store_config(src, "big"), fs_store_config(dst, "bdst"), fs_store_config(dst, "alias")],
    )
    monkeypatch.chdir(tmp_path)
    first = subprocess.Popen(
        [sys.executable, "-m", "daulat", "exit", "big", "bdst", "--bwlimit", "100K"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Its run lock (taken after the destination lock) says it is copying.
        _wait_for_lock(tmp_path / ".daulat" / "runs", first)
        for name in ("bdst", "alias"):
            second = cli(["exit", "big", name], capsys)
            assert second.code == 2, second.out + second.err
            assert f"pid {first.pid}" in second.err and "started" in second.err, second.err
            assert "Traceback" not in second.err
        _out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err.decode()
    # Once it ended the lock is free: the same command runs.
    again = cli(["exit", "big", "bdst"], capsys)
    assert again.code == 0, again.explain()
