"""Google Cloud Storage stores beyond the conformance suite, against fake-gcs-server (real):
exact names, Google's hashes, upload checksums, resumable sessions, request timeouts, the
[gcs] extra, and where credentials come from (tested against fake token endpoints and a fake
metadata server on 127.0.0.1, which google-auth asks as it asks Google's).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from conftest import gcs_store_config, run
from gcsproxy import gcs_proxy
from googleauth import (
    CLIENT_EMAIL,
    authorized_user_file,
    fake_metadata_server,
    fake_token_endpoint,
    service_account_file,
)
from servers import GcsServer, silent_server
from test_transfer import cli, unique, write_config

from daulat.config import StoreConfig, load_config
from daulat.errors import (
    AccessDenied,
    ConfigError,
    InvalidKey,
    NotFound,
    SourceChanged,
    Transient,
    Unresponsive,
)
from daulat.stores import open_store
from daulat.stores.gcs import GcsStore
from daulat.stores.gcscreds import GcsCredentialChain

MiB = 1024 * 1024
SRC = Path(__file__).resolve().parent.parent / "src"


def _store(raw: dict[str, Any]) -> GcsStore:
    store = open_store(StoreConfig.model_validate(raw))
    assert isinstance(store, GcsStore)
    return store


def _bucket(raw: dict[str, Any]) -> str:
    return str(raw["url"]).removeprefix("gs://").split("/", 1)[0]


async def _keys(store: GcsStore, prefix: str = "") -> list[str]:
    return sorted([o.key async for batch in store.list(prefix) for o in batch])


async def _body(size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    block = hashlib.sha256(b"gcs").digest() * (MiB // 32)
    sent = 0
    while sent < size:
        if fail_after is not None and sent >= fail_after:
            raise Transient("the source went away", store="src", key="k")
        n = min(MiB, size - sent)
        yield block[:n]
        sent += n


def _crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


# ------------------------------------------------------------------------------------ names

KEPT = [
    "../escape",
    "a/../../b",
    "/absolute",
    "a//b",
    "trailing/",
    "a/./b",
    "nul\x00byte",
    "ctl\x01\x1f\x7fchars",
    "tab\there",
    ".well-known/other",
    "x" * 1024,
]
REFUSED = [
    "cr\rinside",
    "lf\ninside",
    ".",
    "..",
    ".well-known/acme-challenge/token",
    "y" * 1025,
]


def test_every_name_google_accepts_round_trips_exactly(gcs_server: GcsServer) -> None:
    """Names with `..` and `.` segments, `//`, leading and trailing `/`, control characters
    other than CR and LF are kept exactly (listed, read, deleted under that very name, and held
    so at the server); those Google refuses are refused one by one and nothing is written."""
    raw = gcs_store_config(gcs_server, "names", unique("names"))
    bucket = _bucket(raw)

    async def go() -> None:
        store = _store(raw)
        try:
            for i, key in enumerate(KEPT):
                await store.put(key, f"body {i}".encode())
            assert await _keys(store) == sorted(KEPT)
            assert sorted(gcs_server.objects(bucket)) == sorted(KEPT)
            for i, key in enumerate(KEPT):
                assert await (await store.get(key)).read_all() == f"body {i}".encode()
                assert (await store.head(key)).key == key
            for key in REFUSED:
                with pytest.raises(InvalidKey):
                    await store.put(key, b"never")
                with pytest.raises(InvalidKey):
                    await store.head(key)
            assert sorted(gcs_server.objects(bucket)) == sorted(KEPT)
            for key in KEPT:
                await store.delete(key)
            assert await _keys(store) == []
        finally:
            await store.close()

    run(go())


def test_names_are_checked_with_the_stores_prefix(gcs_server: GcsServer) -> None:
    """Google's rules hold for the whole name: under a prefix, `.` and `..` are fine keys, and
    1,024 bytes include the prefix."""
    raw = gcs_store_config(gcs_server, "pfx", unique("pfx"), prefix="arsip")
    bucket = _bucket(raw)

    async def go() -> None:
        store = _store(raw)
        try:
            for key in (".", "..", "z" * (1024 - len("arsip/"))):
                await store.put(key, b"1")
            with pytest.raises(InvalidKey):
                await store.put("z" * (1025 - len("arsip/")), b"1")
            assert sorted(gcs_server.objects(bucket)) == sorted(
                ["arsip/.", "arsip/..", "arsip/" + "z" * (1024 - len("arsip/"))]
            )
            assert await _keys(store) == sorted([".", "..", "z" * (1024 - len("arsip/"))])
        finally:
            await store.close()

    run(go())


# ------------------------------------------------------------------------------------ hashes


def test_listings_and_heads_report_googles_hashes_with_their_labels(gcs_server: GcsServer) -> None:
    raw = gcs_store_config(gcs_server, "hashes", unique("hashes"))
    data = b"hashed by Google " * 1000

    async def go() -> None:
        store = _store(raw)
        try:
            small = await store.put("small", data)
            await store.put("large", _body(9 * MiB))
            large = b"".join([c async for c in _body(9 * MiB)])
            expected = {
                "small": {
                    "crc32c": f"{google_crc32c.value(data):08x}",
                    "md5": hashlib.md5(data).hexdigest(),
                },
                "large": {
                    "crc32c": f"{google_crc32c.value(large):08x}",
                    "md5": hashlib.md5(large).hexdigest(),
                },
            }
            listed = {o.key: o async for batch in store.list() for o in batch}
            for key, sums in expected.items():
                head = await store.head(key)
                assert dict(head.checksums) == sums, key
                assert dict(listed[key].checksums) == sums, key
                assert head.etag_scheme == listed[key].etag_scheme == "gcs"
            assert small.etag == (await store.head("small")).etag
        finally:
            await store.close()

    run(go())


# ------------------------------------------------------------------------------------ uploads


def test_uploads_carry_a_crc32c_that_google_checks(gcs_server: GcsServer) -> None:
    """A small put is one multipart request whose JSON part holds the body's CRC32C; a streamed
    one is a resumable session of 8 MiB chunks, the last carrying X-Goog-Hash with the CRC32C of
    the whole body (Google refuses the object when either does not match what arrived)."""
    raw = gcs_store_config(gcs_server, "sums", unique("sums"))
    small = b"small body " * 3000
    size = 20 * MiB + 5

    with gcs_proxy(gcs_server.endpoint) as proxy:

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                await store.put("small", small)
                await store.put("large", _body(size))
            finally:
                await store.close()

        run(go())
        posts = proxy.requests("POST", "/upload/")
        assert ["uploadType=multipart" in p.path for p in posts] == [True, False]
        assert "uploadType=resumable" in posts[1].path
        assert f'"crc32c": "{_crc32c_b64(small)}"' in posts[0].body.decode("latin-1")
        chunks = proxy.requests("PUT", "/upload/")
        assert [c.size for c in chunks] == [8 * MiB, 8 * MiB, 4 * MiB + 5]
        whole = _whole(size)
        assert chunks[-1].headers.get("x-goog-hash") == f"crc32c={_crc32c_b64(whole)}"
        assert chunks[-1].headers["content-range"] == f"bytes {16 * MiB}-{size - 1}/{size}"
        for chunk in chunks[:-1]:
            assert "x-goog-hash" not in chunk.headers
            assert chunk.headers["content-range"].endswith("/*")


def _whole(size: int) -> bytes:
    """What ``_body(size)`` yields, as one value."""
    block = hashlib.sha256(b"gcs").digest() * (MiB // 32)
    return (block * (size // MiB + 1))[:size]


@pytest.mark.parametrize("size", [100_000, 9 * MiB], ids=["multipart", "resumable"])
def test_an_upload_altered_on_the_way_fails_and_leaves_nothing(
    gcs_server: GcsServer, size: int
) -> None:
    """One byte flipped between daulat and the server: the put fails as Transient (sending
    again may succeed) and no object is left under the key. (Google refuses such an upload by
    its checksum; the emulator stores it, and the store then removes exactly that generation.)"""
    raw = gcs_store_config(gcs_server, "flip", unique("flip"))
    with gcs_proxy(gcs_server.endpoint) as proxy:
        proxy.flip_uploads = True

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                body: bytes | AsyncIterator[bytes] = b"f" * size if size < 8 * MiB else _body(size)
                with pytest.raises(Transient, match="differs from what was sent"):
                    await store.put("altered", body)
                with pytest.raises(NotFound):
                    await store.head("altered")
            finally:
                await store.close()

        run(go())
    assert gcs_server.objects(_bucket(raw)) == {}


def test_a_download_altered_on_the_way_fails(gcs_server: GcsServer) -> None:
    """A whole object read is checked against Google's CRC32C: one byte flipped on the way back
    fails the read as Transient (reading again may succeed); a read that brings more bytes than
    it asked for fails too."""
    raw = gcs_store_config(gcs_server, "flipread", unique("flipread"))
    data = os.urandom(3 * MiB)
    with gcs_proxy(gcs_server.endpoint) as proxy:

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                await store.put("k", data)
                assert await (await store.get("k")).read_all() == data
                proxy.flip_downloads = True
                with pytest.raises(Transient, match="CRC32C"):
                    await (await store.get("k")).read_all()
                # A range has no checksum, but no more (or fewer) bytes than asked for pass.
                proxy.flip_downloads, proxy.pad_downloads = False, True
                with pytest.raises(Transient, match="number of bytes"):
                    await (await store.get("k", start=10, end=1000)).read_all()
                with pytest.raises(Transient):
                    await (await store.get("k")).read_all()
            finally:
                await store.close()

        run(go())


def test_a_resumable_session_is_announced_before_its_first_byte_and_never_shown(
    gcs_server: GcsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``on_upload`` gets the session URI before any chunk is sent. The URI is a bearer
    capability: a put that fails half-way cancels the session, raises the body's own error, and
    neither the error nor any log line shows the URI."""
    raw = gcs_store_config(gcs_server, "session", unique("session"))
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.DEBUG, logger="daulat")
    with gcs_proxy(gcs_server.endpoint) as proxy:
        announced: list[tuple[str, str, int]] = []

        def on_upload(key: str, uri: str) -> None:
            session = uri.removeprefix(proxy.endpoint)
            announced.append((key, uri, len(proxy.requests("PUT", session))))

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                await store.put("whole", _body(10 * MiB), on_upload=on_upload)
                with pytest.raises(Transient, match="the source went away") as failed:
                    await store.put(
                        "torn", _body(20 * MiB, fail_after=9 * MiB), on_upload=on_upload
                    )
                text = f"{failed.value} {failed.value!r} {failed.value.__cause__!r}"
                for _key, uri, _ in announced:
                    assert uri not in text
                    assert uri.split("upload_id=", 1)[1] not in text
                with pytest.raises(NotFound):
                    await store.head("torn")
            finally:
                await store.close()

        run(go())
        assert [(k, before) for k, _, before in announced] == [("whole", 0), ("torn", 0)]
        torn_uri = announced[1][1]
        assert torn_uri.startswith(proxy.endpoint + "/upload/") and "upload_id=" in torn_uri
        # The failed session was cancelled (DELETE on the session URI).
        session_path = torn_uri.removeprefix(proxy.endpoint)
        assert [s.method for s in proxy.requests(path_start=session_path)][-1] == "DELETE"
    upload_ids = [uri.split("upload_id=", 1)[1] for _, uri, _ in announced]
    for record in caplog.records:
        message = record.getMessage()
        assert not any(u in message for u in upload_ids), message
    assert sorted(gcs_server.objects(_bucket(raw))) == ["whole"]


