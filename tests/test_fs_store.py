"""The filesystem store against a hostile tree, a changing source, a missing root and killed runs.

All on the real filesystem (and, where a destination matters, the real SeaweedFS):

* confinement: a symlink planted in the root, or swapped in for a directory while a run writes,
  never lets an operation read, write, create or remove anything outside the root;
* a source rewritten while it is read is retried, never recorded done with torn content;
* a missing root directory is an error to read from, and is created (never through a symlink)
  by the first write;
* temp files: named as daulat's, removed after a killed run by the next run, spared while a live
  process is writing them; no empty ``.daulat-tmp/`` is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from servers import S3Server
from test_transfer import cli, journal_rows, write_config
from test_transfer_faults import start_daulat, wait_until

from daulat.config import StoreConfig
from daulat.errors import (
    InvalidKey,
    MissingRoot,
    NotFound,
    SourceChanged,
    StoreError,
    Transient,
)
from daulat.stores import Store, open_store
from daulat.stores.fs import TMP_DIR, FsStore
from daulat.stores.fstemp import MADE_XATTR
from daulat.transfer.engine import Endpoint, Kind, Options, Summary, transfer
from daulat.transfer.journal import Journal
from daulat.transfer.retry import RetryPolicy

MiB = 1024 * 1024
SECRET = b"outside the root: never to be read, written or removed"

# --------------------------------------------------------------------------------------------
# Helpers


def snapshot(top: Path) -> dict[str, tuple[str, bytes, int]]:
    """Everything under ``top``: relative path → (kind, content or link target, mtime_ns)."""
    out: dict[str, tuple[str, bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p).encode(), st.st_mtime_ns)
            elif p.is_dir():
                out[rel] = ("dir", b"", st.st_mtime_ns)
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mtime_ns)
    return out


def keys(store: Store, prefix: str = "") -> list[str]:
    async def go() -> list[str]:
        return sorted([o.key async for batch in store.list(prefix) for o in batch])

    return run(go())


def temp_files(root: Path) -> list[str]:
    tmp = root / TMP_DIR
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A root holding directory symlinks ``a`` (absolute) and ``b`` (relative) to a directory
    outside it, which holds ``s.txt`` and ``sub/t.txt``."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "s.txt").write_bytes(SECRET)
    (outside / "sub" / "t.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to(outside)
    (root / "b").symlink_to(Path("..") / "outside")
    (root / "inside.txt").write_bytes(b"an ordinary object")
    return root, outside


# --------------------------------------------------------------------------------------------
# Confinement


def _operate(store: FsStore, op: str, key: str) -> Any:
    async def go() -> Any:
        if op == "put":
            return await store.put(key, b"written through a symlink?")
        if op == "put-stream":

            async def body() -> Any:
                yield b"x" * MiB
                yield b"y" * MiB

            return await store.put(key, body())
        if op == "get":
            return await (await store.get(key)).read_all()
        if op == "get-range":
            return await (await store.get(key, start=2, end=9)).read_all()
        if op == "head":
            return await store.head(key)
        if op == "delete":
            return await store.delete(key)
        assert op == "list"
        return sorted([o.key async for batch in store.list(key) for o in batch])

    return run(go())


@pytest.mark.parametrize("link", ["a", "b"], ids=["absolute-link", "relative-link"])
@pytest.mark.parametrize(
    ("op", "refusal"),
    [
        ("put", InvalidKey),
        ("put-stream", InvalidKey),
        ("get", NotFound),
        ("get-range", NotFound),
        ("head", NotFound),
        ("delete", None),  # a key that is not an object: deleting it succeeds, touching nothing
        ("list", None),
    ],
)
def test_directory_symlink_leading_outside_is_never_followed(
    planted: tuple[Path, Path], link: str, op: str, refusal: type[Exception] | None
) -> None:
    root, outside = planted
    before = snapshot(outside)
    store = FsStore("planted", root)
    for key in (f"{link}/s.txt", f"{link}/sub/t.txt", f"{link}/new/deeper/file.txt"):
        if op == "list":
            assert _operate(store, op, key.rsplit("/", 1)[0] + "/") == []
            continue
        if refusal is None or (op == "delete"):
            assert _operate(store, op, key) is None
        else:
            with pytest.raises(refusal) as info:
                _operate(store, op, key)
            if refusal is InvalidKey:
                assert "symbolic link" in str(info.value)
        assert snapshot(outside) == before, f"{op} {key!r} changed something outside the root"
    # The whole listing holds the ordinary object only: neither link is followed.
    assert keys(store) == ["inside.txt"]
    assert snapshot(outside) == before
    assert not (root / TMP_DIR).exists() or temp_files(root) == []


def test_file_symlink_is_not_an_object(planted: tuple[Path, Path]) -> None:
    root, outside = planted
    (root / "link.txt").symlink_to(outside / "s.txt")
    (root / "d").mkdir()
    (root / "d" / "deep-link").symlink_to(outside / "sub" / "t.txt")
    before = snapshot(outside)
    store = FsStore("planted", root)
    assert keys(store) == ["inside.txt"]
    for key in ("link.txt", "d/deep-link"):
        with pytest.raises(NotFound):
            _operate(store, "get", key)
        with pytest.raises(NotFound):
            _operate(store, "head", key)
        _operate(store, "delete", key)
        assert (root / key).is_symlink(), "delete removed a symlink that is not an object"
    assert snapshot(outside) == before
    # A put replaces the link itself with an object; the file it pointed at is untouched.
    _operate(store, "put", "link.txt")
    assert not (root / "link.txt").is_symlink()
    assert (root / "link.txt").read_bytes() == b"written through a symlink?"
    assert snapshot(outside) == before


def test_temp_dir_symlink_is_refused(planted: tuple[Path, Path]) -> None:
    root, outside = planted
    (root / TMP_DIR).symlink_to(outside)
    before = snapshot(outside)
    store = FsStore("planted", root)
    for op in ("put", "put-stream"):
        with pytest.raises(StoreError, match="is not a directory"):
            _operate(store, op, "fine/key.bin")
    assert run(store.cleanup_temp()) == (0, 0)
    run(store.close())
    assert snapshot(outside) == before
    assert (root / TMP_DIR).is_symlink()
    assert keys(store) == ["inside.txt"]


def test_missing_root_is_created_by_put_but_never_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # A plain missing root: its own missing directories are made.
    fresh = FsStore("fresh", tmp_path / "not" / "yet" / "there")
    run(fresh.put("k/v.txt", b"v"))
    assert (tmp_path / "not" / "yet" / "there" / "k" / "v.txt").read_bytes() == b"v"
    # A root that is a dangling symlink (to a directory outside that does not exist yet), and
    # one whose missing parent is: creating either would create something outside.
    (tmp_path / "dangling").symlink_to(outside / "made-by-daulat")
    (tmp_path / "dangling-parent").symlink_to(outside / "made-by-daulat-too")
    for root in (tmp_path / "dangling", tmp_path / "dangling-parent" / "store"):
        store = FsStore("dangling", root)
        with pytest.raises(StoreError, match="symbolic link"):
            run(store.put("k/v.txt", b"v"))
    assert list(outside.iterdir()) == []
    # A configured root that *is* a symlink to an existing directory is the user's choice.
    (outside / "real").mkdir()
    (tmp_path / "configured-link").symlink_to(outside / "real")
    run(FsStore("linked", tmp_path / "configured-link").put("x", b"x"))
    assert (outside / "real" / "x").read_bytes() == b"x"


def test_a_failed_put_removes_the_directories_it_made_and_only_those(tmp_path: Path) -> None:
    store = FsStore("tidy", tmp_path / "root")
    run(store.put("kept/old.txt", b"old"))
    (tmp_path / "root" / "empty-before").mkdir()
    wrong = "0" * 64  # not the body's SHA-256: the put fails after its directories are made

    async def body() -> AsyncIterator[bytes]:  # streamed: checked once written
        yield b"body"

    for key in ("new/deep/er/x.bin", "kept/new/x.bin", "empty-before/x.bin"):
        with pytest.raises(StoreError):
            run(store.put(key, body(), sha256=wrong))
    run(store.close())
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["empty-before", "kept"]
    assert [p.name for p in (tmp_path / "root" / "kept").iterdir()] == ["old.txt"]


def test_symlink_swapped_in_while_writing_never_escapes(tmp_path: Path) -> None:
    """A thread flips directory ``d`` to a symlink pointing outside and back, in a loop, while
    puts, deletes and listings run on keys under ``d``. Outside holds files with the very names
    those keys resolve to there: none may be read, replaced, removed, and nothing may be added."""
    n = 1500
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for i in range(n):
        (outside / f"k{i:04d}").write_bytes(b"sentinel")
    before = snapshot(outside)
    (root / "d").mkdir()
    stop = threading.Event()
    flips = 0

    def flipper() -> None:
        nonlocal flips
        for attempt in itertools.count():
            if stop.is_set():
                return
            try:
                os.rename(root / "d", root / f"d.real-{attempt}")
            except FileNotFoundError:
                time.sleep(0.0005)
                continue
            try:
                os.symlink(outside, root / "d")
            except FileExistsError:
                continue  # a put made a new 'd' in the gap: flip again
            time.sleep(0.0005)
            os.unlink(root / "d")
            flips += 1

    thread = threading.Thread(target=flipper, daemon=True)
    listed_sizes: list[int] = []

    async def go() -> tuple[int, int]:
        store = FsStore("race", root, durable=False)
        sem = asyncio.Semaphore(32)
        refused = 0

        async def one(i: int) -> None:
            nonlocal refused
            key = f"d/k{i:04d}"
            async with sem:
                try:
                    await store.put(key, b"written inside the root, 40 bytes long..")
                except InvalidKey:
                    refused += 1  # 'd' was the symlink
                except Transient:
                    refused += 1  # 'd' was emptied and removed by a delete while the put wrote
                await store.delete(key)
                # Gone, or left in a directory the flipper renamed away: either way, inside.
                with contextlib.suppress(NotFound):
                    await store.head(key)

        async def lister() -> None:
            while not stop.is_set():
                async for batch in store.list("d/"):
                    listed_sizes.extend(o.size for o in batch)
                await asyncio.sleep(0)

        listing = asyncio.ensure_future(lister())
        await asyncio.gather(*(one(i) for i in range(n)))
        stop.set()
        await listing
        await store.close()
        return refused, flips

    thread.start()
    try:
        refused, flipped = run(go())
    finally:
        stop.set()
        thread.join(10)
    assert flipped > 20, f"the directory was flipped only {flipped} times: the race never ran"
    assert snapshot(outside) == before, "something outside the root was changed"
    assert len(b"sentinel") not in listed_sizes, "a listing followed the symlink outside"
    # Every put either landed inside the root or was refused; nothing is left half-done.
    assert temp_files(root) == []
    assert refused < n


# --------------------------------------------------------------------------------------------
# Missing root


def test_missing_root_is_an_error_to_list_and_nothing_else_creates_it(tmp_path: Path) -> None:
    root = tmp_path / "typo"
    store = FsStore("typo", root)
    with pytest.raises(MissingRoot, match=r"directory .*typo does not exist") as info:
        keys(store)
    assert isinstance(info.value, StoreError)
    with pytest.raises(NotFound):
        run(store.head("a"))
    with pytest.raises(NotFound):
        run(store.get("a"))
    run(store.delete("a"))
    assert run(store.cleanup_temp()) == (0, 0)
    run(store.close())
    assert not root.exists()
    # A root that is a file is not a directory: an error too, never an empty store.
    root.write_bytes(b"not a directory")
    with pytest.raises(StoreError, match="is not a directory"):
        keys(store)


def test_missing_source_directory_fails_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    for i in range(3):
        (victim / f"precious-{i}.txt").write_bytes(b"keep me")
    config = write_config(
        tmp_path,
        [
            fs_store_config(tmp_path / "typo", "typo"),
            fs_store_config(victim, "victim"),
        ],
    )
    res = cli(["stores", "--config", str(config), "--json"], capsys)
    rows = {r["name"]: r for r in res.json} if isinstance(res.json, list) else {}
    assert rows, res.out
    assert rows["typo"]["reachable"] is False
    assert "directory" in rows["typo"]["problem"] and "does not exist" in rows["typo"]["problem"]
    assert rows["victim"]["reachable"] is True
    for argv in (
        ["copy", "typo", "victim"],
        ["sync", "typo", "victim", "--delete"],
        ["exit", "typo", "victim"],
        ["scan", "typo"],
    ):
        res = cli([*argv, "--config", str(config)], capsys)
        assert res.code == 1, (argv, res.out, res.err)
        assert "does not exist" in res.err, (argv, res.err)
        assert "Traceback" not in res.err + res.out
        assert "complete" not in res.out, (argv, res.out)
    assert sorted(p.name for p in victim.iterdir()) == [f"precious-{i}.txt" for i in range(3)]
    assert not (tmp_path / "typo").exists()


def test_copy_into_a_missing_destination_creates_it_and_leaves_no_temp_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "one.txt").write_bytes(b"one")
    (src / "big.bin").write_bytes(os.urandom(9 * MiB))
    dst = tmp_path / "new" / "dst"
    config = write_config(tmp_path, [fs_store_config(src, "src"), fs_store_config(dst, "dst")])
    for command in ("copy", "exit"):
        res = cli([command, "src", "dst", "--config", str(config)], capsys)
        assert res.code == 0, (command, res.out, res.err)
        assert (dst / "d" / "one.txt").read_bytes() == b"one"
        assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        assert not (dst / TMP_DIR).exists(), f"{command} left {TMP_DIR}/ behind"


def test_file_url_with_a_host_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "daulat.toml"
    config.write_text(
        '[stores.arsip]\nurl = "file://relative/path"\nprovider = "local"\ncountry = "ID"\n'
    )
    res = cli(["stores", "--config", str(config)], capsys)
    assert res.code == 2
    line = res.err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "store 'arsip'" in line and "'url'" in line and "host" in line
    assert not Path("/path").exists()
    # localhost is the one host a file URL may name (RFC 8089), and means this machine.
    StoreConfig.model_validate(
        {"name": "ok", "url": f"file://localhost{tmp_path}", "provider": "local", "country": "ID"}
    )


# --------------------------------------------------------------------------------------------
# A source that changes while it is read


def test_rewrite_during_a_streamed_read_is_transient(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    path = root / "big.bin"
    store = FsStore("src", root)

    async def read_while(change: Callable[[], None]) -> bytes:
        reader = await store.get("big.bin")
        out = []
        async for chunk in reader:
            if not out:
                change()
            out.append(chunk)
        return b"".join(out)

    def in_place() -> None:
        with open(path, "r+b") as f:
            f.seek(MiB)
            f.write(b"B" * MiB)

    def replaced() -> None:
        new = root / "big.new"
        new.write_bytes(b"C" * (3 * MiB))
        os.replace(new, path)

    def grown() -> None:
        with open(path, "ab") as f:
            f.write(b"more")

    for change in (in_place, replaced, grown):
        path.write_bytes(b"A" * (3 * MiB))
        with pytest.raises(SourceChanged, match="changed while it was read") as info:
            run(read_while(change))
        assert isinstance(info.value, Transient)  # so the engine reads it again
    # Unchanged, the same read succeeds.
    path.write_bytes(b"A" * (3 * MiB))
    assert run(read_while(lambda: None)) == b"A" * (3 * MiB)


class Rewriter:
    """A thread rewriting a file in place, over and over, each version one repeated byte."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.version = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.version += 1
            block = bytes([65 + self.version % 26]) * MiB
            with open(self.path, "r+b") as f:
                for _ in range(self.size // MiB):
                    f.write(block)
            time.sleep(0.05)

    def __enter__(self) -> Rewriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.mark.parametrize("dst_kind", ["fs", "s3"])
def test_source_rewritten_during_copy_is_never_recorded_done(
    tmp_path: Path, dst_kind: str, request: pytest.FixtureRequest
) -> None:
    size = 12 * MiB  # streamed (over SMALL_OBJECT), and a multipart upload to S3
    src_root = tmp_path / "src"
    src_root.mkdir()
    big = src_root / "big.bin"
    big.write_bytes(b"A" * size)
    for i in range(5):
        (src_root / f"quiet-{i}.txt").write_bytes(b"quiet %d" % i)
    if dst_kind == "fs":
        raw = fs_store_config(tmp_path / "dst", "dst")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        raw = s3_store_config(server, "dst", f"rewrite-{os.getpid()}-{time.time_ns() % 10**9}")

    def copy(options: Options) -> Summary:
        async def go() -> Summary:
            src = Endpoint(FsStore("src", src_root), label="src")
            dst = Endpoint(open_store(StoreConfig.model_validate(raw)), label="dst")
            try:
                with Journal(tmp_path / "journal.sqlite") as journal:
                    return await transfer(Kind.COPY, src, dst, journal, options)
            finally:
                await src.store.close()
                await dst.store.close()

        return run(go())

    async def read_dst(key: str) -> bytes | None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            return await (await store.get(key)).read_all()
        except NotFound:
            return None
        finally:
            await store.close()

    # Slowly (--bwlimit: ~2 s per attempt), with a short retry budget, while rewritten.
    slow = Options(bwlimit=6 * MiB, retry=RetryPolicy(base=0.05, cap=0.2, budget=3.0))
    with Rewriter(big, size) as writer:
        summary = copy(slow)
        assert writer.version > 5, "the source was not rewritten during the copy"
    failed = dict(summary.failed)
    assert "big.bin" in failed, summary.to_json()
    assert "changed while it was read" in failed["big.bin"]
    assert summary.retries >= 1
    assert summary.throttled == 0, "a changing source was taken for an overloaded store"
    assert summary.copied_objects == 5
    states = {k: s for k, (s, _run_id) in journal_rows(tmp_path / "journal.sqlite").items()}
    assert states.get("big.bin") != "done"
    assert run(read_dst("big.bin")) is None, "a torn object was left at the destination"

    # Quiet now: the next run copies the file as it is.
    summary = copy(Options())
    assert summary.ok and summary.copied_objects == 1, summary.to_json()
    got = run(read_dst("big.bin"))
    assert got is not None and got == big.read_bytes()
    assert len(set(got)) == 1, "the copy mixes two versions of the file"


# --------------------------------------------------------------------------------------------
# Temp files: leftovers of killed runs, live writers, listings


def test_killed_copy_leaves_no_temp_files_after_the_rerun(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(4):
        (src / f"large-{i}.bin").write_bytes(os.urandom(24 * MiB))
    config = write_config(tmp_path, [fs_store_config(src, "src"), fs_store_config(dst, "dst")])
    proc = start_daulat(
        ["copy", "src", "dst", "--config", str(config), "--bwlimit", "8M"], tmp_path
    )

    def part_written() -> bool:
        return (
            any(p.stat().st_size > MiB for p in (dst / TMP_DIR).glob("*") if p.is_file())
            if (dst / TMP_DIR).is_dir()
            else False
        )

    try:
        wait_until(
            lambda: part_written() or proc.popen.poll() is not None, 60, "a temp file being written"
        )
        assert proc.popen.poll() is None, proc.err
    finally:
        proc.kill()
    leftovers = temp_files(dst)
    assert leftovers, "the kill left nothing to clean up"
    assert all(name.endswith(".daulat-part") for name in leftovers), leftovers
    assert all(f".{proc.popen.pid}." in name for name in leftovers), (leftovers, proc.popen.pid)
    rerun = start_daulat(["copy", "src", "dst", "--config", str(config)], tmp_path)
    assert rerun.wait() == 0, rerun.err
    assert not (dst / TMP_DIR).exists(), f"left behind: {temp_files(dst)}"
    for i in range(4):
        assert (dst / f"large-{i}.bin").read_bytes() == (src / f"large-{i}.bin").read_bytes()


_SLOW_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from daulat.stores.fs import FsStore

    async def body():
        yield b"a" * 65536
        go = Path(sys.argv[2])
        while not go.exists():
            await asyncio.sleep(0.02)
        yield b"b" * 65536

    async def main():
        store = FsStore("writer", Path(sys.argv[1]))
        await store.put("slow/object.bin", body())
        await store.close()
        print("committed")

    asyncio.run(main())
    """
)


def test_cleanup_removes_only_abandoned_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "dst"
    root.mkdir()
    go = tmp_path / "go"
    writer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(root), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        wait_until(lambda: len(temp_files(root)) == 1, 30, "the writer's temp file")
        (live,) = temp_files(root)
        assert live.endswith(f".{writer.pid}.daulat-part")
        tmp = root / TMP_DIR
        # A killed writer's file (no lock held), an old daulat's unlocked file long untouched,
        # another old one written a moment ago, and a file that is not daulat's at all.
        (tmp / f"{'0' * 16}.{2**22 + 7}.daulat-part").write_bytes(b"d" * 1000)
        old = tmp / f"{'1' * 32}.part"
        old.write_bytes(b"o" * 500)
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        (tmp / f"{'2' * 32}.part").write_bytes(b"recent")
        (tmp / "notes.txt").write_bytes(b"someone else's")
        store = FsStore("cleaner", root)
        # The listing never shows any of it, even when asked for that very prefix (a prefix
        # only reserved names start with is refused, as a key there is).
        assert keys(store) == []
        assert keys(store, TMP_DIR) == []
        with pytest.raises(InvalidKey, match="cannot list prefix"):
            keys(store, TMP_DIR + "/")
        assert run(store.cleanup_temp(older_than=7200)) == (0, 0)
        assert run(store.cleanup_temp()) == (2, 1500)
        assert sorted(temp_files(root)) == sorted([live, f"{'2' * 32}.part", "notes.txt"])

        # A whole copy run into the same store meanwhile ends with the same clean-up.
        src = tmp_path / "src"
        src.mkdir()
        (src / "x.txt").write_bytes(b"x")

        async def copy() -> Summary:
            with Journal(tmp_path / "journal.sqlite") as journal:
                return await transfer(
                    Kind.COPY,
                    Endpoint(FsStore("src", src), label="src"),
                    Endpoint(FsStore("dst", root), label="dst"),
                    journal,
                )

        assert run(copy()).ok
        assert live in temp_files(root), "the live writer's temp file was removed"
        go.touch()
        out, err = writer.communicate(timeout=30)
        assert writer.returncode == 0 and b"committed" in out, err
    finally:
        if writer.poll() is None:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
    assert (root / "slow" / "object.bin").read_bytes() == b"a" * 65536 + b"b" * 65536
    assert sorted(temp_files(root)) == sorted([f"{'2' * 32}.part", "notes.txt"])
    (root / TMP_DIR / "notes.txt").unlink()
    os.utime(root / TMP_DIR / f"{'2' * 32}.part", (0, 0))
    assert run(FsStore("cleaner", root).cleanup_temp()) == (1, len(b"recent"))
    assert not (root / TMP_DIR).exists()


def test_failed_puts_leave_no_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "dst"
    store = FsStore("dst", root)

    async def failing() -> Any:
        yield b"x" * MiB
        raise Transient("the source changed", store="src", key="k")

    with pytest.raises(Transient):
        run(store.put("k", failing()))
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / "file").write_bytes(b"an object")
    with pytest.raises(InvalidKey, match="already an object"):
        run(store.put("a/file/below", b"x"))
    (root / "dir" / "held").mkdir(parents=True)
    with pytest.raises(InvalidKey, match="directory of other objects"):
        run(store.put("dir", b"x"))
    assert temp_files(root) == []
    run(store.close())
    assert not (root / TMP_DIR).exists()


_STALLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from daulat.stores.fs import FsStore

    async def body():
        yield b"a" * 65536
        await asyncio.sleep(600)

    asyncio.run(FsStore("writer", Path(sys.argv[1])).put(sys.argv[2], body()))
    """
)


_READ_ONLY_PUT = textwrap.dedent(
    """
    import asyncio, sys
    from daulat.errors import AccessDenied
    from daulat.stores.fs import FsStore

    async def main():
        store = FsStore("ro", sys.argv[1])
        try:
            await store.put("k", b"new")
        except AccessDenied as exc:
            print("AccessDenied:", exc)
        finally:
            await store.close()

    asyncio.run(main())
    """
)


def test_cleanup_removes_the_key_directories_a_killed_put_made_and_no_others(
    tmp_path: Path,
) -> None:
    """kill -9 during puts that made their key's directories: the cleanup removes those
    directories while they are empty, not one the user made (``u/``), nor one filled since."""
    root = tmp_path / "dst"
    (root / "u").mkdir(parents=True)
    writers = [
        subprocess.Popen([sys.executable, "-c", _STALLED_WRITER, str(root), key])
        for key in ("a/b/c.bin", "u/v/w.bin", "r/s.bin")
    ]
    try:

        def recorded() -> bool:  # each temp file made and its directories recorded on it
            names = temp_files(root)
            with contextlib.suppress(OSError):
                return len(names) == 3 and all(
                    os.getxattr(root / TMP_DIR / n, MADE_XATTR) for n in names
                )
            return False

        wait_until(recorded, 30, "the writers' temp files")
    finally:
        for w in writers:
            w.send_signal(signal.SIGKILL)
            w.wait(10)
    assert (root / "a" / "b").is_dir() and (root / "u" / "v").is_dir() and (root / "r").is_dir()
    (root / "r" / "mine.txt").write_bytes(b"someone's since")
    assert run(FsStore("cleaner", root).cleanup_temp()) == (3, 3 * 65536)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "r", "r/mine.txt", "u",
    ]  # fmt: skip


