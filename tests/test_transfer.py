"""The transfer engine between real stores: exit, copy, sync, resume-by-verification, hostile keys.

Every test here moves real bytes between real servers on 127.0.0.1 (SeaweedFS for S3, Azurite for
Azure Blob, the local filesystem) and then reads the destination back, independently of daulat's
own verification, to check that what arrived is byte for byte what left. Both entry points are
used: the library (``daulat.transfer.engine.transfer`` with an ``Endpoint`` per side and a
``Journal``) and the CLI (``daulat.cli.run``) over a ``daulat.toml`` written into ``tmp_path``.

The helpers at the top (data sets, config files, reading a store back) are shared with
``test_transfer_faults.py`` and ``test_transfer_crash.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    azure_store_config,
    begin_audit,
    fs_store_config,
    run,
    s3_store_config,
)
from faults import FaultyStore
from memstore import MemoryStore
from servers import AzuriteServer, S3Server

from daulat.cli import run as cli_run
from daulat.config import StoreConfig
from daulat.stores import Store, open_store
from daulat.stores.fs import FsStore
from daulat.transfer.engine import (
    SMALL_OBJECT,
    Endpoint,
    Kind,
    Options,
    Summary,
    transfer,
)
from daulat.transfer.journal import JOURNAL_NAME, Journal
from daulat.transfer.manifests import DST_MANIFEST_PREFIX
from daulat.transfer.safety import DeleteLimit

MiB = 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_names = itertools.count()

# --------------------------------------------------------------------------------------------
# Shared helpers


def unique(tag: str) -> str:
    """A bucket/container name no other test uses (lowercase, digits, hyphens)."""
    return f"t{next(_names)}-{uuid.uuid4().hex[:6]}-{tag}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Keys every store kind accepts but that trip naive code: spaces, URL syntax, percent signs
# that must not be decoded, NFC and NFD spellings of one word (two distinct keys), scripts,
# emoji, a segment ending in a dot, a key near the 1,024-byte limit.
ODD_KEYS = [
    "odd/with space.txt",
    " leading-space.txt",
    "odd/trailing space .txt",
    "odd/percent%20not-decoded.txt",
    "odd/100%.txt",
    "odd/%",
    "odd/%2F-encoded-slash.txt",
    "odd/plus+sign.txt",
    "odd/+",
    "odd/hash#1.txt",
    "odd/file#123",
    "odd/question?.txt",
    "odd/amp&eq=.txt",
    "odd/semi;colon,comma'quote.txt",
    "odd/tilde~bang!.txt",
    "odd/brackets[1](2){3}.txt",
    "odd/dollar$at@caret^`.txt",
    "odd/colon:name.txt",
    "odd/asterisk*pipe|lt<gt>.txt",
    'odd/double"quote.txt',
    unicodedata.normalize("NFC", "odd/café.txt"),
    unicodedata.normalize("NFD", "odd/café.txt"),
    "odd/日本語/ファイル.txt",
    "odd/emoji-😀.txt",
    "odd/Ελληνικά.txt",
    "odd/العربية.txt",
    "odd/हिन्दी.txt",
    "odd/zero\u200bwidth.txt",
    "odd/nb\u00a0sp.txt",
    "odd/ending-dot.",
    "odd/deep/" + "/".join(["s" * 200] * 4),
]
ZERO_KEY = "empty/zero-length.bin"


@dataclass(frozen=True)
class DataSet:
    """Objects to put at a source, by key."""

    objects: Mapping[str, bytes]

    @property
    def digests(self) -> dict[str, str]:
        return {k: sha(v) for k, v in self.objects.items()}

    @property
    def total_bytes(self) -> int:
        return sum(len(v) for v in self.objects.values())

    def under(self, prefix: str) -> dict[str, bytes]:
        return {k: v for k, v in self.objects.items() if k.startswith(prefix)}


def mixed_dataset(
    *, small: int = 300, big: int = 2, big_size: int = 20 * MiB, seed: int = 7
) -> DataSet:
    """``small`` small objects (the odd keys and one zero-length object among them) and ``big``
    objects of ``big_size`` bytes, large enough to be streamed as multipart uploads."""
    rng = random.Random(seed)
    objects: dict[str, bytes] = {}
    for key in ODD_KEYS:
        objects[key] = key.encode() + rng.randbytes(rng.randrange(1, 2048))
    objects[ZERO_KEY] = b""
    i = 0
    while len(objects) < small:
        key = f"small/d{i % 7}/obj-{i:04d}.bin" if i % 3 else f"small/obj-{i:04d}.bin"
        objects[key] = rng.randbytes(rng.randrange(1, 64 * 1024))
        i += 1
    for j in range(big):
        objects[f"big/large-{j}.bin"] = rng.randbytes(big_size)
    return DataSet(objects)


def small_dataset(n: int, *, seed: int = 11, prefix: str = "obj/") -> DataSet:
    rng = random.Random(seed)
    return DataSet(
        {f"{prefix}{i:05d}.bin": rng.randbytes(rng.randrange(1, 8 * 1024)) for i in range(n)}
    )


async def fill(store: Store, objects: Mapping[str, bytes], *, concurrency: int = 32) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(key: str, data: bytes) -> None:
        async with sem:
            await store.put(key, data)

    await asyncio.gather(*(one(k, v) for k, v in objects.items()))


def fill_config(raw: Mapping[str, Any], objects: Mapping[str, bytes]) -> None:
    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            await fill(store, objects)
        finally:
            await store.close()

    run(go())


async def read_all(
    store: Store, prefix: str = "", *, skip_manifests: bool = True, concurrency: int = 32
) -> dict[str, bytes]:
    """Every object under ``prefix`` (keys relative to it), read back through a fresh listing."""
    keys = [o.key async for batch in store.list(prefix) for o in batch]
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, bytes] = {}

    async def one(key: str) -> None:
        async with sem:
            out[key[len(prefix) :]] = await (await store.get(key)).read_all()

    await asyncio.gather(*(one(k) for k in keys))
    if skip_manifests:
        # Every run that writes leaves its manifest in .daulat/ under its destination prefix.
        out = {
            k: v
            for k, v in out.items()
            if not k.startswith(DST_MANIFEST_PREFIX) and "/" + DST_MANIFEST_PREFIX not in k
        }
    return out


def read_config(raw: Mapping[str, Any], prefix: str = "", **kw: Any) -> dict[str, bytes]:
    async def go() -> dict[str, bytes]:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            return await read_all(store, prefix, **kw)
        finally:
            await store.close()

    return run(go())


def digests(objects: Mapping[str, bytes]) -> dict[str, str]:
    return {k: sha(v) for k, v in objects.items()}


def toml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_config(directory: Path, stores: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``daulat.toml`` with one ``[stores.NAME]`` table per store config dict."""
    lines: list[str] = []
    for raw in stores:
        lines.append(f"[stores.{raw['name']}]")
        for key, value in raw.items():
            if key not in ("name", "credentials"):
                lines.append(f"{key} = {toml_value(value)}")
        if raw.get("credentials"):
            lines.append(f"[stores.{raw['name']}.credentials]")
            for key, value in raw["credentials"].items():
                lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "daulat.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def journal_path(config: Path) -> Path:
    return config.parent / ".daulat" / JOURNAL_NAME


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data

    def explain(self) -> str:
        """What went wrong, for an assertion message: the summary's problems, or the output."""
        try:
            summary = problems(self.json)
        except ValueError:
            summary = self.out[-3000:]
        return f"exit {self.code}; {summary}; stderr: {self.err[-3000:]}"


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    capsys.readouterr()
    code = cli_run(argv)
    captured = capsys.readouterr()
    return CliResult(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))


