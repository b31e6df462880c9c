"""What the commands share: the consoles, common options, loading the config, running a
coroutine, printing JSON.

Three options set module state through their callbacks (``--request-timeout``,
``--abort-uploads-older-than``) and :func:`daulat.cli.run` sets the command line as typed; read
them here (or as ``_shared.NAME``), never through a copy imported by name.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.measure import Measurement
from rich.table import Table

from daulat import interrupts
from daulat.defaults import DEFAULT_MAX_AGE, DEFAULT_MAX_DELETE_PERCENT, RAY_CONNECT_TIMEOUT
from daulat.errors import ConfigError
from daulat.feedback import human_bytes
from daulat.filters import Filter, build_filter
from daulat.terminal import SafeConsole, json_text, printable

# What a command needs of the library is imported where it is used, not here: every `daulat`
# process imports this module (and every command module) to build its options, `daulat
# --help` and `daulat ls` included, and none of them should pay for the transfer engine, the
# configuration's models or the stores (tests/test_startup.py holds that).
if TYPE_CHECKING:
    from daulat.config import Config
    from daulat.crypto import Recipient
    from daulat.transfer import Options
    from daulat.transfer.engine import Runner

T = TypeVar("T")


class _Stdout(SafeConsole):
    """stdout for people. On a terminal, rich fits tables to its width. Off a terminal (piped,
    redirected, captured) there is no width to fit: a table is laid out as wide as its widest
    cells, so that no store name, key or URL is folded into fragments a reader (or ``grep``)
    cannot find again. ``--json`` never comes here."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        if self.is_terminal or not tables:
            super().print(*objects, **kwargs)
            return
        unbounded = self.options.update_width(_WIDEST)
        needed = max(Measurement.get(self, unbounded, t).maximum for t in tables)
        # Set for this print only: rich's own width (None: from the environment) comes back.
        chosen = self._width
        self.width = max(self.width, min(needed, _WIDEST))
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = chosen


# A table wider than this is folded even off a terminal (a cell that long is a message).
_WIDEST = 4000

out = _Stdout(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)
# The command line as typed, for "resume with: daulat ..." after an interrupt.
_argv: list[str] = []

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Path to daulat.toml (default: ./daulat.toml, else the nearest in a parent "
        "directory).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Show no progress (results and errors only).")
]


# rclone-style filters (daulat.filters), for ls, size and every command that reads objects.
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="PATTERN",
        help="Only keys matching this glob (repeatable; everything else is excluded).",
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", metavar="PATTERN", help="Leave out keys matching this glob."),
]
FilterRuleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="RULE",
        help="A rule '+ PATTERN' or '- PATTERN' (repeatable, checked in order).",
    ),
]
FilterFromOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--filter-from",
        metavar="FILE",
        help="Read '+ PATTERN' / '- PATTERN' / '!' rules from FILE ('-': standard input).",
    ),
]


def _filter(
    include: list[str] | None,
    exclude: list[str] | None,
    rules: list[str] | None,
    files: list[Path] | None,
) -> Filter:
    """The filter the options describe; its warnings go to stderr."""
    result = build_filter(
        include=include or (),
        exclude=exclude or (),
        filter_rules=rules or (),
        filter_from=files or (),
    )
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, emoji=False)
    return result


class ExitCode(Exception):
    """Raised by commands to end with a given exit code after printing their output."""

    def __init__(self, code: int) -> None:
        self.code = code


# --request-timeout of the command being run (set by the option's callback, None: the config's).
_request_timeout: float | None = None


def _set_request_timeout(value: float | None) -> float | None:
    global _request_timeout
    _request_timeout = value
    return value


RequestTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--request-timeout",
        metavar="SECONDS",
        min=0.001,
        help="Fail a request that makes no progress for this long (default: each store's "
        "request_timeout, 30 s).",
        callback=_set_request_timeout,
        expose_value=False,
    ),
]