def test_a_read_only_mount_refuses_a_put_as_access_denied(tmp_path: Path) -> None:
    """EROFS is a refusal that no retry mends (AccessDenied, as a permission is), never a
    passing fault: the directory is bind-mounted read-only in a mount namespace of its own."""
    root = tmp_path / "ro"
    root.mkdir()
    (root / "k").write_bytes(b"old")
    script = (
        f'mount --bind "{root}" "{root}" && mount -o remount,bind,ro "{root}" && '
        f'"{sys.executable}" -c "$0" "{root}"'
    )
    try:
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, _READ_ONLY_PUT],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if "mount:" in out.stderr or "unshare:" in out.stderr:
        pytest.skip(f"no read-only bind mount here: {out.stderr.strip()}")
    assert (
        out.stdout.strip() == "AccessDenied: store 'ro': put 'k' refused: read-only file system"
    ), (
        out.stdout,
        out.stderr,
    )
    assert (root / "k").read_bytes() == b"old"


def test_a_failed_put_removing_its_new_directory_does_not_fail_a_sibling_put(
    tmp_path: Path,
) -> None:
    """Seen under load as a third read of a large object: two puts into a new ``big/``; the
    one that made it fails (its source broke) and removes the now empty directory, as a failed
    put leaves nothing behind, while the other's body sits complete in its temp file. That one
    commits all the same (the directory made again), instead of failing and being read again."""
    store = open_store(StoreConfig.model_validate(fs_store_config(tmp_path / "dst", "dst")))

    async def go() -> None:
        began = {k: asyncio.Event() for k in ("a", "b")}
        go_on = {k: asyncio.Event() for k in ("a", "b")}

        async def body(name: str, fail: bool) -> AsyncIterator[bytes]:
            yield name.encode() * 1000
            began[name].set()
            await go_on[name].wait()
            if fail:
                raise Transient("the source broke", store="src", key=name)
            yield b"end"

        maker = asyncio.ensure_future(store.put("big/a.bin", body("a", fail=True)))
        await began["a"].wait()  # big/ made by the first put
        other = asyncio.ensure_future(store.put("big/b.bin", body("b", fail=False)))
        await began["b"].wait()
        go_on["a"].set()
        with pytest.raises(Transient):
            await maker
        assert not (tmp_path / "dst" / "big").exists()  # removed: it was empty
        go_on["b"].set()
        await other
        assert (tmp_path / "dst" / "big" / "b.bin").read_bytes() == b"b" * 1000 + b"end"
        assert not (tmp_path / "dst" / "big" / "a.bin").exists()
        await store.close()

    run(go())
