"""What a ``daulat`` process imports before it does anything, and the lazy public names that keep
that small.

``import daulat`` once imported the whole library (engine, stores, obstore, pydantic models,
rich): close to a second of CPU in every ``daulat`` process, ``--help`` included. Now the
package's public names (``daulat``, ``daulat.drill``, ``daulat.risk``) are imported on first use
(:mod:`daulat.lazy`) and each command imports the machinery it runs. These tests run a fresh
interpreter and read ``sys.modules`` at the end, so that a module-level import added anywhere on
the way shows up here; one of them checks the check itself sees a heavy import.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import daulat

SRC = Path(__file__).resolve().parent.parent / "src"

# Third-party modules that only the commands using them may import: the data plane and its
# clients, encryption, the configuration's models and the event loop.
HEAVY = (
    "asyncio",
    "azure",
    "botocore",
    "cryptography",
    "google.cloud",
    "obstore",
    "pyarrow",
    "pydantic",
    "pyrage",
    "ray",
    "uvicorn",
    "yaml",
)
# Modules of daulat's own that only the commands using them may import.
MACHINERY = (
    "daulat.aio",
    "daulat.api",
    "daulat.audit",
    "daulat.config",
    "daulat.drill.run",
    "daulat.gateway",
    "daulat.inventory",
    "daulat.plan",
    "daulat.policy",
    "daulat.report",
    "daulat.risk.register",
    "daulat.scale",
    "daulat.stores",
    "daulat.transfer",
)
# Packages whose public names are imported on first use, with the modules those names live in.
LAZY_PACKAGES = ("daulat", "daulat.drill", "daulat.gateway", "daulat.risk")


def imported_after(code: str, cwd: Path) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    listing = cwd / "modules.json"
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json as _json, sys as _sys
        with open({str(listing)!r}, "w") as _out:
            _json.dump(sorted(_sys.modules), _out)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(listing.read_text()))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (a package stands for its submodules too) are in ``modules``."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    # A public name read is imported then, with what it needs: the check below would see it.
    modules = imported_after("import daulat\ndaulat.Summary\n", tmp_path)
    assert "daulat.transfer" in loaded(modules, MACHINERY)
    assert {"pydantic", "pyrage"} <= set(loaded(modules, HEAVY))


def test_import_daulat_imports_nothing_of_the_library(tmp_path: Path) -> None:
    modules = imported_after("import daulat\n", tmp_path)
    assert loaded(modules, HEAVY) == []
    # The package, its lazy names and the drill subpackage (imported at once, see
    # daulat/__init__.py, and lazy itself).
    assert {m for m in modules if m.split(".")[0] == "daulat"} == {
        "daulat",
        "daulat.drill",
        "daulat.lazy",
    }


@pytest.mark.parametrize(
    ("argv", "needed"),
    [
        (["--help"], []),
        (["--version"], []),
        # A command's options are checked by typer, with pydantic (which imports asyncio in
        # some of its versions: allowed, not required); an
        # audited command records its failure however it fails, so the audit log's recorder
        # is in place before its options are parsed (daulat.cli._failures_audited).
        (["copy", "--help"], ["asyncio", "daulat.audit", "pydantic"]),
    ],
)
def test_help_imports_no_machinery(tmp_path: Path, argv: list[str], needed: list[str]) -> None:
    # As the console script does (daulat_console.main → daulat.cli.main → run).
    modules = imported_after(
        f"import contextlib, io\nfrom daulat.cli import run\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert run({argv!r}) == 0\n",
        tmp_path,
    )
    extra = sorted(set(loaded(modules, HEAVY + MACHINERY)) - set(needed))
    assert extra == [], extra


def test_ls_imports_no_engine(tmp_path: Path) -> None:
    (tmp_path / "data" / "c1").mkdir(parents=True)
    (tmp_path / "data" / "c1" / "a.txt").write_text("a")
    (tmp_path / "daulat.toml").write_text(
        '[stores.src]\nurl = "file:data"\nprovider = "local"\ncountry = "ID"\n'
    )
    modules = imported_after(
        "import contextlib, io\nfrom daulat.cli import run\nshown = io.StringIO()\n"
        "with contextlib.redirect_stdout(shown):\n    code = run(['ls', '-R', 'src'])\n"
        "assert code == 0 and shown.getvalue() == 'c1/a.txt\\n', (code, shown.getvalue())\n",
        tmp_path,
    )
    # Listing needs the configuration and the store; not the engine, Ray, the gateway or the
    # clients of other kinds of store.
    assert "daulat.config" in modules and "daulat.listing" in modules
    unneeded = (
        "daulat.transfer",
        "daulat.drill.run",
        "daulat.plan",
        "daulat.gateway",
        "daulat.aio",
        "daulat.report",
        "daulat.scale",
    )
    assert loaded(modules, unneeded) == []
    assert loaded(modules, ("botocore", "ray", "uvicorn", "pyarrow", "google.cloud")) == []


def _type_checking_imports(package: str) -> dict[str, str]:
    """Name → module, as the package's ``if TYPE_CHECKING:`` block imports them."""
    path = SRC.joinpath(*package.split("."), "__init__.py")
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.unparse(imp)
                for alias in imp.names:
                    home = imp.module
                    found[alias.asname or alias.name] = (
                        f"{home}.{alias.name}" if home == package else home
                    )
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checkers_see_every_public_name_where_it_lives(package: str) -> None:
    # What mypy reads (the TYPE_CHECKING block) and what runs (the package's _WHERE) agree,
    # and cover __all__ exactly.
    module = importlib.import_module(package)
    seen = _type_checking_imports(package)
    where = {n: m for m, names in module._WHERE.items() for n in names}
    if package == "daulat":
        where["aio"] = "daulat.aio"
    assert seen == where
    assert set(where) == set(module.__all__) - {"__version__"}


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    listed = dir(module)
    for name, home in _type_checking_imports(package).items():
        value = getattr(module, name)
        source = importlib.import_module(home)
        assert value is (source if home == f"{package}.{name}" else getattr(source, name)), name
        assert name in listed, name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018
    assert not hasattr(module, "no_such_name")


