"""``--engine ray`` without an address starts a local Ray for the run, copies on it and stops
it: a real Ray, since what broke here was Ray's own processes (started with a parent-death
signal, they die with the *thread* that started them, and the driver starts Ray in a thread
while it lists)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def _processes_under(directory: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if directory in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


def test_a_local_ray_started_for_the_run_copies_and_is_stopped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {f"d/f{i}": os.urandom(1000 + i) for i in range(40)}
    for key, data in files.items():
        (src / key).parent.mkdir(exist_ok=True)
        (src / key).write_bytes(data)
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "file://{src}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "file://{tmp_path / "dst"}"\nprovider = "local"\n'
        'country = "ID"\n'
    )
    # A short directory of its own for Ray's sessions (its socket paths must stay short):
    # every process of this Ray names it on its command line.
    ray_tmp = tempfile.mkdtemp(prefix="dray", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daulat", "exit", "src", "dst", "--engine", "ray", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["ok"] is True
        assert summary["verified_objects"] == len(files)
        for key, data in files.items():
            assert (tmp_path / "dst" / key).read_bytes() == data
        # Ray is stopped with the run; its agents may take a moment to notice.
        deadline = time.monotonic() + 30
        while (left := _processes_under(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left
    finally:
        for line in _processes_under(ray_tmp):
            os.kill(int(line.split(":")[0]), 9)
        shutil.rmtree(ray_tmp, ignore_errors=True)
