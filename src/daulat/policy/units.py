"""How findings write amounts of data and ages."""

from __future__ import annotations


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{n:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _amount(objects: int | None, size: int | None) -> str:
    if objects is None:
        return "an unknown number of objects"
    noun = "object" if objects == 1 else "objects"
    return f"{objects:,} {noun} ({_bytes(size or 0)})"


def _days(days: float) -> str:
    if days < 1:
        return f"{days * 24:.1f} hours"
    return f"{days:.1f} days"