def test_a_chunk_refused_once_is_sent_again_and_the_upload_completes(
    gcs_server: GcsServer,
) -> None:
    """A 503 on one chunk of a resumable upload: the chunk is sent again and the upload goes
    on from there (not from the start), and the object is whole."""
    raw = gcs_store_config(gcs_server, "retry", unique("retry"))
    size = 20 * MiB + 7
    with gcs_proxy(gcs_server.endpoint) as proxy:
        proxy.fail_chunks = {2}

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                put = await store.put("k", _body(size))
                assert put.size == size
                got = await (await store.get("k")).read_all()
                assert hashlib.sha256(got).hexdigest() == put.sha256 == _sha(_whole(size))
            finally:
                await store.close()

        run(go())
        ranges = [c.headers["content-range"] for c in proxy.requests("PUT", "/upload/")]
    assert ranges == [
        f"bytes 0-{8 * MiB - 1}/*",
        f"bytes {8 * MiB}-{16 * MiB - 1}/*",  # refused
        f"bytes {8 * MiB}-{16 * MiB - 1}/*",  # sent again
        f"bytes {16 * MiB}-{size - 1}/{size}",
    ]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_cancelled_upload_cancels_its_session_and_leaves_nothing(gcs_server: GcsServer) -> None:
    """A put cancelled half-way (Ctrl-C, a run's deadline) stops sending, cancels its resumable
    session and leaves nothing under the key, nor a thread still sending."""
    raw = gcs_store_config(gcs_server, "cancel", unique("cancel"))

    async def slow() -> AsyncIterator[bytes]:
        async for chunk in _body(12 * MiB):
            yield chunk
        await asyncio.sleep(3600)  # the source stalls after 12 MiB
        yield b"never"

    with gcs_proxy(gcs_server.endpoint) as proxy:
        sessions: list[str] = []

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            try:
                put = store.put("k", slow(), on_upload=lambda _k, uri: sessions.append(uri))
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(put, 3)
                deadline = time.monotonic() + 10
                session = sessions[0].removeprefix(proxy.endpoint)
                while time.monotonic() < deadline:
                    if any(s.method == "DELETE" for s in proxy.requests(path_start=session)):
                        break
                    await asyncio.sleep(0.1)
                methods = [s.method for s in proxy.requests(path_start=session)]
                assert methods == ["PUT", "DELETE"], methods  # one full chunk, then cancelled
                with pytest.raises(NotFound):
                    await store.head("k")
            finally:
                await store.close()

        run(go())
    assert gcs_server.objects(_bucket(raw)) == {}


