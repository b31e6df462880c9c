"""Filters: which object keys an operation sees, by rclone's rules.

A :class:`Filter` is an ordered list of include (``+``) and exclude (``-``) rules, each a glob
matched against an object's key *relative to the* ``STORE:PREFIX`` *given* (as rclone matches
relative to the remote's root). The first rule that matches decides; a key no rule matches is
included. :data:`EVERYTHING` (no rules) includes every key without looking at it, so callers pay
nothing when the user gave no filter.

Glob syntax, as rclone's ``fs/filter/glob.go``:

- ``*`` any run of characters within one segment, ``**`` any run across segments, ``?`` one
  character other than ``/``;
- ``[…]`` a character class as in Go's regular expressions: ranges, ``[^…]`` to negate (``!`` is
  an ordinary character, as in rclone), ``[:alpha:]``-style ASCII classes, ``\\d \\s \\w``;
- ``{a,b}`` alternatives (they may nest); ``\\c`` a literal ``c``;
- a leading ``/`` anchors the pattern at the root; otherwise it matches the end of the key
  from a segment boundary (``file.jpg`` matches ``file.jpg`` and ``dir/file.jpg``, not
  ``afile.jpg``);
- a trailing ``/`` names a directory: an exclude ``dir/`` means ``dir/**`` (everything below
  it); an include ``dir/`` matches no object by itself (rclone uses it only to decide which
  directories to walk) and :attr:`Filter.warnings` says so.

Rule order, as rclone's ``parseRules``: every ``--include``, then every ``--exclude``, then every
``--filter`` rule, then the ``--filter-from`` files line by line; when any ``--include`` was given,
an exclude of everything (``- /**``) closes the list. A filter file holds ``+ pattern`` and
``- pattern`` lines, ``#`` and ``;`` comment lines and blank lines; a line ``!`` clears every rule
before it (the closing ``- /**`` of ``--include`` stays).

Where daulat differs from rclone, and why:

- rclone also derives *directory* rules from the patterns and skips directories they exclude
  while walking a directory tree. That is an optimisation of walking (with ``--fast-list`` on a
  bucket rclone does not do it), and it sometimes hides objects the documented rules include:
  ``--include b/c.txt`` never reaches ``x/b/c.txt`` on a local tree because ``x/`` is skipped.
  An object store's listing is flat, so daulat judges every key by the rules alone, as rclone
  does with ``--fast-list``.
- ``**`` also crosses newlines in keys (Go's ``.`` stops at a newline), so an exclude of
  ``dir/**`` excludes a key ``dir/a<newline>b`` too.
- ``{{regexp}}`` sections, Unicode classes (``\\pL``) and escapes other than punctuation and
  ``\\d \\D \\s \\S \\w \\W`` are refused with a :class:`~daulat.errors.ConfigError` rather than
  translated between regular-expression dialects; ``--include ''`` is refused too.

Each rule is compiled once to one Python regular expression; a filter also compiles all of them
into a single alternation, so a key costs one ``match`` call however many rules there are.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daulat.errors import ConfigError

__all__ = [
    "EVERYTHING",
    "Filter",
    "Rule",
    "build_filter",
    "compile_rule",
    "glob_to_regex",
    "read_filter_file",
]

# The whole rule must match to the end of the key; unanchored rules may start after any '/'.
_FLAGS = re.DOTALL | re.ASCII

# Go's ASCII character classes (regexp/syntax), which Python's re does not know.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_CLASS_ESCAPES = frozenset("dDsSwW")


class _GlobError(ValueError):
    """Why a glob is not valid; turned into a ConfigError naming the rule."""


def _literal(ch: str) -> str:
    return re.escape(ch)


def _escaped(ch: str) -> str:
    """The regex for ``\\ch`` in a glob (outside or inside a class)."""
    if ch in _CLASS_ESCAPES:
        return "\\" + ch
    if ch.isascii() and not ch.isalnum():
        return _literal(ch)
    raise _GlobError(
        f"unsupported escape '\\{ch}' (escape only punctuation, or use \\d \\s \\w and their "
        "negations)"
    )


def _class_end(glob: str, start: int) -> int:
    """Index of the ']' closing the '[' at ``start``, counted as rclone counts: nested '['
    deepen, and backslashes do not escape inside a class."""
    depth = 0
    for i in range(start, len(glob)):
        if glob[i] == "[":
            depth += 1
        elif glob[i] == "]":
            depth -= 1
            if depth == 0:
                return i
    raise _GlobError("'[' without a closing ']'")


def _class_char(body: str, k: int) -> tuple[str, str, int]:
    """One character of a class at ``body[k]``: (regex, the character or '' for \\d-style
    classes, next index)."""
    ch = body[k]
    if ch == "\\":
        if k + 1 >= len(body):
            raise _GlobError("a character class ends with '\\'")
        nxt = body[k + 1]
        regex = _escaped(nxt)
        return regex, "" if nxt in _CLASS_ESCAPES else nxt, k + 2
    if ch == "[":
        raise _GlobError("'[' inside a character class (only [:name:] classes may nest)")
    return _literal(ch), ch, k + 1


def _class_to_regex(body: str) -> str:
    """A Go character class body (between the brackets) as a Python class."""
    negate = body.startswith("^")
    if negate:
        body = body[1:]
    if not body:
        raise _GlobError("empty character class '[]'")
    parts: list[str] = []
    k = 0
    while k < len(body):
        if body.startswith("[:", k):
            end = body.find(":]", k + 2)
            name = body[k + 2 : end] if end >= 0 else ""
            if name not in _POSIX_CLASSES:
                raise _GlobError(
                    f"unknown character class '[:{name}:]'"
                    if end >= 0
                    else "'[' inside a character class (only [:name:] classes may nest)"
                )
            parts.append(_POSIX_CLASSES[name])
            k = end + 2
            continue
        regex, lo, k = _class_char(body, k)
        # "a-z" is a range; a '-' first or last is itself (Go's Perl syntax).
        if lo and k + 1 < len(body) and body[k] == "-":
            hi_regex, hi, k = _class_char(body, k + 1)
            if not hi:
                raise _GlobError(f"a range cannot end in a class like \\d ('{lo}-…')")
            if hi < lo:
                raise _GlobError(f"range '{lo}-{hi}' is backwards")
            parts.append(f"{regex}-{hi_regex}")
        else:
            parts.append(regex)
    return ("[^" if negate else "[") + "".join(parts) + "]"


def glob_to_regex(glob: str) -> str:
    """The Python regular expression (unanchored body) for one rclone glob without its leading
    ``/``. Raises ``ValueError`` with the reason when the glob is invalid."""
    parts: list[str] = []
    stars = 0
    braces = 0
    prev = ""

    def flush_stars() -> None:
        nonlocal stars
        if stars == 1:
            parts.append("[^/]*")
        elif stars == 2:
            parts.append(".*")
        elif stars > 2:
            raise _GlobError("more than two '*' in a row")
        stars = 0

    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch != "*":
            flush_stars()
        if ch == "\\":
            if i + 1 >= len(glob):
                raise _GlobError("ends with a lone '\\'")
            prev = glob[i + 1]
            parts.append(_escaped(prev))
            i += 2
            continue
        if ch == "[":
            end = _class_end(glob, i)
            parts.append(_class_to_regex(glob[i + 1 : end]))
            prev, i = "]", end + 1
            continue
        if ch == "*":
            stars += 1
        elif ch == "?":
            parts.append("[^/]")
        elif ch == "]":
            raise _GlobError("']' without an opening '['")
        elif ch == "{":
            if braces and prev == "{":
                raise _GlobError("{{regular expressions}} are not supported")
            braces += 1
            parts.append("(?:")
        elif ch == "}":
            if not braces:
                raise _GlobError("'}' without an opening '{'")
            braces -= 1
            parts.append(")")
        elif ch == "," and braces:
            parts.append("|")
        else:
            parts.append(_literal(ch))
        prev = ch
        i += 1
    flush_stars()
    if braces:
        raise _GlobError("'{' without a closing '}'")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule. ``regex`` is None when the rule can match no object (an include
    ending in ``/``: rclone uses it to choose directories, never to select a file)."""

    include: bool
    pattern: str  # as the user wrote it
    origin: str  # where it came from: "--include", "rules.txt line 3", ...
    regex: str | None

    def __str__(self) -> str:
        return f"{'+' if self.include else '-'} {self.pattern}"

    def matches(self, rel_key: str) -> bool:
        """Whether this rule alone matches ``rel_key``."""
        return self.regex is not None and re.match(self.regex, rel_key, _FLAGS) is not None


