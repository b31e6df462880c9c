"""One credential chain per S3 store, shared by obstore and botocore.

The decisive case: a machine whose only credentials are its instance role. No keys in the
config, none in the environment; a fake IMDSv2 on 127.0.0.1 serves role keys that SeaweedFS
accepts. ``daulat scan``, ``exit`` and ``verify`` (run as a subprocess with exactly that
environment) must work, with listings and multipart uploads (botocore) and ordinary reads and
writes (obstore) all signed with the role's keys. Before one chain existed, the listing client
knew only keys from the config or environment and sent such requests unsigned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run, s3_store_config
from imds import fake_imds
from servers import S3Server

from daulat.config import StoreConfig
from daulat.errors import AccessDenied
from daulat.stores.s3 import open_s3
from daulat.stores.s3creds import CredentialChain, proxy_options

MiB = 1024 * 1024
ROLE_KEY = ("AKROLEIMDS000001", "role-secret-from-imds-0001")
SRC_BUCKET, DST_BUCKET = "chain-src", "chain-dst"


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any AWS/Alibaba credentials, config files or
    proxies: what the chain finds must come from ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "ALIBABA_", "OSS_"))
        and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    }
    env["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("src")) or env.get(
        "PYTHONPATH", ""
    )
    env.update(extra)
    return env


def _daulat(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from daulat.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def role_server(s3_server: S3Server) -> Iterator[S3Server]:
    """The session's SeaweedFS, also accepting the role's keys for the test's duration."""
    original = (s3_server.access_key_id, s3_server.secret_access_key)
    s3_server.set_credentials([original, ROLE_KEY])
    try:
        yield s3_server
    finally:
        s3_server.set_credentials([original])


def _put(server: S3Server, bucket: str, key: str, body: bytes) -> None:
    status, text = server.request("PUT", f"/{bucket}/{key}", body)
    assert status == 200, text


def test_instance_role_alone_serves_scan_exit_and_verify(
    role_server: S3Server, tmp_path: Path
) -> None:
    for bucket in (SRC_BUCKET, DST_BUCKET):
        role_server.create_bucket(bucket)
    bodies = {f"role/{i}.txt": f"object {i}".encode() for i in range(5)}
    bodies["role/big.bin"] = hashlib.sha256(b"big").digest() * (10 * MiB // 32)  # multipart
    for key, body in bodies.items():
        _put(role_server, SRC_BUCKET, key, body)
    (tmp_path / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "s3://{SRC_BUCKET}/role"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{role_server.endpoint}"

            [stores.dst]
            url = "s3://{DST_BUCKET}/copy"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{role_server.endpoint}"
            """
        )
    )
    with fake_imds((*ROLE_KEY, "")) as imds:
        env = _clean_env(tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
        scan = _daulat(["scan", "--json"], tmp_path, env)
        assert scan.returncode == 0, scan.stderr
        counts = {s["store"]: s["objects"] for s in json.loads(scan.stdout)}
        assert counts == {"src": len(bodies), "dst": 0}
        # One metadata fetch per store and process: obstore asks the store's chain, never
        # the metadata service (or anything else) itself.
        assert imds.hits["credentials"] == 2
        exit_ = _daulat(["exit", "src", "dst", "--json"], tmp_path, env)
        assert exit_.returncode == 0, exit_.stderr + exit_.stdout
        summary = json.loads(exit_.stdout)
        assert summary["copied_objects"] == len(bodies) and summary["ok"]
        verify = _daulat(["verify", "src", "dst", "--full", "--json"], tmp_path, env)
        assert verify.returncode == 0, verify.stderr + verify.stdout
        # Without the metadata service nothing works: no request goes out unsigned.
        no_role = _clean_env(tmp_path, AWS_EC2_METADATA_DISABLED="true")
        refused = _daulat(["scan", "src"], tmp_path, no_role)
        assert refused.returncode != 0
        assert "no credentials found" in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr
    for key, body in bodies.items():
        status, got = role_server.request("GET", f"/{DST_BUCKET}/copy/{key.removeprefix('role/')}")
        assert status == 200 and got == body


def test_obstore_gets_the_chains_credentials_with_their_expiry(
    role_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The obstore callback returns the role's keys and their expiry (so obstore asks again
    before they lapse), and a store built on the chain works through both clients."""
    role_server.create_bucket(SRC_BUCKET)
    for name, value in _clean_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in list(os.environ):
        if name.startswith("AWS_") and name not in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.delenv(name)
    with fake_imds((*ROLE_KEY, ""), lifetime=dt.timedelta(minutes=5)) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint)
        cfg = StoreConfig.model_validate(
            {
                "name": "roled",
                "url": f"s3://{SRC_BUCKET}/expiry",
                "provider": "self-hosted",
                "country": "ID",
                "endpoint": role_server.endpoint,
            }
        )
        chain = CredentialChain.for_store(cfg)
        first = chain.obstore_credential()
        assert (first["access_key_id"], first["secret_access_key"]) == ROLE_KEY
        assert first["token"] is None
        expires = first["expires_at"]
        assert isinstance(expires, dt.datetime)
        # botocore stretches a metadata expiry closer than 15 minutes (static
        # stability); obstore gets what botocore will act on.
        left = expires - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=3) < left < dt.timedelta(minutes=30)

        store = open_s3(cfg)

        async def go() -> None:
            await store.put("small.txt", b"through obstore")
            assert await (await store.get("small.txt")).read_all() == b"through obstore"
            listed = [o.key async for batch in store.list() for o in batch]
            assert listed == ["small.txt"]
            await store.delete("small.txt")
            await store.close()

        run(go())


