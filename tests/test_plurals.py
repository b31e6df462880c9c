"""Counts in human output agree with their number: "1 object", "2 objects", never "1 objects"
(JSON field names are untouched)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daulat.cli import run
from daulat.plurals import plural

SRC = Path(__file__).resolve().parents[1] / "src" / "daulat"

# A count written straight before a plural noun: `f"{n:,} objects"` says "1 objects" for one.
COUNTED_PLURAL = re.compile(
    r"\{[^{}]*\} (objects|files|workers|shards|problems|stores|entries|retries|rows|requests"
    r"|parts|uploads|copies|drills|replicas|findings)\b(?!/)"
)
# Counts that are never one: constants, and a branch taken only for more than one.
NEVER_ONE = (
    "{PART_GROWTH_EVERY} parts",
    "{MAX_PER_CLASS:,} objects",
    "{count} files have names",  # the count == 1 case has its own sentence
    "stores have no regions",  # a verb: "local stores have no regions"
)


def test_plural_agrees_with_the_number() -> None:
    assert plural(1, "object") == "1 object"
    assert plural(0, "object") == "0 objects"
    assert plural(2000, "object") == "2,000 objects"
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(3, "entry", "entries") == "3 entries"


def test_no_count_is_written_before_a_plural_noun() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for m in COUNTED_PLURAL.finditer(line):
                if not any(ok in line for ok in NEVER_ONE) and "{store} stores" not in line:
                    found.append(f"{path.relative_to(SRC)}:{n}: {m.group()}")
    assert not found, "use daulat.plurals.plural:\n" + "\n".join(found)


def test_size_and_scan_of_one_object_say_one_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "one"
    (root / ".daulat").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"abc")
    (root / ".daulat" / "manifest-20261205T000000Z.jsonl").write_bytes(b"m")
    (tmp_path / "daulat.toml").write_text(
        f'[stores.one]\nurl = "{root.as_uri()}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert run(["size", "one"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("one: 1 object, 3 B") and ".daulat/: 1 object, 1 B" in out, out
    assert run(["scan", "one"]) == 0
    assert capsys.readouterr().out.startswith("scanned one: 1 object, 3 B"), out
