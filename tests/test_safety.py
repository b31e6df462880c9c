"""Safe by default: no typo, overlap or forgotten flag destroys data, exposes plaintext, or
looks like success.

Every test runs the ``daulat`` command (``daulat.cli.run``) over a ``daulat.toml`` in ``tmp_path``
against real stores (directories, SeaweedFS, Azurite) and then looks at the stores themselves:
a refusal must leave source and destination exactly as they were.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import azure_store_config, fs_store_config, run, s3_store_config
from servers import AzuriteServer, S3Server
from test_transfer import (
    CliResult,
    cli,
    fill_config,
    read_config,
    unique,
    write_config,
)

from daulat.config import StoreConfig
from daulat.crypto import new_identity
from daulat.errors import ConfigError
from daulat.signing import LOCAL_KEY, public_key_of
from daulat.stores import open_store
from daulat.stores.fs import FsStore
from daulat.transfer.locations import Location, location_of, overlaps
from daulat.transfer.safety import DeleteLimit

AGE_HEADER = b"age-encryption.org/v1\n"


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but daulat's own (``.daulat/``), by relative path."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".daulat" not in p.relative_to(root).parts
    }


def put_files(root: Path, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def fs(root: Path, name: str, url: str | None = None) -> dict[str, Any]:
    raw = fs_store_config(root, name)
    if url is not None:
        raw["url"] = url
    return raw


def refused(res: CliResult, *names: str) -> None:
    """Exit 2 with one line on stderr that names every one of ``names``; no traceback."""
    assert res.code == 2, f"expected a refusal (exit 2): {res.explain()}"
    assert "Traceback" not in res.err + res.out
    assert "refused" in res.err, res.err
    for name in names:
        assert name in res.err, f"{name!r} not in the message: {res.err}"


def pin_signer_of(config: Path, *, signer_config: Path) -> None:
    """Pin, in ``config``, the local signing key of the machine whose config is ``signer_config``
    (its manifests and name key are then believed, as after ``keys new``)."""
    line = public_key_of(signer_config.parent / ".daulat" / LOCAL_KEY).line
    config.write_text(f"signers = [{json.dumps(line)}]\n" + config.read_text())


def withhold_manifests(raw: dict[str, Any]) -> None:
    """The provider withholds daulat's files (manifests, signatures) at a store."""

    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            keys = [o.key async for batch in store.list(".daulat/") for o in batch]
            for key in keys:
                await store.delete(key)
        finally:
            await store.close()

    run(go())


SOURCE = {f"data/{i:03d}.txt": f"object {i} ".encode() * (i + 1) for i in range(8)} | {
    f"more/{i:03d}.txt": f"more {i} ".encode() * (i + 1) for i in range(4)
}


# --------------------------------------------------------------------------------------------
# 1. Locations, not names


def test_location_normalises_endpoints_and_defaults() -> None:
    """Scheme and host case, explicit default ports, trailing slashes, the catalogue's endpoint
    when none is configured, the bucket in a virtual-hosted endpoint, Azure's account."""

    def s3(url: str, **kw: Any) -> Location:
        cfg = {"name": "x", "url": url, "provider": "self-hosted", "country": "ID", **kw}
        return location_of(StoreConfig.model_validate(cfg))

    a = s3("s3://b/p/", endpoint="HTTP://LocalHost/")
    assert a == Location("s3", "http://localhost:80", "", "b", "p/")
    assert s3("s3://b", endpoint="https://h.example:443").server == "https://h.example:443"
    assert s3("s3://b", endpoint="https://h.example").server == "https://h.example:443"
    assert s3("s3://b/", endpoint="http://h:9000/").path == ""

    alibaba = StoreConfig.model_validate(
        {"name": "o", "url": "s3://pemilu", "provider": "alibaba", "region": "ap-southeast-5"}
    )
    assert location_of(alibaba).server == "https://s3.oss-ap-southeast-5.aliyuncs.com:443"
    named = alibaba.model_copy(
        update={"endpoint": "https://pemilu.s3.oss-ap-southeast-5.aliyuncs.com"}
    )
    assert location_of(named) == location_of(alibaba)
    aws = StoreConfig.model_validate(
        {"name": "a", "url": "s3://core", "provider": "aws", "region": "eu-central-1"}
    )
    assert location_of(aws, "x/y").server == "https://s3.eu-central-1.amazonaws.com:443"
    assert location_of(aws, "x/y").path == "x/y/"
    azure = StoreConfig.model_validate(
        {
            "name": "z",
            "url": "az://c/pre",
            "provider": "azure",
            "region": "indonesiacentral",
            "credentials": {"account_name": "acct"},
        }
    )
    assert location_of(azure) == Location(
        "az", "https://acct.blob.core.windows.net:443", "acct", "c", "pre/"
    )


