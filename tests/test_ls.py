"""``daulat ls`` and ``daulat size`` on every store kind (filesystem, SeaweedFS, Azurite, GCS), the
listing library under them, ``python -m daulat`` and shell completion."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import StoreMaker, store_maker
from memstore import MemoryStore

from daulat.cli import run
from daulat.errors import InvalidKey
from daulat.filters import build_filter
from daulat.inventory import Manifest
from daulat.listing import Entry, list_entries, measure
from daulat.stores import Store
from daulat.stores.base import Capabilities, ObjectInfo
from daulat.stores.fs import FsStore

SRC = str(Path(__file__).resolve().parents[1] / "src")
OBJECTS = {
    "a.txt": b"alpha",
    "b/1.bin": b"1" * 10,
    "b/2.bin": b"2" * 20,
    "b/c/3.jpg": b"3" * 30,
    "d/e/4.jpg": b"4" * 40,
    "z.jpg": b"",
}


def toml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_config(directory: Path, raw: Mapping[str, Any]) -> Path:
    """``daulat.toml`` with the one store ``raw`` (a conftest store config dict)."""
    lines = [f"[stores.{raw['name']}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in raw.items() if k not in ("name", "credentials")]
    if raw.get("credentials"):
        lines.append(f"[stores.{raw['name']}.credentials]")
        lines += [f"{k} = {toml_value(v)}" for k, v in raw["credentials"].items()]
    path = directory / "daulat.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def filled(make_store: StoreMaker, tmp_path: Path) -> tuple[Store, str, Path]:
    """A store of each kind holding OBJECTS, its name and a config file naming it."""
    store, raw = make_store()

    async def fill() -> None:
        for key, data in OBJECTS.items():
            await store.put(key, data)

    asyncio.run(fill())
    return store, raw["name"], write_config(tmp_path, raw)


def infos(store: Store) -> dict[str, ObjectInfo]:
    async def go() -> dict[str, ObjectInfo]:
        found: dict[str, ObjectInfo] = {}
        async for batch in store.list(""):
            found.update((i.key, i) for i in batch)
        await store.close()
        return found

    return asyncio.run(go())


def test_one_level_lists_objects_and_each_directory_once(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, name, config = filled
    code, out, err = cli(capsys, "ls", name, "--config", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert sorted(lines) == ["a.txt", "b/", "d/", "z.jpg"]

    code, out, _ = cli(capsys, "ls", f"{name}:b", "--config", str(config))
    assert sorted(out.splitlines()) == ["1.bin", "2.bin", "c/"]
    # The prefix is a directory however it is spelled.
    assert cli(capsys, "ls", f"{name}:/b/", "-c", str(config))[1] == out
    # A prefix that lists nothing (a typo) is said on stderr; stdout stays empty, --json `[]`.
    code, out, err = cli(capsys, "ls", f"{name}:nothing-here", "-c", str(config))
    assert (code, out) == (0, "")
    assert f"nothing under 'nothing-here/' in {name}" in err
    code, out, err = cli(capsys, "ls", f"{name}:nothing-here", "--json", "-c", str(config))
    assert (code, json.loads(out)) == (0, [])
    assert "nothing under 'nothing-here/'" in err
    assert cli(capsys, "ls", f"{name}:b", "-c", str(config))[2] == ""


def test_recursive_lists_every_key_relative_to_the_prefix(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, name, config = filled
    code, out, _ = cli(capsys, "ls", name, "-R", "-c", str(config))
    assert code == 0
    assert sorted(out.splitlines()) == sorted(OBJECTS)
    code, out, _ = cli(capsys, "ls", f"{name}:b", "--recursive", "-c", str(config))
    assert sorted(out.splitlines()) == ["1.bin", "2.bin", "c/3.jpg"]


# Names in an order a directory walk does not give (upper case before lower, files and
# subdirectories interleaved, non-ASCII last), written shuffled. No name has a byte below "/"
# right after a directory's name ("a.txt" beside "a/"): SeaweedFS, the suite's S3, lists those
# as its filer walks directories, unlike AWS S3 (the fs store's own test covers them).
ORDER_KEYS = ["b/c/z.txt", "a0/y", "Z.csv", "a/x", "é.txt", "bb.txt", "a/b/c", "b/a", "ab"]
ORDER_KEYS += [f"many/{n:03}.bin" for n in (7, 250, 3, 99, 120, 1, 64, 180)]


def test_ls_lists_in_key_order_on_every_store_kind(
    make_store: StoreMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ls -R`` comes out sorted by key (UTF-8 bytes), as S3 lists, on every kind of store:
    a directory store's own order is the filesystem's, which differs between machines and
    makes ``diff <(daulat ls a) <(daulat ls b)`` useless."""
    store, raw = make_store()

    async def fill() -> None:
        for key in ORDER_KEYS:
            await store.put(key, key.encode())

    asyncio.run(fill())
    config = write_config(tmp_path, raw)
    code, out, _ = cli(capsys, "ls", raw["name"], "-R", "-c", str(config))
    assert code == 0
    assert out.splitlines() == sorted(ORDER_KEYS, key=lambda k: k.encode())
    code, out, _ = cli(capsys, "ls", f"{raw['name']}:a", "-R", "-c", str(config))
    assert out.splitlines() == ["b/c", "x"]