# --abort-uploads-older-than of the command being run (set by the option's callback).
_abort_uploads_older_than: timedelta | None = DEFAULT_MAX_AGE
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _set_abort_age(value: str | None) -> str | None:
    global _abort_uploads_older_than
    if value is None:
        _abort_uploads_older_than = DEFAULT_MAX_AGE
        return value
    m = _AGE.match(value)
    if m is None:
        raise typer.BadParameter(f"{value!r} is not an age like 7d, 12h, 30m or 90s")
    _abort_uploads_older_than = timedelta(
        seconds=float(m.group(1)) * _AGE_UNITS[m.group(2).lower()]
    )
    return value


AbortAgeOpt = Annotated[
    str | None,
    typer.Option(
        "--abort-uploads-older-than",
        metavar="AGE",
        help="Unfinished multipart uploads the journal does not know are aborted only when "
        "older than this (7d, 12h, 30m, 90s) and on keys this run writes; default 7d.",
        callback=_set_abort_age,
        expose_value=False,
    ),
]


# `daulat --config PATH COMMAND`: set by the main callback on every invocation (None when not
# given, so a second in-process run never inherits the first's); a command's own --config wins.
_global_config: Path | None = None


def _process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere 0, i.e. since the
    command line's modules were imported)."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        # Fields after the command name in parentheses: starttime is the 20th, in clock ticks.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


#: When the command started, on the monotonic clock: the transfer summary's elapsed time and
#: rate are measured from here, start-up (imports, config, listing, planning) included, as the
#: user's own clock measures the command.
STARTED: float = time.monotonic() - _process_age()


def _elapsed() -> float:
    return time.monotonic() - STARTED


def _config_path(config: Path | None) -> Path | None:
    """The config a command was given: its own --config, else the global one, else None."""
    return config if config is not None else _global_config


def _load(config: Path | None) -> Config:
    from daulat.config import find_config, load_config

    return load_config(find_config(_config_path(config))).with_request_timeout(_request_timeout)


def _run(coro: Coroutine[Any, Any, T], repeat_window: float = interrupts.REPEAT_WINDOW) -> T:
    # SIGINT/SIGTERM cancel the run cleanly and raise Interrupted (see daulat.interrupts), on
    # daulat's event loop (daulat.loops).
    return interrupts.run(coro, repeat_window=repeat_window)


_human_bytes = human_bytes


def _print_json(value: Any) -> None:
    """Exact JSON on stdout (control and bidi characters as \\u escapes, see terminal.py)."""
    sys.stdout.write(json_text(value) + "\n")
    sys.stdout.flush()


def _resume_command() -> str:
    return printable(shlex.join(["daulat", *_argv]))


ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=1024, help="Objects in flight at once.")
]
BwlimitOpt = Annotated[
    str | None,
    typer.Option("--bwlimit", help="Bandwidth cap in bytes/s; suffixes K, M, G (powers of 1024)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")]


class Engine(StrEnum):
    local = "local"
    ray = "ray"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="Where objects are copied: this process (local), or shards on a Ray cluster "
        "(ray; needs pip install 'daulat\\[ray]').",
    ),
]
VerifyEngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="Where --full re-reads and hashes content: this process (local), or shards on a "
        "Ray cluster (ray; needs pip install 'daulat\\[ray]'). Without --full, verify compares "
        "listings and records in this process.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDR",
        help="With --engine ray: the cluster's address (default: RAY_ADDRESS, else a local Ray "
        "started for the run and stopped after it). An address where nothing answers within "
        f"{RAY_CONNECT_TIMEOUT:g} s is refused (exit 2).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=100_000,
        help="With --engine ray: shards in flight at once, each with --concurrency objects "
        "and its own --bwlimit (default: the cluster's CPUs).",
    ),
]


def _engine(
    engine: Engine, address: str | None, workers: int | None
) -> Callable[[Config], Runner | None]:
    """The runner for ``--engine`` (checked now: without Ray, one line and exit 2)."""
    if engine != Engine.ray:
        if address is not None or workers is not None:
            raise typer.BadParameter("--ray-address and --workers need --engine ray")
        return lambda _cfg: None
    if address is not None and not address.strip():
        # "--ray-address $HEAD" with HEAD unset would otherwise run a cluster's exit on a
        # local Ray on this one machine.
        raise typer.BadParameter(
            "--ray-address is empty (an unset variable?): give the cluster's address, or "
            "leave the option out to start a local Ray for the run"
        )
    from daulat.scale.cluster import require_ray

    require_ray()

    def runner(cfg: Config) -> Runner:
        from daulat.apiargs import reach_ray
        from daulat.scale.driver import RayRunner

        # Nothing answering at the address: refused within RAY_CONNECT_TIMEOUT (ray.init
        # alone retries for many minutes, and a signal cannot stop it meanwhile).
        reach_ray(address or os.environ.get("RAY_ADDRESS") or None)
        return RayRunner(cfg, address=address, workers=workers)

    return runner


EncryptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--encrypt-to",
        metavar="AGE_RECIPIENT",
        help="Encrypt with age to this public key (repeatable); overrides the store's encrypt_to.",
    ),
]
IdentityOpt = Annotated[
    Path | None,
    typer.Option("--identity", "-i", metavar="FILE", help="age identity file (secret key)."),
]
EncryptNamesOpt = Annotated[
    bool,
    typer.Option(
        "--encrypt-names",
        help="Store objects under keyed hashes of their names; the real names are only in the "
        "encrypted manifest (needs --encrypt-to or the store's encrypt_to).",
    ),
]
AllowPlaintextOpt = Annotated[
    bool,
    typer.Option(
        "--allow-plaintext",
        help="Write unencrypted objects (or real names) even where the destination holds "
        "daulat-encrypted objects (or protected names), replacing them.",
    ),
]
ReencryptOpt = Annotated[
    bool,
    typer.Option(
        "--reencrypt",
        help="Write age ciphertext to the given recipients even where this machine's journal "
        "says the destination was encrypted to other recipients (refused by default: the old "
        "identity could no longer restore what is rewritten).",
    ),
]
AllowEmptySourceOpt = Annotated[
    bool,
    typer.Option(
        "--allow-empty-source",
        help="Go on when the source lists no objects (refused by default: with --delete or "
        "exit that is most often a typo).",
    ),
]
MaxDeleteOpt = Annotated[
    str | None,
    typer.Option(
        "--max-delete",
        metavar="N|N%",
        help="With --delete: refuse, before copying or deleting anything, when more than N "
        f"objects (or N% of the destination's) would be deleted. Default "
        f"{DEFAULT_MAX_DELETE_PERCENT:g}%.",
    ),
]
NameKeyIdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        "-i",
        metavar="FILE",
        help="age identity file, to recover the destination's name key (protected names) "
        "when this machine does not have it.",
    ),
]


def _parse_rate(text: str | None, option: str = "--bwlimit") -> float | None:
    if text is None:
        return None
    from daulat.drill.units import parse_byte_rate

    try:
        return parse_byte_rate(text)
    except ConfigError as e:
        # Named, so the error line says which option (a usage error, with its usage line).
        raise typer.BadParameter(str(e), param_hint=f"'{option}'") from None


def _recipients(values: list[str] | None) -> list[Recipient]:
    from daulat.crypto import parse_recipients

    return parse_recipients(values) if values else []


def _options(
    concurrency: int,
    bwlimit: str | None,
    dry_run: bool,
    encrypt_to: list[str] | None,
    encrypt_names: bool = False,
    **more: Any,
) -> Options:
    from daulat.transfer import Options

    return Options(
        concurrency=concurrency,
        bwlimit=_parse_rate(bwlimit),
        dry_run=dry_run,
        encrypt_to=_recipients(encrypt_to),
        encrypt_names=encrypt_names,
        abort_uploads_older_than=_abort_uploads_older_than,
        **more,
    )


def _excluded_line(objects: int, size: int, rules: list[str]) -> str:
    """One line on what filters left out (names in rules are escaped)."""
    return printable(
        f"excluded by filters: {objects:,} object{'' if objects == 1 else 's'} "
        f"({_human_bytes(size)}); rules: " + "; ".join(rules)
    )


def _verified_by(what: str) -> str:
    """What "verified" meant, for people: the listing form says what it cannot see."""
    from daulat.transfer.model import VERIFIED_BY_LISTING

    if what == VERIFIED_BY_LISTING:
        return f"{what} (content not re-read: verify --full re-reads and hashes it)"
    return what
