"""Tests of daulat.crypto: key files, recipients, small-object and streaming age encryption.

Interoperability tests run the real ``age`` CLI (Debian package ``age``); they fail, not skip,
when it is missing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pyrage  # type: ignore[import-untyped]
import pytest

from daulat import crypto
from daulat.crypto import (
    NO_MATCHING_IDENTITY,
    DecryptError,
    Identity,
    KeyFileError,
    Recipient,
    RecipientError,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    header_size,
    load_identities,
    new_identity,
    parse_recipient,
    parse_recipients,
    payload_size,
    plaintext_size,
    recipient_of,
)

MiB = 1024 * 1024
T = TypeVar("T")
INSTALL_HINT = "the age CLI is required for these tests: apt-get install age"
STREAM_THREAD_NAMES = {"daulat-age-encrypt", "daulat-age-decrypt"}
# The package's modules (keys, streams, ...): their frames must not keep secrets in locals.
CRYPTO_DIR = Path(crypto.__file__).parent


# ------------------------------------------------------------------------------------ helpers


def run(coro_factory: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run a coroutine on a fresh loop with a hard timeout (a hang fails instead of blocking)."""

    async def main() -> T:
        return await asyncio.wait_for(coro_factory(), timeout)

    return asyncio.run(main())


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def encrypt_all(data: bytes, recipients: list[Recipient], in_chunk: int = 100_000) -> bytes:
    return b"".join(run(lambda: collect(encrypt_stream(chunked(data, in_chunk), recipients))))


def decrypt_all(data: bytes, identities: list[Identity], in_chunk: int = 100_000) -> bytes:
    return b"".join(run(lambda: collect(decrypt_stream(chunked(data, in_chunk), identities))))


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in STREAM_THREAD_NAMES and t.is_alive()]