def test_overlap_is_by_path_segment_and_server() -> None:
    def loc(path: str, server: str = "http://127.0.0.1:9000", container: str = "b") -> Location:
        return Location("s3", server, "", container, path)

    async def check() -> None:
        assert await overlaps(loc(""), loc("in/"))
        assert await overlaps(loc("in/"), loc(""))
        assert await overlaps(loc("a/"), loc("a/"))
        assert await overlaps(loc("a/"), loc("a/b/c/"))
        assert not await overlaps(loc("a/"), loc("ab/"))
        assert not await overlaps(loc(""), loc("", container="c"))
        # Two spellings of one server: the name resolves to the address.
        assert await overlaps(loc("", "http://localhost:9000"), loc("", "http://127.0.0.1:9000"))
        assert not await overlaps(loc("", "http://127.0.0.1:9001"), loc(""))
        # Global bucket namespaces: any regional endpoint names the one bucket.
        eu = loc("", "https://s3.eu-central-1.amazonaws.com:443")
        us = loc("x/", "https://s3.us-east-1.amazonaws.com:443")
        assert await overlaps(eu, us)
        assert not await overlaps(Location("file", path="/a/"), loc("/a/"))

    run(check())


def _overlap_case(tmp_path: Path, shape: str) -> tuple[list[dict[str, Any]], str, str, str]:
    """(stores, SRC, DST, a word the refusal must contain) for one pair shape on directories."""
    data = tmp_path / "data"
    put_files(data, SOURCE)
    if shape == "same-store":
        return [fs(data, "fs")], "fs", "fs", str(data)
    if shape == "alias-trailing-slash":
        return [fs(data, "fs"), fs(data, "fsalias", f"file://{data}/")], "fs", "fsalias", str(data)
    if shape == "dir-inside-dir":
        return [fs(data, "outer"), fs(data / "data", "inner")], "outer", "inner", str(data)
    if shape == "dir-around-dir":
        return [fs(data, "outer"), fs(data / "data", "inner")], "inner", "outer", str(data)
    if shape == "store-prefix-inside":
        return [fs(data, "fs")], "fs", "fs:data/sub", str(data)
    if shape == "store-prefix-around":
        return [fs(data, "fs")], "fs:data", "fs", str(data)
    if shape == "prefix-vs-inner-store":
        return [fs(data, "outer"), fs(data / "data", "inner")], "outer:data", "inner:x", "inner"
    if shape == "dotdot-spelling":
        odd = f"file://{tmp_path}/elsewhere/../data"
        return [fs(data, "fs"), fs(data, "other", odd)], "fs", "other", str(data)
    if shape == "symlinked-directory":
        (tmp_path / "link").symlink_to(data)
        return [fs(data, "real"), fs(tmp_path / "link", "linked")], "real", "linked", str(data)
    if shape == "symlink-to-new-subdirectory":
        # The destination does not exist yet; its existing ancestor is a symlink into the source.
        (tmp_path / "link").symlink_to(data)
        new = tmp_path / "link" / "new" / "dir"
        return [fs(data, "real"), fs(new, "fresh")], "real", "fresh", str(data)
    raise AssertionError(shape)