def test_a_read_never_mixes_two_versions(gcs_server: GcsServer) -> None:
    """A read is pinned to the generation whose metadata it returned: an object replaced before
    its bytes are read fails the read as SourceChanged, never yields the newer bytes."""
    raw = gcs_store_config(gcs_server, "pinned", unique("pinned"))

    async def go() -> None:
        store = _store(raw)
        try:
            await store.put("k", b"first version " * 1000)
            reader = await store.get("k")
            await store.put("k", b"second version, another size")
            with pytest.raises(SourceChanged):
                await reader.read_all()
            assert await (await store.get("k")).read_all() == b"second version, another size"
        finally:
            await store.close()

    run(go())


# ------------------------------------------------------------------------------------ timeouts


def test_a_silent_endpoint_is_unresponsive_within_the_request_timeout() -> None:
    with silent_server() as endpoint:
        raw = {
            "name": "silent",
            "url": "gs://silent-bucket",
            "provider": "gcp",
            "region": "asia-southeast2",
            "endpoint": endpoint,
            "request_timeout": 1.5,
        }

        async def go() -> None:
            store = _store(raw)
            try:
                for call in (
                    lambda: _keys(store),
                    lambda: store.head("k"),
                    lambda: store.put("k", b"data"),
                    lambda: store.put("k", _body(9 * MiB)),
                ):
                    started = time.monotonic()
                    with pytest.raises(
                        Unresponsive, match=r"no answer within 1.5 s \(request_timeout\)"
                    ):
                        await call()
                    assert time.monotonic() - started < 10
            finally:
                await store.close()

        run(go())