def endpoint(raw: Mapping[str, Any], prefix: str = "", store: Store | None = None) -> Endpoint:
    """An Endpoint over a configured store (named as in the config, so that the library and
    the CLI share journal rows)."""
    opened = store if store is not None else open_store(StoreConfig.model_validate(raw))
    norm = Endpoint.normalise(prefix)
    return Endpoint(opened, norm, label=f"{raw['name']}:{norm}" if norm else str(raw["name"]))


def exit_lib(
    src: Endpoint,
    dst: Endpoint,
    journal_file: Path,
    kind: Kind = Kind.EXIT,
    options: Options | None = None,
    *,
    timeout: float = 120.0,
    close: bool = True,
) -> Summary:
    """Run one transfer through the library, bounded by ``timeout`` (a hang is a failure)."""

    async def go() -> Summary:
        try:
            with Journal(journal_file) as journal:
                return await asyncio.wait_for(transfer(kind, src, dst, journal, options), timeout)
        finally:
            if close:
                await src.store.close()
                await dst.store.close()

    return run(go())


def manifest_entries(objects_at_dst: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """Lines of the newest JSONL manifest under ``.daulat/`` (keys relative to the prefix)."""
    names = sorted(
        k
        for k in objects_at_dst
        if k.startswith(DST_MANIFEST_PREFIX + "manifest-") and k.endswith(".jsonl")
    )
    assert names, f"no manifest under {DST_MANIFEST_PREFIX}: {sorted(objects_at_dst)[:5]}"
    text = objects_at_dst[names[-1]].decode("utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    # The first line is the header (sequence number, previous manifest's hash, signer).
    assert lines and lines[0].get("daulat") == "manifest", lines[:1]
    return lines[1:]


def assert_exact_copy(
    expected: Mapping[str, bytes], found: Mapping[str, bytes], *, what: str = "destination"
) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    assert not missing, f"{len(missing)} objects missing at the {what}: {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected objects at the {what}: {extra[:5]}"
    wrong = [k for k in expected if sha(found[k]) != sha(expected[k])]
    assert not wrong, f"{len(wrong)} objects differ at the {what}: {wrong[:5]}"


def assert_manifest(
    data: DataSet | Mapping[str, bytes], at_dst: Mapping[str, bytes], dst_prefix: str = ""
) -> None:
    """The destination's JSONL manifest lists exactly the source keys with the right hashes."""
    objects = data.objects if isinstance(data, DataSet) else data
    entries = manifest_entries(at_dst)
    by_key = {e["key"]: e for e in entries}
    assert len(by_key) == len(entries), "duplicate keys in the manifest"
    assert set(by_key) == {dst_prefix + k for k in objects}
    for key, content in objects.items():
        entry = by_key[dst_prefix + key]
        assert entry["sha256"] == sha(content), key
        assert entry["size"] == len(content), key


def problems(summary: Summary | Mapping[str, Any]) -> str:
    """The parts of a summary that explain a failure, short enough for an assertion message."""
    d = summary.to_json() if isinstance(summary, Summary) else summary
    out = {k: d.get(k) for k in ("ok", "stopped", "source_objects", "copied_objects")}
    out |= {k: d.get(k) for k in ("verified_objects", "left_objects", "retries")}
    for k in ("failed", "refused", "unverified"):
        rows = d.get(k) or []
        assert isinstance(rows, list)
        out[k] = [len(rows), rows[:5]]
    return json.dumps(out, ensure_ascii=False, default=str)


def journal_rows(path: Path) -> dict[str, tuple[str, int]]:
    """key → (state, run_id) of every journal row (all pairs)."""
    import sqlite3

    # Not read-only: after a kill -9 the WAL and its index are left behind, and a normal
    # connection recovers them (a read-only one may refuse to).
    db = sqlite3.connect(path, timeout=30)
    try:
        return {k: (s, r) for k, s, r in db.execute("SELECT key, state, run_id FROM journal")}
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# Sources filled once per module

MIX = mixed_dataset()


@pytest.fixture(scope="module")
def src_s3(s3_server: S3Server) -> dict[str, Any]:
    raw = s3_store_config(s3_server, "srcs3", unique("mix"))
    fill_config(raw, MIX.objects)
    return raw


@pytest.fixture(scope="module")
def src_azure(azurite_server: AzuriteServer) -> dict[str, Any]:
    raw = azure_store_config(azurite_server, "srcaz", unique("mix"))
    fill_config(raw, MIX.objects)
    return raw


@pytest.fixture(scope="module")
def src_fs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    raw = fs_store_config(tmp_path_factory.mktemp("src-fs"), "srcfs")
    fill_config(raw, MIX.objects)
    return raw


def make_dst(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if kind == "s3b":
        return s3_store_config(request.getfixturevalue("s3_server_b"), "dsts3", unique("dst"))
    if kind == "s3a":
        return s3_store_config(request.getfixturevalue("s3_server"), "dsts3", unique("dst"))
    if kind == "azure":
        return azure_store_config(request.getfixturevalue("azurite_server"), "dstaz", unique("dst"))
    assert kind == "fs"
    return fs_store_config(tmp_path / "dst-fs", "dstfs")


# --------------------------------------------------------------------------------------------
# exit between real stores


@pytest.mark.parametrize(
    ("src_kind", "dst_kind", "first"),
    [
        ("src_s3", "s3b", "cli"),  # SeaweedFS A → SeaweedFS B
        ("src_azure", "s3b", "lib"),  # Azurite → SeaweedFS
        ("src_s3", "fs", "lib"),  # SeaweedFS → filesystem
        ("src_fs", "azure", "cli"),  # filesystem → Azurite
    ],
)
def test_exit_between_real_stores(
    src_kind: str,
    dst_kind: str,
    first: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full exit arrives byte for byte, verified, with a manifest and hash metadata; the
    second run copies nothing. The first run goes through one entry point (library or CLI),
    the second through the other, sharing one journal."""
    src_raw: dict[str, Any] = request.getfixturevalue(src_kind)
    dst_raw = make_dst(dst_kind, request, tmp_path)
    config = write_config(tmp_path, [src_raw, dst_raw])
    total = len(MIX.objects)
    argv = ["exit", src_raw["name"], dst_raw["name"], "--config", str(config), "--json"]

    def via_cli() -> dict[str, Any]:
        res = cli(argv, capsys)
        assert res.code == 0, res.explain()
        assert "Traceback" not in res.err
        data = res.json
        assert data["ok"] is True and data["kind"] == "exit"
        assert data["src"] == src_raw["name"] and data["dst"] == dst_raw["name"]
        assert data["source_objects"] == total and data["source_bytes"] == MIX.total_bytes
        assert data["verified_objects"] == total
        assert data["failed"] == [] and data["refused"] == [] and data["unverified"] == []
        assert data["left_objects"] == 0 and data["left_bytes"] == 0
        assert data["stopped"] is None
        return data

    def via_lib() -> dict[str, Any]:
        begin_audit(journal_path(config).parent)  # the engine alone does not audit
        summary = exit_lib(endpoint(src_raw), endpoint(dst_raw), journal_path(config))
        assert summary.ok, problems(summary)
        assert summary.source_objects == total
        assert summary.verified_objects == total
        return summary.to_json()

    runs = [via_cli, via_lib] if first == "cli" else [via_lib, via_cli]
    one = runs[0]()
    assert one["copied_objects"] == total and one["copied_bytes"] == MIX.total_bytes
    assert one["skipped_objects"] == 0
    assert one["manifest_key"] and one["manifest_key"].startswith(DST_MANIFEST_PREFIX)

    at_dst = read_config(dst_raw, skip_manifests=False)
    assert_exact_copy(
        MIX.objects, {k: v for k, v in at_dst.items() if not k.startswith(".daulat/")}
    )
    assert_manifest(MIX, at_dst)
    assert one["manifest_key"] in at_dst

    async def metadata() -> None:
        store = open_store(StoreConfig.model_validate(dst_raw))
        try:
            for key, content in MIX.objects.items():
                if len(content) <= SMALL_OBJECT:
                    reader = await store.get(key)
                    assert reader.metadata.get("sha256") == sha(content), key
                    await reader.read_all()
        finally:
            await store.close()

    run(metadata())

    two = runs[1]()
    assert two["copied_objects"] == 0 and two["copied_bytes"] == 0
    assert two["skipped_objects"] == total and two["planned_objects"] == 0
    assert_exact_copy(MIX.objects, read_config(dst_raw))


def test_exit_cli_human_output(
    src_fs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json the CLI says what it did in words, and exit 0 means every object verified."""
    dst_raw = fs_store_config(tmp_path / "dst", "dstfs")
    config = write_config(tmp_path, [src_fs, dst_raw])
    res = cli(["exit", "srcfs", "dstfs", "--config", str(config)], capsys)
    assert res.code == 0, res.explain()
    total = len(MIX.objects)
    assert f"copied {total:,}" in res.out and f"verified {total:,}" in res.out
    assert "every object verified" in res.out
    assert "manifest of the copy: dstfs:.daulat/manifest-" in res.out
    assert "Traceback" not in res.err


# --------------------------------------------------------------------------------------------
# copy with prefixes, sync --delete, dry runs


def test_exit_dry_run_changes_nothing(
    src_s3: dict[str, Any],
    s3_server_b: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``exit --dry-run`` plans the whole copy and writes nothing: no object, no manifest."""
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("dry"))
    config = write_config(tmp_path, [src_s3, dst_raw])
    res = cli(["exit", "srcs3", "dsts3", "--dry-run", "--json", "--config", str(config)], capsys)
    assert res.code == 0, res.explain()
    data = res.json
    assert data["dry_run"] is True
    assert data["planned_objects"] == len(MIX.objects)
    assert data["planned_bytes"] == MIX.total_bytes
    assert data["copied_objects"] == 0 and data["manifest_key"] is None
    assert read_config(dst_raw, skip_manifests=False) == {}


def test_copy_maps_prefixes(
    src_s3: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``copy SRC:odd DST:mirror/odd-copy`` puts SRC's odd/X at DST's mirror/odd-copy/X and
    nothing else; a prefix that is a string prefix but not a path segment does not match."""
    dst_raw = fs_store_config(tmp_path / "dst", "dstfs")
    config = write_config(tmp_path, [src_s3, dst_raw])
    res = cli(
        ["copy", "srcs3:odd", "dstfs:mirror/odd-copy/", "--config", str(config), "--json"], capsys
    )
    assert res.code == 0, res.explain()
    data = res.json
    under = {k[len("odd/") :]: v for k, v in MIX.under("odd/").items()}
    assert data["source_objects"] == len(under) and data["copied_objects"] == len(under)
    assert data["verified_objects"] is None  # copy does not verify, exit does
    at_dst = read_config(dst_raw)
    assert_exact_copy({f"mirror/odd-copy/{k}": v for k, v in under.items()}, at_dst)


def test_copy_prefix_to_s3_prefix(
    src_fs: dict[str, Any],
    s3_server_b: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A nested source prefix lands under a nested destination prefix of an S3 bucket, keys
    mapped one to one, and a second copy is a no-op."""
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("pfx"))
    config = write_config(tmp_path, [src_fs, dst_raw])
    argv = ["copy", "srcfs:small/d3/", "dsts3:archive/2024", "--config", str(config), "--json"]
    res = cli(argv, capsys)
    assert res.code == 0, res.explain()
    under = {k[len("small/d3/") :]: v for k, v in MIX.under("small/d3/").items()}
    assert len(under) > 10
    assert res.json["copied_objects"] == len(under)
    assert_exact_copy({f"archive/2024/{k}": v for k, v in under.items()}, read_config(dst_raw))
    again = cli(argv, capsys)
    assert again.code == 0 and again.json["copied_objects"] == 0
    assert again.json["skipped_objects"] == len(under)


def test_sync_delete_and_dry_run(
    src_fs: dict[str, Any],
    s3_server_b: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``sync --delete --dry-run`` reports and changes nothing; ``sync --delete`` copies what is
    missing or stale and removes what the source does not have."""
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("sync"))
    config = write_config(tmp_path, [src_fs, dst_raw])
    source = {k[len("small/d1/") :]: v for k, v in MIX.under("small/d1/").items()}
    keys = sorted(source)
    stale_key = keys[0]
    extras = {"extra/one.txt": b"not in the source", "zz-extra.bin": b"x" * 100}
    # The destination already holds part of the source, one object stale, and extras.
    before = {k: source[k] for k in keys[: len(keys) // 2]}
    before[stale_key] = b"stale content of another size"
    before.update(extras)
    fill_config(dst_raw, before)

    dry = cli(
        ["sync", "srcfs:small/d1", "dsts3", "--delete", "--dry-run", "--json", "-c", str(config)],
        capsys,
    )
    assert dry.code == 0, dry.explain()
    d = dry.json
    assert d["dry_run"] is True
    assert d["source_objects"] == len(source)
    assert d["planned_objects"] == len(source)  # nothing is in the journal yet
    assert d["deleted_objects"] == len(extras)  # what it would delete
    assert d["copied_objects"] == 0
    assert read_config(dst_raw) == before, "a dry run changed the destination"

    res = cli(
        ["sync", "srcfs:small/d1", "dsts3", "--delete", "--config", str(config), "--json"], capsys
    )
    assert res.code == 0, res.explain()
    assert res.json["deleted_objects"] == len(extras)
    assert res.json["copied_objects"] == len(source)
    assert_exact_copy(source, read_config(dst_raw))

    # Human output of a dry run says what would happen.
    fill_config(dst_raw, {"late-extra.txt": b"!"})
    dry2 = cli(
        ["sync", "srcfs:small/d1", "dsts3", "--delete", "--dry-run", "--config", str(config)],
        capsys,
    )
    assert dry2.code == 0 and "dry run" in dry2.out and "delete 1" in dry2.out
    assert "late-extra.txt" in read_config(dst_raw)


def test_sync_delete_pages_through_many_extraneous_objects(tmp_path: Path) -> None:
    """More extraneous objects than one page of the journal (1,000), including the keys around
    page boundaries and a key that sorts first: every one is deleted, the source's are kept."""
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    src_root.mkdir()
    dst_root.mkdir()
    source = {f"keep/{i:04d}": f"keep {i}".encode() for i in range(30)}
    extras = {f"gone/{i:04d}": b"x" for i in range(2_345)}
    extras["!first"] = b"sorts before every other key"
    for root, objects in ((src_root, source), (dst_root, {**source, **extras})):
        for key, data in objects.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
    src = Endpoint(FsStore("src", src_root), label="src")
    dst = Endpoint(FsStore("dst", dst_root), label="dst")
    # Nearly every destination object goes: more than the default --max-delete (50%) allows.
    every = DeleteLimit(percent=100)
    dry = exit_lib(
        src,
        dst,
        tmp_path / "j.sqlite",
        Kind.SYNC,
        Options(delete=True, dry_run=True, max_delete=every),
    )
    assert dry.deleted_objects == len(extras) and dry.ok, problems(dry)
    assert len(list(dst_root.rglob("gone/*"))) == len(extras) - 1, "a dry run deleted"

    summary = exit_lib(
        src, dst, tmp_path / "j.sqlite", Kind.SYNC, Options(delete=True, max_delete=every)
    )
    assert summary.ok, problems(summary)
    assert summary.deleted_objects == len(extras)
    left = {
        p.relative_to(dst_root).as_posix()
        for p in dst_root.rglob("*")
        if p.is_file() and p.relative_to(dst_root).parts[0] != ".daulat"  # (the manifest)
    }
    assert left == set(source)
    with Journal(tmp_path / "j.sqlite") as journal:
        (rows,) = journal.db.execute("SELECT count(*) FROM journal").fetchone()
    assert rows == len(source)


# --------------------------------------------------------------------------------------------
# re-running exit after the destination changed behind daulat's back


@pytest.mark.parametrize("dst_kind", ["s3b", "fs"])
def test_exit_recopies_exactly_what_changed_at_destination(
    dst_kind: str, src_s3: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """After one object is deleted and one overwritten (same size) at the destination, a re-run
    of exit uploads exactly those two, and ends verified with the right bytes."""
    dst_raw = make_dst(dst_kind, request, tmp_path)
    jfile = tmp_path / "state" / JOURNAL_NAME
    first = exit_lib(endpoint(src_s3), endpoint(dst_raw), jfile)
    assert first.ok, problems(first)

    small_keys = sorted(k for k, v in MIX.objects.items() if 100 < len(v) <= SMALL_OBJECT)
    gone, changed = small_keys[3], small_keys[17]
    big = "big/large-1.bin"

    async def tamper() -> None:
        store = open_store(StoreConfig.model_validate(dst_raw))
        try:
            await store.delete(gone)
            original = MIX.objects[changed]
            await store.put(changed, bytes(b ^ 0xFF for b in original))  # same size
            await store.delete(big)
        finally:
            await store.close()

    run(tamper())
    faulty = FaultyStore(open_store(StoreConfig.model_validate(dst_raw)))
    second = exit_lib(endpoint(src_s3), endpoint(dst_raw, store=faulty), jfile)
    assert second.ok, problems(second)
    data_puts = {k: n for k, n in faulty.puts_by_key.items() if not k.startswith(".daulat/")}
    # A destination that resumes large uploads takes them past the wrapper (its resumable
    # ability is the inner store's), so the big object is counted by the summary alone there.
    assert data_puts in ({gone: 1, changed: 1, big: 1}, {gone: 1, changed: 1})
    assert second.copied_objects == 3 and second.skipped_objects == len(MIX.objects) - 3
    assert second.verified_objects == len(MIX.objects)
    assert_exact_copy(MIX.objects, read_config(dst_raw))


# --------------------------------------------------------------------------------------------
# hostile keys from a source that serves them


def hostile_keys(token: str) -> dict[str, str]:
    """Hostile key → why it is hostile. ``token`` makes absolute-path escapes detectable."""
    return {
        "../escape": "parent segment",
        f"../../escape-{token}": "two parent segments",
        "a/../../escape-in-middle": "parent segments inside",
        "/abs": "leading slash",
        f"/tmp/daulat-abs-{token}": "absolute path",
        "a//b": "empty segment",
        "trailing/": "trailing slash",
        "nul\x00byte": "NUL",
        "new\nline": "newline",
        "back\\slash": "backslash",
        "..\\..\\windows-escape": "backslash parents",
        "seg/" + "x" * 300: "300-byte segment",
        "..": "parent only",
        ".": "dot only",
        "./dot": "dot segment",
        ".daulat-tmp/planted": "reserved staging directory",
    }


NORMAL = {f"normal/n{i:02d}.txt": f"normal object {i}\n".encode() * (i + 1) for i in range(20)}


def _tree(root: Path, skip: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """Every path under root (except the ``skip`` subtrees) → (size, mtime_ns)."""
    skipped = {p.resolve() for p in skip}
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
        for name in dirnames + filenames:
            p = here / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_hostile_keys_to_filesystem(tmp_path: Path) -> None:
    """Hostile keys are refused one by one with a reason; the normal keys arrive; nothing is
    written outside the destination directory; the run is not ok."""
    token = uuid.uuid4().hex[:10]
    hostile = hostile_keys(token)
    box = tmp_path / "box"
    dst_root = box / "dst"
    state = tmp_path / "state"
    dst_root.mkdir(parents=True)
    state.mkdir()
    (box / "sibling.txt").write_text("must stay as it is")
    before = _tree(tmp_path, [dst_root, state])

    src = MemoryStore("hostile")

    async def load() -> None:
        for key in hostile:
            await src.put(key, f"payload of {key!r}".encode())
        for key, content in NORMAL.items():
            await src.put(key, content)

    run(load())
    summary = exit_lib(
        Endpoint(src, label="hostile"),
        Endpoint(FsStore("dst", dst_root), label="dst"),
        state / JOURNAL_NAME,
    )
    total = len(hostile) + len(NORMAL)
    assert summary.source_objects == total
    refused = dict(summary.refused)
    assert set(refused) == set(hostile), {
        "not refused": sorted(set(hostile) - set(refused)),
        "wrongly refused": sorted(set(refused) - set(hostile)),
        "failed": summary.failed,
    }
    assert all(reason.strip() for reason in refused.values())
    assert summary.copied_objects == len(NORMAL)
    assert summary.copied_objects + len(summary.refused) + len(summary.failed) == total
    assert summary.verified_objects == len(NORMAL)
    assert summary.ok is False

    # Nothing outside the destination directory changed; no absolute-path escape happened.
    assert _tree(tmp_path, [dst_root, state]) == before
    assert not Path(f"/tmp/daulat-abs-{token}").exists()
    assert not Path(f"/escape-{token}").exists()
    at_dst = run(read_all(FsStore("check", dst_root)))
    assert_exact_copy(NORMAL, at_dst)
    leftovers = (
        list((dst_root / ".daulat-tmp").glob("*")) if (dst_root / ".daulat-tmp").exists() else []
    )
    assert leftovers == [], "staging files left behind"
    # And the journal says the same: refused rows for the hostile keys.
    rows = journal_rows(state / JOURNAL_NAME)
    assert {k for k, (s, _) in rows.items() if s == "refused"} == set(hostile)
    assert {k for k, (s, _) in rows.items() if s == "done"} == set(NORMAL)


def test_hostile_keys_to_seaweedfs(s3_server_b: S3Server, tmp_path: Path) -> None:
    """Against SeaweedFS, which refuses some legal S3 keys and rewrites others, every source key
    is accounted for: verified under its own key, or named as refused, failed or unverified.
    Nothing is silently dropped."""
    token = uuid.uuid4().hex[:10]
    hostile = hostile_keys(token)
    src = MemoryStore("hostile")

    async def load() -> None:
        for key in hostile:
            await src.put(key, f"payload of {key!r}".encode())
        for key, content in NORMAL.items():
            await src.put(key, content)

    run(load())
    dst_raw = s3_store_config(s3_server_b, "dsts3", unique("hostile"))
    jfile = tmp_path / JOURNAL_NAME
    summary = exit_lib(Endpoint(src, label="hostile"), endpoint(dst_raw), jfile)
    total = len(hostile) + len(NORMAL)
    all_keys = set(hostile) | set(NORMAL)
    assert summary.source_objects == total
    refused = {k for k, _ in summary.refused}
    failed = {k for k, _ in summary.failed}
    unverified = {k for k, _ in summary.unverified}
    assert summary.copied_objects + len(refused) + len(failed) == total
    rows = journal_rows(jfile)
    verified_ok = {k for k, (s, _) in rows.items() if s == "done"} - unverified
    # Keys SeaweedFS cannot hold are refused; control characters it keeps exactly are copied.
    for key in hostile:
        if any(s in ("", ".", "..") for s in key.split("/")) or "\x00" in key:
            assert key in refused, key
        elif any(ord(c) < 0x20 for c in key):
            assert key in verified_ok, key
    assert verified_ok >= set(NORMAL)
    assert verified_ok | refused | failed | unverified == all_keys, sorted(
        all_keys - (verified_ok | refused | failed | unverified)
    )
    # A key counted as verified is really there, with its content.
    at_dst = read_config(dst_raw)
    for key in verified_ok:
        assert at_dst.get(key) == src.objects[key].data, key
    assert summary.ok is False
    # back\slash is legal S3 but SeaweedFS stores it as back/slash: that must not pass as done.
    assert "back\\slash" in refused | failed | unverified
    assert "seg/" + "x" * 300 in refused | failed | unverified
