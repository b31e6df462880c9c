"""Output for people and for programs, where names are data.

Object keys, store names, prefixes and providers' messages come from people and providers
daulat does not trust. Printed as they are, ``a[/]b`` crashes rich's markup parser,
``[link=…]`` hides text, ``:x:`` becomes an emoji, and control characters, ANSI escapes and
bidirectional overrides (U+202E turns ``evil.exe‮txt.pdf`` around) rewrite what the terminal
shows. So:

* :class:`SafeConsole` never interprets markup, emoji codes or highlighting, and escapes every
  character that is not printable (C0 and C1 controls, DEL, bidi overrides and isolates, other
  format characters, line and paragraph separators, surrogates) as ``\\x1b``, ``\\u202e``…, in
  every string it renders (plain prints, table cells, rule titles). Styling is done with
  ``style=`` or :func:`styled`, never with markup in strings.
* :func:`printable` does the same for one piece of data, newlines included, for messages that
  embed data into a sentence.
* :func:`json_text` is JSON whose strings are exact (a program reading it gets every key back
  unchanged) but which holds no raw control or bidi character either: those are written as
  ``\\uXXXX`` escapes, which JSON defines to mean the same character.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.console import Console
from rich.style import Style
from rich.text import Text

__all__ = ["SafeConsole", "json_text", "printable", "styled"]

# Candidates for escaping: everything but printable ASCII. Each match is then asked
# ``str.isprintable`` (false for Cc, Cf, Cs, Co, Cn, Zl, Zp and the non-ASCII spaces), so only
# non-ASCII text pays for a Python call.
_NOT_ASCII_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_NOT_ASCII = re.compile(r"[^\x00-\x7e]")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    c = ord(ch)
    if c <= 0xFF:
        return f"\\x{c:02x}"
    if c <= 0xFFFF:
        return f"\\u{c:04x}"
    return f"\\U{c:08x}"


def _escape_unprintable(m: re.Match[str]) -> str:
    ch = m.group()
    return ch if ch.isprintable() else _escape(ch)


def _escape_unprintable_but_newline(m: re.Match[str]) -> str:
    ch = m.group()
    return ch if ch == "\n" or ch.isprintable() else _escape(ch)


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``…); with
    ``keep_newlines`` a ``\\n`` stays a line break (for messages daulat itself wrote over
    several lines)."""
    if text.isprintable():
        return text
    fn = _escape_unprintable_but_newline if keep_newlines else _escape_unprintable
    return _NOT_ASCII_PRINTABLE.sub(fn, text)


def _json_escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch.isprintable():
        return ch
    c = ord(ch)
    if c <= 0xFFFF:
        return f"\\u{c:04x}"
    c -= 0x10000
    return f"\\u{0xD800 + (c >> 10):04x}\\u{0xDC00 + (c & 0x3FF):04x}"


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as JSON: exact strings, no raw control, bidi or other unprintable character.

    Such characters can only occur inside JSON strings (the syntax is printable ASCII), where
    ``\\uXXXX`` is the same character; the rest of the text stays readable UTF-8.
    """
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    # json.dumps already escaped U+0000-U+001F; DEL and everything non-ASCII is checked here.
    return _NOT_ASCII.sub(_json_escape, text)


def styled(*parts: str | tuple[str, str | Style]) -> Text:
    """A line from pieces: plain strings are data (escaped, see :func:`printable`, newlines
    kept), ``(text, style)`` pairs are styled pieces."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(printable(part[0], keep_newlines=True), style=part[1])
        else:
            text.append(printable(part, keep_newlines=True))
    return text


class SafeConsole(Console):
    """A rich console for which every string is data: no markup, no emoji codes, no
    highlighting, and non-printable characters escaped wherever rich renders a string."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        # Markup stays off even when a caller asks for it: no string reaching the terminal is
        # trusted to be free of data.
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(printable(text, keep_newlines=True), **kwargs)
