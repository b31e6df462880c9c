"""The threat model names the test behind each guarantee: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    named = re.findall(r"`((?:conformance/)?test_\w+\.py)(?:::(test_\w+))?`", text)
    assert len(named) > 40, "the threat model should name the tests behind its guarantees"
    missing = []
    for file, function in named:
        path = TESTS / file if (TESTS / file).exists() else TESTS / "conformance" / file
        if not path.exists():
            missing.append(file)
            continue
        if function and not re.search(
            rf"^(?:async )?def {function}\(", path.read_text(encoding="utf-8"), re.M
        ):
            missing.append(f"{file}::{function}")
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"