def test_a_copy_to_a_silent_gcs_endpoint_fails_in_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some data")
    with silent_server() as endpoint:
        (tmp_path / "daulat.toml").write_text(
            textwrap.dedent(
                f"""
                [stores.src]
                url = "file://{src}"
                provider = "local"
                country = "ID"

                [stores.dst]
                url = "gs://silent-bucket"
                provider = "gcp"
                region = "asia-southeast2"
                endpoint = "{endpoint}"
                """
            )
        )
        started = time.monotonic()
        proc = _daulat(["copy", "src", "dst", "--request-timeout", "2"], tmp_path)
        took = time.monotonic() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "no answer within 2 s" in text and "Traceback" not in text
    # The bound is about waiting for the endpoint, not about starting Python and daulat,
    # which takes seconds on a busy machine: twice a bare start is allowed on top.
    started = time.monotonic()
    _daulat(["stores", "--help"], tmp_path)
    slack = 2 * (time.monotonic() - started)
    assert took < 30 + slack, f"took {took:.0f} s"


# ------------------------------------------------------------------------------------ the extra


def _daulat(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, *, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    base["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [sys.executable, "-c", f"{prelude}from daulat.cli import main; main()", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_without_the_gcs_extra_a_gs_store_is_one_line_and_exit_2(
    gcs_server: GcsServer, tmp_path: Path
) -> None:
    raw = gcs_store_config(gcs_server, "gstore", unique("noextra"))
    config = write_config(tmp_path, [raw])
    hide = "import sys; sys.modules['google.cloud.storage'] = None; "
    proc = _daulat(["stores", "--config", str(config)], tmp_path, prelude=hide)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "gstore" in lines[0] and "pip install 'daulat[gcs]'" in lines[0]
    # With the client installed, the same config works.
    assert _daulat(["stores", "--config", str(config)], tmp_path).returncode == 0


# ------------------------------------------------------------------------------------ credentials


def _without_google_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from this machine: an empty gcloud config, no key file, no metadata."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "GCE_METADATA_IP"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


def test_a_service_account_file_signs_in_at_its_token_uri_and_every_request_carries_the_token(
    gcs_server: GcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`service_account_file` (relative to daulat.toml) is used even with an emulator endpoint:
    google-auth signs a JWT with the file's key and trades it at the file's token_uri; every
    request to the store carries the token it got, and daulat runs from any directory."""
    _without_google_env(monkeypatch, tmp_path)
    raw = gcs_store_config(gcs_server, "signed", unique("signed"))
    with fake_token_endpoint() as tokens, gcs_proxy(gcs_server.endpoint) as proxy:
        service_account_file(tmp_path / "cfg" / "keys" / "sa.json", tokens)
        config = write_config(
            tmp_path / "cfg",
            [
                {
                    **raw,
                    "endpoint": proxy.endpoint,
                    "credentials": {"service_account_file": "keys/sa.json"},
                }
            ],
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        scan = _daulat(["scan", "--config", str(config), "--json"], elsewhere)
        assert scan.returncode == 0, scan.stdout + scan.stderr

        cfg = load_config(config).store("signed")
        assert cfg.credentials is not None
        assert cfg.credentials.service_account_file == str(tmp_path / "cfg" / "keys" / "sa.json")

        async def go() -> None:
            store = open_store(cfg)
            assert isinstance(store, GcsStore) and store.credential_source == "service_account_file"
            try:
                await store.put("a", b"signed in")
                await store.put("b", _body(9 * MiB))
                assert await _keys(store) == ["a", "b"]
            finally:
                await store.close()

        run(go())
        assert len(tokens.grants) == 2  # one per process: the CLI's scan, this test's store
        for grant in tokens.grants:
            assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        seen = proxy.requests()
        assert seen and {s.headers.get("authorization") for s in seen} <= {
            f"Bearer {t}" for t in tokens.issued
        }
        assert all(s.headers.get("authorization") for s in seen)


def test_an_emulator_endpoint_gets_no_credentials_from_the_environment(
    gcs_server: GcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an `endpoint` and no file of its own a store sends no credentials, even when
    GOOGLE_APPLICATION_CREDENTIALS names a working key: a token for Google never goes elsewhere."""
    _without_google_env(monkeypatch, tmp_path)
    raw = gcs_store_config(gcs_server, "anon", unique("anon"))
    with fake_token_endpoint() as tokens, gcs_proxy(gcs_server.endpoint) as proxy:
        key = service_account_file(tmp_path / "sa.json", tokens)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))

        async def go() -> None:
            store = _store({**raw, "endpoint": proxy.endpoint})
            assert store.credential_source == "none"
            try:
                await store.put("a", b"anonymous")
                assert await _keys(store) == ["a"]
            finally:
                await store.close()

        run(go())
        assert tokens.grants == []
        assert proxy.requests() and not any("authorization" in s.headers for s in proxy.requests())