def test_a_directory_store_lists_in_the_byte_order_of_keys(tmp_path: Path) -> None:
    """S3's order exactly, where a directory walk differs most: "a-b" and "a.txt" come before
    "a/x" ('-' and '.' sort before '/'), "a0" after it."""
    keys = ["a0/y", "a/x", "a.txt", "a-b", "a/b/c", "A", "b", "é"]
    for key in keys:
        path = tmp_path / "d" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    async def listed() -> list[str]:
        return [o.key async for batch in FsStore("d", tmp_path / "d").list() for o in batch]

    assert asyncio.run(listed()) == sorted(keys, key=lambda k: k.encode())


def test_long_shows_size_utc_time_and_key(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, name, config = filled
    code, out, _ = cli(capsys, "ls", name, "-R", "--long", "-c", str(config))
    assert code == 0
    listed = infos(store)
    line_re = re.compile(r"^ *(\d+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.+)$")
    seen = set()
    for line in out.splitlines():
        m = line_re.match(line)
        assert m, line
        size, when, key = int(m[1]), m[2], m[3]
        assert size == len(OBJECTS[key])
        modified = listed[key].modified.astimezone(UTC).replace(microsecond=0)
        assert datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) == modified
        seen.add(key)
    assert seen == set(OBJECTS)

    code, out, _ = cli(capsys, "ls", name, "-l", "-c", str(config))
    assert {line.split()[-1] for line in out.splitlines()} == {"a.txt", "b/", "d/", "z.jpg"}
    assert re.search(r"^ +- +- +b/$", out, re.M), out


def test_json_is_one_array_with_exact_keys(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, name, config = filled
    listed = infos(store)
    code, out, _ = cli(capsys, "ls", f"{name}:b", "-R", "--json", "-c", str(config))
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list)
    assert {r["key"] for r in rows} == {"b/1.bin", "b/2.bin", "b/c/3.jpg"}
    for r in rows:
        info = listed[r["key"]]
        assert r["path"] == r["key"].removeprefix("b/")
        assert r["size"] == info.size
        assert datetime.fromisoformat(r["modified"]) == info.modified
        assert r["modified"].endswith("Z")
        assert r["etag"] == info.etag
        assert r["is_dir"] is False

    code, out, _ = cli(capsys, "ls", name, "--json", "-c", str(config))
    rows = json.loads(out)
    dirs = {r["key"]: r for r in rows if r["is_dir"]}
    assert set(dirs) == {"b/", "d/"}
    assert dirs["b/"]["size"] is None and dirs["b/"]["modified"] is None

    code, out, _ = cli(capsys, "ls", f"{name}:nothing", "--json", "-c", str(config))
    assert (code, json.loads(out)) == (0, [])


