"""The ``daulat`` command end to end: init, stores, scan and demo on real directories, plus S3
stores on a real SeaweedFS server and an endpoint nobody answers.

Commands run in-process through ``daulat.cli.run`` (fast, captured with capsys) and, where exit
codes and tracebacks matter, through the installed console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import S3Server

import daulat
from daulat.cli import run
from daulat.config import load_config
from daulat.inventory import Manifest
from daulat.stores import open_store

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MiB = 1024 * 1024


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    code = run(argv)
    captured = capsys.readouterr()
    return Result(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))


def daulat_exe(args: list[str], cwd: Path) -> Result:
    assert shutil.which("daulat"), "the daulat console script is not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["COLUMNS"] = "300"  # keep rich's table from folding words
    # A guard against hangs, not a speed test: the demo takes a minute on a quiet machine.
    proc = subprocess.run(
        ["daulat", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files_under(root: Path) -> dict[str, int]:
    """Relative key -> size of every regular file under ``root``."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            found[p.relative_to(root).as_posix()] = p.stat().st_size
    return found


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


# --- version and init ----------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    res = cli(["--version"], capsys)
    assert res.code == 0
    assert res.out.strip() == f"daulat {daulat.__version__}"
    assert daulat.__version__ == version("daulat")


def test_version_console_script(tmp_path: Path) -> None:
    res = daulat_exe(["--version"], tmp_path)
    assert res.code == 0, res.err
    assert res.out.strip() == f"daulat {version('daulat')}"
    assert "Traceback" not in res.err


