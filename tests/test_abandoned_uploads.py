"""An exit aborts the multipart uploads a killed run left at an S3 destination: their parts are
stored and billed but never visible, so nothing else would ever clean them up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run, s3_store_config
from servers import S3Server

from daulat.cli import run as cli
from daulat.config import load_config
from daulat.stores import open_store
from daulat.stores.s3raw import unwrap_fallback


def test_exit_aborts_uploads_a_killed_run_left_behind(
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dst = s3_store_config(s3_server, "dst", "abandoned-mpu")
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "file://{tmp_path}/src"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "s3://abandoned-mpu"\nprovider = "self-hosted"\ncountry = "ID"\n'
        f'endpoint = "{dst["endpoint"]}"\n[stores.dst.credentials]\n'
        f'access_key_id = "{dst["credentials"]["access_key_id"]}"\n'
        f'secret_access_key = "{dst["credentials"]["secret_access_key"]}"\n'
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    config = load_config(tmp_path / "daulat.toml")

    async def leave_an_upload() -> list[str]:
        store = open_store(config.store("dst"))
        raw = unwrap_fallback(store)
        assert raw is not None
        # What a run killed mid-upload leaves: an upload begun, one part stored, no completion.
        upload_id = await raw.raw._create_upload("big.bin", "big.bin", {})
        await raw.raw._upload_part("big.bin", "big.bin", upload_id, 1, b"x" * (5 * 1024 * 1024))
        keys = [u.key async for batch in raw.raw.list_multipart_uploads() for u in batch]
        await store.close()
        return keys

    assert run(leave_an_upload()) == ["big.bin"]
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "src", "dst", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["aborted_uploads"] == 1 and summary["verified_objects"] == 1

    async def open_uploads() -> list[str]:
        store = open_store(config.store("dst"))
        raw = unwrap_fallback(store)
        assert raw is not None
        keys = [u.key async for batch in raw.raw.list_multipart_uploads() for u in batch]
        await store.close()
        return keys

    assert run(open_uploads()) == []
