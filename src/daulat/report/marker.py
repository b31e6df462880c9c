"""How a file is recognised as a report daulat wrote (which ``daulat report`` may replace), and
as a file it must never replace with one.

Both report formats carry a marker near their start: the HTML report a ``generator`` meta
element, the JSON report a first member ``"daulat_report"`` (the format's version). Reports
written before the markers existed are recognised by their fixed opening.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "GENERATOR_META",
    "HEAD_BYTES",
    "JSON_MARKER",
    "REPORT_FORMAT",
    "holds_secret_key",
    "is_report",
]

#: Version of the JSON report's layout, its first member.
REPORT_FORMAT: Final = 1
JSON_MARKER: Final = "daulat_report"
GENERATOR_META: Final = "<meta name='generator' content='daulat report'>"
#: How much of an existing file is read to recognise it.
HEAD_BYTES: Final = 64 * 1024

_HTML = re.compile(
    rb"\A\s*<!DOCTYPE html>.{0,400}?(?:"
    + re.escape(GENERATOR_META.encode())
    + rb"|<title>daulat report</title>)",
    re.DOTALL | re.IGNORECASE,
)
_JSON = re.compile(rb'\A\s*\{\s*"' + JSON_MARKER.encode() + rb'"\s*:\s*\d+\s*,')
# Before the marker: asdict(ReportData), whose first members are always these.
_JSON_LEGACY = re.compile(rb'\A\s*\{\s*"generated"\s*:\s*"[^"]*"\s*,\s*"daulat_version"\s*:')

# Secret keys daulat makes or reads (age identities, OpenSSH signing keys) and their kin.
_SECRETS = (
    b"AGE-SECRET-KEY-",
    b"AGE-PLUGIN-",
    b"-----BEGIN AGE ENCRYPTED FILE-----",  # a passphrase-protected identity, most often
    b"-----BEGIN OPENSSH PRIVATE KEY-----",
    b"PRIVATE KEY-----",
)


def is_report(head: bytes) -> bool:
    """Whether ``head`` (the first :data:`HEAD_BYTES` of a file) is a daulat report's."""
    return bool(_HTML.match(head) or _JSON.match(head) or _JSON_LEGACY.match(head))


def holds_secret_key(head: bytes) -> bool:
    """Whether ``head`` looks like a file holding a secret key (identity, signing key)."""
    return any(marker in head for marker in _SECRETS)
