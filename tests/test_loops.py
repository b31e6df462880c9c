"""The event loop runs are made on (daulat.loops): uvloop's by default, asyncio's on request,
and a mistyped choice is one error line (exit 2), never silently the default."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from daulat import interrupts
from daulat.errors import ConfigError
from daulat.loops import ENV, chosen


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_runs_are_made_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert interrupts.run(_loop_module()).startswith("uvloop")


def test_asyncio_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "asyncio")
    assert interrupts.run(_loop_module()).startswith("asyncio")


def test_a_mistyped_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "uvlop")
    with pytest.raises(ConfigError, match="DAULAT_EVENT_LOOP='uvlop'"):
        interrupts.run(_loop_module())


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_a_copy_on_either_loop_copies_every_object(tmp_path: Path, choice: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(40):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"o{i}").write_bytes(os.urandom(1000 + i))
    config = tmp_path / "daulat.toml"
    config.write_text(
        f'[stores.src]\nurl = "{src.as_uri()}"\nprovider = "local"\ncountry = "ID"\n'
        f'[stores.dst]\nurl = "{dst.as_uri()}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    exe = shutil.which("daulat")
    assert exe, "the daulat console script is not installed"
    env = {**os.environ, ENV: choice}
    done = subprocess.run(
        [exe, "--config", str(config), "copy", "src", "dst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for i in range(40):
        name = Path(f"d{i % 4}") / f"o{i}"
        assert (dst / name).read_bytes() == (src / name).read_bytes()


def test_the_command_line_names_a_mistyped_choice_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = tmp_path / "daulat.toml"
    config.write_text(
        f'[stores.data]\nurl = "{(tmp_path / "data").as_uri()}"\nprovider = "local"\n'
        'country = "ID"\n',
        encoding="utf-8",
    )
    exe = shutil.which("daulat")
    assert exe, "the daulat console script is not installed"
    done = subprocess.run(
        [exe, "--config", str(config), "scan", "data"],
        cwd=tmp_path,
        env={**os.environ, ENV: "fast"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DAULAT_EVENT_LOOP='fast'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("value", "shown"),
    [("Uvlop", "'Uvlop'"), ("x" * 5000, "'" + "x" * 40 + "' (… 5,000 characters)")],
)
def test_the_error_quotes_what_was_set_and_no_more_than_a_line(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: str
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ConfigError) as raised:
        chosen()
    assert str(raised.value) == f"DAULAT_EVENT_LOOP={shown}: expected 'uvloop' or 'asyncio'"


@pytest.mark.parametrize("value", ["UVLOOP", " asyncio ", "\tasyncio", ""])
def test_case_and_surrounding_spaces_do_not_matter(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV, value)
    assert chosen() == (value.strip().lower() or "uvloop")


def test_demo_refuses_a_mistyped_choice_before_writing_anything(tmp_path: Path) -> None:
    exe = shutil.which("daulat")
    assert exe, "the daulat console script is not installed"
    done = subprocess.run(
        [exe, "demo"],
        cwd=tmp_path,
        env={**os.environ, ENV: "uvlop"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "DAULAT_EVENT_LOOP='uvlop'" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
