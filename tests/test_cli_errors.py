"""One style for a user's mistakes: whether click finds it while parsing (unknown option or
command, missing argument, a value of the wrong kind) or daulat finds it later (unknown store,
malformed config), stderr starts with the same ``error: <what>`` line and the exit code is 2;
usage errors add one line with the usage and where help is. Nothing is boxed or coloured when
stderr is not a terminal.

Run through the installed console script, with stdout and stderr captured (not terminals).
"""

from __future__ import annotations

import os
import shutil
import subprocess
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
    (["copy", "data", "x", "--engine", "warp"], "'warp' is not one of", "daulat copy"),
    (
        ["copy", "data", "x", "--concurrency", "many"],
        "invalid value for '--concurrency'",
        "daulat copy",
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
    for mark in ("Usage:", "Error:", "Try '", "╭", "│", "\x1b["):
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
