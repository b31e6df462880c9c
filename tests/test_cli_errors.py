"""One style for a user's mistakes: whether click finds it while parsing (unknown option or
command, missing argument, a value of the wrong kind) or daulat finds it later (unknown store,
malformed config), stderr starts with the same ``error: <what>`` line and the exit code is 2;
usage errors add one line with the usage and where help is. Nothing is boxed or coloured when
stderr is not a terminal.

Run through the installed console script, with stdout and stderr captured (not terminals).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


def daulat(args: list[str], cwd: Path) -> Result:
    exe = shutil.which("daulat")
    assert exe, "the daulat console script is not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    proc = subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "daulat.toml").write_text(
        f'[stores.data]\nurl = "{(tmp_path / "data").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    return tmp_path


# (arguments, words the error line must hold, the command the usage line names)
USAGE_ERRORS = [
    (["stores", "--no-such-option"], "no such option: --no-such-option", "daulat stores"),
    (["ls"], "missing argument 'STORE[:PREFIX]'", "daulat ls"),
    (
        ["copy", "data", "x", "--engine", "warp"],
        "--engine must be local or ray, not 'warp'",
        "daulat copy",
    ),
    (
        ["copy", "data", "x", "--concurrency", "many"],
        "--concurrency must be a whole number, not 'many'",
        "daulat copy",
    ),
    # click's parser errors, raised without a context: the usage line all the same.
    (["ls", "data", "--long=maybe"], "option '--long' does not take a value", "daulat ls"),
    (["copy", "data", "x", "--include"], "option '--include' requires an argument", "daulat copy"),
    (
        ["--config", "daulat.toml", "sync", "data", "x", "--exclude"],
        "option '--exclude' requires an argument",
        "daulat sync",
    ),
    # Values daulat checks itself, named like the others.
    (
        ["drill", "data", "x", "--sample", "-3"],
        "invalid value for '--sample': '-3'",
        "daulat drill",
    ),
    (["exit", "data", "x", "--bwlimit", "-5"], "invalid value for '--bwlimit'", "daulat exit"),
    # Bounds typer checks (with pydantic), in daulat's words, not "Input should be ...".
    (
        ["copy", "data", "x", "--workers", "-1"],
        "--workers must be at least 1, not '-1'",
        "daulat copy",
    ),
    (["scan", "--shards", "abc"], "--shards must be a whole number, not 'abc'", "daulat scan"),
    (["scan", "--shards", "0"], "--shards must be at least 1, not '0'", "daulat scan"),
    # More listings in flight than any store serves: refused at once, not run out of memory.
    (["scan", "--shards", "10001"], "--shards must be at most 10000, not '10001'", "daulat scan"),
    (
        ["scan", "--shards", "99999999999999999999"],
        "--shards must be at most 10000, not '99999999999999999999'",
        "daulat scan",
    ),
    # A choice given in another case or misspelt: the choices, once, in daulat's words.
    (
        ["copy", "data", "x", "--engine", "Ray"],
        "--engine must be local or ray, not 'Ray'",
        "daulat copy",
    ),
    (
        ["exit", "data", "x", "--engine", "rey"],
        "--engine must be local or ray, not 'rey'",
        "daulat exit",
    ),
    (
        ["verify", "data", "x", "--engine", "RAY"],
        "--engine must be local or ray, not 'RAY'",
        "daulat verify",
    ),
    (["frobnicate"], "no such command 'frobnicate'", "daulat"),
    (["keys", "frob"], "no such command 'frob'", "daulat keys"),
]


@pytest.mark.parametrize(("args", "what", "command"), USAGE_ERRORS)
def test_usage_errors_say_error_first_then_one_usage_line(
    project: Path, args: list[str], what: str, command: str
) -> None:
    res = daulat(args, project)
    assert res.code == 2, res.err
    lines = res.err.splitlines()
    assert lines[0].startswith("error: ") and what in lines[0], res.err
    assert lines[1].startswith(f"usage: {command} [OPTIONS]"), res.err
    assert f"(see '{command} --help')" in lines[1], res.err
    assert len(lines) == 2, res.err
    # click's own wording and rich's boxes are gone; no colour off a terminal.
    for mark in ("Usage:", "Error:", "Try '", "╭", "│", "\x1b[", "Input should", "pydantic"):
        assert mark not in res.err, (mark, res.err)
    assert res.out == ""


def test_daulat_own_errors_share_the_first_line_and_exit_2(project: Path) -> None:
    unknown = daulat(["ls", "nosuch"], project)
    assert unknown.code == 2
    assert unknown.err.startswith("error: ") and "unknown store 'nosuch'" in unknown.err

    (project / "daulat.toml").write_text("[stores.data\nurl = 3\n", encoding="utf-8")
    malformed = daulat(["stores"], project)
    assert malformed.code == 2
    assert malformed.err.startswith("error: ") and "not valid TOML" in malformed.err
    for res in (unknown, malformed):
        assert "Traceback" not in res.err and "\x1b[" not in res.err and "╭" not in res.err


def test_a_bad_value_names_the_input_escaped(project: Path) -> None:
    res = daulat(["risk", "--country", "X\x1b[31mY"], project)
    assert res.code == 2
    assert res.err.startswith("error: invalid value for '--country'")
    assert "\x1b" not in res.err and "\\x1b" in res.err


def test_a_bare_group_still_shows_its_help(project: Path) -> None:
    res = daulat([], project)
    assert res.code == 2
    assert "Commands" in res.out + res.err and "error:" not in res.err


def audit_entries(project: Path) -> list[dict[str, object]]:
    path = project / ".daulat" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_missing_identity_file_is_audited(project: Path) -> None:
    """verify --full / restore with an identity file that is not there: exit 2, and the
    attempt is in the audit log as failed, as a store typo is."""
    for args, operation in (
        (["verify", "data", "data:copy", "--full", "--identity", "nope.txt"], "verify"),
        (["restore", "data:copy", "data:back", "--identity", "nope.txt"], "restore"),
    ):
        res = daulat(args, project)
        assert res.code == 2 and res.err.startswith("error: key file nope.txt"), res.err
        entry = audit_entries(project)[-1]
        assert entry["operation"] == operation
        assert entry["details"] == {
            **entry["details"],
            "outcome": "failed",
            "error": "KeyFileError",
        }


def test_an_unreachable_ray_address_is_refused_within_seconds(project: Path) -> None:
    """--engine ray --ray-address where nothing listens: one error line naming the address
    within the bound --help states, exit 2, audited; no Ray log spam, nothing copied."""
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port that was just free, so nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    res = daulat(
        ["copy", "data", "data:out", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"],
        project,
    )
    # Ray's own retries last minutes; the bound covers the console script's start-up (and
    # importing Ray) on a loaded machine besides the 10 s connect.
    assert time.monotonic() - started < 90
    assert res.code == 2, res.err
    assert res.err.splitlines() == [
        f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (connection refused); check "
        "--ray-address (ray_address) or RAY_ADDRESS, and that `ray status` works there"
    ], res.err
    [entry] = audit_entries(project)
    assert entry["operation"] == "copy" and entry["details"]["error"] == "RayUnavailable"
    assert not (project / "data" / "out").exists()
    helped = daulat(["copy", "--help"], project)
    assert "within 10 s is refused" in " ".join(helped.out.replace("│", " ").split())