def compile_rule(include: bool, pattern: str, origin: str) -> Rule:
    """Compile one glob into a :class:`Rule`, or raise :class:`ConfigError` naming it."""
    if not pattern:
        raise ConfigError(f"empty filter pattern ({origin})")
    glob = pattern
    if glob.endswith("/"):
        if include and "**" not in glob:
            try:  # still check it, so a typo is reported rather than ignored
                glob_to_regex(glob.removeprefix("/"))
            except _GlobError as exc:
                raise ConfigError(f"invalid filter pattern {pattern!r} ({origin}): {exc}") from None
            return Rule(include, pattern, origin, None)
        if not include:
            glob += "**"  # rclone: excluding "dir/" excludes "dir/**"
    anchored = glob.startswith("/")
    try:
        body = glob_to_regex(glob[1:] if anchored else glob)
    except _GlobError as exc:
        raise ConfigError(f"invalid filter pattern {pattern!r} ({origin}): {exc}") from None
    regex = (body if anchored else f"(?:.*/)?(?:{body})") + r"\Z"
    try:
        re.compile(regex, _FLAGS)
    except re.error as exc:  # a safety net: the translation should never produce this
        raise ConfigError(f"invalid filter pattern {pattern!r} ({origin}): {exc}") from None
    return Rule(include, pattern, origin, regex)


