"""The transfer engine under faults: refusal mid-run, revoked credentials, 503 storms, resets,
broken streams.

Two ways of making a store misbehave:

* in-process, :class:`faults.FaultyStore` (``tests/faults.py``) wraps a real store and fails
  exactly the calls a test asks for, counting every call per key (what was, or was not, uploaded
  again);
* on the wire, ``tests/faultproxy.py`` sits between ``daulat`` (a real subprocess, the installed
  console script) and SeaweedFS and answers 403 AccessDenied, 503 SlowDown, or resets the TCP
  connection; and :meth:`S3Server.set_credentials` revokes the keys for real.

Every wait is bounded: a hung transfer fails the test with a message instead of hanging it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from faultproxy import fault_proxy
from faults import FaultRules, FaultyStore
from memstore import MemoryStore
from servers import S3Server, seaweedfs
from test_transfer import (
    DataSet,
    assert_exact_copy,
    assert_manifest,
    endpoint,
    fill_config,
    journal_path,
    journal_rows,
    mixed_dataset,
    problems,
    read_config,
    small_dataset,
    unique,
    write_config,
)

from daulat.config import StoreConfig
from daulat.errors import AccessDenied, IntegrityError, NotFound, StoreError, Transient
from daulat.stores import Store, open_store, timeouts
from daulat.transfer.engine import Kind, Options, Summary, transfer
from daulat.transfer.journal import JOURNAL_NAME, Journal
from daulat.transfer.retry import RetryPolicy

MiB = 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RUN_TIMEOUT = 60.0  # seconds any one transfer may take before the test calls it hung


# --------------------------------------------------------------------------------------------
# helpers


def transfer_bounded(
    src: Any,
    dst: Any,
    journal_file: Path,
    options: Options | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Summary:
    """One exit through the library; a run that does not return within ``timeout`` fails."""

    async def go() -> Summary:
        with Journal(journal_file) as journal:
            task = asyncio.ensure_future(transfer(Kind.EXIT, src, dst, journal, options))
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                pytest.fail(f"transfer did not return within {timeout:.0f} s (hung)")
            return task.result()

    return run(go())


def daulat_bin() -> str:
    found = shutil.which("daulat")
    assert found, "the daulat console script is not on PATH (pip install -e '.[test]')"
    return found


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"daulat did not exit within {timeout:.0f} s (hung); stderr:\n{self.err[-2000:]}"
                f"\nstdout:\n{self.out[-2000:]}"
            )

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    @property
    def out(self) -> str:
        return ANSI.sub("", self.out_path.read_text(encoding="utf-8", errors="replace"))

    @property
    def err(self) -> str:
        return ANSI.sub("", self.err_path.read_text(encoding="utf-8", errors="replace"))


_proc_count = 0


def start_daulat(args: list[str], workdir: Path) -> Proc:
    """Start the ``daulat`` console script in its own process group, output to files."""
    global _proc_count
    _proc_count += 1
    out_path = workdir / f"daulat-{_proc_count}.out"
    err_path = workdir / f"daulat-{_proc_count}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        popen = subprocess.Popen(
            [daulat_bin(), *args],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
    return Proc(popen, out_path, err_path)


def run_daulat(args: list[str], workdir: Path, timeout: float = RUN_TIMEOUT) -> tuple[int, Proc]:
    proc = start_daulat(args, workdir)
    return proc.wait(timeout), proc


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def count_keys(server: S3Server, bucket: str) -> int:
    """Objects in a bucket, asked of the server directly (not through any proxy)."""
    n = 0
    token = ""
    while True:
        query = "?list-type=2&max-keys=1000" + (f"&continuation-token={token}" if token else "")
        status, body = server.request("GET", f"/{bucket}{query}")
        assert status == 200, body[:300]
        n += body.count(b"<Key>")
        m = re.search(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
        if not m:
            return n
        token = urllib.parse.quote(m.group(1).decode(), safe="")


def last_run_summary(config: Path) -> dict[str, Any]:
    """The JSON summary the journal keeps for the newest run (whatever the output mode)."""
    db = sqlite3.connect(journal_path(config), timeout=30)
    try:
        row = db.execute("SELECT status, summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    assert row is not None and row[1] is not None, "no finished run in the journal"
    data: dict[str, Any] = json.loads(row[1])
    data["_status"] = row[0]
    return data


def done_keys(config_or_journal: Path) -> dict[str, int]:
    path = (
        journal_path(config_or_journal)
        if config_or_journal.name == "daulat.toml"
        else config_or_journal
    )
    return {k: r for k, (s, r) in journal_rows(path).items() if s == "done"}


def source_fs(tmp_path: Path, data: DataSet, name: str = "srcfs") -> dict[str, Any]:
    raw = fs_store_config(tmp_path / "src", name)
    fill_config(raw, data.objects)
    return raw


def proxied(raw: Mapping[str, Any], proxy_endpoint: str) -> dict[str, Any]:
    return {**raw, "endpoint": proxy_endpoint}


# --------------------------------------------------------------------------------------------
# in-process refusal: FaultyStore over SeaweedFS


@pytest.mark.parametrize("side", ["dst", "src"])
def test_refusal_mid_run_stops_cleanly_and_resumes_without_reuploading(
    side: str, s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """After ~40 puts to the destination (or ~40 reads from the source) that store refuses
    everything. The run stops (returns, does not hang), says what remains (objects and bytes),
    and the journal holds exactly what was copied; once access is back, a re-run finishes,
    verifies all, and puts nothing a second time."""
    data = small_dataset(200)
    src_raw = s3_store_config(s3_server, "srcs3", unique("refuse-src"))
    fill_config(src_raw, data.objects)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("refuse-dst"))
    deny = FaultRules(deny_after=40, deny_counts={"put" if side == "dst" else "get"})
    src = FaultyStore(
        open_store(StoreConfig.model_validate(src_raw)), rules=deny if side == "src" else None
    )
    dst = FaultyStore(
        open_store(StoreConfig.model_validate(dst_raw)), rules=deny if side == "dst" else None
    )
    refusing = dst if side == "dst" else src
    jfile = tmp_path / JOURNAL_NAME
    first = transfer_bounded(endpoint(src_raw, store=src), endpoint(dst_raw, store=dst), jfile)

    assert first.stopped, problems(first)
    assert "refused" in first.stopped and "revoked" in first.stopped
    assert first.ok is False
    assert refusing.denied > 0
    landed = set(dst.puts_ok_by_key)
    assert 0 < len(landed) <= 40
    assert first.copied_objects == len(landed)
    assert first.left_objects == len(data.objects) - first.copied_objects
    copied_bytes = sum(len(data.objects[k]) for k in landed)
    assert first.copied_bytes == copied_bytes
    assert first.left_bytes == data.total_bytes - copied_bytes
    assert first.failed == [] and first.refused == []
    assert set(done_keys(jfile)) == landed, "the journal must hold exactly what was copied"
    assert set(read_config(dst_raw)) == landed

    refusing.restore()
    second = transfer_bounded(endpoint(src_raw, store=src), endpoint(dst_raw, store=dst), jfile)
    assert second.ok, problems(second)
    assert second.verified_objects == len(data.objects)
    assert second.skipped_objects == len(landed)
    assert second.copied_objects == len(data.objects) - len(landed)
    again = {k: n for k, n in dst.puts_ok_by_key.items() if k in landed and n != 1}
    assert again == {}, f"objects copied in the first run were put again: {again}"
    assert all(dst.puts_ok_by_key[k] == 1 for k in data.objects)
    assert_exact_copy(data.objects, read_config(dst_raw))


def test_destination_refusing_every_put_stops_instead_of_hanging(
    s3_server_b: S3Server, tmp_path: Path
) -> None:
    """A destination that lists fine but refuses every write (read-only credentials, a bucket
    policy without PutObject) with more objects than the work queue holds: every worker meets
    the refusal at once. The run must stop with everything left, not wait forever."""
    data = small_dataset(300, seed=13)
    src_raw = source_fs(tmp_path, data)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("ro"))
    rules = FaultRules(deny_after=1, deny_counts={"list"})  # the listing works, nothing after
    faulty = FaultyStore(open_store(StoreConfig.model_validate(dst_raw)), rules=rules)
    summary = transfer_bounded(
        endpoint(src_raw), endpoint(dst_raw, store=faulty), tmp_path / "j", timeout=30
    )
    assert summary.stopped and summary.ok is False
    assert faulty.succeeded["put"] == 0
    assert summary.copied_objects == 0
    assert summary.left_objects == len(data.objects)
    assert summary.left_bytes == data.total_bytes


def test_refusal_at_listing_stops_with_message(s3_server: S3Server, tmp_path: Path) -> None:
    """A destination that refuses from the very first call (its listing) stops the run with
    everything left and nothing recorded as done."""
    data = small_dataset(30, seed=3)
    src_raw = fs_store_config(tmp_path / "src", "srcfs")
    fill_config(src_raw, data.objects)
    dst_raw = s3_store_config(s3_server, "dsts3", unique("refuse-list"))
    faulty = FaultyStore(open_store(StoreConfig.model_validate(dst_raw)))
    faulty.revoke()
    summary = transfer_bounded(endpoint(src_raw), endpoint(dst_raw, store=faulty), tmp_path / "j")
    assert summary.stopped and summary.ok is False
    assert summary.copied_objects == 0
    assert faulty.calls["put"] == 0
    assert done_keys(tmp_path / "j") == {}


def test_a_destination_that_goes_away_mid_exit_stops_the_run(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination answers, then vanishes for good (its port closes: every connection is
    refused) after ~40 objects landed. Each remaining object must not be retried in turn for
    the whole retry budget (hours at this size): once nothing but refusals has come for the
    outage limit since the last answer, the run stops and says what remains. The limit is
    shortened here from its floor of two minutes, so that the test waits seconds."""
    monkeypatch.setattr(timeouts, "outage_limit", lambda request_timeout: 3.0)
    data = small_dataset(400, seed=21)
    src_raw = source_fs(tmp_path, data)
    dst_raw = s3_store_config(s3_server, "dsts3", unique("vanish"))
    with fault_proxy(s3_server.endpoint) as proxy:
        dst = open_store(
            StoreConfig.model_validate({**proxied(dst_raw, proxy.endpoint), "request_timeout": 2})
        )

        def pull_the_plug() -> None:
            deadline = time.monotonic() + RUN_TIMEOUT
            # Forty requests answered, not merely begun: under load the first forty PUTs
            # may all be in flight at once, and none would have landed.
            while proxy.stats["forwarded"] < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.stop()

        plug = threading.Thread(target=pull_the_plug, daemon=True)
        plug.start()
        started = time.monotonic()
        summary = transfer_bounded(
            endpoint(src_raw), endpoint(dst_raw, store=dst), tmp_path / "j", timeout=90
        )
        plug.join(5)
    took = time.monotonic() - started
    assert summary.stopped and summary.ok is False, problems(summary)
    assert "stopped answering" in summary.stopped, summary.stopped
    assert 0 < summary.copied_objects < len(data.objects)
    assert summary.left_objects == len(data.objects) - summary.copied_objects
    done = done_keys(tmp_path / "j")
    landed = read_config(dst_raw)
    # Objects in flight when the plug was pulled may have landed unanswered: a resume finds
    # them; what the journal calls done must all be there, whole.
    assert len(done) == summary.copied_objects and set(done) <= set(landed)
    assert all(landed[k] == data.objects[k] for k in done)
    assert took < 80, f"the run took {took:.0f} s to give up on a vanished destination"