def test_filters_apply_to_ls_and_directories_follow_their_objects(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, name, config = filled
    base = ("-c", str(config))
    assert sorted(cli(capsys, "ls", name, "--include", "*.jpg", *base)[1].splitlines()) == [
        "b/",
        "d/",
        "z.jpg",
    ]
    # b/ holds no .jpg directly under it but b/c/3.jpg passes, so b/ is shown; d/ is not.
    out = cli(capsys, "ls", name, "--include", "/b/**", "--exclude", "*.bin", *base)[1]
    assert out.splitlines() == ["b/"]
    out = cli(capsys, "ls", name, "-R", "--exclude", "b/", "--exclude", "/*.txt", *base)[1]
    assert sorted(out.splitlines()) == ["d/e/4.jpg", "z.jpg"]
    # Keys are matched relative to the prefix: "/c/**" is anchored at b/.
    out = cli(capsys, "ls", f"{name}:b", "-R", "--include", "/c/**", *base)[1]
    assert out.splitlines() == ["c/3.jpg"]


def test_size_counts_objects_and_bytes(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, name, config = filled
    total = sum(len(v) for v in OBJECTS.values())
    code, out, _ = cli(capsys, "size", name, "--json", "-c", str(config))
    assert code == 0
    assert json.loads(out) == {
        "store": name,
        "prefix": "",
        "objects": len(OBJECTS),
        "bytes": total,
        "excluded_objects": 0,
        "excluded_bytes": 0,
        "reserved_objects": 0,
        "reserved_bytes": 0,
    }
    code, out, _ = cli(
        capsys, "size", f"{name}:b", "--exclude", "c/**", "--json", "-c", str(config)
    )
    assert json.loads(out) == {
        "store": name,
        "prefix": "b/",
        "objects": 2,
        "bytes": 30,
        "excluded_objects": 1,
        "excluded_bytes": 30,
        "reserved_objects": 0,
        "reserved_bytes": 0,
    }
    code, out, _ = cli(capsys, "size", name, "-c", str(config))
    assert out.strip() == f"{name}: 6 objects, 105 B (105 bytes)"
    code, out, _ = cli(capsys, "size", name, "--include", "*.jpg", "-c", str(config))
    assert out.strip() == (
        f"{name}: 3 objects, 70 B (70 bytes); excluded by filters: 3 objects, 35 B"
    )


def test_ls_and_size_of_an_object_show_the_object(
    filled: tuple[Store, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`ls STORE:path/to/object` and `size STORE:key` show and count the object itself, as
    rclone and `aws s3 ls` do; a directory of the same name (object stores) is shown too."""
    store, name, config = filled
    code, out, err = cli(capsys, "ls", f"{name}:b/1.bin", "--long", "-c", str(config))
    assert (code, err) == (0, "")
    assert re.fullmatch(r" +10 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ 1\.bin\n", out), out
    code, out, _ = cli(capsys, "ls", f"{name}:b/1.bin", "--json", "-c", str(config))
    assert [(e["key"], e["path"], e["size"]) for e in json.loads(out)] == [("b/1.bin", "1.bin", 10)]
    code, out, _ = cli(capsys, "size", f"{name}:b/1.bin", "--json", "-c", str(config))
    assert (json.loads(out)["objects"], json.loads(out)["bytes"]) == (1, 10)
    assert json.loads(out)["object"] == "b/1.bin"  # what tells it from the directory b/1.bin/
    code, out, _ = cli(
        capsys, "size", f"{name}:b/1.bin", "--exclude", "*.bin", "--json", "-c", str(config)
    )
    got = json.loads(out)
    assert (got["objects"], got["excluded_objects"], got["excluded_bytes"]) == (0, 1, 10)
    # Neither an object nor a directory: still "nothing under".
    code, out, err = cli(capsys, "ls", f"{name}:b/1.bi", "-c", str(config))
    assert (code, out) == (0, "") and "nothing under 'b/1.bi/'" in err
    # A trailing slash says "directory": the object of that name is not it.
    code, out, err = cli(capsys, "ls", f"{name}:b/1.bin/", "-c", str(config))
    assert (code, out) == (0, "") and "nothing under 'b/1.bin/'" in err
    code, out, _ = cli(capsys, "size", f"{name}:b/1.bin/", "--json", "-c", str(config))
    assert json.loads(out)["objects"] == 0 and "object" not in json.loads(out)

    async def both() -> bool:
        try:
            await store.put("b/c", b"xyz")  # beside the directory b/c/
        except InvalidKey:
            return False  # a filesystem cannot hold both
        finally:
            await store.close()
        return True

    if asyncio.run(both()):
        code, out, _ = cli(capsys, "ls", f"{name}:b/c", "-c", str(config))
        assert out.splitlines() == ["c", "3.jpg"]
        code, out, _ = cli(capsys, "size", f"{name}:b/c", "--json", "-c", str(config))
        assert (json.loads(out)["objects"], json.loads(out)["bytes"]) == (2, 33)


# --- daulat's own .daulat/ objects ----------------------------------------------------------


def test_ls_and_size_hide_daulat_own_objects_unless_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory a restore wrote holds daulat's manifests under .daulat/ (and a replica under
    a prefix, PREFIX/.daulat/): ls and size of the store, or of that prefix, leave them out,
    --all shows and counts them, and size says what it did not count. A .daulat/ below the
    listed prefix is not daulat's place: it is listed as any object is."""
    restored = tmp_path / "restored"
    files = {
        "report.pdf": b"p" * 100,
        "c1/tally.csv": b"t" * 10,
        ".daulat/manifest-20261205T000000Z.jsonl": b"m" * 7,
        ".daulat/manifest-20261205T000000Z.jsonl.sig": b"s" * 3,
        "c1/.daulat/names.key.age": b"k" * 5,
        "not.daulat/kept.txt": b"x",  # only a directory named exactly .daulat is daulat's
    }
    for key, data in files.items():
        (restored / key).parent.mkdir(parents=True, exist_ok=True)
        (restored / key).write_bytes(data)
    (tmp_path / "daulat.toml").write_text(
        f'[stores.restored]\nurl = "{restored.as_uri()}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)

    code, out, err = cli(capsys, "ls", "restored")
    assert code == 0, err
    assert sorted(out.splitlines()) == ["c1/", "not.daulat/", "report.pdf"]
    assert sorted(cli(capsys, "ls", "restored", "-R")[1].splitlines()) == [
        "c1/.daulat/names.key.age",
        "c1/tally.csv",
        "not.daulat/kept.txt",
        "report.pdf",
    ]
    assert cli(capsys, "ls", "restored:c1")[1].splitlines() == ["tally.csv"]
    listed = json.loads(cli(capsys, "ls", "restored", "-R", "--json")[1])
    assert sorted(e["key"] for e in listed) == [
        "c1/.daulat/names.key.age",
        "c1/tally.csv",
        "not.daulat/kept.txt",
        "report.pdf",
    ]

    code, out, _ = cli(capsys, "ls", "restored", "-R", "--all")
    assert sorted(out.splitlines()) == sorted(files)
    assert ".daulat/" in cli(capsys, "ls", "restored", "-a")[1].splitlines()

    code, out, _ = cli(capsys, "size", "restored", "--json")
    assert json.loads(out) == {
        "store": "restored",
        "prefix": "",
        "objects": 4,
        "bytes": 116,
        "excluded_objects": 0,
        "excluded_bytes": 0,
        "reserved_objects": 2,
        "reserved_bytes": 10,
    }
    code, out, _ = cli(capsys, "size", "restored")
    assert out.strip() == (
        "restored: 4 objects, 116 B (116 bytes); not counted: daulat's own .daulat/: 2 objects, "
        "10 B (--all counts them)"
    )
    code, out, _ = cli(capsys, "size", "restored:c1", "--json")
    totals = json.loads(out)
    assert (totals["objects"], totals["reserved_objects"]) == (1, 1)
    code, out, _ = cli(capsys, "size", "restored", "--all", "--json")
    totals = json.loads(out)
    assert (totals["objects"], totals["bytes"], totals["reserved_objects"]) == (6, 126, 0)


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_a_users_dot_daulat_deeper_down_is_listed_sized_scanned_and_copied(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``photos/.daulat/x.jpg`` in a user's store is the user's object: ls, size and scan show
    and count it as copy copies it. Only daulat's own places are left out: ``.daulat/`` at
    the store's root, and the local state directory inside a directory store."""
    store, raw = store_maker(kind, request, tmp_path)()
    objects = {
        "photos/.daulat/x.jpg": b"x" * 4,
        "photos/a.jpg": b"a" * 2,
        ".daulat/manifest-20261205T000000Z.jsonl": b"m",
    }

    async def fill() -> None:
        for key, data in objects.items():
            await store.put(key, data)
        await store.close()

    asyncio.run(fill())
    home = tmp_path / "home"
    home.mkdir()
    config = write_config(home, raw)
    (tmp_path / "dst").mkdir()
    with config.open("a", encoding="utf-8") as f:
        f.write(f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n')
        f.write('country = "ID"\n')
    monkeypatch.chdir(home)
    name = raw["name"]
    users = ["photos/.daulat/x.jpg", "photos/a.jpg"]

    assert cli(capsys, "ls", name, "-R")[1].splitlines() == users
    listed = json.loads(cli(capsys, "ls", name, "-R", "--json")[1])
    assert [e["key"] for e in listed] == users
    totals = json.loads(cli(capsys, "size", name, "--json")[1])
    assert (totals["objects"], totals["bytes"], totals["reserved_objects"]) == (2, 6, 1)
    code, out, err = cli(capsys, "scan", name, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["objects"] == 2
    with Manifest.in_state_dir(home / ".daulat") as m:
        assert [r.key for r in m.objects(name)] == users
    code, out, err = cli(capsys, "copy", name, "dst", "--json")
    assert code == 0, err
    assert (tmp_path / "dst" / "photos" / ".daulat" / "x.jpg").read_bytes() == b"x" * 4

    if kind == "fs":
        # The state directory of a daulat.toml kept inside the directory store is daulat's.
        root = Path(raw["url"].removeprefix("file://"))
        (root / "proj").mkdir()
        inside = write_config(root / "proj", raw)
        monkeypatch.chdir(root / "proj")
        assert cli(capsys, "scan", name)[0] == 0  # writes proj/.daulat/manifest.sqlite
        assert (root / "proj" / ".daulat" / "manifest.sqlite").is_file()
        shown = cli(capsys, "ls", name, "-R", "-c", str(inside))[1].splitlines()
        assert shown == ["photos/.daulat/x.jpg", "photos/a.jpg", "proj/daulat.toml"], shown
        code, out, err = cli(capsys, "scan", name, "--json")
        assert json.loads(out)[0]["objects"] == 3, out


# --- names are data ------------------------------------------------------------------------

HOSTILE = {
    "esc\x1b[31mred\x1b[0m.txt": "esc\\x1b[31mred\\x1b[0m.txt",
    "rtl\u202egnp.exe": "rtl\\u202egnp.exe",
    "new\nline.txt": "new\\nline.txt",
    "tab\there.txt": "tab\\there.txt",
    "[bold red]markup.txt": "[bold red]markup.txt",
    "[blink]x[reset].txt": "[blink]x[reset].txt",
    ":thumbs_up: emoji.txt": ":thumbs_up: emoji.txt",
    "zero\u200bwidth.txt": "zero\\u200bwidth.txt",
    "ünïcödé 日本語.txt": "ünïcödé 日本語.txt",
}


def test_names_are_never_markup_or_terminal_controls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    (root / "dir\x1b]0;title\x07").mkdir(parents=True)
    for name in HOSTILE:
        (root / name).write_bytes(b"x")
    (root / "dir\x1b]0;title\x07" / "inner").write_bytes(b"x")
    config = write_config(
        tmp_path,
        {"name": "here", "url": f"file://{root}", "provider": "local", "country": "ID"},
    )
    code, out, _ = cli(capsys, "ls", "here", "-c", str(config))
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out and "\u200b" not in out and "\t" not in out
    lines = out.splitlines()
    assert sorted(lines) == sorted([*HOSTILE.values(), "dir\\x1b]0;title\\x07/"])
    code, out, _ = cli(capsys, "ls", "here", "-R", "--long", "-c", str(config))
    assert "\x1b" not in out and "\u202e" not in out
    assert len(out.splitlines()) == len(HOSTILE) + 1  # a newline in a name does not add a line

    # JSON keeps every name exact (control characters are JSON-escaped, not altered).
    code, out, _ = cli(capsys, "ls", "here", "-R", "--json", "-c", str(config))
    assert {r["key"] for r in json.loads(out)} == {*HOSTILE, "dir\x1b]0;title\x07/inner"}


# --- the library: streaming and flat memory ------------------------------------------------


class ManyObjects:
    """A store of ``batches * per_batch`` synthetic objects, made as they are listed."""

    def __init__(self, batches: int, per_batch: int) -> None:
        self.batches = batches
        self.per_batch = per_batch
        self.listed_batches = 0

    @property
    def name(self) -> str:
        return "many"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def list(self, prefix: str = "") -> AsyncIterator[list[ObjectInfo]]:
        when = datetime(2024, 1, 1, tzinfo=UTC)
        for b in range(self.batches):
            self.listed_batches += 1
            yield [
                ObjectInfo(f"{prefix}d{i % 7}/sub/object-{b:06d}-{i:06d}.bin", 1, when, "e")
                for i in range(self.per_batch)
            ]

    async def close(self) -> None:
        pass


def test_listing_streams_in_flat_memory() -> None:
    store = ManyObjects(batches=200, per_batch=1000)

    async def first_entry() -> tuple[Entry, int]:
        entries = list_entries(store, "p/", recursive=True)  # type: ignore[arg-type]
        entry = await anext(entries)
        await entries.aclose()
        return entry, store.listed_batches

    entry, batches = asyncio.run(first_entry())
    assert entry.path == "d0/sub/object-000000-000000.bin"
    assert batches == 1  # the first entry came before the rest was listed

    async def one_level() -> list[Entry]:
        return [e async for e in list_entries(store, "p/")]  # type: ignore[arg-type]

    store = ManyObjects(batches=200, per_batch=1000)
    tracemalloc.start()
    try:
        dirs = asyncio.run(one_level())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(e.key for e in dirs) == [f"p/d{i}/" for i in range(7)]
    assert all(e.is_dir for e in dirs)
    # 200,000 objects listed; held at once: one batch of 1,000 (a list of them all would be
    # about 60 MB).
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"

    totals = asyncio.run(
        measure(ManyObjects(3, 1000), filter=build_filter(exclude=["d0/**"]))  # type: ignore[arg-type]
    )
    assert (totals.objects + totals.excluded_objects, totals.bytes) == (3000, totals.objects)
    assert totals.excluded_objects == 3 * 143  # i % 7 == 0 for 143 of every 1,000


# --- python -m daulat, broken pipes and shell completion ----------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_DAULAT")}
    env["PYTHONPATH"] = SRC
    env.update(extra)
    return env


def test_python_dash_m_daulat(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daulat", "--version"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("daulat ")


def test_ls_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    root = tmp_path / "store"
    for d in range(30):
        (root / f"dir-{d:02d}").mkdir(parents=True)
        for f in range(100):
            (root / f"dir-{d:02d}" / f"a-rather-long-file-name-{f:04d}.bin").write_bytes(b"")
    config = write_config(
        tmp_path, {"name": "here", "url": f"file://{root}", "provider": "local", "country": "ID"}
    )
    script = f'"{sys.executable}" -m daulat ls here -R -c "{config}" | head -n 1; exit "${{PIPESTATUS[0]}}"'
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=child_env(), timeout=300
    )
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_show_completion_prints_a_script() -> None:
    # Started from bash, as a user would; typer detects the shell from the parent process
    # (the trailing `exit` keeps bash from exec-ing the command in its own place, which would
    # leave a parent that is no shell when no shell is further up either).
    proc = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m daulat --show-completion bash; exit $?'],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "_DAULAT_COMPLETE" in proc.stdout
    assert "complete -o default -F _daulat_completion daulat" in proc.stdout


def test_completion_answers_through_run() -> None:
    """The shell's completion request reaches run() (which ends with sys.exit in click)."""
    proc = subprocess.run(
        [sys.executable, "-m", "daulat"],
        capture_output=True,
        text=True,
        env=child_env(_DAULAT_COMPLETE="complete_bash", COMP_WORDS="daulat si", COMP_CWORD="1"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["size"]


def test_completion_exit_is_returned_by_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, run() returns typer's sys.exit(0) as 0 rather than raising SystemExit. (The
    variable makes typer take the shell as the option's value instead of detecting it.)"""
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code = run(["--show-completion", "zsh"])
    assert code == 0
    assert "compdef _daulat_completion daulat" in capsys.readouterr().out


def test_json_of_a_listing_that_fails_leaves_stdout_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing that fails at once (here a file name that is not UTF-8) exits 1 with the
    reason on stderr and nothing on stdout: no lone "[" for a JSON reader to choke on."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "ok.txt").write_bytes(b"hi")
    os.close(os.open(os.fsencode(root) + b"/n\xfe", os.O_CREAT | os.O_WRONLY, 0o600))
    (tmp_path / "daulat.toml").write_text(
        f'[stores.t]\nurl = "{root.as_uri()}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "ls", "t", "--json")
    assert (code, out) == (1, ""), out
    assert "not UTF-8" in err and "Traceback" not in err


def test_the_prefixs_own_directory_marker_is_not_listed_as_a_nameless_entry() -> None:
    """A bucket holding ``x/`` (a "folder" made by a console) and ``x/a.txt``: ``ls STORE:x``
    shows ``a.txt``, never an empty line for ``x/`` itself; deeper markers stay directories."""
    store = MemoryStore()

    async def go() -> tuple[list[str], list[str]]:
        for key in ("x/", "x/a.txt", "x/sub/", "x/sub/b.txt"):
            await store.put(key, b"" if key.endswith("/") else b"data")
        one = [e.path async for e in list_entries(store, "x/")]
        every = [e.path async for e in list_entries(store, "x/", recursive=True)]
        return one, every

    one, every = asyncio.run(go())
    assert sorted(one) == ["a.txt", "sub/"]
    assert sorted(every) == ["a.txt", "sub/", "sub/b.txt"]
