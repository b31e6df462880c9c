"""Feedback while commands run: byte progress that moves while a large object streams, in IEC
units; a short line every interval when stderr is not a terminal; none with --quiet; ``scan``
goes on past a store it cannot reach and reports it at the end."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
from rich.console import Console

from daulat.cli import run
from daulat.config import load_config
from daulat.feedback import Feedback, human_bytes
from daulat.inventory import Manifest
from daulat.transfer import Kind, Options, run_transfer
from daulat.transfer.engine import Progress

MiB = 1024 * 1024


def fs_project(tmp_path: Path, files: dict[str, int]) -> Path:
    src = tmp_path / "src"
    for key, size in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(os.urandom(size))
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    return tmp_path / "daulat.toml"


def test_bytes_move_while_a_large_object_streams(tmp_path: Path) -> None:
    """One 40 MiB object at 16 MiB/s: the byte count rises during the 2.5 s it streams, not
    only when it completes (the bar sat at 0.0 of 220 MB while a 150 MiB object streamed)."""
    config = load_config(fs_project(tmp_path, {"big.bin": 40 * MiB, "small.txt": 10}))
    seen: list[tuple[float, int, int, int]] = []

    def progress(p: Progress) -> None:
        seen.append((time.monotonic(), p.done_objects, p.done_bytes, p.moved_bytes))

    summary = asyncio.run(
        run_transfer(
            config, Kind.COPY, "src", "dst", Options(bwlimit=16 * MiB, concurrency=1), progress
        )
    )
    assert summary.ok and summary.copied_bytes == 40 * MiB + 10
    streaming = [s for s in seen if s[2] < 40 * MiB and s[3] > s[2]]
    assert len(streaming) >= 5, seen[:20]  # reported several times while the object streamed
    moved = [s[3] for s in seen]
    assert moved == sorted(moved), "the byte count stepped back"
    assert moved[-1] == 40 * MiB + 10
    assert seen[-1][1] == 2


def test_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    feedback = Feedback(console, interval=0.2)
    assert not feedback.live
    with feedback.transfer("exit a → b") as update:
        p = Progress(planned_objects=10, planned_bytes=300 * MiB)
        p.done_objects, p.done_bytes, p.in_flight_bytes = 4, 100 * MiB, 50 * MiB
        update(p)
        time.sleep(0.7)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2, lines
    assert lines[0].startswith("exit a → b: 4 of 10 objects, 150.0 MiB of 300.0 MiB (50%)")
    assert "MB" not in out.getvalue().replace("MiB", "")  # one unit system: IEC

    quiet = io.StringIO()
    with Feedback(Console(file=quiet), quiet=True, interval=0.1).transfer("x") as update:
        update(Progress(planned_objects=1, planned_bytes=1))
        time.sleep(0.3)
    assert quiet.getvalue() == ""


def test_before_the_plan_progress_says_what_it_waits_for() -> None:
    """Counts are 0 until the run has listed both sides: "0 of 0 objects" read as nothing to
    do while a destination took a request timeout to answer."""
    out = io.StringIO()
    feedback = Feedback(Console(file=out, force_terminal=False, width=200), interval=0.2)
    with feedback.transfer("copy a → b") as update:
        update(Progress(waiting_for="listing b"))
        time.sleep(0.5)
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("copy a → b: listing b…, ") for line in lines), lines
    assert "0 of 0" not in out.getvalue()


def test_iec_units() -> None:
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(220 * MiB) == "220.0 MiB"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_scan_goes_on_past_an_unreachable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("one", "three"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_bytes(b"data of " + name.encode())
    (tmp_path / "daulat.toml").write_text(
        f'[stores.one]\nurl = "{(tmp_path / "one").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n'
        '[stores.two]\nurl = "s3://gone"\nprovider = "self-hosted"\ncountry = "ID"\n'
        f'endpoint = "http://127.0.0.1:{closed_port()}"\n'
        '[stores.two.credentials]\naccess_key_id = "AK"\nsecret_access_key = "SK"\n'
        f'[stores.three]\nurl = "{(tmp_path / "three").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert run(["scan"]) == 1
    captured = capsys.readouterr()
    assert "scanned one: 1 object," in captured.out and "scanned three: 1 object," in captured.out
    assert "could not scan two" in captured.err
    assert run(["scan", "--json", "--quiet"]) == 1
    rows = {r["store"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["one"]["objects"] == 1 and rows["three"]["objects"] == 1
    assert rows["two"]["status"] == "failed" and rows["two"]["error"]
    with Manifest(tmp_path / ".daulat" / "manifest.sqlite") as manifest:
        assert manifest.last_scan("three") is not None
        assert manifest.last_scan("two") is None