def wait_no_stream_threads(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream_threads() == [], "a stream worker thread is still running"


def secret_of(key_file: Path) -> str:
    lines = [ln for ln in key_file.read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-1")]
    assert len(lines) == 1
    return lines[0]


def assert_no_secret(text: str, secret: str) -> None:
    """Neither the secret nor any 12-character piece of its data part appears in ``text``."""
    assert secret not in text
    assert secret.lower() not in text
    data_part = secret[len("AGE-SECRET-KEY-1") :]
    for start in range(0, len(data_part) - 12):
        piece = data_part[start : start + 12]
        assert piece not in text and piece.lower() not in text, "secret key material leaked"


def assert_traceback_has_no_secret(exc: BaseException, secret: str) -> None:
    """The formatted traceback, and the locals of daulat.crypto's frames it keeps (any module
    of the package), hold no secret.

    (Rich/Typer tracebacks can print frame locals, so those must be clean too.)
    """
    assert_no_secret("".join(traceback.format_exception(exc)), secret)
    assert_no_secret(repr(exc), secret)
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if Path(frame.f_code.co_filename).parent == CRYPTO_DIR:
            for name, value in frame.f_locals.items():
                if isinstance(value, (str, bytes)):
                    text = value if isinstance(value, str) else value.decode("latin-1")
                    assert secret.lower() not in text.lower(), f"secret in local {name!r}"
        tb = tb.tb_next


def age_tool(name: str) -> str:
    """Path of an age CLI tool; a missing tool fails the calling test (it is a requirement)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "daulat.key"
    new_identity(path)
    return path


@pytest.fixture
def identity(key_file: Path) -> Identity:
    return load_identities(key_file)[0]


# ------------------------------------------------------------------------------ identity files


def test_new_identity_writes_age_keygen_format_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    old_umask = os.umask(0)  # even with a permissive umask the file must be private
    try:
        recipient = new_identity(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", lines[0])
    assert lines[1] == f"# public key: {recipient}"
    assert re.fullmatch(r"AGE-SECRET-KEY-1[0-9A-Z]{58}", lines[2])
    assert re.fullmatch(r"age1[0-9a-z]{58}", recipient)
    assert recipient_of(path) == recipient
    assert str(load_identities(path)[0].recipient) == recipient


def test_new_identity_file_is_read_by_age_keygen(key_file: Path) -> None:
    age_keygen_bin = age_tool("age-keygen")
    result = subprocess.run(
        [age_keygen_bin, "-y", str(key_file)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == recipient_of(key_file)


def test_new_identity_creates_with_0600_not_chmod_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        calls.append((flags, mode))
        return real_open(path, flags, mode, **kw)

    def no_chmod(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the key file must be created private, not chmod-ed afterwards")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    new_identity(tmp_path / "k")
    flags, mode = calls[0]
    assert mode == 0o600
    assert flags & os.O_CREAT and flags & os.O_EXCL


def test_new_identity_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    first = new_identity(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite") as info:
        new_identity(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert recipient_of(path) == first


def test_new_identity_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "key.txt"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        new_identity(link)
    assert not target.exists()


def test_new_identity_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create key file"):
        new_identity(tmp_path / "no" / "such" / "dir" / "key.txt")


def test_load_identities_accepts_comments_blank_lines_and_several_keys(tmp_path: Path) -> None:
    one, two = Identity.generate(), Identity.generate()
    path = tmp_path / "keys.txt"
    path.write_text(
        "# a comment\r\n\r\n"
        f"  {one._secret_text()}  \r\n"
        "   # indented comment\n\n"
        f"{two._secret_text().lower()}\n",
        encoding="utf-8",
    )
    loaded = load_identities(path)
    assert [str(i.recipient) for i in loaded] == [str(one.recipient), str(two.recipient)]
    assert recipient_of(path) == str(one.recipient)


def test_load_identities_reads_age_keygen_files(tmp_path: Path) -> None:
    age_keygen_bin = age_tool("age-keygen")
    path = tmp_path / "keygen.txt"
    subprocess.run([age_keygen_bin, "-o", str(path)], capture_output=True, check=True)
    expected = subprocess.run(
        [age_keygen_bin, "-y", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert recipient_of(path) == expected


def test_load_identities_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError, match="does not exist") as info:
        load_identities(path)
    assert str(path) in str(info.value)


def test_load_identities_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is a directory"):
        load_identities(tmp_path)


def test_load_identities_unreadable_file(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the tests may run as root, who can read a file whatever its mode.
    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(KeyFileError, match="permission denied") as info:
        load_identities(key_file)
    assert str(key_file) in str(info.value)

    def io_error(self: Path) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", io_error)
    with pytest.raises(KeyFileError, match="Input/output error"):
        load_identities(key_file)


def test_load_identities_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.key"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KeyFileError, match="not a text file"):
        load_identities(path)


def test_load_identities_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.key"
    path.write_text("# only a comment\n\n")
    with pytest.raises(KeyFileError, match="contains no age identity"):
        load_identities(path)


def test_malformed_key_file_error_does_not_echo_the_secret(tmp_path: Path) -> None:
    real = Identity.generate()._secret_text()
    # Damage one character in the middle: the bech32 checksum no longer matches.
    pos = len(real) // 2
    damaged = real[:pos] + ("Q" if real[pos] != "Q" else "P") + real[pos + 1 :]
    path = tmp_path / "bad.key"
    path.write_text(f"# created: today\n# public key: age1whatever\n{damaged}\n")
    with pytest.raises(KeyFileError) as info:
        load_identities(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert_no_secret(message, damaged)
    assert_traceback_has_no_secret(info.value, damaged)


def test_malformed_line_after_a_valid_key_is_reported_without_content(
    key_file: Path,
) -> None:
    secret = secret_of(key_file)
    with key_file.open("a") as fh:
        fh.write(secret[:-5] + "\n")  # a truncated copy of the secret
    with pytest.raises(KeyFileError, match="line 4 is not a valid age identity") as info:
        load_identities(key_file)
    assert_no_secret(str(info.value), secret)
    assert_traceback_has_no_secret(info.value, secret)


def test_unsupported_identity_kinds_are_named(tmp_path: Path) -> None:
    pem = tmp_path / "id_ed25519"
    pem.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="SSH or PEM"):
        load_identities(pem)
    plugin = tmp_path / "plugin.key"
    plugin.write_text("AGE-PLUGIN-YUBIKEY-1QQQQQQ\n")
    with pytest.raises(KeyFileError, match="plugin identities are not supported"):
        load_identities(plugin)


def test_identity_from_str_error_hides_value() -> None:
    secret = Identity.generate()._secret_text()
    with pytest.raises(KeyFileError) as info:
        Identity.from_str(secret[:-1])
    assert_no_secret(str(info.value), secret)
    assert_traceback_has_no_secret(info.value, secret)
    parsed = Identity.from_str(secret)
    assert parsed._secret_text() == secret


def test_identity_repr_and_str_do_not_reveal_the_secret(key_file: Path) -> None:
    identity = load_identities(key_file)[0]
    secret = secret_of(key_file)
    for text in (repr(identity), str(identity), f"{identity}", repr([identity])):
        assert_no_secret(text, secret)
        assert str(identity.recipient) in text
    with pytest.raises(TypeError):
        pickle.dumps(identity)


# -------------------------------------------------------------------------------- recipients


def test_parse_recipients_accepts_and_dedupes(key_file: Path) -> None:
    rec = recipient_of(key_file)
    other = str(Identity.generate().recipient)
    parsed = parse_recipients([rec, f"  {other}\n", rec])
    assert [str(r) for r in parsed] == [rec, other]
    assert parse_recipients(rec) == [parse_recipient(rec)]
    assert repr(parsed[0]) == f"Recipient({rec!r})"


def test_parse_recipients_names_the_bad_one(key_file: Path) -> None:
    good = recipient_of(key_file)
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")
    with pytest.raises(RecipientError) as info:
        parse_recipients([good, bad])
    assert bad in str(info.value)
    with pytest.raises(RecipientError, match="'age1nope'"):
        parse_recipients(["age1nope"])
    with pytest.raises(RecipientError, match="SSH keys are not supported"):
        parse_recipients(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq user@host"])
    with pytest.raises(RecipientError, match="no age recipients"):
        parse_recipients([])
    with pytest.raises(RecipientError, match="empty"):
        parse_recipients([" "])


def test_secret_key_given_as_recipient_is_not_echoed(key_file: Path) -> None:
    secret = secret_of(key_file)
    for value in (secret, secret.lower(), f" {secret}\n"):
        with pytest.raises(RecipientError, match="secret key") as info:
            parse_recipients([value])
        assert_no_secret(str(info.value), secret)
        assert_traceback_has_no_secret(info.value, secret)


# ---------------------------------------------------------------------------- small objects


def test_bytes_round_trip(identity: Identity) -> None:
    for data in (b"", b"x", os.urandom(65536), os.urandom(65537), os.urandom(300_000)):
        ct = encrypt_bytes(data, [identity.recipient])
        assert ct.startswith(b"age-encryption.org/v1\n")
        assert decrypt_bytes(ct, [identity]) == data
        assert len(ct) == header_size(ct) + payload_size(len(data))
    ct = encrypt_bytes(bytearray(b"abc"), [identity.recipient])
    assert decrypt_bytes(memoryview(ct), [identity]) == b"abc"


def test_bytes_wrong_identity(key_file: Path, tmp_path: Path) -> None:
    other_file = tmp_path / "other.key"
    new_identity(other_file)
    ct = encrypt_bytes(b"hello", parse_recipients([recipient_of(key_file)]))
    with pytest.raises(DecryptError) as info:
        decrypt_bytes(ct, load_identities(other_file))
    assert str(info.value) == NO_MATCHING_IDENTITY
    assert not isinstance(info.value, pyrage.DecryptError)
    for path in (key_file, other_file):
        assert_no_secret(str(info.value), secret_of(path))
        assert_traceback_has_no_secret(info.value, secret_of(path))


def test_bytes_corrupt_and_truncated(identity: Identity) -> None:
    ct = bytearray(encrypt_bytes(os.urandom(200_000), [identity.recipient]))
    for bad in (bytes(ct[:-1]), bytes(ct[:100]), b"not age at all"):
        with pytest.raises(DecryptError, match="not an intact age file"):
            decrypt_bytes(bad, [identity])
    ct[len(ct) // 2] ^= 1
    with pytest.raises(DecryptError, match="not an intact age file"):
        decrypt_bytes(bytes(ct), [identity])


def test_encrypt_requires_recipients_and_identities(identity: Identity) -> None:
    with pytest.raises(RecipientError):
        encrypt_bytes(b"x", [])
    with pytest.raises(TypeError, match="parse_recipients"):
        encrypt_bytes(b"x", ["age1notparsed"])  # type: ignore[list-item]
    with pytest.raises(DecryptError, match="no identity"):
        decrypt_bytes(b"x", [])


# ------------------------------------------------------------------------------------ sizes


def test_payload_and_plaintext_size() -> None:
    assert payload_size(0) == 32
    assert payload_size(1) == 33
    assert payload_size(65536) == 16 + 65536 + 16
    assert payload_size(65537) == 16 + 65537 + 32
    for n in (0, 1, 65535, 65536, 65537, 131072, 131073, 10**9):
        assert plaintext_size(payload_size(n)) == n
    for bad in (0, 31, 16 + 65552 + 5):
        with pytest.raises(ValueError):
            plaintext_size(bad)
    with pytest.raises(ValueError):
        header_size(b"age-encryption.org/v1\n-> X25519 abc\n")
    with pytest.raises(ValueError):
        header_size(b"-----BEGIN AGE ENCRYPTED FILE-----")


# ---------------------------------------------------------------------------------- streams


@pytest.mark.parametrize(
    ("size", "in_chunk"),
    [(0, 1), (1, 1), (5000, 7), (65536, 65536), (65537, 1000), (3 * MiB + 5, 300_001)],
)
def test_stream_round_trip(identity: Identity, size: int, in_chunk: int) -> None:
    data = os.urandom(size)
    out_chunks = run(lambda: collect(encrypt_stream(chunked(data, in_chunk), [identity.recipient])))
    ct = b"".join(out_chunks)
    assert all(len(c) >= crypto.DEFAULT_CHUNK_SIZE for c in out_chunks[:-1])
    assert len(ct) == header_size(out_chunks[0]) + payload_size(size)
    assert decrypt_bytes(ct, [identity]) == data
    plain_chunks = run(lambda: collect(decrypt_stream(chunked(ct, in_chunk), [identity])))
    assert all(len(c) >= crypto.DEFAULT_CHUNK_SIZE for c in plain_chunks[:-1])
    assert b"".join(plain_chunks) == data
    wait_no_stream_threads()


def test_stream_small_chunk_size_option(identity: Identity) -> None:
    data = os.urandom(1_000_000)

    async def go() -> list[bytes]:
        stream = encrypt_stream(
            chunked(data, 4096), [identity.recipient], chunk_size=100_000, max_buffer=300_000
        )
        return [c async for c in stream]

    chunks = run(go)
    assert len(chunks) > 5
    assert all(len(c) >= 100_000 for c in chunks[:-1])
    assert decrypt_bytes(b"".join(chunks), [identity]) == data


def test_stream_copies_reused_mutable_buffers(identity: Identity) -> None:
    pieces = [os.urandom(50_000) for _ in range(40)]

    async def reusing_source() -> AsyncIterator[bytes]:
        buf = bytearray(50_000)
        for piece in pieces:
            buf[:] = piece
            yield buf  # type: ignore[misc]  # the same mutable buffer every time
            await asyncio.sleep(0)

    ct = b"".join(run(lambda: collect(encrypt_stream(reusing_source(), [identity.recipient]))))
    assert decrypt_bytes(ct, [identity]) == b"".join(pieces)


def test_stream_to_several_recipients(tmp_path: Path) -> None:
    keys = [tmp_path / f"k{i}" for i in range(3)]
    recipients = parse_recipients([new_identity(k) for k in keys])
    data = os.urandom(2 * MiB + 11)
    ct = encrypt_all(data, recipients)
    for k in keys:
        assert decrypt_all(ct, load_identities(k)) == data


def test_stream_wrong_identity(identity: Identity, tmp_path: Path) -> None:
    other_file = tmp_path / "other.key"
    new_identity(other_file)
    ct = encrypt_all(os.urandom(3 * MiB), [identity.recipient])
    with pytest.raises(DecryptError) as info:
        decrypt_all(ct, load_identities(other_file))
    assert str(info.value) == NO_MATCHING_IDENTITY
    assert not isinstance(info.value, pyrage.DecryptError)
    for secret in (secret_of(other_file), identity._secret_text()):
        assert_no_secret(str(info.value), secret)
        assert_traceback_has_no_secret(info.value, secret)
    wait_no_stream_threads()


def test_stream_truncated_and_corrupted(identity: Identity) -> None:
    data = os.urandom(3 * MiB)
    ct = encrypt_all(data, [identity.recipient])
    header = header_size(ct)
    one_chunk = crypto.AGE_CHUNK_SIZE + 16
    truncated_at_chunk = ct[: header + 16 + 10 * one_chunk]
    flipped = bytearray(ct)
    flipped[len(ct) // 2] ^= 0x40
    for bad in (ct[:-1], truncated_at_chunk, bytes(flipped), ct[: header - 3]):
        with pytest.raises(DecryptError, match="not an intact age file"):
            decrypt_all(bad, [identity])
    wait_no_stream_threads()


def test_stream_output_before_damage_is_authentic(identity: Identity) -> None:
    data = os.urandom(3 * MiB)
    ct = bytearray(encrypt_all(data, [identity.recipient]))
    ct[-100] ^= 1  # damage in the last chunk

    async def go() -> tuple[bytes, BaseException | None]:
        got = bytearray()
        try:
            async for chunk in decrypt_stream(chunked(bytes(ct), MiB), [identity]):
                got += chunk
        except DecryptError as exc:
            return bytes(got), exc
        return bytes(got), None

    got, error = run(go)
    assert isinstance(error, DecryptError)
    assert data.startswith(got)  # what was yielded is a verified prefix, never garbage


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_source_error_reaches_the_consumer(identity: Identity, direction: str) -> None:
    boom = RuntimeError("the download broke")
    ct = encrypt_all(os.urandom(4 * MiB), [identity.recipient])

    async def failing_source() -> AsyncIterator[bytes]:
        yield ct[: 2 * MiB]
        await asyncio.sleep(0.01)
        raise boom

    async def go() -> None:
        stream = (
            encrypt_stream(failing_source(), [identity.recipient])
            if direction == "encrypt"
            else decrypt_stream(failing_source(), [identity])
        )
        async for _ in stream:
            pass

    with pytest.raises(RuntimeError) as info:
        run(go)
    assert info.value is boom
    wait_no_stream_threads()


def test_source_of_wrong_type(identity: Identity) -> None:
    async def bad_source() -> AsyncIterator[Any]:
        yield "text, not bytes"

    with pytest.raises(TypeError, match="bytes-like"):
        run(lambda: collect(encrypt_stream(bad_source(), [identity.recipient])))
    wait_no_stream_threads()


async def endless(chunk: int, pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    while True:
        if pulled is not None:
            pulled[0] += len(block)
        yield block
        await asyncio.sleep(0)


@pytest.mark.timeout(60)
def test_early_aclose_stops_worker_and_source(identity: Identity) -> None:
    async def go() -> bool:
        finished = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            try:
                async for block in endless(256 * 1024):
                    yield block
            finally:
                finished.set()

        stream = encrypt_stream(source(), [identity.recipient])
        first = await anext(stream)
        assert len(first) >= MiB
        await stream.aclose()
        await asyncio.wait_for(finished.wait(), 5)
        return True

    assert run(go, timeout=20)
    wait_no_stream_threads()


@pytest.mark.timeout(60)
def test_break_without_aclose_does_not_hang(identity: Identity) -> None:
    async def go() -> int:
        n = 0
        async for _chunk in decrypt_stream(
            encrypt_stream(endless(MiB), [identity.recipient]), [identity]
        ):
            n += 1
            if n == 3:
                break
        gc.collect()
        for _ in range(50):  # the loop's async-generator finalizer closes the streams
            await asyncio.sleep(0.01)
        return n

    assert run(go, timeout=20) == 3
    wait_no_stream_threads()


@pytest.mark.timeout(60)
def test_consumer_cancellation_stops_worker(identity: Identity) -> None:
    async def go() -> None:
        got = asyncio.Event()

        async def consume() -> None:
            async for _chunk in encrypt_stream(endless(MiB), [identity.recipient]):
                got.set()
                await asyncio.sleep(3600)  # a stuck upload

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    run(go, timeout=30)
    wait_no_stream_threads()


@pytest.mark.timeout(60)
def test_early_exit_while_source_is_stalled(identity: Identity) -> None:
    async def go() -> None:
        never = asyncio.Event()

        async def stalling() -> AsyncIterator[bytes]:
            yield os.urandom(3 * MiB)
            await never.wait()  # the upstream stops sending, forever
            yield b"unreachable"

        stream = encrypt_stream(stalling(), [identity.recipient])
        await anext(stream)
        await asyncio.wait_for(stream.aclose(), 10)

    run(go, timeout=30)
    wait_no_stream_threads()


@pytest.mark.timeout(60)
def test_back_pressure_bounds_what_is_pulled_from_the_source(identity: Identity) -> None:
    max_buffer = 4 * MiB

    async def go() -> int:
        pulled = [0]
        stream = encrypt_stream(
            endless(256 * 1024, pulled), [identity.recipient], max_buffer=max_buffer
        )
        await anext(stream)
        await asyncio.sleep(0.5)  # a consumer that does not keep up
        seen = pulled[0]
        await asyncio.sleep(0.5)
        assert pulled[0] == seen, "the source is still being pulled while nobody consumes"
        await stream.aclose()
        return seen

    pulled = run(go, timeout=30)
    # in-queue + out-queue (max_buffer) + coalescing and the yielded chunk (2 x 1 MiB) + pieces
    assert pulled <= max_buffer + 3 * MiB, pulled
    wait_no_stream_threads()


def test_event_loop_stays_responsive(identity: Identity) -> None:
    async def go() -> float:
        gaps: list[float] = []
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        async for _ in encrypt_stream(endless_limited(64 * MiB), [identity.recipient]):
            pass
        done = True
        await tick
        return max(gaps)

    assert run(go) < 0.5


async def endless_limited(total: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    for _ in range(total // chunk):
        yield block


def test_stream_argument_checks(identity: Identity) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        run(lambda: collect(encrypt_stream(chunked(b"x", 1), [identity.recipient], chunk_size=0)))
    with pytest.raises(ValueError, match="max_buffer"):
        run(lambda: collect(decrypt_stream(chunked(b"x", 1), [identity], max_buffer=0)))
    with pytest.raises(RecipientError):
        run(lambda: collect(encrypt_stream(chunked(b"x", 1), [])))


# ------------------------------------------------------------------- large stream, bounded RSS

LARGE_SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, resource, sys, time
    from daulat import crypto

    SIZE = int(sys.argv[1])
    IN_CHUNK = 1024 * 1024 + 4099  # odd size: readers slice across chunk boundaries

    def status_kib(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(field)

    def peak_kib():
        # getrusage's ru_maxrss survives execve (Linux keeps the parent's high-water mark, here
        # pytest's), so it is only meaningful once this process has grown past it; VmHWM is this
        # process's own peak. Take the larger reading of our own peak that is available.
        return status_kib("VmHWM")

    async def source(size, digest):
        base = os.urandom(IN_CHUNK)
        sent, i = 0, 0
        while sent < size:
            n = min(IN_CHUNK, size - sent)
            block = (i.to_bytes(8, "little") + base[8:])[:n]  # every chunk differs
            digest.update(block)
            sent += n
            i += 1
            yield block

    async def tap(stream, stats):
        async for chunk in stream:
            stats["ct_bytes"] += len(chunk)
            stats["chunks"].append(len(chunk))
            yield chunk

    async def main():
        identity = crypto.Identity.generate()
        recipients = [identity.recipient]
        # The baseline is taken before any stream ran, so the growth includes every buffer of
        # the two chained streams, not only what grows with the object's size.
        base = status_kib("VmRSS")
        inherited_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        n = 0
        async for chunk in crypto.encrypt_stream(source(SIZE, hashlib.sha256()), recipients):
            n += len(chunk)
        t_enc = time.perf_counter() - t0
        sent, received = hashlib.sha256(), hashlib.sha256()
        stats = {"ct_bytes": 0, "chunks": []}
        t0 = time.perf_counter()
        plain = 0
        async for chunk in crypto.decrypt_stream(
            tap(crypto.encrypt_stream(source(SIZE, sent), recipients), stats), [identity]
        ):
            received.update(chunk)
            plain += len(chunk)
        t_both = time.perf_counter() - t0
        chunks = stats["chunks"]
        print(json.dumps({
            "plain": plain,
            "same_hash": sent.hexdigest() == received.hexdigest(),
            "ct_bytes": stats["ct_bytes"],
            "expected_ct": crypto.payload_size(SIZE),
            "min_ct_chunk": min(chunks[:-1]),
            "encrypt_mb_s": SIZE / t_enc / 1e6,
            "pipeline_mb_s": SIZE / t_both / 1e6,
            "baseline_rss_mib": base / 1024,
            "rss_growth_mib": (peak_kib() - base) / 1024,
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ru_maxrss_at_start_mib": inherited_maxrss / 1024,
        }))

    asyncio.run(main())
    """
)


@pytest.mark.timeout(300)
def test_large_stream_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    size = 200 * MiB
    script = tmp_path / "large.py"
    script.write_text(LARGE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(size)], capture_output=True, text=True, timeout=280
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    print(report)
    assert report["plain"] == size
    assert report["same_hash"]
    header = report["ct_bytes"] - report["expected_ct"]
    assert 100 < header < 1000  # header with one recipient plus rage's random grease stanza
    assert report["min_ct_chunk"] >= MiB
    assert report["rss_growth_mib"] < 100, report


# ---------------------------------------------------------------- interoperability with age


INTEROP_SIZES = [0, 1, 65535, 65536, 65537, 2 * MiB + 3]


def test_age_cli_decrypts_daulat_streams(key_file: Path, tmp_path: Path) -> None:
    age_bin = age_tool("age")
    recipients = parse_recipients([recipient_of(key_file)])
    for size in INTEROP_SIZES:
        data = os.urandom(size)
        ct_path = tmp_path / f"d{size}.age"
        ct_path.write_bytes(encrypt_all(data, recipients, in_chunk=70_001))
        out = subprocess.run(
            [age_bin, "-d", "-i", str(key_file), str(ct_path)], capture_output=True, check=False
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout == data, f"age output differs for size {size}"


def test_age_cli_decrypts_daulat_bytes_with_several_recipients(
    key_file: Path, tmp_path: Path
) -> None:
    age_bin = age_tool("age")
    age_keygen_bin = age_tool("age-keygen")
    keygen_file = tmp_path / "keygen.txt"
    subprocess.run([age_keygen_bin, "-o", str(keygen_file)], capture_output=True, check=True)
    recipients = parse_recipients([recipient_of(key_file), recipient_of(keygen_file)])
    data = os.urandom(100_000)
    ct_path = tmp_path / "multi.age"
    ct_path.write_bytes(encrypt_bytes(data, recipients))
    for key in (key_file, keygen_file):
        out = subprocess.run(
            [age_bin, "-d", "-i", str(key), str(ct_path)], capture_output=True, check=True
        )
        assert out.stdout == data


@pytest.mark.parametrize("armor", [False, True])
def test_daulat_decrypts_age_cli_output(key_file: Path, tmp_path: Path, armor: bool) -> None:
    age_bin = age_tool("age")
    identities = load_identities(key_file)
    for size in INTEROP_SIZES:
        data = os.urandom(size)
        plain_path = tmp_path / f"p{size}"
        plain_path.write_bytes(data)
        ct_path = tmp_path / f"p{size}.age"
        args = [age_bin, "-r", recipient_of(key_file), "-o", str(ct_path)]
        if armor:
            args.append("-a")
        subprocess.run([*args, str(plain_path)], capture_output=True, check=True)
        ct = ct_path.read_bytes()
        assert decrypt_all(ct, identities, in_chunk=7_001) == data
        assert decrypt_bytes(ct, identities) == data
        if not armor:
            assert len(ct) == header_size(ct) + payload_size(size)


def test_daulat_decrypts_age_cli_output_from_keygen_identity(tmp_path: Path) -> None:
    age_bin = age_tool("age")
    age_keygen_bin = age_tool("age-keygen")
    keygen_file = tmp_path / "keygen.txt"
    subprocess.run([age_keygen_bin, "-o", str(keygen_file)], capture_output=True, check=True)
    data = os.urandom(300_000)
    encrypted = subprocess.run(
        [age_bin, "-r", recipient_of(keygen_file)], input=data, capture_output=True, check=True
    ).stdout
    assert decrypt_all(encrypted, load_identities(keygen_file)) == data


def test_age_cli_rejects_wrong_identity_like_we_do(key_file: Path, tmp_path: Path) -> None:
    age_bin = age_tool("age")
    other = tmp_path / "other.key"
    new_identity(other)
    ct_path = tmp_path / "x.age"
    ct_path.write_bytes(encrypt_bytes(b"secret data", parse_recipients([recipient_of(key_file)])))
    out = subprocess.run([age_bin, "-d", "-i", str(other), str(ct_path)], capture_output=True)
    assert out.returncode != 0
    with pytest.raises(DecryptError, match="none of the given identities"):
        decrypt_bytes(ct_path.read_bytes(), load_identities(other))
