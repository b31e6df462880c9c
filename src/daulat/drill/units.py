"""Units of the drill's numbers: byte sizes, bit rates, durations and timestamps."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from daulat.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def parse_bandwidth(text: str) -> float:
    """``--link`` text → bits per second: ``10G``, ``10Gbit/s``, ``500M``, ``1e9`` (SI units)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(?:bit/s|bps|b/s|bit)?\s*", text)
    units = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    try:
        if m is None:
            raise ValueError
        value = float(m.group(1)) * units[m.group(2).lower()]
    except ValueError:
        raise ConfigError(
            f"--link {text!r}: give a bandwidth in bits per second, e.g. 10G or 500Mbit/s"
        ) from None
    if value <= 0:
        raise ConfigError("--link: the bandwidth must be positive")
    return value


def parse_byte_rate(text: str) -> float:
    """``--bwlimit`` text → bytes per second: ``50M``, ``1.5G``, ``1048576``, ``50MB/s``
    (suffixes K, M, G are powers of 1024). Raises :class:`ConfigError` for anything else, and
    for a rate that is not a positive, finite number."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("/S").removesuffix("B")
    suffix = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(suffix)]) * units[suffix]
    except ValueError:
        raise ConfigError(f"{text!r} is not a rate like 50M or 1048576") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("the bandwidth limit must be a positive number of bytes per second")
    return value


def human_duration(seconds: float) -> str:
    """``42.3 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    if s < 1000 * 86400:
        return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"
    # Thousands of days to the hour would claim a precision no projection has.
    return f"{plain(s / 86400)} d"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _human_rate_bits(bps: float) -> str:
    for unit, f in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= f:
            return f"{bps / f:.3g} {unit}"
    return f"{bps:.0f} bit/s"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def plain(x: float) -> str:
    """Three significant digits, never in scientific notation ("1.08e+03" reads badly)."""
    if abs(x) >= 100:
        return f"{float(f'{x:.3g}'):,.0f}"
    return f"{x:.3g}"