def _google_store(name: str = "real") -> StoreConfig:
    """A store at Google itself (never contacted by these tests)."""
    return StoreConfig.model_validate(
        {"name": name, "url": "gs://daulat-arsip", "provider": "gcp", "region": "asia-southeast2"}
    )


def test_google_application_credentials_names_the_key_file(tmp_path: Path) -> None:
    with fake_token_endpoint() as tokens:
        key = service_account_file(tmp_path / "sa.json", tokens)
        chain = GcsCredentialChain.for_store(
            _google_store(), {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
        )
        assert chain.source == "GOOGLE_APPLICATION_CREDENTIALS"
        creds = _refreshed(chain)
        assert creds.token == tokens.issued[0] and creds.service_account_email == CLIENT_EMAIL
        assert [g["grant_type"] for g in tokens.grants] == [
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ]


def test_application_default_credentials_from_gcloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a file of its own or GOOGLE_APPLICATION_CREDENTIALS, the store takes gcloud's
    application default credentials (`CLOUDSDK_CONFIG` moves gcloud's directory): a key put
    there is used at its token_uri; a user's login (`gcloud auth application-default login`)
    is found as such (google-auth refreshes it only at Google's own endpoint)."""
    from google.oauth2.credentials import Credentials as UserCredentials

    _without_google_env(monkeypatch, tmp_path)
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    with fake_token_endpoint() as tokens:
        service_account_file(adc, tokens)
        chain = GcsCredentialChain.for_store(_google_store(), {})
        assert chain.source == "application default"
        creds = _refreshed(chain)
        assert creds.token == "ya29.fake-1" and creds.service_account_email == CLIENT_EMAIL
        assert tokens.grants[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"

        authorized_user_file(adc, tokens)
        user = GcsCredentialChain.for_store(_google_store(), {}).credentials()
        assert isinstance(user, UserCredentials)
        assert user.refresh_token == "1//refresh-daulat"


def _refreshed(chain: GcsCredentialChain) -> Any:
    from google.auth.transport.requests import Request

    creds = chain.credentials()
    assert chain.credentials() is creds  # resolved once
    creds.refresh(Request())
    return creds


_METADATA_SCRIPT = textwrap.dedent(
    """
    import json
    from google.auth.transport.requests import Request
    from daulat.config import StoreConfig
    from daulat.stores.gcscreds import GcsCredentialChain
    cfg = StoreConfig.model_validate({"name": "gce", "url": "gs://daulat-arsip",
                                      "provider": "gcp", "region": "asia-southeast2"})
    chain = GcsCredentialChain.for_store(cfg)
    creds = chain.credentials()
    creds.refresh(Request())
    print(json.dumps({"source": chain.source, "token": creds.token}))
    """
)


def _google_free_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_")) and not k.upper().endswith("_PROXY")
    }
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    return {**env, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "PYTHONPATH": str(SRC), **extra}


def test_application_default_credentials_from_the_metadata_server(tmp_path: Path) -> None:
    """On Google Cloud the chain ends at the metadata server (GCE_METADATA_HOST moves it here);
    google-auth reads those variables when it is imported, hence a process of its own."""
    with fake_metadata_server() as metadata:
        env = _google_free_env(
            tmp_path, GCE_METADATA_HOST=metadata.host, GCE_METADATA_IP=metadata.host
        )
        proc = subprocess.run(
            [sys.executable, "-c", _METADATA_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"source": "application default", "token": "ya29.metadata"}
    assert "/computeMetadata/v1/instance/service-accounts/default/token" in metadata.hits


def test_no_credentials_anywhere_is_access_denied_naming_where_it_looked(tmp_path: Path) -> None:
    """Nothing in the config, the environment, gcloud's files or a metadata server: the run
    fails with one clear message before any request is sent, and no traceback."""
    with silent_server() as nothing:
        dead = nothing.removeprefix("http://")
        (tmp_path / "daulat.toml").write_text(
            textwrap.dedent(
                """
                [stores.real]
                url = "gs://daulat-arsip"
                provider = "gcp"
                region = "asia-southeast2"
                """
            )
        )
        proc = subprocess.run(
            [sys.executable, "-c", "from daulat.cli import main; main()", "scan", "real"],
            cwd=tmp_path,
            env=_google_free_env(
                tmp_path, GCE_METADATA_HOST=dead, GCE_METADATA_IP=dead, GCE_METADATA_TIMEOUT="1"
            ),
            capture_output=True,
            text=True,
            timeout=180,
        )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "no Google credentials found" in text and "GOOGLE_APPLICATION_CREDENTIALS" in text
    assert "Traceback" not in text


def test_a_missing_or_broken_key_file_is_a_config_error(
    gcs_server: GcsServer, tmp_path: Path
) -> None:
    raw = gcs_store_config(gcs_server, "keyed", unique("keyed"))
    for content, expect in ((None, "does not exist"), ("{not json", "not a Google credentials")):
        if content is not None:
            (tmp_path / "sa.json").write_text(content)
        config = write_config(
            tmp_path, [{**raw, "credentials": {"service_account_file": "sa.json"}}]
        )
        proc = _daulat(["stores", "--config", str(config)], tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert expect in proc.stderr and "keyed" in proc.stderr and "Traceback" not in proc.stderr
        if content is not None:
            assert "{not json" not in proc.stderr  # the file's contents are never echoed
    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GcsCredentialChain.for_store(
            _google_store(), {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
        )


def test_a_token_endpoint_that_refuses_is_access_denied(
    gcs_server: GcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key Google no longer accepts (deleted, disabled): the token endpoint says no, and the
    store's requests fail as AccessDenied (the run stops), not as a retryable fault."""
    _without_google_env(monkeypatch, tmp_path)
    raw = gcs_store_config(gcs_server, "revoked", unique("revoked"))
    with fake_token_endpoint() as tokens:
        key = service_account_file(tmp_path / "sa.json", tokens)
        service_account_file(tmp_path / "other.json", tokens)  # the endpoint knows only this key

        async def go() -> None:
            store = _store({**raw, "credentials": {"service_account_file": str(key)}})
            try:
                with pytest.raises(AccessDenied, match="refused to issue an access token"):
                    await store.put("a", b"x")
            finally:
                await store.close()

        run(go())
        assert tokens.grants and tokens.issued == []


# ------------------------------------------------------------------------------------ overlap


def test_two_gs_stores_on_one_bucket_cannot_copy_into_each_other(
    gcs_server: GcsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = unique("overlap")
    outer = gcs_store_config(gcs_server, "outer", bucket)
    inner = gcs_store_config(gcs_server, "inner", bucket, prefix="in")
    config = write_config(tmp_path, [outer, inner])
    res = cli(["copy", "outer", "inner", "--config", str(config)], capsys)
    assert res.code == 2, res.out + res.err
    assert "inside" in res.out + res.err


def test_gs_and_s3_urls_of_one_google_bucket_are_one_place() -> None:
    """Google's S3-compatible API (`s3://`, provider gcp) and its JSON API (`gs://`) reach the
    same buckets: the overlap check sees them as one."""
    from daulat.transfer.locations import location_of, overlaps

    gs = _google_store("json")
    s3 = StoreConfig.model_validate(
        {
            "name": "xml",
            "url": "s3://daulat-arsip/sub",
            "provider": "gcp",
            "region": "asia-southeast2",
        }
    )
    other = StoreConfig.model_validate(
        {"name": "other", "url": "gs://daulat-lain", "provider": "gcp", "region": "asia-southeast2"}
    )

    async def go() -> None:
        assert await overlaps(location_of(gs), location_of(s3))
        assert not await overlaps(location_of(gs), location_of(other))

    run(go())