def test_store_keys_win_over_environment_and_profile(tmp_path: Path) -> None:
    cfg = StoreConfig.model_validate(
        {
            "name": "own",
            "url": "s3://b",
            "provider": "aws",
            "region": "eu-west-1",
            "profile": "ignored-when-keys-are-given",
            "credentials": {"access_key_id": "AKOWN", "secret_access_key": "own-secret"},
        }
    )
    chain = CredentialChain.for_store(cfg, env={"AWS_ACCESS_KEY_ID": "AKENV"})
    resolved = chain.resolve()
    assert resolved.credentials.access_key_id == "AKOWN" and resolved.expires is None


def test_a_named_profile_is_read_from_the_shared_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[exit]\naws_access_key_id = AKPROFILE\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    cfg = StoreConfig.model_validate(
        {"name": "p", "url": "s3://b", "provider": "aws", "region": "eu-west-1", "profile": "exit"}
    )
    assert CredentialChain.for_store(cfg).resolve().credentials.access_key_id == "AKPROFILE"
    missing = StoreConfig.model_validate({**cfg.model_dump(), "profile": "nope"})
    with pytest.raises(AccessDenied, match="ProfileNotFound"):
        CredentialChain.for_store(missing).resolve()


def test_proxy_settings_reach_obstore() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "169.254.169.254,.internal"}
    assert proxy_options("https://s3.eu-west-1.amazonaws.com", env) == {
        "proxy_url": "http://proxy:3128",
        "proxy_excludes": "169.254.169.254,.internal",
    }
    assert proxy_options("http://minio.local:9000", env) == {}
    assert proxy_options("http://minio:9000", {"http_proxy": "http://p:1"}) == {
        "proxy_url": "http://p:1"
    }


def test_both_clients_go_through_the_proxy_the_environment_names(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY reaches obstore (ordinary reads and writes) and botocore (listing, streamed
    upload) alike; the endpoint itself is never contacted directly."""
    from servers import forward_proxy

    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with forward_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.endpoint)
        raw = s3_store_config(s3_server, "proxied", "proxied-bucket", f"p{os.getpid()}")
        store = open_s3(StoreConfig.model_validate(raw))

        async def go() -> None:
            await store.put("small.txt", b"through the proxy")  # obstore
            assert await (await store.get("small.txt")).read_all() == b"through the proxy"
            big = hashlib.sha256(b"p").digest() * (9 * MiB // 32)

            async def stream() -> Any:
                yield big

            await store.put("big.bin", stream())  # botocore, multipart
            listed = [o.key async for batch in store.list() for o in batch]
            assert sorted(listed) == ["big.bin", "small.txt"]
            for key in ("small.txt", "big.bin"):
                await store.delete(key)
            await store.close()

        run(go())
    families = proxy.requests
    assert families.get("botocore", 0) >= 4  # list, create, part(s), complete
    assert families["total"] - families.get("botocore", 0) >= 3  # obstore: put, get, delete