def test_every_name_imports_by_from(tmp_path: Path) -> None:
    # `from daulat import X` for every public name, in a fresh interpreter.
    names = ", ".join(n for n in daulat.__all__ if n != "__version__")
    modules = imported_after(f"from daulat import {names}\nfrom daulat import *\n", tmp_path)
    assert "daulat.transfer" in modules


@pytest.mark.parametrize(
    "code",
    [
        # The drill modules first, then the package: the function wins.
        "import daulat.drill.run\nfrom daulat.drill import run\nassert run.run_drill\n",
        "from daulat.drill import DrillResult, run_drill\nimport daulat\n",
        "from daulat.drill.record import DrillLog\nimport daulat\n",
        # The function first, then every drill module: it stays the function.
        "import daulat, importlib, pkgutil, sys\nf = daulat.drill\n"
        "for m in pkgutil.iter_modules(sys.modules['daulat.drill'].__path__):\n"
        "    importlib.import_module('daulat.drill.' + m.name)\n"
        "assert daulat.drill is f\n",
        "from daulat import drill\nimport daulat.drill.units\nassert drill is daulat.drill\n",
    ],
)
def test_drill_is_the_function_whatever_is_imported_first(tmp_path: Path, code: str) -> None:
    script = code + textwrap.dedent(
        """
        import inspect, sys
        import daulat
        assert inspect.isfunction(daulat.drill), daulat.drill
        assert daulat.drill is daulat.api.drill
        assert sys.modules["daulat.drill"].DrillResult is daulat.DrillResult
        """
    )
    imported_after(script, tmp_path)
