"""Folder markers (empty objects whose key ends in '/', as the AWS console's "Create folder"
makes) at a source: a directory destination cannot hold them as objects, so they are set aside
with a note instead of making every exit "incomplete" for ever; a bucket gets them as objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_transfer import fill_config, read_config, unique, write_config

from daulat.cli import run as cli_run

DATA = {"a.txt": b"alpha", "docs/b.txt": b"bravo"}
MARKERS = {"docs/": b"", "trailing/": b"", "empty/deeper/": b""}


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_run(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def test_folder_markers_are_set_aside_at_a_directory_and_copied_to_a_bucket(
    s3_server_b: S3Server,
    tmp_path: Path,
    s3_server: S3Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    src = s3_store_config(s3_server, "srcb", unique("markers"))
    bucket = s3_store_config(s3_server_b, "other", unique("markers-dst"))
    fill_config(src, {**DATA, **MARKERS})
    hdst = fs_store_config(tmp_path / "hdst", "hdst")
    config = write_config(tmp_path, [src, bucket, hdst])
    assert set(read_config(src, skip_manifests=False)) >= set(MARKERS)  # the source lists them

    for _ in range(2):  # and a rerun is as complete
        code, out, err = cli(["exit", "srcb", "hdst", "--config", str(config)], capsys)
        assert code == 0, out + err
        assert "complete" in out and "refused" not in err, out + err
        assert "3 folder marker(s)" in err and "'trailing/'" in err, err
    assert read_config(hdst) == DATA
    code, out, err = cli(["verify", "srcb", "hdst", "--config", str(config)], capsys)
    assert code == 0, out + err

    # A bucket holds them: copied like any other object, and verified.
    code, out, err = cli(["exit", "srcb", "other", "--config", str(config)], capsys)
    assert code == 0 and "folder marker" not in err, out + err
    assert read_config(bucket) == {**DATA, **MARKERS}
