"""Units of plans: decimal bytes (1 PB = 10^15 B), counts, hours, bit rates, money."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from daulat.drill.units import plain
from daulat.errors import ConfigError

_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18}
_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50, "ei": 2**60}
# Beyond these no exit is planned: a zettabyte is more than any store holds, and past them a
# float's digits would be printed as if counted.
MAX_BYTES = 10**21
MAX_OBJECTS = 10**15
# A deadline in hours; longer ones overflow to infinite seconds and mean nothing to plan for.
MAX_DEADLINE_HOURS = 1_000_000
_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"


def parse_bytes(text: str, option: str = "--bytes") -> int:
    """``8PB``, ``8 PB``, ``8e15``, ``500TB``, ``1.5T`` → bytes, decimal (1 PB = 10^15 B);
    ``PiB``/``TiB``… are read as binary, since they say so."""
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([kKmMgGtTpPeE]i?)?\s*([bB]?)\s*", text)
    if m is None:
        raise ConfigError(
            f"{option} {text!r}: give a size in bytes, e.g. 8PB, 500TB or 8e15 "
            "(decimal: 1 PB = 10^15 bytes)"
        )
    unit = (m.group(2) or "").lower()
    if m.group(3) == "b":
        # 8Pb is petabits, an eighth of 8 PB: a size is never guessed to be in bytes.
        prefix = unit[:1].upper() + unit[1:]
        raise ConfigError(
            f"{option} {text!r}: a lowercase b is bits, ambiguous for a size: write "
            f"{prefix}B for bytes (e.g. 8PB, not 8Pb)"
        )
    factor = _BINARY[unit] if unit.endswith("i") else _DECIMAL[unit]
    # Decimal, not float: 123456789012345678901 is that many bytes, not a float's nearest.
    value = _exact(m.group(1)) * factor
    if value > MAX_BYTES:
        raise ConfigError(f"{option} {text!r}: at most 10^21 bytes (1 ZB) can be planned")
    return int(value.to_integral_value())


def _exact(number: str) -> Decimal:
    """The number the regex matched, exactly (an exponent too large for Decimal: infinite)."""
    try:
        return Decimal(number)
    except InvalidOperation:
        return Decimal("Infinity")


def parse_count(text: str, option: str = "--objects") -> int:
    """``5000000000``, ``5e9``, ``5G`` (SI prefixes: k, M, G, T) → a whole positive number."""
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([kKmMgGtT]?)\s*", text.replace(",", "").replace("_", ""))
    if m is None:
        raise ConfigError(f"{option} {text!r}: give a number of objects, e.g. 5e9 or 5000000")
    value = _exact(m.group(1)) * _DECIMAL[m.group(2).lower()]
    if value > MAX_OBJECTS:
        raise ConfigError(f"{option} {text!r}: at most 10^15 objects can be planned")
    if value < 1 or value != value.to_integral_value():
        raise ConfigError(f"{option} {text!r}: the number of objects must be a whole number >= 1")
    return int(value)


def parse_hours(text: str, option: str = "--deadline") -> float:
    """``72`` or ``72h`` (hours), ``3d`` (days), ``90m`` (minutes) → hours, positive."""
    m = re.fullmatch(rf"\s*{_NUMBER}\s*([hHdDmM]?)\s*", text)
    if m is None:
        raise ConfigError(f"{option} {text!r}: give a number of hours, e.g. 24, 72h or 3d")
    hours = float(m.group(1)) * {"": 1.0, "h": 1.0, "d": 24.0, "m": 1 / 60}[m.group(2).lower()]
    if not math.isfinite(hours) or hours <= 0:
        raise ConfigError(f"{option} {text!r}: the deadline must be a positive number of hours")
    if hours > MAX_DEADLINE_HOURS:
        raise ConfigError(f"{option} {text!r}: at most {MAX_DEADLINE_HOURS:,} hours (114 years)")
    return hours


def decimal_bytes(n: float) -> str:
    """``8 PB``, ``1.25 TB``, ``512 B``: decimal units, as everywhere in plans."""
    for unit, f in (
        ("ZB", 1e21),
        ("EB", 1e18),
        ("PB", 1e15),
        ("TB", 1e12),
        ("GB", 1e9),
        ("MB", 1e6),
        ("kB", 1e3),
    ):
        if abs(n) >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n:.0f} B"


def count(n: float) -> str:
    """``5 billion``, ``1.2 million``, ``12,345``: a count for people."""
    for word, f in (("quadrillion", 1e15), ("trillion", 1e12), ("billion", 1e9), ("million", 1e6)):
        if abs(n) >= f:
            return f"{n / f:.3g} {word}"
    return f"{n:,.0f}"


def usd(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    if abs(amount) >= 100:
        return f"${amount:,.0f}"
    return f"${amount:,.2f}"


def hours(seconds: float) -> str:
    return f"{plain(seconds / 3600)} h"