# --------------------------------------------------------------------------------------------
# in-process transient faults: throttling and broken streams


def test_in_process_throttling_is_retried(
    s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """30 % of puts and 20 % of gets and heads fail with Transient: every object still arrives,
    verified, and the summary counts the retries."""
    data = small_dataset(150, seed=5)
    src_raw = s3_store_config(s3_server, "srcs3", unique("thr-src"))
    fill_config(src_raw, data.objects)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("thr-dst"))
    src = FaultyStore(
        open_store(StoreConfig.model_validate(src_raw)),
        rules=FaultRules(transient={"get": 0.2, "head": 0.2, "list": 0.5}, seed=1),
    )
    dst = FaultyStore(
        open_store(StoreConfig.model_validate(dst_raw)),
        # Not the manifest: how its put is retried is tested on its own, below.
        rules=FaultRules(
            transient={"put": 0.3, "list": 0.5},
            transient_keys=lambda k: not _is_manifest(k),
            seed=2,
        ),
    )
    options = Options(retry=RetryPolicy(base=0.01, cap=0.2, budget=30))
    summary = transfer_bounded(
        endpoint(src_raw, store=src), endpoint(dst_raw, store=dst), tmp_path / "j", options
    )
    assert summary.ok, problems(summary)
    assert summary.verified_objects == len(data.objects)
    injected = src.injected["get"] + dst.injected["put"]
    assert injected > 0
    assert summary.retries >= injected, (summary.retries, injected)
    assert_exact_copy(data.objects, read_config(dst_raw))


