"""A package's public names imported on first use (PEP 562), not when the package is imported.

``import daulat`` used to import the whole library (engine, stores, obstore, pydantic models,
rich): close to a second of CPU before any command did anything, paid again by every ``daulat``
process, scripts and the test suite's hundreds of them included. A package that uses this lists
where each of its names lives; :func:`exports` gives it the module ``__getattr__`` and
``__dir__`` that import that module the first time the name is read, and keep the value in the
package, so a name costs its import once and nothing after.

What type checkers see is the package's ``if TYPE_CHECKING:`` block, which imports every name
from where it lives (mypy --strict users keep every type); the package defines ``__getattr__``
outside that block, so a misspelt name is still an error to them. tests/test_startup.py holds
each package's list and its ``TYPE_CHECKING`` block together.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence


def exports(
    package: str, where: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: a name in ``where`` is read from the
    module it maps to (a name that maps to ``package.name`` itself is that module) and kept in
    the package; any other name raises ``AttributeError`` as a module's missing attribute
    does. ``dir()`` lists the package's attributes and ``public``."""

    def __getattr__(name: str) -> object:
        home = where.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__
