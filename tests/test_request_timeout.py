"""A request timeout without progress: an endpoint that accepts connections and never answers
fails a run with a clear message in well under a minute, instead of hanging for minutes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import s3_store_config
from servers import S3Server, silent_server


def _daulat(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    return subprocess.run(
        [sys.executable, "-c", "from daulat.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _config(tmp: Path, endpoint: str, kind: str) -> None:
    src = tmp / "src"
    src.mkdir()
    (src / "a.txt").write_text("some data")
    if kind == "s3":
        dst = f"""
            [stores.dst]
            url = "s3://silent-bucket"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{endpoint}"
            [stores.dst.credentials]
            access_key_id = "AK"
            secret_access_key = "SK"
            """
    else:
        dst = f"""
            [stores.dst]
            url = "az://silent"
            provider = "azure"
            region = "indonesiacentral"
            endpoint = "{endpoint}/devstoreaccount1"
            [stores.dst.credentials]
            account_name = "devstoreaccount1"
            account_key = "{azure_key()}"
            """
    (tmp / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "file://{src}"
            provider = "local"
            country = "ID"
            """
        )
        + textwrap.dedent(dst)
    )


def azure_key() -> str:
    from servers import AZURITE_ACCOUNT_KEY

    return AZURITE_ACCOUNT_KEY


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_silent_endpoint_fails_a_copy_within_the_default_timeout(
    tmp_path: Path, kind: str
) -> None:
    with silent_server() as endpoint:
        _config(tmp_path, endpoint, kind)
        started = time.monotonic()
        proc = _daulat(["copy", "src", "dst"], tmp_path)
        took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "no answer within 30 s" in text and "request_timeout" in text
    assert "Traceback" not in text
    assert took < 60, f"took {took:.0f} s"


def test_request_timeout_option_overrides_the_config(tmp_path: Path) -> None:
    with silent_server() as endpoint:
        _config(tmp_path, endpoint, "s3")
        started = time.monotonic()
        proc = _daulat(["copy", "src", "dst", "--request-timeout", "2"], tmp_path)
        took = time.monotonic() - started
        scan = _daulat(["scan", "dst", "--request-timeout", "1.5"], tmp_path)
    assert proc.returncode == 1 and "no answer within 2 s" in proc.stdout + proc.stderr
    assert took < 20, f"took {took:.0f} s"
    assert scan.returncode != 0 and "no answer within 1.5 s" in scan.stdout + scan.stderr


def test_a_slow_but_moving_transfer_is_not_cut(s3_server: S3Server, tmp_path: Path) -> None:
    """The limit is on progress, not on a whole request: a 20 MiB object that takes ~10 s
    through --bwlimit goes through with a 2 s request timeout."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    raw = s3_store_config(s3_server, "dst", "slow-moving", "t")
    (tmp_path / "daulat.toml").write_text(
        textwrap.dedent(
            f"""
            [stores.src]
            url = "file://{src}"
            provider = "local"
            country = "ID"

            [stores.dst]
            url = "{raw["url"]}"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{raw["endpoint"]}"
            [stores.dst.credentials]
            access_key_id = "{s3_server.access_key_id}"
            secret_access_key = "{s3_server.secret_access_key}"
            """
        )
    )
    started = time.monotonic()
    proc = _daulat(
        ["exit", "src", "dst", "--bwlimit", "2M", "--request-timeout", "2"], tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started > 8  # it really was slow