@pytest.mark.parametrize("dst_kind", ["s3", "fs"])
def test_stream_broken_mid_body_is_retried(
    dst_kind: str, s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """A source read that dies part-way (after 1,000 bytes for small objects, which are read
    whole; after 12 MiB for the streamed multipart ones) is retried: the copy completes,
    verified, with the right bytes."""
    data = mixed_dataset(small=40, big=2, big_size=20 * MiB, seed=9)
    src_raw = s3_store_config(s3_server, "srcs3", unique("brk-src"))
    fill_config(src_raw, data.objects)
    if dst_kind == "s3":
        dst_raw = s3_store_config(s3_server_b, "dsts3", unique("brk-dst"))
    else:
        dst_raw = fs_store_config(tmp_path / "dst", "dstfs")
    small_rules = FaultRules(
        stream_fail_after=1000, stream_fail_keys=lambda k: not k.startswith("big/")
    )
    small_broken = FaultyStore(open_store(StoreConfig.model_validate(src_raw)), rules=small_rules)
    src = FaultyStore(small_broken, rules=FaultRules(stream_fail_after=12 * MiB))
    options = Options(retry=RetryPolicy(base=0.01, cap=0.2, budget=30))
    summary = transfer_bounded(
        endpoint(src_raw, store=src), endpoint(dst_raw), tmp_path / "j", options
    )
    assert src.injected["get"] == 2, "both big objects had a broken first read"
    assert small_broken.injected["get"] > 10
    assert summary.ok, problems(summary)
    assert summary.verified_objects == len(data.objects)
    assert all(src.gets_by_key[k] == 2 for k in data.objects if k.startswith("big/"))
    assert_exact_copy(data.objects, read_config(dst_raw))


def _is_manifest(key: str) -> bool:
    return key.startswith(".daulat/")


def _exit_with_faulty_manifest(
    tmp_path: Path, rules: FaultRules, options: Options | None = None
) -> tuple[DataSet, dict[str, Any], FaultyStore, Summary]:
    data = small_dataset(30, seed=8)
    src_raw = source_fs(tmp_path, data)
    dst_raw = fs_store_config(tmp_path / "dst", "dstfs")
    faulty = FaultyStore(open_store(StoreConfig.model_validate(dst_raw)), rules=rules)
    try:
        summary = transfer_bounded(
            endpoint(src_raw), endpoint(dst_raw, store=faulty), tmp_path / "j", options
        )
    except StoreError as exc:
        pytest.fail(
            f"transfer() raised {type(exc).__name__} ({exc}) while writing the destination "
            "manifest: it promises never to raise for store failures, and a transient one "
            "should be retried"
        )
    return data, dst_raw, faulty, summary


def test_transient_failure_writing_the_manifest_is_retried(tmp_path: Path) -> None:
    """The destination manifest's first put fails with Transient (a 503): the exit retries it
    and ends ok, with the manifest in place."""
    rules = FaultRules(fail_first={"put": 1}, transient_keys=_is_manifest)
    data, dst_raw, faulty, summary = _exit_with_faulty_manifest(tmp_path, rules)
    # The first put of the manifest and the first of its signature (``.sig``) fail.
    assert faulty.injected["put"] == 2
    assert summary.ok, problems(summary)
    assert summary.manifest_key is not None
    at_dst = read_config(dst_raw, skip_manifests=False)
    assert summary.manifest_key in at_dst
    assert_manifest(data, at_dst)


def test_a_retried_manifest_keeps_its_name_when_the_clock_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry that starts in a later second than the failed attempt (a slow 503) writes the
    same manifest key again: no half-written manifest is left behind under the first name."""
    stamps = iter(range(1, 100))

    def ticking_key(ep: Any, encrypted: bool, after: str | None) -> str:
        return f"{ep.prefix}.daulat/manifest-20300101T0000{next(stamps):02d}Z.jsonl"

    monkeypatch.setattr("daulat.transfer.provenance.next_manifest_key", ticking_key)
    rules = FaultRules(fail_first={"put": 1}, transient_keys=_is_manifest)
    _, _, faulty, summary = _exit_with_faulty_manifest(tmp_path, rules)
    assert summary.ok, problems(summary)
    assert faulty.injected["put"] == 2
    manifests = sorted(p.name for p in (tmp_path / "dst" / ".daulat").iterdir())
    assert manifests == [
        "manifest-20300101T000001Z.jsonl",
        "manifest-20300101T000001Z.jsonl.sig",
    ], manifests


def test_manifest_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    """When the manifest cannot be written at all, the exit returns a summary that says so
    (not ok: the proof of the copy is missing) instead of raising."""
    rules = FaultRules(transient={"put": 1.0}, transient_keys=_is_manifest)
    options = Options(retry=RetryPolicy(base=0.01, cap=0.1, budget=2))
    data, _, faulty, summary = _exit_with_faulty_manifest(tmp_path, rules, options)
    assert faulty.injected["put"] >= 1
    assert summary.copied_objects == len(data.objects)
    assert summary.manifest_key is None
    assert summary.ok is False


# --------------------------------------------------------------------------------------------
# the test doubles themselves


def test_memory_store_keeps_hostile_keys_and_the_contracts() -> None:
    store = MemoryStore()
    assert isinstance(store, Store)

    async def go() -> None:
        for key in ("../escape", "/abs", "a//b", "nul\x00", "back\\slash", "..", "x" * 300):
            await store.put(key, key.encode())
            assert await (await store.get(key)).read_all() == key.encode()
        keys = {o.key async for batch in store.list("") for o in batch}
        assert "../escape" in keys and "a//b" in keys and len(keys) == 7
        assert {o.key async for batch in store.list("a/") for o in batch} == {"a//b"}
        first = (await store.head("..")).etag
        await store.put("..", b"..")
        assert (await store.head("..")).etag != first, "a rewrite must change the ETag"
        assert await (await store.get("/abs", start=1, end=3)).read_all() == b"ab"
        assert await (await store.get("/abs", start=10)).read_all() == b""
        with pytest.raises(IntegrityError):
            await store.put("k", b"data", sha256="0" * 64)
        with pytest.raises(NotFound):
            await store.head("k")
        await store.delete("k")  # idempotent

    run(go())


def test_faulty_store_rules() -> None:
    async def go() -> None:
        inner = MemoryStore()
        store = FaultyStore(inner, rules=FaultRules(deny_after=3))
        assert isinstance(store, Store)
        for i in range(3):
            await store.put(f"k{i}", b"x")
        with pytest.raises(AccessDenied):
            await store.put("k3", b"x")
        with pytest.raises(AccessDenied):
            await store.get("k0")  # everything is refused once revoked
        store.restore()
        await store.put("k3", b"x")
        assert store.puts_by_key == {"k0": 1, "k1": 1, "k2": 1, "k3": 2}
        assert store.puts_ok_by_key == {"k0": 1, "k1": 1, "k2": 1, "k3": 1}
        store.revoke()
        with pytest.raises(AccessDenied):
            await store.head("k0")
        store.restore()

        flaky = FaultyStore(inner, rules=FaultRules(fail_first={"get": 2}))
        for _ in range(2):
            with pytest.raises(Transient):
                await flaky.get("k0")
        assert await (await flaky.get("k0")).read_all() == b"x"

        await inner.put("big", bytes(range(256)) * 100)
        broken = FaultyStore(inner, rules=FaultRules(stream_fail_after=1000))
        got = bytearray()
        with pytest.raises(Transient):
            async for chunk in await broken.get("big"):
                got += chunk
        assert bytes(got) == (bytes(range(256)) * 100)[:1000]
        assert await (await broken.get("big")).read_all() == bytes(range(256)) * 100

        draws = []
        for _ in range(2):
            seeded = FaultyStore(inner, rules=FaultRules(transient={"head": 0.5}, seed=4))
            outcome = []
            for _ in range(40):
                try:
                    await seeded.head("k0")
                    outcome.append(True)
                except Transient:
                    outcome.append(False)
            draws.append(outcome)
        assert draws[0] == draws[1] and 5 < draws[0].count(False) < 35

    run(go())


# --------------------------------------------------------------------------------------------
# the CLI as a subprocess, through the fault proxy


def _slow_exit_args(config: Path, json_out: bool = False) -> list[str]:
    # --bwlimit makes a run of ~3 MB last a few seconds, so a test can act in the middle of it.
    args = ["exit", "srcfs", "dsts3", "--config", str(config), "--bwlimit", "512K"]
    args += ["--concurrency", "16"]
    return [*args, "--json"] if json_out else args


def _parse_counts(out: str) -> dict[str, int]:
    """``copied 1,234 (...)``, ``left 56 (...)`` ... from the human summary line."""
    counts = {}
    for word in ("copied", "skipped", "verified", "failed", "refused", "left"):
        m = re.search(rf"\b{word} ([\d,]+)", out)
        if m:
            counts[word] = int(m.group(1).replace(",", ""))
    return counts


def test_cli_refusal_through_proxy_then_resume(s3_server_b: S3Server, tmp_path: Path) -> None:
    """``daulat exit`` whose destination starts answering 403 AccessDenied mid-run: exit 1, a
    clear message naming the refusal and how to resume, consistent counts, no traceback. With
    access back, the same command finishes with exit 0, every object verified, and objects done
    in the first run are not done again."""
    data = small_dataset(400, seed=21)
    src_raw = source_fs(tmp_path, data)
    bucket = unique("deny")
    dst_raw = s3_store_config(s3_server_b, "dsts3", bucket)
    with fault_proxy(s3_server_b.endpoint) as proxy:
        config = write_config(tmp_path, [src_raw, proxied(dst_raw, proxy.endpoint)])
        proc = start_daulat(_slow_exit_args(config), tmp_path)
        wait_until(lambda: count_keys(s3_server_b, bucket) >= 20, 30, "the first objects")
        proxy.mode = "deny"
        code = proc.wait()
        assert code == 1, (proc.out, proc.err)
        assert "Traceback" not in proc.err and "Traceback" not in proc.out
        err = proc.err.lower()
        assert "refused" in err or "revoked" in err, proc.err
        assert "resume" in err, proc.err
        assert "daulat exit srcfs dsts3" in proc.err
        counts = _parse_counts(proc.out)
        summary = last_run_summary(config)
        assert summary["_status"] == "refused"
        assert summary["stopped"]
        assert summary["copied_objects"] == counts["copied"]
        assert summary["left_objects"] == counts["left"]
        assert summary["copied_objects"] + summary["left_objects"] == len(data.objects)
        done_first = done_keys(config)
        assert len(done_first) == summary["copied_objects"]
        assert summary["left_bytes"] == data.total_bytes - sum(
            len(data.objects[k]) for k in done_first
        )
        assert proxy.stats["deny"] > 0

        proxy.mode = "pass"
        code, proc2 = run_daulat(
            ["exit", "srcfs", "dsts3", "--config", str(config), "--json"], tmp_path
        )
        assert code == 0, (proc2.out[-3000:], proc2.err)
        result = json.loads(proc2.out)
        assert result["ok"] is True
        assert result["verified_objects"] == len(data.objects)
        assert result["skipped_objects"] == len(done_first)
        assert result["copied_objects"] == len(data.objects) - len(done_first)
    done_after = done_keys(config)
    redone = {k for k, run_id in done_first.items() if done_after[k] != run_id}
    assert redone == set(), f"{len(redone)} objects done in the first run were redone"
    assert_exact_copy(data.objects, read_config(dst_raw))


def test_cli_destination_refusing_writes_exits_1(s3_server_b: S3Server, tmp_path: Path) -> None:
    """``daulat exit`` to a destination that lists but answers every PUT with 403 (the proxy's
    ``deny-write``), default concurrency, 300 objects: exit 1 promptly with the refusal and the
    resume hint, nothing copied; never a hang."""
    data = small_dataset(300, seed=14)
    src_raw = source_fs(tmp_path, data)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("ro-cli"))
    with fault_proxy(s3_server_b.endpoint) as proxy:
        proxy.mode = "deny-write"
        config = write_config(tmp_path, [src_raw, proxied(dst_raw, proxy.endpoint)])
        code, proc = run_daulat(["exit", "srcfs", "dsts3", "--config", str(config)], tmp_path, 45)
        assert code == 1, (proc.out, proc.err)
        assert "Traceback" not in proc.err
        assert "refused" in proc.err.lower() and "resume" in proc.err.lower(), proc.err
        assert _parse_counts(proc.out).get("left") == len(data.objects), proc.out
    assert read_config(dst_raw) == {}


def test_cli_real_credential_revocation_mid_run(tmp_path: Path) -> None:
    """SeaweedFS itself stops accepting the key mid-run (S3Server.set_credentials), with --json:
    exit 1, the JSON says why it stopped and what is left, consistent with the journal, no
    traceback and no secret; with the key accepted again the run completes."""
    data = small_dataset(400, seed=22)
    src_raw = source_fs(tmp_path, data)
    with seaweedfs(tmp_path / "weed") as server:
        bucket = unique("revoke")
        dst_raw = s3_store_config(server, "dsts3", bucket)
        config = write_config(tmp_path, [src_raw, dst_raw])
        original = (server.access_key_id, server.secret_access_key)
        proc = start_daulat(_slow_exit_args(config, json_out=True), tmp_path)
        wait_until(lambda: count_keys(server, bucket) >= 20, 30, "the first objects")
        server.set_credentials([("AKNEWKEYNOTGIVENTODAULAT", "another-secret-altogether")])
        code = proc.wait()
        assert code == 1, (proc.out, proc.err)
        assert "Traceback" not in proc.err and "Traceback" not in proc.out
        assert original[1] not in proc.err + proc.out, "a secret was printed"
        result = json.loads(proc.out)
        assert result["ok"] is False
        stopped = result["stopped"] or ""
        assert "InvalidAccessKeyId" in stopped and "revoked" in stopped, stopped
        assert result["copied_objects"] + result["left_objects"] == len(data.objects)
        assert result["failed"] == [] and result["refused"] == []
        done_first = done_keys(config)
        assert len(done_first) == result["copied_objects"]
        assert result["left_bytes"] == data.total_bytes - sum(
            len(data.objects[k]) for k in done_first
        )
        assert last_run_summary(config)["_status"] == "refused"

        server.set_credentials([original])
        code, proc2 = run_daulat(
            ["exit", "srcfs", "dsts3", "--config", str(config), "--json"], tmp_path
        )
        assert code == 0, (proc2.out[-3000:], proc2.err)
        result = json.loads(proc2.out)
        assert result["verified_objects"] == len(data.objects)
        assert result["skipped_objects"] == len(done_first)
        assert_exact_copy(data.objects, read_config(dst_raw))
    done_after = done_keys(config)
    assert all(done_after[k] == r for k, r in done_first.items()), "finished objects redone"


def test_cli_503_storm(s3_server_b: S3Server, tmp_path: Path) -> None:
    """30 % of the destination's requests answer 503 SlowDown: the exit still completes with
    exit 0 and every object verified, and the retries are reported."""
    data = mixed_dataset(small=250, big=1, big_size=12 * MiB, seed=23)
    src_raw = source_fs(tmp_path, data)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("slow"))
    with fault_proxy(s3_server_b.endpoint, seed=3) as proxy:
        config = write_config(tmp_path, [src_raw, proxied(dst_raw, proxy.endpoint)])
        proxy.mode = "slowdown:0.3"
        started = time.monotonic()
        code, proc = run_daulat(
            ["exit", "srcfs", "dsts3", "--config", str(config), "--json"], tmp_path
        )
        took = time.monotonic() - started
        assert code == 0, (proc.out[-3000:], proc.err)
        result = json.loads(proc.out)
        assert result["ok"] is True
        assert result["verified_objects"] == len(data.objects)
        assert proxy.stats["slowdown"] > 50
        assert took < 60
        # The storm must be visible in the report: throttling that nobody sees cannot be acted
        # on (and the engine's adaptive concurrency never engages).
        assert result["retries"] > 0, (
            f"{proxy.stats['slowdown']} SlowDown answers, but the summary reports "
            f"retries={result['retries']} throttled={result['throttled']}"
        )
    assert_exact_copy(data.objects, read_config(dst_raw))


def test_cli_connection_resets_on_both_sides(
    s3_server: S3Server, s3_server_b: S3Server, tmp_path: Path
) -> None:
    """20 % of requests to the source and to the destination are reset (before the request is
    served, or half-way through the response body): exit still completes, exit 0, all
    verified, identical bytes."""
    data = mixed_dataset(small=200, big=1, big_size=12 * MiB, seed=24)
    src_raw = s3_store_config(s3_server, "srcs3", unique("rst-src"))
    fill_config(src_raw, data.objects)
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("rst-dst"))
    with (
        fault_proxy(s3_server.endpoint, seed=5) as p_src,
        fault_proxy(s3_server_b.endpoint, seed=6) as p_dst,
    ):
        config = write_config(
            tmp_path,
            [proxied(src_raw, p_src.endpoint), proxied(dst_raw, p_dst.endpoint)],
        )
        p_src.mode = p_dst.mode = "reset:0.2"
        code, proc = run_daulat(
            ["exit", "srcs3", "dsts3", "--config", str(config), "--json"], tmp_path
        )
        assert code == 0, (proc.out[-3000:], proc.err)
        result = json.loads(proc.out)
        assert result["verified_objects"] == len(data.objects)
        assert p_src.stats["resets"] > 10 and p_dst.stats["resets"] > 10
    assert_exact_copy(data.objects, read_config(dst_raw))


def test_fault_proxy_passes_signed_requests_unchanged(s3_server: S3Server) -> None:
    """The proxy itself: signed requests pass (Host kept), ``deny`` gives S3's AccessDenied XML,
    ``slowdown:1`` gives 503 SlowDown, ``reset:1`` resets the connection."""
    raw = s3_store_config(s3_server, "p", unique("proxy"))
    with fault_proxy(s3_server.endpoint) as proxy:
        store = open_store(StoreConfig.model_validate(proxied(raw, proxy.endpoint)))

        async def go() -> None:
            await store.put("a b/c%d.txt", b"through the proxy", metadata={"sha256": "x"})
            reader = await store.get("a b/c%d.txt")
            assert await reader.read_all() == b"through the proxy"
            assert reader.metadata["sha256"] == "x"
            big = os.urandom(9 * MiB)
            await store.put("big", big)
            assert await (await store.get("big")).read_all() == big
            proxy.mode = "deny"
            with pytest.raises(AccessDenied):
                await store.head("big")
            proxy.mode = "reset:1"
            with pytest.raises(StoreError):
                await asyncio.wait_for(store.head("big"), 60)
            proxy.mode = "pass"
            assert (await store.head("big")).size == 9 * MiB
            await store.close()

        run(go())
        assert proxy.stats["deny"] >= 1 and proxy.stats["resets"] >= 1
    status, body = 0, b""
    with fault_proxy(s3_server.endpoint) as proxy:
        proxy.mode = "slowdown:1"
        host, port = proxy.endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
        conn.close()
    assert status == 503 and b"<Code>SlowDown</Code>" in body
