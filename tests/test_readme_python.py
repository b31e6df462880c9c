"""README's "Using daulat from Python": its examples run as they are, and it names exactly the
public surface (``daulat.__all__``), so that neither can change without the other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import daulat

ROOT = Path(__file__).resolve().parent.parent
SECTION_TITLE = "## Using daulat from Python"
NAMES_LEAD = "The public names"


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION_TITLE + "\n")
    end = text.find("\n## ", start + len(SECTION_TITLE))
    return text[start : end if end != -1 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, re.M | re.S)


def test_section_names_exactly_the_public_surface() -> None:
    text = section()
    assert NAMES_LEAD in text, f"the section lists the public names after {NAMES_LEAD!r}"
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text[text.index(NAMES_LEAD) :]))
    public = set(daulat.__all__)
    assert not public - listed, (
        f"daulat.__all__ has names README's {SECTION_TITLE!r} does not list: "
        f"{sorted(public - listed)}"
    )
    assert not listed - public, (
        f"README's {SECTION_TITLE!r} lists names daulat.__all__ does not have: "
        f"{sorted(listed - public)}"
    )


def test_every_daulat_name_the_section_uses_exists() -> None:
    used = set(re.findall(r"\bdaulat\.(\w+)(?:\.(\w+))?", section()))
    missing = [
        f"daulat.{a}" + (f".{b}" if b else "")
        for a, b in used
        if a not in ("toml", "__all__")  # daulat.toml is the file
        and not (hasattr(daulat, a) and (not b or a != "aio" or hasattr(daulat.aio, b)))
    ]
    assert not missing, f"README names what daulat does not have: {sorted(missing)}"


def test_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = section()
    shell, python = blocks(text, "sh"), blocks(text, "python")
    assert len(shell) == 1 and len(python) >= 4
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # The shell block as a user runs it, with this checkout's daulat.
    script = f'daulat() {{ "{sys.executable}" -m daulat "$@"; }}\nset -e\n' + shell[0]
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "vault-recipient.txt").read_text().startswith("age1")

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, code in enumerate(python, 1):
        try:
            exec(compile(code, f"README python block {number}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"README python block {number} failed: {type(exc).__name__}: {exc}")

    # What the examples did is what they say: an encrypted, verified replica and its restore.
    summary = namespace["summary"]
    assert isinstance(summary, daulat.Summary) and summary.encrypted
    assert summary.source_objects > 0
    restored = tmp_path / "daulat-demo" / "offsite" / "restored"
    original = tmp_path / "daulat-demo" / "kpu-primary"
    some = next(p for p in original.rglob("*.csv"))
    assert (restored / some.relative_to(original)).read_bytes() == some.read_bytes()