def test_usage_error_exits_2(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = cli(["stores", "--no-such-option"], capsys)
    assert res.code == 2
    assert "--no-such-option" in res.err
    assert "Traceback" not in res.err


def test_usage_error_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    res = daulat_exe(["scan", "--no-such-option"], tmp_path)
    assert "Traceback" not in res.err, res.err
    assert res.code == 2
    assert "--no-such-option" in res.err


def test_init_writes_a_loadable_config_with_a_local_store(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = cli(["init"], capsys)
    assert res.code == 0, res.err
    assert "daulat.toml" in res.out
    path = in_tmp / "daulat.toml"
    assert "[stores.local]" in path.read_text(encoding="utf-8")
    cfg = load_config(path, env={})
    assert list(cfg.stores) == ["local"]
    local = cfg.store("local")
    assert local.provider.value == "local"
    assert local.path == (in_tmp / "data").resolve()
    assert cfg.placement("local").jurisdictions == ["ID"]
    # The written config works with the other commands straight away.
    assert cli(["stores", "--json"], capsys).code == 0


def test_second_init_refuses_and_keeps_the_file(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["init"], capsys).code == 0
    path = in_tmp / "daulat.toml"
    edited = path.read_text(encoding="utf-8").replace('country = "ID"', 'country = "DE"')
    path.write_text(edited, encoding="utf-8")
    before = path.stat().st_mtime_ns

    res = cli(["init"], capsys)
    assert res.code == 2
    assert "already exists" in res.err and "--force" in res.err
    assert "Traceback" not in res.err
    assert path.read_text(encoding="utf-8") == edited
    assert path.stat().st_mtime_ns == before

    res = cli(["init", "--demo"], capsys)
    assert res.code == 2
    assert path.read_text(encoding="utf-8") == edited
    assert not (in_tmp / "daulat-demo").exists()

    assert cli(["init", "--force"], capsys).code == 0
    assert load_config(path, env={}).placement("local").country == "ID"


def test_init_below_a_project_refuses_to_shadow_its_config(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``daulat init`` in a subdirectory of a project: refused, naming the parent's config that
    a new one would silently replace there, and nothing is written (not even ``data/``);
    ``--nested`` writes it anyway."""
    assert cli(["init"], capsys).code == 0
    parent_config = in_tmp / "daulat.toml"
    sub = in_tmp / "sub" / "deeper"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)

    res = cli(["init"], capsys)
    assert res.code == 2, res.err
    assert res.err.startswith(f"error: {parent_config} is the configuration daulat uses in {sub}")
    assert "shadow" in res.err and "--nested" in res.err and "Traceback" not in res.err
    assert sorted(p.name for p in sub.iterdir()) == []
    res = cli(["init", "--dir", str(in_tmp / "sub")], capsys)
    assert res.code == 2 and str(parent_config) in res.err
    assert cli(["stores", "--json"], capsys).code == 0  # still the parent's

    res = cli(["init", "--nested"], capsys)
    assert res.code == 0, res.err
    assert (sub / "daulat.toml").is_file()


def test_init_demo_creates_sample_data(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = cli(["init", "--demo"], capsys)
    assert res.code == 0, res.err
    cfg = load_config(in_tmp / "daulat.toml", env={})
    assert sorted(cfg.stores) == ["kpu-primary", "offsite", "restored", "vault"]
    primary = in_tmp / "daulat-demo" / "kpu-primary"
    assert cfg.store("kpu-primary").path == primary.resolve()
    files = files_under(primary)
    assert len(files) > 1000
    assert f"{len(files):,} objects" in res.out
    depths = {key.count("/") for key in files}
    assert max(depths) >= 4, "expected nested prefixes such as pemilu-2024/prov/kab/tps/..."
    assert len({k.split("/")[0] for k in files}) >= 3
    big = [k for k, size in files.items() if size >= 8 * MiB]
    assert len(big) >= 3, big
    assert files_under(in_tmp / "daulat-demo" / "vault") == {}
    assert files_under(in_tmp / "daulat-demo" / "offsite") == {}
    assert cfg.placement("offsite").country == "SG"


# --- stores and scan on the demo ----------------------------------------------------------


def test_stores_json_before_and_after_scan(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["init", "--demo"], capsys).code == 0
    files = files_under(in_tmp / "daulat-demo" / "kpu-primary")

    res = cli(["stores", "--json"], capsys)
    assert res.code == 0, res.err
    rows = by_name(res.json())
    assert sorted(rows) == ["kpu-primary", "offsite", "restored", "vault"]
    for row in rows.values():
        assert row["reachable"] is True
        assert row["problem"] is None
        assert row["objects"] is None
        assert row["bytes"] is None
        assert row["last_scan"] is None
    assert (rows["kpu-primary"]["country"], rows["kpu-primary"]["jurisdictions"]) == (
        "ID",
        ["ID"],
    )
    assert (rows["offsite"]["country"], rows["offsite"]["jurisdictions"]) == ("SG", ["SG"])

    res = cli(["scan"], capsys)
    assert res.code == 0, res.err
    assert f"scanned kpu-primary: {len(files):,} objects" in res.out

    rows = by_name(cli(["stores", "--json"], capsys).json())
    assert rows["kpu-primary"]["objects"] == len(files)
    assert rows["kpu-primary"]["bytes"] == sum(files.values())
    assert rows["kpu-primary"]["last_scan"] is not None
    assert (rows["vault"]["objects"], rows["vault"]["bytes"]) == (0, 0)

    res = cli(["stores"], capsys)
    assert res.code == 0
    assert f"{len(files):,}" in res.out


def test_rescan_reports_added_changed_removed(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["init", "--demo"], capsys).code == 0
    primary = in_tmp / "daulat-demo" / "kpu-primary"
    first = cli(["scan", "kpu-primary", "--json"], capsys)
    assert first.code == 0, first.err
    [s1] = first.json()
    assert (s1["store"], s1["status"], s1["removed"]) == ("kpu-primary", "complete", 0)
    assert s1["added"] == s1["objects"] == len(files_under(primary))

    added = "pemilu-2024/papua/kab-09/tps-001/c1.json"
    changed = "rekap/bali/kab-01.csv"
    removed = "pemilu-2024/aceh/kab-01/tps-001/c1-scan.jpg"
    (primary / added).parent.mkdir(parents=True)
    (primary / added).write_text('{"tps": "001"}', encoding="utf-8")
    old = (primary / changed).read_bytes()
    new = old + b"99,1,2,3,6,0\n"
    (primary / changed).write_bytes(new)
    removed_size = (primary / removed).stat().st_size
    (primary / removed).unlink()
    files = files_under(primary)

    second = cli(["scan", "kpu-primary", "--json"], capsys)
    assert second.code == 0, second.err
    [s2] = second.json()
    assert (s2["added"], s2["changed"], s2["removed"]) == (1, 1, 1)
    assert s2["objects"] == len(files) == s1["objects"]
    assert s2["bytes"] == sum(files.values())
    assert s2["id"] > s1["id"]

    cfg = load_config(in_tmp / "daulat.toml", env={})
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        assert sorted(manifest.changes(s2["id"])) == sorted(
            [
                (added, "added", files[added]),
                (changed, "changed", len(new)),
                (removed, "removed", removed_size),
            ]
        )
        assert manifest.totals("kpu-primary") == (len(files), sum(files.values()))

    text = cli(["scan", "kpu-primary"], capsys)
    assert text.code == 0
    assert "(+0 added, ~0 changed, -0 removed)" in text.out


# --- demo ---------------------------------------------------------------------------------

TOUR_STEPS = ("1. daulat init --demo", "2. daulat stores", "3. daulat scan")


def test_demo_refuses_a_directory_that_is_not_a_tour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "work" / "thesis.txt"
    precious.parent.mkdir()
    precious.write_text("four years of work", encoding="utf-8")
    res = cli(["demo", "--dir", str(precious.parent)], capsys)
    assert res.code == 2
    assert "Traceback" not in res.err
    assert str(precious.parent) in res.err
    assert precious.read_text(encoding="utf-8") == "four years of work"
    assert sorted(p.name for p in precious.parent.iterdir()) == ["thesis.txt"]


def test_demo_does_not_delete_user_files_beside_an_init_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`daulat init --demo` run inside a project, then `daulat demo --dir` on that project:
    the project's own files must survive (refuse, or replace only what the tour created)."""
    project = tmp_path / "project"
    project.mkdir()
    precious = project / "notes.txt"
    precious.write_text("not part of any demo", encoding="utf-8")
    assert cli(["init", "--demo", "--dir", str(project)], capsys).code == 0

    res = cli(["demo", "--dir", str(project)], capsys)
    assert "Traceback" not in res.err
    assert res.code in (0, 2)
    assert precious.is_file(), "daulat demo deleted a file it did not create"
    assert precious.read_text(encoding="utf-8") == "not part of any demo"


def test_demo_console_script_refuses_non_demo_dir(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data.csv").write_text("a,b\n", encoding="utf-8")
    res = daulat_exe(["demo", "--dir", str(keep)], tmp_path)
    assert res.code == 2
    assert "Traceback" not in res.err
    assert "not a daulat demo" in res.err
    assert (keep / "data.csv").read_text(encoding="utf-8") == "a,b\n"


# --- unreachable and real S3 --------------------------------------------------------------


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(directory: Path, text: str) -> Path:
    path = directory / "daulat.toml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


DEAD_SECRET = "dead-endpoint-secret-0123456789abcdef"


def dead_store_config(directory: Path) -> Path:
    (directory / "data").mkdir(exist_ok=True)
    return write_toml(
        directory,
        f"""
        [stores.dead]
        url = "s3://pemilu"
        provider = "self-hosted"
        country = "ID"
        endpoint = "http://127.0.0.1:{closed_port()}"
        [stores.dead.credentials]
        access_key_id = "AKIDEAD"
        secret_access_key = "{DEAD_SECRET}"

        [stores.local]
        url = "{(directory / "data").as_uri()}"
        provider = "local"
        country = "ID"
        """,
    )


@pytest.mark.timeout(40)
def test_stores_with_unreachable_endpoint_exits_1_quickly(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_store_config(in_tmp)
    start = time.monotonic()
    res = cli(["stores", "--json"], capsys)
    elapsed = time.monotonic() - start
    assert res.code == 1, res.err
    assert elapsed < 20, f"took {elapsed:.1f} s"
    rows = by_name(res.json())
    assert rows["dead"]["reachable"] is False
    assert rows["dead"]["problem"]
    assert "'dead'" in rows["dead"]["problem"]
    assert rows["local"]["reachable"] is True
    assert DEAD_SECRET not in res.out + res.err


@pytest.mark.timeout(40)
def test_stores_console_script_says_unreachable(tmp_path: Path) -> None:
    dead_store_config(tmp_path)
    start = time.monotonic()
    res = daulat_exe(["stores"], tmp_path)
    elapsed = time.monotonic() - start
    assert res.code == 1, res.err
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert "Traceback" not in res.err
    assert DEAD_SECRET not in res.out + res.err
    dead_line = next(line for line in res.out.splitlines() if "dead" in line)
    assert "unreachable" in dead_line.lower(), res.out


@pytest.mark.timeout(120)
def test_stores_shows_where_a_relative_directory_store_resolved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a relative ``file:`` store is shown as the absolute URL it resolved to (beside
    daulat.toml, not the working directory): in the human output, not only in --json."""
    (tmp_path / "data" / "src").mkdir(parents=True)
    (tmp_path / "daulat.toml").write_text(
        '[stores.src]\nurl = "file:data/src"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    deeper = tmp_path / "sub" / "deeper"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    res = cli(["stores"], capsys)
    assert res.code == 0, res.err
    assert f"  src: at {(tmp_path / 'data' / 'src').as_uri()}" in res.out.splitlines(), res.out


def test_stores_says_when_daulat_wrote_to_a_store_after_its_last_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objects and size ``stores`` shows come from the last scan; a store daulat copied
    into after it (or never scanned) is named with what daulat wrote, and a scan clears it."""
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"f{i}").write_bytes(b"x" * (i + 1))
    (tmp_path / "daulat.toml").write_text(
        "".join(
            f'[stores.{n}]\nurl = "{(tmp_path / n).as_uri()}"\nprovider = "local"\n'
            'country = "ID"\n'
            for n in ("a", "b")
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["copy", "a", "b", "-q"], capsys).code == 0
    res = cli(["stores"], capsys)
    notes = [line for line in res.out.splitlines() if "daulat wrote here" in line]
    assert len(notes) == 1 and notes[0].startswith("  b: daulat wrote here it was never scanned")
    assert "3 objects, 6 B in all" in notes[0] and "`daulat scan b`" in notes[0]
    assert by_name(cli(["stores", "--json"], capsys).json())["b"]["written_by_daulat"][
        "objects"
    ] == 3
    assert cli(["scan", "b", "-q"], capsys).code == 0
    assert "daulat wrote here" not in cli(["stores"], capsys).out
    (tmp_path / "a" / "f9").write_bytes(b"new")
    time.sleep(1.1)  # the journal and the scan keep whole seconds
    assert cli(["copy", "a", "b", "-q"], capsys).code == 0
    assert "  b: daulat wrote here after its last scan" in cli(["stores"], capsys).out


def test_stores_table_off_a_terminal_folds_no_name_or_path(tmp_path: Path) -> None:
    """Piped or captured (no COLUMNS, no terminal), the table is as wide as its cells: the
    long store name and the missing directory's path stay whole, each on one line."""
    name = "archive-of-the-ministry-of-finance-jakarta-2026-" + "x" * 14
    missing = tmp_path / (
        "a-directory-with-a-long-name-for-the-finance-ministry-archive-" + "y" * 40
    )
    (tmp_path / "daulat.toml").write_text(
        f'[stores.{name}]\nurl = "{(missing / "gone").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    proc = subprocess.run(
        [sys.executable, "-m", "daulat", "stores"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 1, proc.stderr  # the directory is missing: unreachable
    row = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert len(row) == 1, proc.stdout
    assert f"│ {name} " in row[0]
    assert str(missing / "gone") in row[0] and "does not exist" in row[0]
    assert "not scanned" in row[0]
    # --json is unaffected: exact values, no table.
    as_json = subprocess.run(
        [sys.executable, "-m", "daulat", "stores", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert json.loads(as_json.stdout)[0]["name"] == name


def s3_toml(name: str, server: S3Server, bucket: str, key: str, secret: str) -> str:
    return f"""
        [stores.{name}]
        url = "s3://{bucket}"
        provider = "self-hosted"
        country = "ID"
        endpoint = "{server.endpoint}"
        [stores.{name}.credentials]
        access_key_id = "{key}"
        secret_access_key = "{secret}"
        """


async def _fill(store: Any, count: int) -> int:
    total = 0
    try:
        for i in range(count):
            data = f"tps-{i:03d} ".encode() * (i + 1)
            await store.put(f"pemilu-2024/kab-{i // 10:02d}/tps-{i:03d}/c1.json", data)
            total += len(data)
    finally:
        await store.close()
    return total


@pytest.mark.timeout(120)
def test_scan_self_hosted_s3(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], s3_server: S3Server
) -> None:
    s3_server.create_bucket("cli-scan")
    path = write_toml(
        in_tmp,
        s3_toml(
            "seaweed", s3_server, "cli-scan", s3_server.access_key_id, s3_server.secret_access_key
        ),
    )
    cfg = load_config(path)
    size = asyncio.run(_fill(open_store(cfg.store("seaweed")), 50))

    res = cli(["scan", "--json"], capsys)
    assert res.code == 0, res.err
    [summary] = res.json()
    assert (summary["store"], summary["objects"], summary["added"]) == ("seaweed", 50, 50)
    assert summary["bytes"] == size
    with Manifest.in_state_dir(cfg.state_dir) as manifest:
        assert manifest.totals("seaweed") == (50, size)
        keys = [r.key for r in manifest.objects("seaweed")]
        assert len(keys) == 50 and keys[0] == "pemilu-2024/kab-00/tps-000/c1.json"
        assert {r.etag_scheme for r in manifest.objects("seaweed")} == {"s3"}

    res = cli(["stores", "--json"], capsys)
    assert res.code == 0, res.err
    [row] = res.json()
    assert (row["name"], row["reachable"], row["objects"], row["bytes"]) == (
        "seaweed",
        True,
        50,
        size,
    )
    assert row["jurisdictions"] == ["ID"]
    assert s3_server.secret_access_key not in res.out + res.err


@pytest.mark.timeout(120)
def test_stores_with_wrong_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    s3_server: S3Server,
) -> None:
    monkeypatch.chdir(tmp_path)
    s3_server.create_bucket("cli-creds")
    wrong = "WRONG-" + s3_server.secret_access_key[::-1]
    write_toml(
        tmp_path,
        s3_toml(
            "good", s3_server, "cli-creds", s3_server.access_key_id, s3_server.secret_access_key
        )
        + s3_toml("bad", s3_server, "cli-creds", s3_server.access_key_id, wrong),
    )
    res = cli(["stores", "--json"], capsys)
    assert res.code == 1, res.err
    rows = by_name(res.json())
    assert rows["good"]["reachable"] is True, rows["good"]["problem"]
    assert rows["bad"]["reachable"] is False
    problem = rows["bad"]["problem"]
    assert "'bad'" in problem
    assert "refused" in problem and "credentials" in problem
    assert wrong not in res.out + res.err

    res = cli(["scan", "bad"], capsys)
    assert res.code == 1
    assert "refused" in res.err
    assert wrong not in res.out + res.err

    exe = daulat_exe(["stores"], tmp_path)
    assert exe.code == 1, exe.err
    assert "Traceback" not in exe.err
    assert "refused" in exe.out and "credentials" in exe.out
    assert wrong not in exe.out + exe.err
    assert s3_server.secret_access_key not in exe.out + exe.err


# --- the demo tells the truth ----------------------------------------------------------------


# One test for a tour and the next one in its directory: each tour costs half a minute of CPU.
@pytest.mark.timeout(1800)
def test_demo_in_an_empty_directory_its_suggestion_runs_and_a_second_tour_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = daulat_exe(["demo"], tmp_path)
    assert res.code == 0, res.err[-3000:]
    assert "Traceback" not in res.err
    tour = tmp_path / "daulat-demo-tour"
    positions = [res.out.find(step) for step in TOUR_STEPS]
    assert all(p >= 0 for p in positions), res.out
    assert positions == sorted(positions)
    assert "UNREACHABLE" not in res.out
    in_tour = len(files_under(tour / "daulat-demo" / "kpu-primary"))
    assert f"{in_tour:,} objects" in res.out

    # After its exits the tour scans again: the report's store table counts what the replicas
    # hold, as the policy section does.
    report = daulat_exe(["report", "--format", "json", "-o", "r.json"], tour)
    assert report.code == 0, report.err
    data = json.loads((tour / "r.json").read_text())
    objects = {s["name"]: s["objects"] for s in data["stores"]}
    assert objects["vault"] == objects["kpu-primary"] == objects["offsite"] > 0, objects
    residency = [
        f
        for p in data["policies"]["policies"]
        for f in p["findings"]
        if f["rule"] == "residency" and f["store"] == "vault"
    ]
    assert residency and all(f["objects"] == objects["vault"] for f in residency), residency

    # Numbers in the report's tables are formatted: no raw floats such as 0.000355420608793965.
    html = (tour / "daulat-report.html").read_text()
    tables = "".join(re.findall(r"<table.*?</table>", html, flags=re.S))
    assert tables and not re.findall(r"\d\.\d{4,}", tables), re.findall(r"\d\.\d{4,}", tables)

    # The closing suggestion runs as written: `check` exits 1 on the demo's deliberate
    # violation, and the commands after it still run.
    line = next(x for x in res.out.splitlines() if x.startswith("Try it yourself:"))
    command = line.removeprefix("Try it yourself:").strip()
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["COLUMNS"] = "300"
    proc = subprocess.run(
        ["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )  # five commands: a guard against hangs that a loaded machine does not trip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Stores" in proc.stdout  # daulat stores
    assert "FAIL" in proc.stdout  # daulat check, exit 1
    assert "The score's formula" in proc.stdout  # daulat risk, run all the same
    # The tour's `keys new` made a signing key and pinned it, as the command does, so the
    # encrypted copy it made restores from the tour directory (the last command).
    assert (tour / "kpu-identity.txt.sign").is_file()
    config = (tour / "daulat.toml").read_text()
    assert "signers = [" in config and 'signing_key = "kpu-identity.txt.sign"' in config
    assert "restore offsite → restored" in proc.stdout
    assert "complete: every object decrypted and verified against the source manifest" in (
        proc.stdout
    )
    # The restore lands outside every replica: vault still verifies (the line's exit code,
    # checked above, is the verify's), and the restored objects are the primary's.
    assert re.search(
        r"verify kpu-primary → vault .*; verified [\d,]+, problems 0\b", proc.stdout
    ), proc.stdout[-2000:]
    primary = files_under(tour / "daulat-demo" / "kpu-primary")
    restored = files_under(tour / "daulat-demo" / "restored")
    assert {k: v for k, v in restored.items() if not k.startswith(".daulat/")} == primary

    # A second tour in the same directory replaces the first (and what its suggestion
    # made): stray files go, the manifest starts afresh.
    stray = tour / "daulat-demo" / "kpu-primary" / "stray.txt"
    stray.write_text("left over", encoding="utf-8")
    again = cli(["demo", "--dir", str(tour)], capsys)
    assert again.code == 0, again.err
    assert all(step in again.out for step in TOUR_STEPS)
    assert not stray.exists()
    assert not files_under(tour / "daulat-demo" / "restored")  # the suggestion's restore
    assert f"(+{in_tour:,} new since the last scan)" in again.out
    with Manifest(tour / ".daulat" / "manifest.sqlite") as manifest:
        last = manifest.last_scan("kpu-primary")
        assert last is not None and last.objects == in_tour
        # Two scans of it in this tour (before and after the exits), none from the first tour.
        first = manifest.scan(1)
        assert first is not None and first.store == "kpu-primary"
        assert (first.objects, first.added) == (in_tour, in_tour)


# --- help text ----------------------------------------------------------------------------


def _commands() -> list[tuple[list[str], Any]]:
    """(argv prefix, click command) of every command, sub-commands included."""
    import typer.main

    from daulat.cli import app

    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


def test_help_shows_every_bracketed_word(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # rich reads "[gateway]" as a markup tag and prints nothing for it: "Serve the  buckets".
    monkeypatch.setenv("COLUMNS", "400")
    tag = re.compile(r"\\?\[([A-Za-z_][\w.-]*)\]")
    checked = 0
    for path, command in _commands():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {f"[{m.group(1)}]" for text in texts for m in tag.finditer(text)}
        if not words:
            continue
        assert run([*path, "--help"]) == 0
        shown = " ".join(ANSI.sub("", capsys.readouterr().out).split())
        for word in words:
            assert word in shown, f"daulat {' '.join(path)} --help lost {word}"
            checked += 1
    assert checked >= 2


def test_config_before_the_command_is_used_and_the_commands_own_wins(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The config sits in a sibling directory (a parent's would be found without --config).
    cfg = in_tmp / "cfg"
    cfg.mkdir()
    os.chdir(cfg)
    assert cli(["init"], capsys).code == 0
    sub = in_tmp / "sub"
    sub.mkdir()
    other = cfg / "other.toml"
    other.write_text(
        (cfg / "daulat.toml").read_text(encoding="utf-8").replace("[stores.local]", "[stores.o]"),
        encoding="utf-8",
    )
    os.chdir(sub)
    missing = cli(["stores", "--json"], capsys)
    assert missing.code == 2 and "--config PATH" in missing.err
    for argv in (
        ["--config", "../cfg/daulat.toml", "stores", "--json"],
        ["-c", "../cfg/daulat.toml", "stores", "--json"],
        ["stores", "--json", "--config", "../cfg/daulat.toml"],
        ["--config", "../cfg/other.toml", "stores", "--json", "--config", "../cfg/daulat.toml"],
    ):
        res = cli(argv, capsys)
        assert res.code == 0, (argv, res.err)
        assert [s["name"] for s in res.json()] == ["local"], argv
    # Nothing carries over to the next run in the same process.
    assert cli(["stores", "--json"], capsys).code == 2
