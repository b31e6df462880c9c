"""Exact resume after ``kill -9``: objects complete at the destination are not sent again, and
nothing the provider plants is adopted.

How "sent again" is measured, independently of daulat's own journal:

* SeaweedFS destinations are reached through ``faultproxy`` in pass mode, which counts per key
  the times an object's content began to be sent (single PUTs and multipart initiations);
* filesystem destinations: every put writes a new file and renames it into place, so a key
  whose inode or mtime changed was written again.

"Complete at the kill" is what the destination holds right after the kill (read from the
server directly, once the proxy has nothing in flight). Goal: at most 1 % of those are sent
again, and none over 8 MiB. Planted objects (copied proof of another object, a proof for
another source version or size, a damaged proof, a streamed object with no ``completing``
row) must be sent again, never adopted.

Kill moments are drawn from a seeded generator; the seed is in every failure message and
``DAULAT_CRASH_SEED`` replays it.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, run, s3_store_config
from faultproxy import Proxy, fault_proxy
from servers import S3Server
from test_safety import pin_signer_of
from test_transfer import cli, journal_path, read_config, sha, unique, write_config
from test_transfer_crash import _seed
from test_transfer_faults import Proc, start_daulat

from daulat.config import StoreConfig
from daulat.crypto import new_identity, recipient_of
from daulat.stores import Store, open_store
from daulat.transfer.adoption import (
    KEY_FILE,
    PROOF_FIELD,
    ProofKeyError,
    Prover,
    proof_key,
)
from daulat.transfer.journal import (
    BatchWriter,
    Candidate,
    Completing,
    Journal,
    Outcome,
    State,
)

MiB = 1024 * 1024
SMALL = 8 * MiB
RUN_TIMEOUT = 240.0
MANIFESTS = ".daulat/"

# --------------------------------------------------------------------------------------------
# The key and the proofs (no servers)


def test_proof_key_is_private_and_stable(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / ".daulat"
        key = proof_key(state)
    finally:
        os.umask(old)
    path = state / KEY_FILE
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    # The key is derived from the file, not the file itself, and stays the same.
    assert key != path.read_bytes()
    assert proof_key(state) == key
    # Loosened by someone: tightened on use, key unchanged.
    path.chmod(0o644)
    assert proof_key(state) == key
    assert path.stat().st_mode & 0o777 == 0o600


def test_damaged_proof_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    with pytest.raises(ProofKeyError, match="damaged"):
        proof_key(tmp_path)


def _candidate(
    key: str = "a/b.bin",
    size: int = 100,
    etag: str | None = "e1",
    dst_size: int = 100,
    completing: Completing | None = None,
    recorded_run: int | None = None,
) -> Candidate:
    return Candidate(1, key, None, size, etag, dst_size, "d1", completing, recorded_run)


def test_a_run_sealed_proof_is_adopted_over_a_done_row_only_when_written_later() -> None:
    """Hostile review 2, finding 1: a done row for this source version (listed with another
    ETag since) no longer rules adoption out; the proof's sealed run id decides. A proof of
    the write that row records, or of an older one, or one naming no run, is not adopted."""
    key = os.urandom(32)
    digest = sha(b"content")
    value = Prover(key, codec="", encrypting=False, run_id=7).sealed(
        "p/a/b.bin", 100, "e1", digest, 100
    )[PROOF_FIELD]
    assert value.startswith("3s.")  # earlier versions' 2s: tests/test_proof_forms.py
    checker = Prover(key, codec="", encrypting=False)
    proven = checker.check(value, _candidate(), "p/a/b.bin")
    assert proven is not None and proven.sha256 == digest and proven.run_id == 7
    assert checker.check(value, _candidate(recorded_run=6), "p/a/b.bin") == proven
    assert checker.check(value, _candidate(recorded_run=7), "p/a/b.bin") is None
    assert checker.check(value, _candidate(recorded_run=8), "p/a/b.bin") is None
    old = Prover(key, codec="", encrypting=False).sealed("p/a/b.bin", 100, "e1", digest, 100)
    assert old[PROOF_FIELD].startswith("1s.")
    assert checker.check(old[PROOF_FIELD], _candidate(), "p/a/b.bin") is not None
    assert checker.check(old[PROOF_FIELD], _candidate(recorded_run=1), "p/a/b.bin") is None
    # The run id is sealed and bound: neither readable nor changeable.
    other = Prover(key, codec="", encrypting=False, run_id=8).sealed(
        "p/a/b.bin", 100, "e1", digest, 100
    )[PROOF_FIELD]
    assert value[3:25] != other[3:25]
    # Each character flipped in its base64 digit's top bit: the last digit's low bits are
    # padding that decoding drops, so flipping those would change nothing.
    digits = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    for i in range(3, len(value)):
        flipped = value[:i] + digits[digits.index(value[i]) ^ 32] + value[i + 1 :]
        assert checker.check(flipped, _candidate(), "p/a/b.bin") is None, i


def test_sealed_proof_binds_every_field() -> None:
    key = os.urandom(32)
    prover = Prover(key, codec="", encrypting=False)
    digest = sha(b"content")
    meta = prover.sealed("p/a/b.bin", 100, "e1", digest, 100)
    value = meta[PROOF_FIELD]
    proven = prover.check(value, _candidate(), "p/a/b.bin")
    assert proven is not None and proven.sha256 == digest and proven.plain_size == 100
    # Another destination key, source size, source ETag, stored size: not proven.
    assert prover.check(value, _candidate(), "p/a/c.bin") is None
    assert prover.check(value, _candidate(size=101), "p/a/b.bin") is None
    assert prover.check(value, _candidate(etag="e2"), "p/a/b.bin") is None
    assert prover.check(value, _candidate(etag=None), "p/a/b.bin") is None
    assert prover.check(value, _candidate(dst_size=101), "p/a/b.bin") is None
    # Another key, another codec (plain proof, encrypted run): not proven.
    assert (
        Prover(os.urandom(32), codec="", encrypting=False).check(value, _candidate(), "p/a/b.bin")
        is None
    )
    assert (
        Prover(key, codec=" [age:abc]", encrypting=True).check(value, _candidate(), "p/a/b.bin")
        is None
    )
    # Any changed character of the value (sealed hash, nonce, tag): not proven. The top bit of
    # a base64 character is flipped: the last character also carries padding bits a decoder
    # drops, so a change there only ('B' for 'A') would leave the same bytes 1 time in 16.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    for i in range(3, len(value)):
        c = value[i]
        other = alphabet[alphabet.index(c) ^ 32] if c in alphabet else "A"
        flipped = value[:i] + other + value[i + 1 :]
        assert prover.check(flipped, _candidate(), "p/a/b.bin") is None, i
    assert prover.check(None, _candidate(), "p/a/b.bin") is None
    assert prover.check("1s.", _candidate(), "p/a/b.bin") is None
    assert prover.check("garbage", _candidate(), "p/a/b.bin") is None
    # No version to bind, no proof.
    assert prover.sealed("k", 1, None, digest, 1) == {}


def test_streamed_proof_needs_the_matching_completing_row() -> None:
    prover = Prover(os.urandom(32), codec=" [age:x]", encrypting=True)
    started = prover.started("big.bin", 30 * MiB, "e1")
    assert started is not None
    nonce, meta = started
    value = meta[PROOF_FIELD]
    digest = sha(b"big")
    row = Completing("big.bin", 30 * MiB, "e1", nonce, digest, 30 * MiB, 30 * MiB + 200)

    def cand(**kw: Any) -> Candidate:
        base: dict[str, Any] = {
            "key": "big.bin",
            "size": 30 * MiB,
            "dst_size": 30 * MiB + 200,
            "completing": row,
        }
        base.update(kw)
        return _candidate(**base)

    proven = prover.check(value, cand(), "big.bin")
    assert proven is not None and proven.sha256 == digest and proven.plain_size == 30 * MiB
    assert prover.check(value, cand(completing=None), "big.bin") is None
    other = Completing("big.bin", 30 * MiB, "e1", "00" * 16, digest, 30 * MiB, 30 * MiB + 200)
    assert prover.check(value, cand(completing=other), "big.bin") is None
    assert prover.check(value, cand(dst_size=30 * MiB + 199), "big.bin") is None
    assert prover.check(value, cand(etag="e2"), "big.bin") is None
    assert prover.check(value, cand(), "other.bin") is None


def test_proof_reveals_neither_hash_nor_name() -> None:
    prover = Prover(os.urandom(32), codec=" [age:x+names]", encrypting=True)
    content = b"secret plaintext"
    digest = sha(content)
    name = "kpu/jawa-barat/tps-001.json"
    values = [prover.sealed(name, 16, "etag-1", digest, 300)[PROOF_FIELD] for _ in range(2)]
    # Random nonces: the same object twice gives unrelated proofs.
    assert values[0] != values[1]
    for value in values:
        assert len(value) < 200 and value.isascii()
        assert digest not in value and "jawa" not in value
        import base64

        raw = base64.urlsafe_b64decode(value[3:] + "==")
        assert bytes.fromhex(digest) not in raw
        assert name.encode() not in raw


def test_large_outcomes_are_committed_at_once(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        writer = BatchWriter(journal, "p", 1, every=200, seconds=3600, immediate_over=SMALL)
        journal.record_completing(
            "p", 1, Completing("big", SMALL + 1, "e", "00" * 16, "ab" * 32, SMALL + 1, SMALL + 1)
        )
        small = Outcome("small", 10, "e", State.DONE, sha256="cd" * 32, dst_size=10)
        assert writer.add(small) == []
        big = Outcome("big", SMALL + 1, "e", State.DONE, sha256="ab" * 32, dst_size=SMALL + 1)
        assert writer.add(big) == [small, big]
        rows = dict(journal.db.execute("SELECT key, state FROM journal").fetchall())
        assert rows == {"small": "done", "big": "done"}
        # The completing row went with the done row, in the same transaction.
        assert journal.db.execute("SELECT count(*) FROM completing").fetchone() == (0,)


# --------------------------------------------------------------------------------------------
# Destinations and what was sent to them


@dataclass
class Destination:
    """A destination as the test sees it: daulat's config (through the proxy for S3), a
    direct config (the "provider"), and how to tell what was sent."""

    kind: str
    raw: dict[str, Any]
    direct: dict[str, Any]
    proxy: Proxy | None = None
    server: S3Server | None = None
    bucket: str = ""
    root: Path | None = None

    def settle(self) -> None:
        if self.proxy is not None:
            self.proxy.wait_idle()

    def marks(self) -> dict[str, tuple[int, object]]:
        """Every object at the destination (manifests aside): key → (size, send mark). The
        send mark changes whenever the object is sent again."""
        if self.kind == "fs":
            assert self.root is not None
            out: dict[str, tuple[int, object]] = {}
            for dirpath, dirnames, filenames in os.walk(self.root):
                if Path(dirpath) == self.root:
                    dirnames[:] = [d for d in dirnames if d not in (".daulat-tmp", ".daulat")]
                for f in filenames:
                    p = Path(dirpath) / f
                    with contextlib.suppress(FileNotFoundError):
                        st = p.stat()
                        out[str(p.relative_to(self.root))] = (
                            st.st_size,
                            (st.st_ino, st.st_mtime_ns),
                        )
            return out
        assert self.server is not None and self.proxy is not None
        sends = self.proxy.sends()
        return {
            k: (size, sends[f"{self.bucket}/{k}"])
            for k, size in list_sizes(self.server, self.bucket).items()
            if not k.startswith(MANIFESTS)
        }

    def big_count(self) -> int:
        return sum(1 for size, _ in self.marks().values() if size > SMALL)


def list_sizes(server: S3Server, bucket: str) -> dict[str, int]:
    """key → size of every object in a bucket, asked of the server directly."""
    out: dict[str, int] = {}
    token = ""
    while True:
        query = "?list-type=2&max-keys=1000" + (
            f"&continuation-token={urllib_quote(token)}" if token else ""
        )
        status, body = server.request("GET", f"/{bucket}{query}")
        assert status == 200, body[:300]
        text = body.decode()
        for m in re.finditer(r"<Contents>(.*?)</Contents>", text, re.S):
            key = html.unescape(re.search(r"<Key>(.*?)</Key>", m.group(1), re.S).group(1))  # type: ignore[union-attr]
            size = int(re.search(r"<Size>(\d+)</Size>", m.group(1)).group(1))  # type: ignore[union-attr]
            out[key] = size
        t = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", text)
        if not t:
            return out
        token = html.unescape(t.group(1))


def urllib_quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


@contextlib.contextmanager
def destination(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Destination]:
    if kind == "fs":
        root = tmp_path / "dst"
        raw = fs_store_config(root, "dst")
        yield Destination("fs", raw, raw, root=root)
        return
    server: S3Server = request.getfixturevalue("s3_server_b")
    bucket = unique("resume")
    direct = s3_store_config(server, "dst", bucket)
    with fault_proxy(server.endpoint) as proxy:
        raw = {**direct, "endpoint": proxy.endpoint}
        yield Destination("s3", raw, direct, proxy=proxy, server=server, bucket=bucket)


def write_source(root: Path, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def dataset(small: int, bigs: list[int], seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    objects = {
        f"c/{i % 17:02d}/obj-{i:05d}.bin": rng.randbytes(rng.randrange(1, 16 * 1024))
        for i in range(small)
    }
    for j, size in enumerate(bigs):
        objects[f"big/huge-{j}.bin"] = rng.randbytes(size)
    return objects


def codec_args(codec: str, tmp_path: Path) -> tuple[list[str], Path | None]:
    if codec == "plain":
        return [], None
    identity = tmp_path / "identity.txt"
    recipient = recipient_of(identity) if identity.exists() else new_identity(identity)
    args = ["--encrypt-to", recipient]
    if codec == "names":
        args.append("--encrypt-names")
    return args, identity


def run_to_end(args: list[str], workdir: Path) -> tuple[dict[str, Any], Proc]:
    proc = start_daulat(args, workdir)
    code = proc.wait(RUN_TIMEOUT)
    assert "Traceback" not in proc.err, proc.err[-3000:]
    result: dict[str, Any] = json.loads(proc.out)
    assert code == 0, (code, {k: result.get(k) for k in ("failed", "unverified", "stopped")})
    return result, proc


def check_copy(
    codec: str,
    objects: dict[str, bytes],
    dst: Destination,
    config: Path,
    identity: Path | None,
    tmp_path: Path,
) -> None:
    """The destination holds exactly the source: read back directly (plain) or restored."""
    if codec == "plain":
        got = read_config(dst.direct)
        assert set(got) == set(objects)
        bad = [k for k in objects if got[k] != objects[k]]
        assert not bad, bad[:5]
        return
    assert identity is not None
    back_root = tmp_path / "back"
    back = fs_store_config(back_root, "back")
    config.write_text(
        config.read_text() + f'\n[stores.back]\nurl = "file://{back_root}"\n'
        'provider = "local"\ncountry = "ID"\n'
    )
    pin_signer_of(config, signer_config=config)  # a restore believes pinned signers only
    code = subprocess.run(
        ["daulat", "restore", "dst", "back", "--identity", str(identity), "--config", str(config)],
        capture_output=True,
        cwd=tmp_path,
        timeout=RUN_TIMEOUT,
    )
    assert code.returncode == 0, code.stdout[-2000:] + code.stderr[-2000:]
    got = read_config(back)
    assert set(got) == set(objects)
    bad = [k for k in objects if got[k] != objects[k]]
    assert not bad, bad[:5]


def done_sha256(config: Path) -> dict[str, tuple[str, str | None]]:
    db = sqlite3.connect(journal_path(config), timeout=30)
    try:
        return {k: (s, h) for k, s, h in db.execute("SELECT key, state, sha256 FROM journal")}
    finally:
        db.close()


# --------------------------------------------------------------------------------------------
# Planted and altered objects are sent again, never adopted


async def _plant(direct: dict[str, Any], plan: Callable[[Store], Any]) -> None:
    store = open_store(StoreConfig.model_validate(direct))
    try:
        await plan(store)
    finally:
        await store.close()


@pytest.mark.parametrize(("kind", "codec"), [("fs", "plain"), ("s3", "plain"), ("s3", "names")])
def test_planted_or_altered_objects_are_sent_again(
    kind: str, codec: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """After a complete exit the journal loses its rows (as if no batch had committed); the
    "provider" then swaps proofs between objects, replays a copy of an older source version,
    appends a byte under a valid proof, damages a proof, and a streamed object has no
    ``completing`` row (sent again to an object store; a directory seals its full proof).
    Exactly those are sent again; every other object is adopted."""
    objects = dataset(60, [12 * MiB], seed=41)
    src_root = tmp_path / "src"
    write_source(src_root, objects)
    with destination(kind, tmp_path, request) as dst:
        config = write_config(tmp_path, [fs_store_config(src_root, "src"), dst.raw])
        extra, identity = codec_args(codec, tmp_path)
        args = ["exit", "src", "dst", "--config", str(config), "--json", *extra]
        first, _ = run_to_end(args, tmp_path)
        assert first["copied_objects"] == len(objects)
        db = sqlite3.connect(journal_path(config))
        stored = {
            k: (s or k) for k, s in db.execute("SELECT key, stored_as FROM journal").fetchall()
        }
        # A version the source had before: the destination keeps its (valid) copy.
        replayed = "c/03/obj-00003.bin"
        swapped, grown, damaged = "c/01/obj-00001.bin", "c/02/obj-00002.bin", "c/04/obj-00004.bin"
        big = "big/huge-0.bin"
        with db:
            db.execute("DELETE FROM journal")
            assert db.execute("SELECT count(*) FROM completing").fetchone() == (0,)
        db.close()
        time.sleep(0.02)  # a new mtime for the rewritten source file
        objects[replayed] = os.urandom(len(objects[replayed]))
        (src_root / replayed).write_bytes(objects[replayed])

        async def plant(store: Store) -> None:
            donor = await store.get(stored["c/00/obj-00000.bin"], start=0, end=0)
            for key, change in ((swapped, "swap"), (grown, "grow"), (damaged, "damage")):
                reader = await store.get(stored[key])
                body, meta = await reader.read_all(), dict(reader.metadata)
                assert PROOF_FIELD in meta
                if change == "swap":
                    meta[PROOF_FIELD] = donor.metadata[PROOF_FIELD]
                elif change == "grow":
                    body += b"\0"
                else:
                    value = meta[PROOF_FIELD]
                    meta[PROOF_FIELD] = value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB")
                await store.put(stored[key], body, metadata=meta)

        run(_plant(dst.direct, plant))
        dst.settle()
        before = dst.marks()
        second, _ = run_to_end(args, tmp_path)
        dst.settle()
        after = dst.marks()
        resent = {k for k, (_, mark) in before.items() if after[k][1] != mark}
        # A directory seals a streamed object's full proof when it commits it: the large
        # object is adopted like the small ones. Object stores fix metadata when the upload
        # begins, so without its completing row it is sent again.
        resent_keys = (swapped, grown, damaged, replayed) + ((big,) if kind != "fs" else ())
        expected = {stored[k] for k in resent_keys}
        assert resent == expected, (sorted(resent), sorted(expected))
        assert second["copied_objects"] == len(expected)
        assert second["adopted_objects"] == len(objects) - len(expected)
        assert second["verified_objects"] == len(objects)
        # Adopted rows carry the proven plaintext SHA-256, as if they had been copied.
        rows = done_sha256(config)
        assert {k: h for k, (s, h) in rows.items() if s == "done"} == {
            k: sha(v) for k, v in objects.items()
        }
        check_copy(codec, objects, dst, config, identity, tmp_path)


def test_plain_objects_are_never_adopted_into_an_encrypted_exit(tmp_path: Path) -> None:
    """A plain copy's proofs are bound to the plain codec: an encrypted exit to the same place
    sends every object again, as ciphertext."""
    objects = dataset(30, [], seed=42)
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    write_source(src_root, objects)
    config = write_config(
        tmp_path, [fs_store_config(src_root, "src"), fs_store_config(dst_root, "dst")]
    )
    run_to_end(["exit", "src", "dst", "--config", str(config), "--json"], tmp_path)
    extra, _ = codec_args("encrypt", tmp_path)
    result, _ = run_to_end(
        ["exit", "src", "dst", "--config", str(config), "--json", *extra], tmp_path
    )
    assert result["adopted_objects"] == 0
    assert result["copied_objects"] == len(objects)
    for key in objects:
        assert (dst_root / key).read_bytes().startswith(b"age-encryption.org/v1")


# --------------------------------------------------------------------------------------------
# A large object killed between completing at the provider and its journal commit

_KILLER = r"""
import asyncio, os, signal, sys
from pathlib import Path
import daulat.transfer as t
from daulat.config import load_config
from daulat.crypto import load_identities, parse_recipients
from daulat.transfer.engine import Kind, Options