class Filter:
    """An ordered list of rules; see the module docstring. Immutable and cheap to share."""

    __slots__ = ("_decisions", "_regex", "rules", "warnings")

    def __init__(self, rules: Iterable[Rule] = (), warnings: Iterable[str] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.warnings: tuple[str, ...] = tuple(warnings)
        live = [r for r in self.rules if r.regex is not None]
        # One alternation, one group per rule in order: the regex engine tries them in order,
        # so the first group that matches is the first rule that matches.
        self._decisions: tuple[bool, ...] = tuple(r.include for r in live)
        self._regex: re.Pattern[str] | None = (
            re.compile("|".join(f"({r.regex})" for r in live), _FLAGS) if live else None
        )

    @property
    def active(self) -> bool:
        """False when every key is included (no rules): callers may skip filtering."""
        return bool(self.rules)

    def matches(self, rel_key: str) -> bool:
        """Whether the key (relative to the listed prefix) passes the filter."""
        if self._regex is None:
            return True
        m = self._regex.match(rel_key)
        if m is None or m.lastindex is None:
            return True
        return self._decisions[m.lastindex - 1]

    def rule_for(self, rel_key: str) -> Rule | None:
        """The rule that decides ``rel_key`` (None: no rule matched, so it is included)."""
        for rule in self.rules:
            if rule.matches(rel_key):
                return rule
        return None

    def describe(self) -> list[str]:
        """The rules in order, as ``+ pattern`` / ``- pattern`` lines (for records and JSON)."""
        return [str(r) for r in self.rules]

    def __repr__(self) -> str:
        return f"Filter({self.describe()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Filter):
            return NotImplemented
        return [(r.include, r.pattern) for r in self.rules] == [
            (r.include, r.pattern) for r in other.rules
        ]

    def __hash__(self) -> int:
        return hash(tuple((r.include, r.pattern) for r in self.rules))


EVERYTHING = Filter()
"""The filter with no rules: every key passes."""


def _filter_line(line: str, origin: str, rules: list[Rule], warnings: list[str]) -> None:
    """Apply one ``+ glob`` / ``- glob`` / ``!`` rule to ``rules``."""
    if line == "!":
        rules.clear()
    elif line.startswith(("+ ", "- ")):
        rule = compile_rule(line[0] == "+", line[2:], origin)
        _warn_dir_include(rule, warnings)
        rules.append(rule)
    else:
        raise ConfigError(
            f"{origin}: {line!r} is not a filter rule (expected '+ PATTERN', '- PATTERN' or '!')"
        )


def read_filter_file(path: Path | str) -> list[tuple[int, str]]:
    """The rule lines of a filter file as (line number, text), comments and blanks dropped.

    ``-`` reads standard input, as in rclone. Raises :class:`ConfigError` naming the file when
    it cannot be read or is not UTF-8.
    """
    name = str(path)
    try:
        text = sys.stdin.read() if name == "-" else Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"filter file {name}: not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read filter file {name}: {exc.strerror or exc}") from None
    lines = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line and line[0] not in "#;":
            lines.append((number, line))
    return lines


def _warn_dir_include(rule: Rule, warnings: list[str]) -> None:
    if rule.include and rule.regex is None:
        warnings.append(
            f"include {rule.pattern!r} ({rule.origin}) matches no object: a trailing '/' names a "
            f"directory, as in rclone; write {rule.pattern + '**'!r} to include everything below it"
        )


def build_filter(
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    filter_rules: Sequence[str] = (),
    filter_from: Sequence[Path | str] = (),
) -> Filter:
    """Build a :class:`Filter` from command-line style options, in rclone's order.

    ``filter_rules`` are single ``+ glob`` / ``- glob`` / ``!`` rules (rclone's ``--filter``);
    ``filter_from`` are files of them. Raises :class:`ConfigError` naming the pattern (and the
    file and line) for an invalid rule. Returns :data:`EVERYTHING` when nothing was given.
    """
    if not (include or exclude or filter_rules or filter_from):
        return EVERYTHING
    rules: list[Rule] = []
    warnings: list[str] = []
    for pattern in include:
        rule = compile_rule(True, pattern, "--include")
        _warn_dir_include(rule, warnings)
        rules.append(rule)
    rules.extend(compile_rule(False, pattern, "--exclude") for pattern in exclude)
    if include and exclude:
        warnings.append(
            "--include rules are checked before --exclude rules whatever their order on the "
            "command line; use --filter or --filter-from to choose the order"
        )
    for text in filter_rules:
        _filter_line(text.strip(), f"--filter {text!r}", rules, warnings)
    for path in filter_from:
        for number, line in read_filter_file(path):
            _filter_line(line, f"filter file {path} line {number}", rules, warnings)
    if include:
        rules.append(compile_rule(False, "/**", "implied by --include"))
    return Filter(rules, warnings)