@pytest.mark.parametrize(
    "shape",
    [
        "same-store",
        "alias-trailing-slash",
        "dir-inside-dir",
        "dir-around-dir",
        "store-prefix-inside",
        "store-prefix-around",
        "prefix-vs-inner-store",
        "dotdot-spelling",
        "symlinked-directory",
        "symlink-to-new-subdirectory",
    ],
)
@pytest.mark.parametrize("command", ["copy", "sync", "exit"])
def test_overlapping_directories_are_refused(
    shape: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores, src, dst, where = _overlap_case(tmp_path, shape)
    config = write_config(tmp_path / "cfg", stores)
    before = files(tmp_path / "data")
    extra = ["--delete"] if command == "sync" else []
    res = cli([command, src, dst, *extra, "-c", str(config)], capsys)
    refused(res, src.split(":")[0], dst.split(":")[0], where)
    assert files(tmp_path / "data") == before, "a refused run changed the data"
    assert not (tmp_path / "data" / ".daulat").exists(), "a refused run wrote a manifest"


def test_restore_into_its_own_replica_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    vault = tmp_path / "vault"
    config = write_config(
        tmp_path / "cfg",
        [fs(tmp_path / "src", "src"), fs(vault, "vault"), fs(vault, "vault2", f"file://{vault}/")],
    )
    assert (
        cli(["exit", "src", "vault", "--encrypt-to", recipient, "-c", str(config)], capsys).code
        == 0
    )
    before = files(vault)
    res = cli(
        ["restore", "vault", "vault2", "-i", str(tmp_path / "id.txt"), "-c", str(config)], capsys
    )
    refused(res, "vault", "vault2", str(vault))
    assert files(vault) == before


def test_sync_delete_between_a_bucket_and_its_prefix_store_is_refused(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: ``scratch = s3://B`` and ``scratchin = s3://B/in``. Before, ``sync
    scratch scratchin --delete`` deleted source objects under ``in/`` and nested deeper on every
    rerun. Both directions, and ``STORE:prefix`` spellings of the same pair, are refused."""
    bucket = unique("scratch")
    scratch = s3_store_config(s3_server, "scratch", bucket)
    scratchin = s3_store_config(s3_server, "scratchin", bucket, "in")
    objects = {"top.txt": b"top", "in/a.txt": b"a", "in/b.txt": b"b", "other/c.txt": b"c"}
    fill_config(scratch, objects)
    config = write_config(tmp_path, [scratch, scratchin])
    for src, dst in [
        ("scratch", "scratchin"),
        ("scratchin", "scratch"),
        ("scratch:in", "scratchin"),
        ("scratch", "scratch:in"),
        ("scratch:in/deeper", "scratch:in"),
        ("scratchin:x", "scratch:in/x/y"),
    ]:
        res = cli(["sync", src, dst, "--delete", "-c", str(config)], capsys)
        refused(res, src, dst, bucket)
        assert read_config(scratch) == objects, f"sync {src} {dst} changed the bucket"


def test_two_spellings_of_one_server_are_one_location(
    s3_server: S3Server,
    azurite_server: AzuriteServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``localhost`` and ``127.0.0.1``, upper-case host names, trailing slashes:
    one server. A different bucket on it, or a sibling prefix, is not an overlap."""
    bucket = unique("spell")
    a = s3_store_config(s3_server, "a", bucket)
    b = s3_store_config(s3_server, "b", bucket)
    port = s3_server.endpoint.rsplit(":", 1)[1]
    b["endpoint"] = f"http://LocalHost:{port}/"
    other = s3_store_config(s3_server, "other", unique("other"))
    c = azure_store_config(azurite_server, "c", unique("spell"))
    d = dict(c, name="d", endpoint=c["endpoint"].replace("127.0.0.1", "localhost") + "/")
    objects = {"a/1.txt": b"one", "a/2.txt": b"two"}
    fill_config(a, objects)
    fill_config(c, objects)
    config = write_config(tmp_path, [a, b, other, c, d])
    refused(cli(["copy", "a", "b", "-c", str(config)], capsys), "a", "b", bucket)
    refused(cli(["exit", "c", "d:a", "-c", str(config)], capsys), "c", "d", c["url"][5:])
    assert read_config(a) == objects and read_config(c) == objects

    # Not overlapping: a sibling prefix whose name extends the source's, another bucket.
    res = cli(["copy", "a:a", "b:ab", "-c", str(config), "--json"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["copied_objects"] == 2
    res = cli(["exit", "b:a", "other", "-c", str(config), "--json"], capsys)
    assert res.code == 0, res.explain()
    assert read_config(other) == {"1.txt": b"one", "2.txt": b"two"}


def test_sibling_directories_still_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``a/`` and ``ab/`` (and ``a`` next to ``a.bak``) share a string prefix, not a path."""
    put_files(tmp_path / "a", SOURCE)
    config = write_config(
        tmp_path / "cfg",
        [fs(tmp_path / "a", "a"), fs(tmp_path / "ab", "ab"), fs(tmp_path / "a.bak", "bak")],
    )
    assert cli(["exit", "a", "ab", "-c", str(config)], capsys).code == 0
    assert cli(["sync", "a", "bak", "--delete", "-c", str(config)], capsys).code == 0
    assert files(tmp_path / "ab") == SOURCE == files(tmp_path / "a.bak")


# --------------------------------------------------------------------------------------------
# 2. Empty sources, --max-delete, dry-run listings


def test_sync_delete_from_an_empty_source_is_refused(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's typo: a source that lists nothing. Before: "0 objects at the source …
    deleted 3", exit 0. Now exit 2 and the victim keeps every object, unless the emptiness is
    confirmed with --allow-empty-source (and the deletions with --max-delete)."""
    (tmp_path / "typo").mkdir()
    victim = s3_store_config(s3_server, "victim", unique("victim"))
    objects = {"keep/1.txt": b"1", "keep/2.txt": b"2", "keep/3.txt": b"3"}
    fill_config(victim, objects)
    config = write_config(tmp_path / "cfg", [fs(tmp_path / "typo", "typo"), victim])

    res = cli(["sync", "typo", "victim", "--delete", "-c", str(config)], capsys)
    refused(res, "typo", "--allow-empty-source")
    assert read_config(victim) == objects
    # An empty prefix of a full store is just as empty.
    put_files(tmp_path / "typo", {"real/x.txt": b"x"})
    res = cli(["sync", "typo:rael", "victim", "--delete", "-c", str(config)], capsys)
    refused(res, "typo:rael")
    assert read_config(victim) == objects
    # An empty S3 prefix as the source of an exit: not "complete: every object verified".
    res = cli(["exit", "victim:kepp", "typo:out", "-c", str(config)], capsys)
    refused(res, "victim:kepp", "--allow-empty-source")
    assert "complete" not in res.out

    # Confirmed emptiness still meets --max-delete: 3 of 3 is more than 50%.
    res = cli(
        ["sync", "typo:rael", "victim", "--delete", "--allow-empty-source", "-c", str(config)],
        capsys,
    )
    refused(res, "--max-delete", "3")
    assert read_config(victim) == objects
    res = cli(
        [
            *("sync", "typo:rael", "victim", "--delete", "--allow-empty-source"),
            *("--max-delete", "100%", "-c", str(config), "--json"),
        ],
        capsys,
    )
    assert res.code == 0, res.explain()
    assert res.json["deleted_objects"] == 3 and read_config(victim) == {}


def test_exit_from_an_empty_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "complete: every object verified", exit 0, for an exit that copied nothing."""
    put_files(tmp_path / "src", SOURCE)
    config = write_config(
        tmp_path / "cfg", [fs(tmp_path / "src", "src"), fs(tmp_path / "dst", "dst")]
    )
    res = cli(["exit", "src:no-such-prefix", "dst", "-c", str(config)], capsys)
    refused(res, "src:no-such-prefix", "--allow-empty-source")
    assert "complete" not in res.out
    assert files(tmp_path / "dst") == {}
    ok = cli(
        ["exit", "src:no-such-prefix", "dst", "--allow-empty-source", "-c", str(config)], capsys
    )
    assert ok.code == 0, ok.explain()
    # copy from an empty source harms nothing: not refused.
    assert cli(["copy", "src:no-such-prefix", "dst", "-c", str(config)], capsys).code == 0


def test_max_delete_refuses_up_front_and_copies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deletions are counted before anything happens; over the limit, nothing is copied and
    nothing deleted (rclone would delete N and then stop). A count and a share both work."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    put_files(src, {"new/1.txt": b"new one", "new/2.txt": b"new two", "same.txt": b"same"})
    at_dst = {"same.txt": b"same", **{f"old/{i}.txt": b"old" for i in range(6)}}
    put_files(dst, at_dst)
    config = write_config(tmp_path / "cfg", [fs(src, "src"), fs(dst, "dst")])
    sync = ["sync", "src", "dst", "--delete", "-c", str(config)]

    res = cli(sync, capsys)  # 6 of 7 objects: over the default 50%
    refused(res, "6", "--max-delete", "50%")
    assert files(dst) == at_dst, "a refused sync copied or deleted"
    refused(cli([*sync, "--max-delete", "5"], capsys), "6", "--max-delete 5")
    refused(cli([*sync, "--max-delete", "80%"], capsys), "6")
    assert files(dst) == at_dst

    bad = cli([*sync, "--max-delete", "lots"], capsys)
    assert bad.code == 2 and "--max-delete" in bad.err and "Traceback" not in bad.err
    assert cli([*sync, "--max-delete", "101%"], capsys).code == 2

    res = cli([*sync, "--max-delete", "6", "--json"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["deleted_objects"] == 6 and res.json["copied_objects"] == 3
    assert files(dst) == files(src)


def test_delete_limit_parsing() -> None:
    assert DeleteLimit.parse("0") == DeleteLimit(count=0)
    assert DeleteLimit.parse(" 12 ") == DeleteLimit(count=12)
    assert DeleteLimit.parse("12.5%") == DeleteLimit(percent=12.5)
    assert DeleteLimit.parse("50%").allowed(7) == 3
    assert DeleteLimit.parse("0").allowed(1_000) == 0
    for bad in ("-1", "x", "150%", "%", "1e3"):
        with pytest.raises(ConfigError, match="--max-delete"):
            DeleteLimit.parse(bad)


def test_dry_run_lists_what_it_would_copy_and_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Human output shows the keys, bounded with "... and N more"; --json has the complete
    lists. A plan the real run would refuse is still listed, and the dry run exits 2."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    copies = {f"c/{i:03d}.txt": b"c" * (i + 1) for i in range(45)}
    gone = {f"d/{i:03d}.txt": b"d" for i in range(30)}
    put_files(src, copies)
    put_files(dst, gone)
    config = write_config(tmp_path / "cfg", [fs(src, "src"), fs(dst, "dst")])
    base = ["sync", "src", "dst", "--delete", "--dry-run", "-c", str(config)]

    res = cli([*base, "--max-delete", "100%"], capsys)
    assert res.code == 0, res.explain()
    assert "would copy 45 objects" in res.out and "would delete 30 objects" in res.out
    assert "'c/044.txt'" in res.out  # largest first
    assert "'d/000.txt'" in res.out
    assert "... and 25 more" in res.out and "... and 10 more" in res.out

    res = cli([*base, "--max-delete", "100%", "--json"], capsys)
    assert res.code == 0, res.explain()
    d = res.json
    assert {e["key"] for e in d["would_copy"]} == set(copies)
    assert {e["key"]: e["size"] for e in d["would_copy"]} == {k: len(v) for k, v in copies.items()}
    assert [e["key"] for e in d["would_delete"]] == sorted(gone)
    assert d["dry_run"] and d["deleted_objects"] == 30 and d["planned_objects"] == 45
    assert d["refusal"] is None

    # The real run would be refused (30 of 30 > 50%): the lists still come, then exit 2.
    res = cli([*base, "--json"], capsys)
    assert res.code == 2, res.explain()
    assert len(res.json["would_delete"]) == 30 and "--max-delete" in res.json["refusal"]
    assert "would be refused" in res.err
    assert files(dst) == gone and files(src) == copies


def test_dry_run_json_stays_on_stdout_beside_a_live_progress_bar(tmp_path: Path) -> None:
    """With stderr a terminal the progress bar is live and rich redirects sys.stdout to it;
    the streamed JSON must still go to stdout, whole."""
    put_files(tmp_path / "src", SOURCE)
    config = write_config(
        tmp_path / "cfg", [fs(tmp_path / "src", "src"), fs(tmp_path / "dst", "dst")]
    )
    env = dict(os.environ, TTY_COMPATIBLE="1", PYTHONPATH=os.pathsep.join(sys.path))
    argv = ["copy", "src", "dst", "--dry-run", "--json", "-c", str(config)]
    proc = subprocess.run(
        [sys.executable, "-c", "from daulat.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert {e["key"] for e in d["would_copy"]} == set(SOURCE) and d["would_delete"] == []
    assert "would_copy" not in proc.stderr


# --------------------------------------------------------------------------------------------
# 3. Never plaintext where ciphertext was


@pytest.fixture
def vault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """src → vault by an encrypted exit; vaultalias names the same directory."""
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    v = tmp_path / "vault"
    stores = [
        fs(tmp_path / "src", "src"),
        fs(v, "vault"),
        fs(v / "data", "vaultdata"),
        fs(tmp_path / "plain", "plain"),
    ]
    config = write_config(tmp_path / "cfg", stores)
    res = cli(["exit", "src", "vault", "--encrypt-to", recipient, "-c", str(config)], capsys)
    assert res.code == 0, res.explain()
    assert all(b.startswith(AGE_HEADER) for b in files(v).values())
    return {"config": config, "root": v, "recipient": recipient, "stores": stores}


def test_plain_copy_over_an_encrypted_exit_is_refused(
    vault: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: a plain ``copy src vault`` after an encrypted exit silently replaced
    every age file with plaintext. Now every plain write is refused, and says how to proceed."""
    config, root = vault["config"], vault["root"]
    before = files(root)
    for argv in (
        ["copy", "src", "vault"],
        ["sync", "src", "vault"],
        ["exit", "src", "vault"],
        ["sync", "src:data", "vault:data", "--delete", "--max-delete", "100%"],
    ):
        res = cli([*argv, "-c", str(config)], capsys)
        refused(res, "vault", "--encrypt-to", "--allow-plaintext")
        assert files(root) == before, f"{argv} wrote plaintext"
    # Encrypted writes go on.
    res = cli(
        ["copy", "src", "vault", "--encrypt-to", vault["recipient"], "-c", str(config)], capsys
    )
    assert res.code == 0, res.explain()
    # The override replaces them, for real.
    res = cli(["copy", "src", "vault", "--allow-plaintext", "-c", str(config)], capsys)
    assert res.code == 0, res.explain()
    assert files(root) == SOURCE


@pytest.mark.parametrize("evidence", ["journal", "manifest", "metadata"])
def test_each_kind_of_evidence_alone_refuses(
    evidence: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal (this machine wrote ciphertext there, still unchanged), the destination's
    encrypted manifest, or objects marked ``encryption: age``: each alone is enough.

    Metadata is stripped (xattrs) where it is not the evidence under test; the other machine
    has a state directory of its own (no journal)."""
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    stores = [fs(tmp_path / "src", "src"), fs(tmp_path / "vault", "vault")]
    here = write_config(tmp_path / "here", stores)
    elsewhere = write_config(tmp_path / "elsewhere", stores)
    command = "exit" if evidence == "manifest" else "copy"
    res = cli([command, "src", "vault", "--encrypt-to", recipient, "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    if evidence != "manifest":
        # Every writing run leaves a manifest: withhold it so that only the evidence under
        # test remains.
        shutil.rmtree(tmp_path / "vault" / ".daulat")
    if evidence != "metadata":
        for p in (tmp_path / "vault").rglob("*"):
            if p.is_file():
                for attr in os.listxattr(p):
                    os.removexattr(p, attr)
    config = here if evidence == "journal" else elsewhere
    res = cli(["copy", "src", "vault", "-c", str(config)], capsys)
    refused(
        res, "vault", {"journal": "journal", "manifest": "manifest", "metadata": "age"}[evidence]
    )
    assert all(b.startswith(AGE_HEADER) for b in files(tmp_path / "vault").values())
    if evidence != "manifest":
        # Without the evidence (the other machine, stripped metadata) a plain copy is allowed.
        other = here if evidence == "metadata" else elsewhere
        if evidence == "metadata":
            for p in (tmp_path / "vault").rglob("*"):
                for attr in os.listxattr(p) if p.is_file() else ():
                    os.removexattr(p, attr)
            other = elsewhere
        res = cli(["copy", "src", "vault", "-c", str(other)], capsys)
        assert res.code == 0, res.explain()


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_object_store_metadata_marks_ciphertext(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another machine (no journal) learns from the objects' ``encryption: age`` metadata on
    S3 and Azure, read with a one-byte ranged GET."""
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    if kind == "s3":
        dst = s3_store_config(request.getfixturevalue("s3_server"), "dst", unique("meta"))
    else:
        dst = azure_store_config(request.getfixturevalue("azurite_server"), "dst", unique("meta"))
    stores = [fs(tmp_path / "src", "src"), dst]
    here = write_config(tmp_path / "here", stores)
    elsewhere = write_config(tmp_path / "elsewhere", stores)
    res = cli(["copy", "src", "dst", "--encrypt-to", recipient, "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    withhold_manifests(dst)  # every writing run leaves one: only the metadata remains
    before = read_config(dst)
    refused(cli(["copy", "src", "dst", "-c", str(elsewhere)], capsys), "encryption: age")
    refused(cli(["sync", "src", "dst", "-c", str(here)], capsys), "journal")
    assert read_config(dst) == before
    assert all(v.startswith(AGE_HEADER) for v in before.values())


def test_encrypted_writes_under_another_name_count(
    vault: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal's encrypted pairs into vault count for an alias of vault, and for a store
    on a directory inside it, even with the destination's manifest and metadata gone."""
    root = vault["root"]
    for p in root.rglob("*"):
        if p.is_file():
            for attr in os.listxattr(p):
                os.removexattr(p, attr)
    for m in (root / ".daulat").glob("manifest-*"):
        m.unlink()
    stores = [*vault["stores"], fs(root, "vaultalias", f"file://{root}/")]
    config = write_config(tmp_path / "cfg", stores)  # same state directory, more names
    put_files(tmp_path / "src", {"x/new.txt": b"new"})
    refused(cli(["copy", "src", "vaultalias", "-c", str(config)], capsys), "journal")
    refused(cli(["copy", "src:data", "vaultdata", "-c", str(config)], capsys), "journal")
    # A store beside the vault is not the vault.
    assert cli(["copy", "src", "plain", "-c", str(config)], capsys).code == 0


def test_name_protected_destination_refuses_real_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    stores = [fs(tmp_path / "src", "src"), fs(tmp_path / "vault", "vault")]
    here = write_config(tmp_path / "here", stores)
    elsewhere = write_config(tmp_path / "elsewhere", stores)
    enc = ["--encrypt-to", recipient]
    res = cli(["exit", "src", "vault", *enc, "--encrypt-names", "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    before = files(tmp_path / "vault")
    # Encrypted, but with real names: from this machine (it has the name key) and another.
    for config in (here, elsewhere):
        res = cli(["copy", "src", "vault", *enc, "-c", str(config)], capsys)
        refused(res, "vault", "--encrypt-names", "names")
        assert files(tmp_path / "vault") == before
    ident = ["-i", str(tmp_path / "id.txt")]
    pin_signer_of(elsewhere, signer_config=here)  # its name key is believed only then
    res = cli(
        ["copy", "src", "vault", *enc, "--encrypt-names", *ident, "-c", str(elsewhere)], capsys
    )
    assert res.code == 0, res.explain()


def test_restore_into_a_store_declaring_encrypt_to_is_refused(
    vault: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed = dict(fs(tmp_path / "sealed", "sealed"), encrypt_to=[vault["recipient"]])
    config = write_config(tmp_path / "cfg", [*vault["stores"], sealed])
    pin_signer_of(config, signer_config=config)
    restore = ["restore", "vault", "sealed", "-i", str(tmp_path / "id.txt"), "-c", str(config)]
    refused(cli(restore, capsys), "sealed", "encrypt_to", "--allow-plaintext")
    assert files(tmp_path / "sealed") == {}
    res = cli([*restore, "--allow-plaintext"], capsys)
    assert res.code == 0, res.explain()
    assert files(tmp_path / "sealed") == SOURCE


def test_report_and_check_never_call_a_partly_plain_replica_encrypted(
    vault: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After plaintext replaced (some of) the ciphertext, neither the report nor ``check``
    shows the replica as encrypted."""
    # The vault is abroad (US law reaches it): its copies must be encrypted.
    stores = [dict(s, country="US") if s["name"] == "vault" else s for s in vault["stores"]]
    config = write_config(vault["config"].parent, stores)
    policy = 'stores = ["src", "vault"]\nresidency = ["ID"]\nencrypt_when_foreign_law = true'
    config.write_text(config.read_text() + f'\n[[policies]]\nname = "enc"\n{policy}\n')

    def replica() -> dict[str, Any]:
        out = tmp_path / "report.json"
        assert (
            cli(["report", "--format", "json", "-o", str(out), "-c", str(config)], capsys).code == 0
        )
        rows = [r for r in json.loads(out.read_text())["replicas"] if r["destination"] == "vault"]
        assert len(rows) == 1, rows
        return rows[0]

    def encryption_findings() -> list[str]:
        check = cli(["check", "--json", "-c", str(config)], capsys)
        assert check.code == 1  # the residency rule fails: the vault is abroad
        return [
            f["status"]
            for p in check.json["policies"]
            for f in p["findings"]
            if f["rule"] == "encrypt_when_foreign_law" and f["store"] == "vault"
        ]

    row = replica()
    assert row["encrypted"] is True and row["encrypted_objects"] == len(SOURCE)
    assert row["objects_done"] == len(SOURCE)
    assert encryption_findings() == ["pass"]

    # Part of the replica re-written in clear: the row of the encrypted copy keeps its other
    # objects, and still does not call the replica encrypted.
    res = cli(["copy", "src:more", "vault:more", "--allow-plaintext", "-c", str(config)], capsys)
    assert res.code == 0, res.explain()
    more = sum(1 for k in SOURCE if k.startswith("more/"))
    row = replica()
    assert row["encrypted"] is False, row
    assert row["objects_done"] == row["encrypted_objects"] == len(SOURCE) - more
    html = tmp_path / "report.html"
    assert cli(["report", "-o", str(html), "-c", str(config)], capsys).code == 0
    assert "other copies wrote plaintext there" in html.read_text()
    assert encryption_findings() == ["fail"]


def _withhold_every_manifest(raw: dict[str, Any]) -> None:
    """The provider withholds daulat's files under every prefix of a store."""

    async def go() -> None:
        store = open_store(StoreConfig.model_validate(raw))
        try:
            keys = [o.key async for batch in store.list("") for o in batch]
            for key in keys:
                if key.startswith(".daulat/") or "/.daulat/" in key:
                    await store.delete(key)
        finally:
            await store.close()

    run(go())


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_plain_copy_into_another_prefix_of_an_encrypted_store_is_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile review: ``exit data vault --encrypt-to R`` then ``copy data vault:sub`` wrote
    plaintext at vault/sub/. A store (bucket, directory) that holds daulat's ciphertext under
    any prefix is encrypted for plain writes anywhere in it: the journal (this machine), the
    manifests above or below the destination, or the first objects' ``encryption: age`` mark
    (another machine, even with every manifest withheld) show it."""
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    if kind == "fs":
        dst = fs(tmp_path / "vault", "vault")
    else:
        dst = s3_store_config(request.getfixturevalue("s3_server"), "vault", unique("prefixes"))
    stores = [fs(tmp_path / "src", "src"), dst, fs(tmp_path / "plain", "plain")]
    here = write_config(tmp_path / "here", stores)
    elsewhere = write_config(tmp_path / "elsewhere", stores)
    res = cli(["exit", "src", "vault:arsip", "--encrypt-to", recipient, "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    before = read_config(dst, skip_manifests=False)
    targets = ("vault:sub", "vault", "vault:arsip/deeper", "vault:arsip")
    for config in (here, elsewhere):
        for target in targets:
            res = cli(["copy", "src", target, "-c", str(config)], capsys)
            refused(res, "vault", "--encrypt-to", "--allow-plaintext")
    assert read_config(dst, skip_manifests=False) == before
    _withhold_every_manifest(dst)
    before = read_config(dst, skip_manifests=False)
    for config in (here, elsewhere):
        for target in targets:
            refused(cli(["copy", "src", target, "-c", str(config)], capsys), "vault")
    assert read_config(dst, skip_manifests=False) == before
    # A store beside it is not it; encrypted writes go on; the override writes in clear.
    assert cli(["copy", "src", "plain", "-c", str(elsewhere)], capsys).code == 0
    enc = ["--encrypt-to", recipient]
    assert cli(["copy", "src", "vault:sub", *enc, "-c", str(here)], capsys).code == 0
    res = cli(["copy", "src", "vault:other", "--allow-plaintext", "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    assert read_config(dst, "other/") == SOURCE


class _Writes:
    """Every object written to a directory store in this process: key → bytes (streamed bodies
    are kept as b"<stream>")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.items: list[tuple[str, str, bytes]] = []
        original = FsStore.put
        outer = self

        async def put(self: FsStore, key: str, data: Any, *args: Any, **kw: Any) -> Any:
            body = data if isinstance(data, bytes) else b"<stream>"
            outer.items.append((self.name, key, body))
            return await original(self, key, data, *args, **kw)

        monkeypatch.setattr(FsStore, "put", put)

    def to(self, store: str) -> list[tuple[str, bytes]]:
        return [(k, b) for s, k, b in self.items if s == store]


def _scratch_is_gone(root: Path) -> None:
    assert not [p for p in (root / ".daulat").glob("drill-*")], "scratch copy left behind"


def test_drill_into_an_encrypted_destination_needs_encrypt_to(
    vault: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hostile review: after ``exit --encrypt-to``, ``drill data vault`` copied plaintext objects
    and a plaintext manifest (names, SHA-256s) to vault/.daulat/drill-*/. Now the drill is
    refused like a plain exit there; with --encrypt-to its scratch copy is age ciphertext."""
    config, root = vault["config"], vault["root"]
    assert cli(["scan", "src", "-c", str(config)], capsys).code == 0
    writes = _Writes(monkeypatch)
    drill = ["drill", "src", "vault", "--sample", "12", "--seed", "1", "-c", str(config)]
    refused(cli(drill, capsys), "vault", "drill", "--encrypt-to", "--allow-plaintext")
    assert writes.to("vault") == []
    # Into a new prefix of the encrypted store: the same.
    refused(cli([*drill[:2], "vault:other", *drill[3:]], capsys), "vault", "--encrypt-to")
    assert writes.to("vault") == []

    res = cli([*drill, "--encrypt-to", vault["recipient"], "--json"], capsys)
    assert res.code == 0, res.explain()
    written = writes.to("vault")
    data = [(k, b) for k, b in written if "/.daulat/manifest-" not in k]
    manifests = [k for k, _ in written if "/.daulat/manifest-" in k and not k.endswith(".sig")]
    assert len(data) >= 12 and all(b.startswith(AGE_HEADER) for _, b in data), data[:2]
    assert manifests and all(k.endswith(".jsonl.age") for k in manifests), manifests
    for _, body in written:
        for plain in SOURCE.values():
            assert plain not in body
    _scratch_is_gone(root)
    # --allow-plaintext drills in clear, as asked.
    res = cli([*drill, "--allow-plaintext"], capsys)
    assert res.code == 0, res.explain()


def test_drill_into_a_name_protected_destination_needs_encrypt_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for protected names: --encrypt-to alone is refused (the sample's names would
    reach the destination); with --encrypt-names nothing written there holds a real name."""
    recipient = new_identity(tmp_path / "id.txt")
    put_files(tmp_path / "src", SOURCE)
    stores = [fs(tmp_path / "src", "src"), fs(tmp_path / "vault", "vault")]
    here = write_config(tmp_path / "here", stores)
    elsewhere = write_config(tmp_path / "elsewhere", stores)
    enc = ["--encrypt-to", recipient]
    res = cli(["exit", "src", "vault", *enc, "--encrypt-names", "-c", str(here)], capsys)
    assert res.code == 0, res.explain()
    for config in (here, elsewhere):
        assert cli(["scan", "src", "-c", str(config)], capsys).code == 0
    writes = _Writes(monkeypatch)
    for config in (here, elsewhere):
        drill = ["drill", "src", "vault", "--sample", "12", "--seed", "1", "-c", str(config)]
        before = len(writes.items)
        refused(cli([*drill, *enc], capsys), "vault", "names", "--encrypt-names")
        refused(cli(drill, capsys), "vault", "--encrypt-to")
        assert len(writes.items) == before
        res = cli([*drill, *enc, "--encrypt-names", "--json"], capsys)
        assert res.code == 0, res.explain()
    written = writes.to("vault")
    assert written
    for key, body in written:
        name = key.rsplit("/", 1)[-1]
        if "/.daulat/manifest-" not in key:
            assert re.fullmatch(r"[0-9a-f]{64}", name), key
            assert body.startswith(AGE_HEADER)
        for real in SOURCE:
            assert real not in key and real.encode() not in body
    _scratch_is_gone(tmp_path / "vault")


# --------------------------------------------------------------------------------------------
# 4. Honest remainders


@pytest.mark.parametrize("what", ["missing-bucket", "missing-container", "bad-credentials"])
def test_unlistable_destination_stops_before_copying_and_counts_what_remains(
    what: str,
    s3_server: S3Server,
    azurite_server: AzuriteServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: "left 0 (0 B) … 0 objects remain to copy" while everything remained, and a
    missing bucket blamed the credentials."""
    put_files(tmp_path / "src", SOURCE)
    if what == "missing-bucket":
        dst = s3_store_config(s3_server, "dst", unique("real"))
        dst["url"] = f"s3://{unique('nobucket')}"
        reason = "bucket/container does not exist"
    elif what == "missing-container":
        dst = azure_store_config(azurite_server, "dst", unique("real"))
        dst["url"] = f"az://{unique('nocontainer')}"
        reason = "bucket/container does not exist"
    else:
        dst = s3_store_config(s3_server, "dst", unique("creds"))
        dst["credentials"] = dict(dst["credentials"], secret_access_key="wrong" * 8)
        reason = "credentials"
    config = write_config(tmp_path / "cfg", [fs(tmp_path / "src", "src"), dst])
    total = sum(len(v) for v in SOURCE.values())

    res = cli(["exit", "src", "dst", "-c", str(config), "--json"], capsys)
    assert res.code == 1, res.explain()
    d = res.json
    assert d["left_objects"] == len(SOURCE) and d["left_bytes"] == total
    assert d["copied_objects"] == 0 and d["ok"] is False
    assert reason in d["stopped"] and "cannot list the destination" in d["stopped"]
    if what != "bad-credentials":
        assert "credentials" not in d["stopped"]

    res = cli(["copy", "src", "dst", "-c", str(config)], capsys)
    assert res.code == 1
    assert f"{len(SOURCE)} objects" in res.err and "remain to copy" in res.err
    assert reason in res.err and "Traceback" not in res.err
