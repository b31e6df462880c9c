"""A ``STORE:PREFIX`` never reaches outside the store, at two depths.

* Every command that takes an address parses it with one parser (:mod:`daulat.address`): a
  prefix with a ``..``, ``.`` or empty segment, or a control character, is a config error (exit
  2) naming it, before anything is listed, read or written.
* The filesystem store confines itself whatever prefix it is given: ``list("../x/")`` lists
  nothing, and a prefix through a symlink planted in the root is never followed.

Everything on the real filesystem; the tree outside the store root is snapshotted and must be
unchanged after every command.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest
from conftest import fs_store_config, run
from test_fs_store import snapshot
from test_transfer import cli, write_config

from daulat.address import parse_address, store_only
from daulat.config import load_config
from daulat.errors import ConfigError, InvalidKey
from daulat.stores.fs import FsStore
from daulat.stores.fstree import open_root, walk
from daulat.transfer.engine import Endpoint

SECRET = b"outside the store: never listed, read, written or removed"

# Prefixes that would name a place outside (or beside) the store root, as typed by a user.
ESCAPES = [
    "..",
    "../",
    "../outside",
    "../../../../etc",
    "/../outside/",
    "a/../../outside",
    "./a",
    "a/.",
    "a//b",
    "a\nb",
    "a\x1b[2Jb",
    "a\x00b",
]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``daulat.toml`` with stores ``src`` (root/src: a.txt, b/c.txt, a symlink ``link`` to
    the outside directory) and ``dst`` (root/dst, empty); returns (config, outside)."""
    base = tmp_path / "work"
    outside = base / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "sub" / "deeper.txt").write_bytes(SECRET)
    src = base / "root" / "src"
    (src / "b").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "b" / "c.txt").write_bytes(b"gamma")
    (src / "link").symlink_to(outside)
    # The same outside directory seen from the destination, for writes through a link.
    dst = base / "root" / "dst"
    dst.mkdir()
    (dst / "link").symlink_to(outside)
    config = write_config(base / "cfg", [fs_store_config(src, "src"), fs_store_config(dst, "dst")])
    return config, outside


def _argv(command: str, bad: str) -> list[list[str]]:
    """The ways ``command`` takes an address, each with ``bad`` as the prefix of one side."""
    if command in ("ls", "size"):
        return [[command, f"src:{bad}"]]
    if command == "drill":
        return [
            ["drill", f"src:{bad}", "dst", "--sample", "1"],
            ["drill", "src", f"dst:{bad}", "--sample", "1"],
        ]
    extra = {
        "sync": ["--delete", "--max-delete", "100%"],
        "exit": [],
        "copy": [],
        "verify": ["--full"],
    }[command]
    return [[command, f"src:{bad}", "dst", *extra], [command, "src", f"dst:{bad}", *extra]]


