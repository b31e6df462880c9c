"""Names are data: object keys, prefixes, policy names and messages are never interpreted as rich
markup or emoji codes, and never reach the terminal raw.

Every command runs over a filesystem store holding the hostile key set (markup, emoji codes,
ANSI and OSC escapes, C0/C1 controls, DEL, RTL overrides and isolates, newlines, a 1,024-byte
name), in human and JSON form. Human output must not crash, must hold no raw control or bidi
character (only line breaks), and must show the keys escaped; JSON output must give the exact
keys back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from daulat.cli import run

LONG = "/".join(["k" * 200] * 5) + "/" + "z" * 19  # 1,024 bytes, in segments a disk can hold
assert len(LONG.encode()) == 1024

HOSTILE_KEYS = [
    "a[/]b",
    "[link=https:evil.example]hidden[/link]",
    "[bold red]not bold[/bold red]",
    ":x: :warning: emoji codes",
    "\x1b[31mred\x1b[0m and \x1b[2J cleared",
    "osc\x1b]8;;https:evil.example\x07click\x1b]8;;\x07",
    "rtl/\u202egpj.exe",
    "iso\u2066late\u2069d\u202a\u202b\u202c\u202d",
    "new\nline",
    "cr\rreturn\ttab",
    "bell\x07back\x08space",
    "c1\x85\x9b31m",
    "del\x7f",
    "emoji/🗳️ ballot 😀",
    "café/ünïcödé",
    LONG,
]
# The filesystem store refuses keys holding C0 controls or DEL (it lists them as refused).
CONTROL_KEYS = [k for k in HOSTILE_KEYS if any(ord(c) < 0x20 or c == "\x7f" for c in k)]
PLAIN_KEYS = [k for k in HOSTILE_KEYS if k not in CONTROL_KEYS]
POLICY_NAME = "[bold]policy[/bold] :x: \x1b[31m\u202eevil"
# What must never reach a terminal raw: C0 controls but the line break, DEL, C1 controls, the
# bidi embeddings, overrides and isolates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def toml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    src = tmp_path / "src"
    for i, key in enumerate(HOSTILE_KEYS):
        path = src / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"object {i}\n".encode() * (i + 1))
    (tmp_path / "dst").mkdir()  # a local directory that does not exist is an error to scan
    (tmp_path / "daulat.toml").write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{(tmp_path / "dst").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n'
        "[[policies]]\n"
        f"name = {toml_str(POLICY_NAME)}\n"
        'stores = ["src", "dst"]\nresidency = ["ID"]\nmin_replicas = 2\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def human(argv: list[str], capsys: pytest.CaptureFixture[str], codes: tuple[int, ...]) -> str:
    code = run(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code in codes, (argv, code, text[-2000:])
    assert "Traceback" not in text
    raw = sorted({hex(ord(c)) for c in RAW.findall(text)})
    assert not raw, (argv, raw, text[-2000:])
    return text


def as_json(argv: list[str], capsys: pytest.CaptureFixture[str], codes: tuple[int, ...]) -> Any:
    code = run([*argv, "--json"])
    captured = capsys.readouterr()
    assert code in codes, (argv, code, captured.err[-2000:])
    assert not RAW.findall(captured.out)  # JSON escapes them: \u001b is the same character
    return json.loads(captured.out)


def shown(key: str) -> str:
    """How a key appears in human output: Python's repr, non-printables escaped."""
    return repr(key)


