"""Text from stores, configuration and providers, made safe to place in HTML and inline SVG.

Store names, policy names, provider text and object keys are data, and possibly hostile: a
name may hold ``<script>``, ``</svg>``, quotes, or invisible characters. Escaping markup is
not enough for a report people read and print: a right-to-left override (U+202E) in a name
visually reverses the text after it ("pass" can be made to read as something else), and
zero-width characters make two different names look the same. So besides HTML escaping, every
control and format character (Unicode categories Cc, Cf, Cs, Zl, Zp) is shown as a visible
``[U+XXXX]`` marker. Ordinary letters of any script, right-to-left ones included, are kept.
Lone surrogates (undecodable file names) are shown the same way instead of failing the write.

The escaped text is valid both in HTML and, since inline SVG is parsed by the HTML parser, in
SVG text and attribute values; it is also well-formed XML (no character XML forbids survives).
"""

from __future__ import annotations

import unicodedata
from html import escape

# Layout whitespace that HTML collapses harmlessly; every other control is made visible.
_KEEP = frozenset("\t\n\r")
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def visible(text: str) -> str:
    """``text`` with every invisible control or format character replaced by ``[U+XXXX]``."""
    if text.isprintable():  # fast path: no Cc/Cf/Cs/Zl/Zp (nor other separators) at all
        return text
    return "".join(
        f"[U+{ord(ch):04X}]" if ch not in _KEEP and unicodedata.category(ch) in _HIDDEN else ch
        for ch in text
    )


def esc(value: object) -> str:
    """``value`` as text safe inside HTML or SVG elements and quoted attribute values."""
    return escape(visible(str(value)), quote=True)