@pytest.mark.parametrize("command", ["ls", "size", "copy", "sync", "exit", "verify", "drill"])
def test_every_command_refuses_a_prefix_that_leaves_the_store(
    tree: tuple[Path, Path], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, outside = tree
    before_outside = snapshot(outside)
    before_dst = snapshot(config.parent.parent / "root" / "dst")
    for bad in ESCAPES:
        for argv in _argv(command, bad):
            res = cli([*argv, "--config", str(config)], capsys)
            assert res.code == 2, (argv, res.code, res.out, res.err)
            assert "Traceback" not in res.out + res.err
            assert "the prefix" in res.err and repr(bad) in res.err, (argv, res.err)
            # Nothing from outside the root was shown.
            assert "secret.txt" not in res.out and "deeper" not in res.out, (argv, res.out)
    assert snapshot(outside) == before_outside
    assert snapshot(config.parent.parent / "root" / "dst") == before_dst


@pytest.mark.parametrize("command", ["scan", "clean"])
def test_whole_store_commands_refuse_an_address_with_a_prefix(
    tree: tuple[Path, Path], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, outside = tree
    before = snapshot(outside)
    for spec in ("src:..", "src:../outside", "src:a"):
        res = cli([command, spec, "--config", str(config)], capsys)
        assert res.code == 2, (spec, res.out, res.err)
        assert "whole stores" in res.err or "the prefix" in res.err, res.err
    assert snapshot(outside) == before


def test_a_leading_slash_is_dropped_so_an_absolute_prefix_stays_inside(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``src:/b/`` is ``src:b/`` (documented); ``src:/etc`` lists the store's own etc/, which
    does not exist, never the machine's /etc."""
    config, _outside = tree
    res = cli(["ls", "src:/etc", "-R", "--config", str(config)], capsys)
    assert (res.code, res.out) == (0, ""), (res.out, res.err)
    res = cli(["ls", "src:/b/", "-R", "--config", str(config)], capsys)
    assert (res.code, res.out.split()) == (0, ["c.txt"]), (res.out, res.err)
    res = cli(["size", "src:/", "--json", "--config", str(config)], capsys)
    assert res.code == 0 and res.json["objects"] == 2, res.out
    res = cli(["copy", "src:/b", "dst:/copied/", "--config", str(config)], capsys)
    assert res.code == 0, res.explain()
    dst = config.parent.parent / "root" / "dst"
    assert (dst / "copied" / "c.txt").read_bytes() == b"gamma"
    assert not (dst / "a.txt").exists()


def test_a_prefix_through_a_planted_symlink_is_never_followed(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, outside = tree
    before = snapshot(outside)
    res = cli(["ls", "src:link", "-R", "--config", str(config)], capsys)
    assert (res.code, res.out) == (0, ""), (res.out, res.err)
    res = cli(["size", "src:link/sub", "--json", "--config", str(config)], capsys)
    assert res.code == 0 and res.json["objects"] == 0, res.out
    # Reading through the link: an empty source. Writing through it: every object refused.
    res = cli(["copy", "src:link", "dst:got", "--json", "--config", str(config)], capsys)
    assert res.json["source_objects"] == 0, res.explain()
    assert cli(["scan", "src", "--config", str(config)], capsys).code == 0  # the drill samples it
    for argv in (
        ["copy", "src", "dst:link"],
        ["exit", "src", "dst:link"],
        ["sync", "src", "dst:link", "--delete", "--max-delete", "100%"],
        ["verify", "src", "dst:link", "--full"],
        ["drill", "src", "dst:link", "--sample", "2"],
    ):
        res = cli([*argv, "--config", str(config)], capsys)
        assert res.code == 1, (argv, res.code, res.out, res.err)
        assert "Traceback" not in res.out + res.err
        assert snapshot(outside) == before, f"{argv} changed something outside the root"
    assert "secret.txt" not in (config.parent.parent / "root" / "dst").iterdir().__repr__()


# --------------------------------------------------------------------------------------------
# The store itself, given any prefix by any caller


def _listed(store: FsStore, prefix: str) -> list[str]:
    async def go() -> list[str]:
        return sorted([o.key async for batch in store.list(prefix) for o in batch])

    return run(go())


@pytest.mark.parametrize(
    "prefix",
    [
        "../",
        "../../",
        "../../outside/",  # root/src/../../outside is the outside directory
        "../../outside/s",
        "b/../../../outside/",
        "/",
        "/outside/",
        "./",
        "link/",
        "link/sub/",
        "a//",
        "\x00/",
        "a\x00b/c",
    ],
)
def test_the_filesystem_store_lists_nothing_outside_its_root(
    tree: tuple[Path, Path], prefix: str
) -> None:
    """A prefix no key below the root can start with is refused (InvalidKey, as every method
    refuses such keys); a symlink is listed as nothing. Either way nothing outside is read."""
    config, outside = tree
    root = config.parent.parent / "root" / "src"
    store = FsStore("src", root)
    before = snapshot(outside)
    if prefix.startswith("link/"):
        assert _listed(store, prefix) == []
    else:
        with pytest.raises(InvalidKey):
            _listed(store, prefix)
    assert snapshot(outside) == before
    assert _listed(store, "") == ["a.txt", "b/c.txt"]


def test_the_descriptor_walk_refuses_names_that_climb(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    root = open_root(tmp_path / "root", create=False)
    assert root is not None
    try:
        for segments in ([".."], ["a", ".."], ["."], [""], ["a/b"], ["a\x00"]):
            for create in (False, True):
                with pytest.raises(OSError) as info:
                    walk(root, segments, create=create)
                assert info.value.errno == errno.EINVAL, segments
        fds = walk(root, ["a"], create=False)
        os.close(fds[1])
    finally:
        os.close(root)
    assert sorted(os.listdir(tmp_path)) == ["root"]


# --------------------------------------------------------------------------------------------
# The one parser


def test_one_parser_for_every_address() -> None:
    assert parse_address("kpu") == parse_address("kpu:") == parse_address("kpu:/")
    assert parse_address("kpu:/c1/").prefix == parse_address("kpu:c1").prefix == "c1/"
    assert parse_address("kpu:a/b:c").prefix == "a/b:c/"  # ':' in a prefix is a character
    assert parse_address("kpu:c1").label == "kpu:c1/"
    assert Endpoint.normalise("/x/y/") == "x/y/"
    for bad in ESCAPES:
        with pytest.raises(ConfigError, match="the prefix"):
            parse_address(f"kpu:{bad}")
        with pytest.raises(ConfigError):
            Endpoint.normalise(bad)
    with pytest.raises(ConfigError, match="expected STORE"):
        parse_address(":x")
    assert store_only("kpu", "scan") == "kpu"
    with pytest.raises(ConfigError, match="whole stores"):
        store_only("kpu:x", "scan")


@pytest.mark.parametrize("url", ["s3://b/../x", "s3://b/a/./x", "s3://b/a//x", "az://c/.."])
def test_a_configured_prefix_that_climbs_is_a_config_error(tmp_path: Path, url: str) -> None:
    provider = "azure" if url.startswith("az:") else "self-hosted"
    where = 'region = "indonesiacentral"' if provider == "azure" else 'country = "ID"'
    (tmp_path / "daulat.toml").write_text(
        f'[stores.x]\nurl = "{url}"\nprovider = "{provider}"\n{where}\n'
        'endpoint = "http://127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match="its prefix"):
        load_config(tmp_path / "daulat.toml")


def test_library_calls_refuse_too(tree: tuple[Path, Path]) -> None:
    from daulat.listing import ls, size
    from daulat.transfer import open_endpoint

    config = load_config(tree[0])
    with pytest.raises(ConfigError):
        open_endpoint(config, "src:../outside")
    with pytest.raises(ConfigError):
        asyncio.run(size(config, "src:.."))

    async def listing() -> None:
        async for _ in ls(config, "src:../../../../etc"):
            pass

    with pytest.raises(ConfigError):
        asyncio.run(listing())
