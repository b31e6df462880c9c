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


def test_ci_runs_the_readme_test_command_and_the_readme_names_the_quick_one() -> None:
    """CI (.ci/run) runs exactly the full test command README gives; README gives the quick
    default run beside it, so that neither drifts from what is run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec \./scripts/test$", ci, re.M), ci
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    commands = {line.strip() for block in blocks for line in block.splitlines()}
    assert "./scripts/test" in commands
    assert './scripts/test -m "not slow"' in commands