class KillAfterLargePut:
    # Delegates to the real store; dies by SIGKILL the moment a large put has returned.
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    @property
    def name(self):
        return self.inner.name
    @property
    def capabilities(self):
        return self.inner.capabilities
    def list(self, prefix=""):
        return self.inner.list(prefix)
    async def head(self, key):
        return await self.inner.head(key)
    async def get(self, key, **kw):
        return await self.inner.get(key, **kw)
    async def delete(self, key):
        return await self.inner.delete(key)
    async def close(self):
        return await self.inner.close()
    async def put(self, key, data, **kw):
        result = await self.inner.put(key, data, **kw)
        if result.size > 8 * 1024 * 1024:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    async def put_resumable(self, key, data, **kw):
        # Large objects to stores that can continue uploads go this way (daulat.transfer.resume).
        result = await self.inner.put_resumable(key, data, **kw)
        if result.size > 8 * 1024 * 1024:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

original = t.open_store
t.open_store = lambda cfg: KillAfterLargePut(original(cfg)) if cfg.name == "dst" else original(cfg)
config = load_config(Path(sys.argv[1]))
if sys.argv[2] == "restore":
    opts = Options(decrypt_with=load_identities(sys.argv[3]))
    asyncio.run(t.run_transfer(config, Kind.RESTORE, "vault", "dst", opts))
