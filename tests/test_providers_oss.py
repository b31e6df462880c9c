"""Alibaba Cloud OSS as Alibaba's guide "Access OSS using AWS SDKs" documents it: the
S3-compatible endpoints (public, internal, acceleration), virtual-hosted addressing, plain
(not aws-chunked) bodies, requests signed for the region id; and ``daulat stores`` saying when a
mainland-China bucket needs a custom domain.

The request shapes are checked on the wire: the store talks to ``s3.oss-cn-hangzhou.aliyuncs.com``
through a recording proxy (``HTTP_PROXY``, tests/ossproxy.py) that forwards every request to the
suite's SeaweedFS, so each one is both recorded as sent and answered by a real S3 server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import s3_store_config
from ossproxy import oss_proxy
from servers import S3Server

from daulat.config import StoreConfig
from daulat.inventory import Manifest, store_statuses
from daulat.storenotes import store_notes
from daulat.stores import open_store
from daulat.stores.s3 import open_s3_obstore
from daulat.stores.s3raw import S3Raw

MiB = 1024 * 1024
DOMAIN = "s3.oss-cn-hangzhou.aliyuncs.com"


def _cfg(**fields: Any) -> StoreConfig:
    raw = {"name": "kpu", "url": "s3://pemilu-2024/c1", "provider": "alibaba", **fields}
    return StoreConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        (None, "https://s3.oss-cn-hangzhou.aliyuncs.com"),
        ("public", "https://s3.oss-cn-hangzhou.aliyuncs.com"),
        ("internal", "https://s3.oss-cn-hangzhou-internal.aliyuncs.com"),
        ("accelerate", "https://s3.oss-accelerate.aliyuncs.com"),
    ],
)
def test_the_default_endpoints_are_the_guides(kind: str | None, endpoint: str) -> None:
    """Both clients (botocore for listings and large uploads, obstore for the rest) reach the
    bucket virtual-hosted on the guide's endpoint of that kind, signed for the region id, and
    send plain bodies proven by Content-MD5 (no aws-chunked, no x-amz-checksum-*)."""
    cfg = _cfg(region="cn-hangzhou", **({"endpoint_kind": kind} if kind else {}))
    raw = S3Raw.from_config(cfg, env={})
    assert raw.endpoint == endpoint
    assert raw.virtual_hosted is True
    assert raw.region == "cn-hangzhou"
    assert raw.checksum == "md5"
    fast = open_s3_obstore(cfg, env={})
    config = fast._inner.config  # the obstore S3Store's settings
    host = endpoint.removeprefix("https://")
    assert config["endpoint"] == f"https://pemilu-2024.{host}"
    assert config["region"] == "cn-hangzhou"
    assert config.get("virtual_hosted_style_request") == "true"
    assert "checksum_algorithm" not in config  # obstore's x-amz-checksum-* would follow


def test_an_old_alibaba_config_still_opens() -> None:
    """The spellings of before: an s3:// URL with an explicit endpoint (an emulator, a custom
    domain) keeps it, with path addressing unless told otherwise."""
    cfg = _cfg(region="ap-southeast-5", endpoint="http://127.0.0.1:8333")
    raw = S3Raw.from_config(cfg, env={})
    assert raw.endpoint == "http://127.0.0.1:8333"
    assert raw.virtual_hosted is False
    assert raw.region == "ap-southeast-5"
    cfg = _cfg(region="ap-southeast-5", endpoint="https://data.kpu.example", addressing="virtual")
    assert S3Raw.from_config(cfg, env={}).virtual_hosted is True


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), MiB):
        yield data[i : i + MiB]


def test_requests_on_the_wire_have_the_guides_shape(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request goes to ``BUCKET.s3.oss-cn-hangzhou.aliyuncs.com`` with the key as the
    path, is signed (SigV4) for cn-hangzhou, and carries no aws-chunked encoding, streaming
    signature or trailer; uploads prove their bodies with Content-MD5. The objects round-trip
    through the real server behind the proxy."""
    bucket = f"oss-shape-{os.getpid()}"
    s3_store_config(s3_server, "mk", bucket)  # creates the bucket
    small = b"c1 form " * 1000
    large = os.urandom(20 * MiB + 3)  # a streamed, multipart upload
    with oss_proxy(s3_server, DOMAIN) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        cfg = StoreConfig.model_validate(
            {
                "name": "kpu",
                "url": f"s3://{bucket}/c1",
                "provider": "alibaba",
                "region": "cn-hangzhou",
                # The guide's public endpoint, over plain HTTP so that the proxy can read it.
                "endpoint": f"http://{DOMAIN}",
                "addressing": "virtual",
                "credentials": {
                    "access_key_id": s3_server.access_key_id,
                    "secret_access_key": s3_server.secret_access_key,
                },
            }
        )

        async def go() -> None:
            store = open_store(cfg)
            try:
                await store.put("small.bin", small)
                await store.put("large.bin", _chunks(large))
                keys = sorted([o.key async for page in store.list() for o in page])
                assert keys == ["large.bin", "small.bin"]
                got = await (await store.get("large.bin")).read_all()
                assert hashlib.sha256(got).digest() == hashlib.sha256(large).digest()
                assert await (await store.get("small.bin")).read_all() == small
                await store.delete("small.bin")
                await store.delete("large.bin")
            finally:
                await store.close()

        asyncio.run(go())
        seen = list(proxy.seen)
    assert seen
    methods = {s.method for s in seen}
    assert {"PUT", "GET", "POST"} <= methods
    scope = re.compile(r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/cn-hangzhou/s3/aws4_request,")
    for sent in seen:
        where = (sent.method, sent.path)
        assert sent.host == f"{bucket}.{DOMAIN}", where
        assert not sent.path.startswith(f"/{bucket}"), where  # the bucket is in the host only
        assert scope.match(sent.headers.get("authorization", "")), where
        assert "aws-chunked" not in sent.headers.get("content-encoding", ""), where
        assert not sent.headers.get("x-amz-content-sha256", "").startswith("STREAMING-"), where
        assert "x-amz-trailer" not in sent.headers, where
        assert "x-amz-decoded-content-length" not in sent.headers, where
        if sent.path == "/?delete":
            # DeleteObjects (obstore's delete): OSS requires Content-MD5, which it carries.
            # obstore adds x-amz-checksum-sha256 beside it whatever the configuration.
            assert "content-md5" in sent.headers
            continue
        assert not any(h.startswith("x-amz-checksum-") for h in sent.headers), where
    parts = [s for s in seen if s.method == "PUT" and "partNumber=" in s.path]
    assert len(parts) >= 2
    assert all("content-md5" in p.headers for p in parts)
    assert any(s.path.startswith("/c1/large.bin?uploads") for s in seen if s.method == "POST")


def _config_file(tmp_path: Path, region: str, extra: str = "") -> Path:
    path = tmp_path / "daulat.toml"
    path.write_text(
        f"""
[stores.kpu]
url = "s3://pemilu-2024"
provider = "alibaba"
region = "{region}"
request_timeout = 2
{extra}
[stores.kpu.credentials]
access_key_id = "AKEXAMPLE"
secret_access_key = "not-a-real-secret"
"""
    )
    return path


@pytest.mark.parametrize(
    ("region", "extra", "noted"),
    [
        ("cn-hangzhou", "", True),
        ("cn-beijing", 'endpoint_kind = "accelerate"', True),
        ("cn-hangzhou", 'endpoint_kind = "internal"', False),
        ("cn-hangzhou", 'endpoint = "https://data.kpu.example"', False),
        ("cn-hongkong", "", False),  # Hong Kong is not the Chinese mainland
        ("ap-southeast-5", "", False),
    ],
)
def test_stores_says_when_a_mainland_bucket_needs_a_custom_domain(
    tmp_path: Path, region: str, extra: str, noted: bool
) -> None:
    from daulat.config import load_config

    cfg = load_config(_config_file(tmp_path, region, extra))
    notes = store_notes(cfg.store("kpu"))
    assert bool(notes) is noted
    if noted:
        (note,) = notes
        assert "custom domain" in note and "2025-03-20" in note and region in note

    async def rows() -> Any:
        with Manifest.in_state_dir(cfg.state_dir) as manifest:
            return await store_statuses(cfg, manifest, check=False)

    (row,) = asyncio.run(rows())
    assert row.notes == notes


def test_stores_command_prints_the_note(tmp_path: Path) -> None:
    """``daulat stores`` (text and JSON) carries the note. The store cannot be reached here
    (the proxy named for HTTPS refuses connections), which it also reports: exit 1."""
    _config_file(tmp_path, "cn-shanghai")
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    argv = [sys.executable, "-c", "from daulat.cli import main; main()", "stores"]
    text = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 1, text.stderr
    assert "kpu: bucket in cn-shanghai" in text.stdout
    assert "custom domain (CNAME)" in text.stdout
    as_json = subprocess.run(
        [*argv, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    (row,) = json.loads(as_json.stdout)
    assert len(row["notes"]) == 1 and "custom domain" in row["notes"][0]
    assert "not-a-real-secret" not in text.stdout + text.stderr + as_json.stdout