def test_every_command_over_hostile_names(
    hostile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    human(["stores"], capsys, (0,))
    assert as_json(["stores"], capsys, (0,))[0]["name"] == "src"
    human(["scan"], capsys, (0,))
    scans = as_json(["scan", "src"], capsys, (0,))
    assert scans[0]["objects"] == len(HOSTILE_KEYS)

    # A prefix that is markup and a bidi override, typed on the command line.
    evil_prefix = "src:[link=x]:x:[31m\u202e"
    text = human(["copy", evil_prefix, "dst:p", "--dry-run"], capsys, (0, 1))
    assert "[link=x]:x:[31m\\u202e" in text
    # With a terminal control in it, the prefix is refused (exit 2), shown escaped.
    text = human(["copy", "src:[link=x]:x:\x1b[31m\u202e", "dst:p", "--dry-run"], capsys, (2,))
    assert "[link=x]:x:\\x1b[31m\\u202e" in text and "control character" in text

    # The filesystem refuses keys with C0 controls: listed by key, escaped; exact in JSON.
    text = human(["exit", "src", "dst"], capsys, (1,))
    for key in CONTROL_KEYS:
        assert shown(key) in text, key
    result = as_json(["exit", "src", "dst"], capsys, (1,))
    assert sorted(r["key"] for r in result["refused"]) == sorted(CONTROL_KEYS)
    assert result["verified_objects"] == len(PLAIN_KEYS)

    human(["check"], capsys, (0, 1))
    text = human(["check"], capsys, (0, 1))
    assert "[bold]policy[/bold] :x: \\x1b[31m\\u202eevil" in text  # literally: no bold, no ❌
    human(["risk"], capsys, (0,))
    human(["drill", "src", "dst", "--sample", "5", "--seed", "1"], capsys, (0, 1))
    human(["drill", "--history"], capsys, (0,))

    # Tamper with every copy: verify names each key, escaped in human form, exact in JSON.
    dst = hostile / "dst"
    for key in PLAIN_KEYS:
        (dst / key).write_bytes(b"tampered")
    text = human(["verify", "src", "dst", "--full"], capsys, (1,))
    for key in PLAIN_KEYS:
        assert shown(key) in text, key
    report = as_json(["verify", "src", "dst", "--full"], capsys, (1,))
    assert {p["key"] for p in report["problems"]} >= set(PLAIN_KEYS)

    # Failures listed by key: a file stands where the prefix's directory would have to be.
    for key in PLAIN_KEYS:
        os.remove(dst / key)
    (dst / "p").write_bytes(b"a file where the prefix's directory would go")
    text = human(["copy", "src", "dst:p"], capsys, (1,))
    result = as_json(["copy", "src", "dst:p"], capsys, (1,))
    failed = sorted(f["key"] for f in result["failed"] + result["refused"])
    assert failed == sorted(HOSTILE_KEYS)
    assert all(shown(k) in text for k in HOSTILE_KEYS)
    os.remove(dst / "p")

    # sync --delete: the deleted keys, exact in JSON and in the audit log.
    human(["sync", "src", "dst", "--delete"], capsys, (1,))
    extra = sorted([f"x/{key}" for key in PLAIN_KEYS if key != LONG] + [LONG[:-1] + "y"])
    for key in extra:
        (dst / key).parent.mkdir(parents=True, exist_ok=True)
        (dst / key).write_bytes(b"only at the destination")
    human(["sync", "src", "dst", "--delete", "--max-delete", "100%", "--dry-run"], capsys, (0, 1))
    moved = (hostile / "src").rename(hostile / "src-aside")  # refused keys would block deletion
    (hostile / "src").mkdir()
    for key in PLAIN_KEYS:
        (hostile / "src" / key).parent.mkdir(parents=True, exist_ok=True)
        (hostile / "src" / key).write_bytes((moved / key).read_bytes())
    result = as_json(["sync", "src", "dst", "--delete", "--max-delete", "100%"], capsys, (0,))
    assert result["deleted"]["keys"] == extra and result["deleted"]["count"] == len(extra)

    text = human(["audit", "show"], capsys, (0,))
    assert "\\u001b[31m" in text
    entries = as_json(["audit", "show"], capsys, (0,))
    deleted = [e for e in entries if e["details"].get("deleted")]
    assert deleted[-1]["details"]["deleted"]["keys"] == extra
    human(["audit", "verify"], capsys, (0,))
    human(["report", "-o", str(hostile / "r.html")], capsys, (0,))


def test_unknown_store_with_markup_is_named_not_interpreted(
    hostile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = human(["copy", "[red]x[/red]\x1b[2J", "dst"], capsys, (2,))
    assert "[red]x[/red]\\x1b[2J" in text


def test_no_policies_message_keeps_its_brackets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rich ate "[[policies]]" as markup and printed "no [] in daulat.toml"."""
    (tmp_path / "daulat.toml").write_text(
        f'[stores.a]\nurl = "{tmp_path.as_uri()}/a"\nprovider = "local"\ncountry = "ID"\n'
    )
    monkeypatch.chdir(tmp_path)
    text = human(["check"], capsys, (0,))
    assert "no [[policies]] in daulat.toml" in text


def test_encrypted_exit_and_restore_over_hostile_names(
    hostile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (hostile / "daulat.toml").open("a", encoding="utf-8") as f:
        for name in ("vault", "back"):
            f.write(
                f'[stores.{name}]\nurl = "{(hostile / name).as_uri()}"\nprovider = "local"\n'
                'country = "ID"\n'
            )
    human(["keys", "new", "--out", str(hostile / "id.txt")], capsys, (0,))
    recipient = (hostile / "id.txt").read_text().split("public key: ")[1].split()[0]
    text = human(["exit", "src", "vault", "--encrypt-to", recipient], capsys, (1,))
    assert all(shown(k) in text for k in CONTROL_KEYS)
    text = human(["restore", "vault", "back", "--identity", str(hostile / "id.txt")], capsys, (0,))
    assert "complete" in text
    human(["verify", "src", "vault", "--full", "--identity", str(hostile / "id.txt")], capsys, (1,))
    result = as_json(
        ["restore", "vault", "back", "--identity", str(hostile / "id.txt")], capsys, (0,)
    )
    assert result["source_objects"] == len(PLAIN_KEYS)
    back = sorted(
        str(p.relative_to(hostile / "back"))
        for p in (hostile / "back").rglob("*")
        if p.is_file() and ".daulat" not in p.parts
    )
    assert back == sorted(PLAIN_KEYS)