else:
    recipients = parse_recipients(sys.argv[3:]) if sys.argv[3:] else []
    opts = Options(encrypt_to=recipients, encrypt_names=sys.argv[2] == "names")
    asyncio.run(t.run_transfer(config, Kind.EXIT, "src", "dst", opts))
"""


@pytest.mark.parametrize(
    ("kind", "codec"), [("fs", "plain"), ("fs", "encrypt"), ("s3", "plain"), ("s3", "names")]
)
def test_large_object_complete_at_the_kill_is_adopted(
    kind: str, codec: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGKILL right after a streamed object's upload completed, before its journal commit:
    the re-run adopts it (no upload) with the SHA-256 committed before the upload completed."""
    objects = dataset(40, [20 * MiB], seed=43)
    big = "big/huge-0.bin"
    src_root = tmp_path / "src"
    write_source(src_root, objects)
    with destination(kind, tmp_path, request) as dst:
        config = write_config(tmp_path, [fs_store_config(src_root, "src"), dst.raw])
        extra, identity = codec_args(codec, tmp_path)
        recipients = extra[1:2]
        child = subprocess.run(
            [sys.executable, "-c", _KILLER, str(config), codec, *recipients],
            capture_output=True,
            cwd=tmp_path,
            timeout=RUN_TIMEOUT,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        dst.settle()
        before = dst.marks()
        bigs = {k for k, (size, _) in before.items() if size > SMALL}
        assert len(bigs) == 1, before
        db = sqlite3.connect(journal_path(config))
        try:
            row = db.execute(
                "SELECT sha256, plain_size FROM completing WHERE key = ?", (big,)
            ).fetchone()
            state = db.execute("SELECT state FROM journal WHERE key = ?", (big,)).fetchone()
        finally:
            db.close()
        assert row == (sha(objects[big]), len(objects[big]))
        assert state is None, "the kill was meant to land before the big object's commit"
        result, _ = run_to_end(
            ["exit", "src", "dst", "--config", str(config), "--json", *extra], tmp_path
        )
        dst.settle()
        after = dst.marks()
        (stored_big,) = bigs
        assert after[stored_big][1] == before[stored_big][1], "the large object was sent again"
        resent = {k for k, (_, mark) in before.items() if after[k][1] != mark}
        assert not resent, sorted(resent)[:5]
        assert result["adopted_objects"] >= 1
        assert result["verified_objects"] == len(objects)
        rows = done_sha256(config)
        assert rows[big] == ("done", sha(objects[big]))
        db = sqlite3.connect(journal_path(config))
        try:
            assert db.execute("SELECT count(*) FROM completing").fetchone() == (0,)
        finally:
            db.close()
        check_copy(codec, objects, dst, config, identity, tmp_path)


def test_restore_large_object_complete_at_the_kill_is_adopted(tmp_path: Path) -> None:
    """The same for a restore (age ciphertext → plaintext, checked against the manifest): the
    large object restored before the kill is adopted, not written again."""
    objects = dataset(30, [16 * MiB], seed=44)
    big = "big/huge-0.bin"
    src_root, vault_root, dst_root = tmp_path / "src", tmp_path / "vault", tmp_path / "dst"
    write_source(src_root, objects)
    dst = Destination("fs", fs_store_config(dst_root, "dst"), {}, root=dst_root)
    config = write_config(
        tmp_path,
        [fs_store_config(src_root, "src"), fs_store_config(vault_root, "vault"), dst.raw],
    )
    extra, identity = codec_args("encrypt", tmp_path)
    assert identity is not None
    run_to_end(["exit", "src", "vault", "--config", str(config), "--json", *extra], tmp_path)
    pin_signer_of(config, signer_config=config)  # a restore believes pinned signers only
    child = subprocess.run(
        [sys.executable, "-c", _KILLER, str(config), "restore", str(identity)],
        capture_output=True,
        cwd=tmp_path,
        timeout=RUN_TIMEOUT,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    before = dst.marks()
    assert before[big][0] == len(objects[big])
    restore = ["restore", "vault", "dst", "--identity", str(identity), "--config", str(config)]
    result, _ = run_to_end([*restore, "--json"], tmp_path)
    after = dst.marks()
    resent = {k for k, (_, mark) in before.items() if after[k][1] != mark}
    assert not resent, sorted(resent)[:5]
    assert result["adopted_objects"] >= 1
    assert {k: (dst_root / k).read_bytes() for k in objects} == objects


# --------------------------------------------------------------------------------------------
# Kills at random moments: what was complete at a kill is (almost) never sent again


@dataclass
class Tally:
    complete: set[str] = field(default_factory=set)
    resent: set[str] = field(default_factory=set)
    big_complete: set[str] = field(default_factory=set)
    big_resent: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)


def kill_at_random(
    args: list[str],
    workdir: Path,
    dst: Destination,
    *,
    kills: int,
    bwlimit: str,
    seed: int,
) -> tuple[list[dict[str, tuple[int, object]]], list[str]]:
    """Run ``args`` and SIGKILL it ``kills`` times: from the start after a random delay, after
    a random delay once something new landed, or right after a large object landed (the
    moment a large object's commit is most at risk). Returns the destination's marks right
    after each kill, and a log."""
    rng = random.Random(seed)
    snapshots: list[dict[str, tuple[int, object]]] = []
    log = [f"seed={seed}"]
    for i in range(kills):
        how = ("start", "landed", "big")[i % 3]
        before = dst.marks()
        proc = start_daulat([*args, "--bwlimit", bwlimit], workdir)
        try:
            until = time.monotonic() + 90
            if how == "landed":
                while len(dst.marks()) <= len(before) and proc.popen.poll() is None:
                    assert time.monotonic() < until, log
                    time.sleep(0.05)
                delay = rng.uniform(0.1, 2.0)
            elif how == "big":
                bigs = sum(1 for s, _ in before.values() if s > SMALL)
                while dst.big_count() <= bigs and proc.popen.poll() is None:
                    assert time.monotonic() < until, log
                    time.sleep(0.02)
                delay = rng.uniform(0.0, 0.3)
            else:
                delay = rng.uniform(0.5, 4.0)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.popen.poll() is None:
                time.sleep(0.01)
            ended = proc.popen.poll()
        finally:
            # Also when a wait above fails: a run left behind outlives its servers and
            # retries for hours.
            proc.kill()
        dst.settle()
        snap = dst.marks()
        snapshots.append(snap)
        log.append(
            f"run {i + 1}: {'ended, code ' + str(ended) if ended is not None else 'killed'} "
            f"{delay:.2f} s after {how}; {len(snap)} objects at the destination"
        )
    return snapshots, log


# Every codec on a directory, and plain and protected names on S3. S3 with encryption alone
# is left out: the names case sends the same ciphertext through the same proxy and adoption
# path, with the name mapping on top, and an S3 case costs over a minute of CPU.
@pytest.mark.parametrize(
    ("kind", "codec"),
    [
        ("s3", "plain"),
        ("s3", "names"),
        ("fs", "plain"),
        ("fs", "encrypt"),
        ("fs", "names"),
    ],
)
def test_kill_9_at_random_sends_again_almost_nothing(
    kind: str, codec: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """2,000 small objects and 20, 28 and 36 MiB ones, killed 6 times at random moments,
    then run to the end: at most 1 % of the objects complete at a kill are sent again, none
    over 8 MiB, and the destination holds exactly the source."""
    seed = _seed()
    objects = dataset(2000, [20 * MiB, 28 * MiB, 36 * MiB], seed=seed % 1000)
    src_root = tmp_path / "src"
    write_source(src_root, objects)
    with destination(kind, tmp_path, request) as dst:
        config = write_config(tmp_path, [fs_store_config(src_root, "src"), dst.raw])
        extra, identity = codec_args(codec, tmp_path)
        args = ["exit", "src", "dst", "--config", str(config), "--json", *extra]
        snapshots, log = kill_at_random(args, tmp_path, dst, kills=6, bwlimit="12M", seed=seed)
        result, _ = run_to_end(args, tmp_path)
        dst.settle()
        final = dst.marks()
        tally = Tally(log=log)
        for snap in snapshots:
            for key, (size, mark) in snap.items():
                tally.complete.add(key)
                if size > SMALL:
                    tally.big_complete.add(key)
                if final[key][1] != mark:
                    tally.resent.add(key)
                    if size > SMALL:
                        tally.big_resent.add(key)
        summary = (
            f"{kind}/{codec}: {len(tally.complete)} objects complete at a kill, "
            f"{len(tally.resent)} sent again ({len(tally.big_complete)} over 8 MiB, "
            f"{len(tally.big_resent)} of them sent again); last run adopted "
            f"{result['adopted_objects']}, copied {result['copied_objects']}"
        )
        print("\n".join([*log, summary]))
        mid = [s for s in snapshots if 0 < len(s) < len(objects)]
        assert mid, (log, "no kill landed while objects were being copied")
        assert tally.complete, log
        assert not tally.big_resent, (summary, log)
        assert len(tally.resent) <= 0.01 * len(tally.complete), (
            summary,
            sorted(tally.resent)[:10],
            log,
        )
        assert result["verified_objects"] == len(objects), summary
        check_copy(codec, objects, dst, config, identity, tmp_path)


# --------------------------------------------------------------------------------------------
# Hostile review 2, finding 1: a kill -9 after the destination was emptied once


def test_kill_9_into_an_emptied_directory_adopts_what_was_complete(tmp_path: Path) -> None:
    """A complete exit, then the destination directory is emptied (rm -rf), then an exit to it
    is killed mid-way: the journal still holds the first exit's done rows (same source
    versions, other destination ETags) for the objects whose new rows were not committed yet.
    The rerun adopts them by their proofs (written by the killed run) instead of sending them
    again: at most 1 % of what was complete at the kill is sent again."""
    objects = dataset(1500, [], seed=45)
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    write_source(src_root, objects)
    raw = fs_store_config(dst_root, "dst")
    dst = Destination("fs", raw, raw, root=dst_root)
    config = write_config(tmp_path, [fs_store_config(src_root, "src"), dst.raw])
    args = ["exit", "src", "dst", "--config", str(config), "--json"]
    run_to_end(args, tmp_path)
    log: list[str] = []
    for attempt in range(4):
        shutil.rmtree(dst_root)
        proc = start_daulat([*args, "--bwlimit", "1M"], tmp_path)
        until = time.monotonic() + 90
        while len(dst.marks()) < 200 + 100 * attempt and proc.popen.poll() is None:
            assert time.monotonic() < until, proc.err[-2000:]
            time.sleep(0.02)
        ended = proc.popen.poll()
        proc.kill()
        at_kill = dst.marks()
        db = sqlite3.connect(journal_path(config))
        try:
            (killed,) = db.execute("SELECT max(id) FROM runs").fetchone()
            committed = {
                k
                for (k,) in db.execute(
                    "SELECT key FROM journal WHERE run_id = ? AND state = 'done'", (killed,)
                )
            }
        finally:
            db.close()
        uncommitted = set(at_kill) - committed
        log.append(
            f"attempt {attempt}: ended {ended}, {len(at_kill)} at the kill, "
            f"{len(uncommitted)} not committed"
        )
        if ended is None and len(uncommitted) >= 20:
            break
    else:
        pytest.fail(f"no kill left complete objects without their journal rows: {log}")
    result, _ = run_to_end(args, tmp_path)
    after = dst.marks()
    resent = {k for k, (_, mark) in at_kill.items() if after[k][1] != mark}
    assert len(resent) <= 0.01 * len(at_kill), (len(resent), sorted(resent)[:5], log)
    assert result["adopted_objects"] >= len(uncommitted) - len(resent), (result, log)
    assert result["verified_objects"] == len(objects)
    check_copy("plain", objects, dst, config, None, tmp_path)


# --------------------------------------------------------------------------------------------
# Hostile review 2, finding 2: large objects after a lost journal


@pytest.mark.parametrize("codec", ["plain", "encrypt"])
def test_lost_journal_adopts_large_objects_in_a_directory(codec: str, tmp_path: Path) -> None:
    """A complete exit into a directory, then the journal is lost (the proof key kept): the
    rerun adopts every object, the streamed ones over 8 MiB too (their full proof is sealed
    into the extended attributes when the file is committed), and sends nothing again."""
    objects = dataset(20, [12 * MiB, 9 * MiB], seed=46)
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    write_source(src_root, objects)
    raw = fs_store_config(dst_root, "dst")
    dst = Destination("fs", raw, raw, root=dst_root)
    config = write_config(tmp_path, [fs_store_config(src_root, "src"), dst.raw])
    extra, identity = codec_args(codec, tmp_path)
    args = ["exit", "src", "dst", "--config", str(config), "--json", *extra]
    run_to_end(args, tmp_path)
    before = dst.marks()
    for path in journal_path(config).parent.glob(journal_path(config).name + "*"):
        path.unlink()
    if identity is not None:
        # The journal that had seen the encrypted manifest is gone: it is read to carry on.
        args += ["--identity", str(identity)]
    result, _ = run_to_end(args, tmp_path)
    after = dst.marks()
    resent = sorted(k for k, (_, mark) in before.items() if after[k][1] != mark)
    assert not resent, resent
    assert result["copied_objects"] == 0 and result["copied_bytes"] == 0, result
    assert result["adopted_objects"] == len(objects)
    assert result["verified_objects"] == len(objects)
    rows = done_sha256(config)
    assert {k: h for k, (_, h) in rows.items()} == {k: sha(v) for k, v in objects.items()}
    check_copy(codec, objects, dst, config, identity, tmp_path)
    big = dst_root / "big" / "huge-0.bin"
    proof = os.getxattr(big, "user.daulat." + PROOF_FIELD).decode()
    assert proof.startswith("3s."), proof
    names = set(os.listxattr(big))
    assert ("user.daulat.sha256" in names) == (codec == "plain"), names


def test_server_side_copies_carry_no_proof_and_are_copied_again(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Within one S3 endpoint ``copy`` copies server-side: daulat never reads the source bytes,
    so it puts no proof on the copy (what the threat model says). Its journal still records
    the copy's SHA-256 (read back), and once those rows are lost the objects are copied again
    server-side, never adopted."""
    bucket = unique("ssc")
    rsrc = s3_store_config(s3_server, "rsrc", bucket, "src/")
    rdst = s3_store_config(s3_server, "rdst", bucket, "dst/")
    objects = {"o/a": b"alpha" * 10, "o/b": b"bravo" * 10}

    async def fill(store: Store) -> None:
        for key, data in objects.items():
            await store.put("src/" + key, data)

    direct = {**rsrc, "url": f"s3://{bucket}"}
    run(_plant(direct, fill))
    config = write_config(tmp_path, [rsrc, rdst])
    c = ["-c", str(config)]
    res = cli(["copy", "rsrc", "rdst", "--json", *c], capsys)
    assert res.code == 0 and res.json["copied_objects"] == 2, res.explain()
    rows = done_sha256(config)
    assert {k: h for k, (_, h) in rows.items()} == {k: sha(v) for k, v in objects.items()}

    async def look(store: Store) -> None:
        for key in objects:
            reader = await store.get("dst/" + key, start=0, end=0)
            assert PROOF_FIELD not in reader.metadata, dict(reader.metadata)

    run(_plant(direct, look))
    with sqlite3.connect(journal_path(config)) as db:
        db.execute("DELETE FROM journal")
    db.close()
    res = cli(["copy", "rsrc", "rdst", "--json", *c], capsys)
    assert res.code == 0 and res.json["copied_objects"] == 2, res.explain()
    assert res.json["adopted_objects"] == 0
