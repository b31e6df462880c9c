"""The ``daulat`` command: parse, call one library function, render.

Exit codes: 0 success, 1 a failure of the job itself (unreachable store, differences, violations),
2 usage or configuration errors (and unusable local state), 130 when SIGINT and 143 when
SIGTERM stopped the run. User errors print one clear message, never a traceback.

Everything printed for people goes through :mod:`daulat.terminal`: names, keys and providers'
messages are data, never markup or terminal control; ``--json`` output is exact.

This module holds the typer app, the order of its commands and :func:`run` (exit codes, signals,
errors). The commands live by group: :mod:`.inventory` (init, stores, scan, ls, size),
:mod:`.transfers` (copy, sync, exit, restore, verify; :mod:`.summary` prints their outcome),
:mod:`.drills` (drill, plan), :mod:`.governance` (keys, audit, risk, check, report, clean) and
:mod:`.serving` (serve, demo); what they share is in :mod:`._shared`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import typer._click as click
import typer.main
from typer._click.exceptions import NoArgsIsHelpError
from typer.core import TyperGroup

from daulat import __version__, interrupts, loops
from daulat.cli import _shared
from daulat.cli._shared import (
    ExitCode,
    _resume_command,
    err,
    out,
)
from daulat.cli.drills import drill, plan
from daulat.cli.governance import audit_app, check, clean, keys_app, report, risk
from daulat.cli.inventory import init, ls_, scan, size_, stores
from daulat.cli.serving import demo, serve
from daulat.cli.transfers import copy, exit_, restore, sync, verify
from daulat.errors import (
    ConfigError,
    DaulatError,
    Interrupted,
    ManifestError,
    SafetyRefusal,
)
from daulat.terminal import printable, styled

# Every command module above imports the library where a command uses it, not at the top, and
# so does this one: `daulat --help`, `daulat ls` and the rest pay only for what they run
# (tests/test_startup.py holds that).

app = typer.Typer(
    name="daulat",
    help="Know where your data lives and under whose law; keep a copy only you can read; "
    "leave any cloud provider with proof.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"daulat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="DAULAT_CONFIG",
            help="Path to daulat.toml for the command (default: ./daulat.toml, else the nearest "
            "in a parent directory); the command's own --config wins.",
        ),
    ] = None,
) -> None:
    """Know where your data lives and under whose law; leave any provider with proof."""
    _shared._global_config = config


# The commands, in the order ``daulat --help`` lists them (typer keeps the order of
# registration; groups come after commands).
app.command()(init)
app.command()(stores)
app.command()(scan)
app.command()(demo)
app.command()(copy)
app.command()(sync)
app.command(name="exit")(exit_)
app.command()(restore)
app.add_typer(keys_app, name="keys")
app.command()(verify)
app.command()(risk)
app.add_typer(audit_app, name="audit")
app.command()(drill)
app.command()(plan)
app.command()(check)
app.command()(report)
app.command(name="ls")(ls_)
app.command(name="size")(size_)
app.command()(clean)
app.command()(serve)


def _fail(message: str, code: int) -> int:
    err.print(styled(("error:", "bold red"), " ", message))
    return code


def _interrupted(signum: int) -> int:
    name = signal.Signals(signum).name
    if not interrupts.begun():
        # Stopped while parsing the command line or reading the config: nothing was started.
        err.print(
            styled(
                ("interrupted", "bold red"),
                f" by {name} before anything was started. Run the same command again: "
                f"{_resume_command()}",
            )
        )
        return 128 + signum
    err.print(
        styled(
            ("interrupted", "bold red"),
            f" by {name}: stopped cleanly; what was finished is recorded. "
            f"Run the same command again to resume: {_resume_command()}",
        )
    )
    return 128 + signum


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Outside the event loop (parsing, loading the config, the synchronous commands,
    printing), SIGINT and SIGTERM stop the command with ``KeyboardInterrupt``, so that both
    end with a message and their own exit code, and the signal is known to the audit record.

    The first signal is raised once; copies of it (``timeout`` signals the process and its
    group) are ignored while it unwinds; a signal after it was handled and
    :data:`~daulat.interrupts.REPEAT_WINDOW` has passed ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if interrupts.received() is not None:
            if not interrupts.repeated():
                return
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping now\n".encode())
            os._exit(128 + signum)
        interrupts.note(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in interrupts.SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _sentence(message: str) -> str:
    """click's "No such option: --x." as daulat words its own errors: lower case first, no
    closing full stop (an acronym such as "URL" keeps its case)."""
    message = " ".join(message.split()).replace("Value error, ", "")
    if len(message) > 1 and message[0].isupper() and not message[1].isupper():
        message = message[0].lower() + message[1:]
    return message[:-1] if message.endswith(".") and not message.endswith("..") else message


def _choices(m: re.Match[str]) -> str:
    """``'a', 'b', 'c'`` (an enum's values, quoted) as ``must be a, b or c``."""
    *first, last = re.findall(r"'([^']*)'", m.group(1))
    return f"must be {', '.join(first)} or {last}" if first else f"must be {last}"


# pydantic's words (typer checks option values with it) as daulat says them.
_PYDANTIC_WORDS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # An enum's own ValueError (typer converts choices with it): the value is shown after.
    (re.compile(r"(?:Value error, )?'[^']*' is not one of ((?:'[^']*'(?:, )?)+)\.?"), _choices),
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be greater than (\S+)"), r"must be more than \1"),
    (re.compile(r"Input should be less than (\S+)"), r"must be less than \1"),
    (re.compile(r"Input should be a valid integer.*"), "must be a whole number"),
    (re.compile(r"Input should be a finite number.*"), "must be a finite number"),
    (re.compile(r"Input should be a valid number.*"), "must be a number"),
    (re.compile(r"Input should be a valid boolean.*"), "must be true or false"),
    (re.compile(r"Input should be "), "must be "),
]


def _daulat_words(text: str) -> str:
    for pattern, words in _PYDANTIC_WORDS:
        text = pattern.sub(words, text)
    return text


def _bad_value(exc: typer.TyperException) -> str | None:
    """A value typer's pydantic check refused, as ``--workers must be at least 1, not '-1'``
    (the option, the rule, the value given); None when the error is not one of those."""
    errors = getattr(exc.__cause__, "errors", None)
    param = getattr(exc, "param", None)
    if not callable(errors) or param is None:
        return None
    try:
        first = errors()[0]
        rule, given = str(first["msg"]), first.get("input")
    except (LookupError, TypeError, ValueError):
        return None
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    name = opts[0] if opts else str(getattr(param, "human_readable_name", "the value"))
    shown = f", not {given!r}" if isinstance(given, str) else ""
    return f"{name} {_daulat_words(rule)}{shown}"


def _context_for(argv: list[str]) -> click.Context | None:
    """The context of the command ``argv`` names, for the usage line of an error click raised
    without one (an option missing its value, a flag given a value)."""
    command: click.Command = typer.main.get_command(app)
    ctx = click.Context(command, info_name="daulat")
    for word in argv:
        if not isinstance(command, TyperGroup):
            break
        if word.startswith("-"):
            continue
        sub = command.get_command(ctx, word)
        if sub is None:
            continue  # the value of a global option (--config FILE)
        command = sub
        ctx = click.Context(sub, info_name=word, parent=ctx)
    return ctx


def _usage_error(exc: typer.TyperException) -> int:
    """A usage error (unknown option or command, missing argument, bad value) in daulat's own
    style: ``error: <what>`` first, like every other mistake, then one line with the usage and
    where help is; plain text, never boxed; exit 2. The user's input in it is escaped."""
    if isinstance(exc, NoArgsIsHelpError):
        # A bare group (``daulat``, ``daulat keys``) shows its help, as it always did.
        buffer = io.StringIO()
        exc.show(file=buffer)
        sys.stderr.write(printable(buffer.getvalue(), keep_newlines=True))
        return 2
    _fail(_bad_value(exc) or _daulat_words(_sentence(exc.format_message())), 2)
    ctx = getattr(exc, "ctx", None) or _context_for(_shared._argv)
    if ctx is not None:
        usage = " ".join(ctx.get_usage().split())
        if usage.startswith("Usage: "):
            usage = "usage: " + usage[len("Usage: ") :]
        if ctx.command.get_help_option(ctx) is not None:
            usage += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
        err.print(printable(usage))
    return 2


class _Notices(logging.Handler):
    """The library's notices (``daulat.*`` loggers: state made private, an audit entry that
    could not be written) on stderr, one line each, whatever else configured logging."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(printable(record.getMessage()))


_notices = _Notices(logging.WARNING)


# The commands the audit log records however they end (README: "The audit log records ...").
_AUDITED = frozenset(
    {"scan", "copy", "sync", "exit", "restore", "verify", "drill", "check", "report"}
)


def _config_named(argv: list[str]) -> Path | None:
    """The --config/-c a command line gives (the last one: a command's own wins)."""
    named: str | None = None
    for i, word in enumerate(argv):
        if word in ("--config", "-c") and i + 1 < len(argv):
            named = argv[i + 1]
        elif word.startswith("--config="):
            named = word.removeprefix("--config=")
    return Path(named) if named else None


def _failures_audited(argv: list[str]) -> contextlib.AbstractContextManager[None]:
    """An audited command that fails before its library call records anything (a bad filter,
    recipient, key file or store name, a refused output file) is recorded as failed, as a
    failed copy is. A command line that does not parse (typer's usage errors: an unknown
    option, a value out of range) ran nothing and is not recorded; nor is a failure to find
    or load the configuration, which leaves no audit log to record it in."""
    ctx = _context_for(argv)
    path: list[str] = []
    while ctx is not None and ctx.parent is not None:
        path.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    if len(path) != 1 or path[0] not in _AUDITED:
        return contextlib.nullcontext()
    from daulat.audit import command_failures_audited

    def state_dir() -> Path | None:
        from daulat.config import find_config, load_config

        try:
            return load_config(find_config(_config_named(argv))).state_dir
        except (DaulatError, OSError):
            return None

    return command_failures_audited(
        state_dir, path[0], {"command": ["daulat", *argv]}, (click.ClickException, typer.Exit)
    )


def _failed(exc: DaulatError) -> int:
    """A library error that ended the command, printed, and its exit code: 2 for what the
    user must fix first, 1 for a failure of the job itself."""
    # Imported only when such an error happened (see the note at the top).
    from daulat.audit import AuditLogError
    from daulat.crypto import KeyFileError, RecipientError

    if isinstance(exc, SafetyRefusal):
        return _fail(f"refused: {exc}", 2)
    if isinstance(exc, ConfigError | RecipientError | KeyFileError | ManifestError | AuditLogError):
        # ManifestError, AuditLogError: the local state is damaged or not daulat's (the
        # message names the file); like a config error, the user must fix it first.
        return _fail(str(exc), 2)
    return _fail(str(exc), 1)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and :func:`main`)."""
    _shared._argv = list(sys.argv[1:] if argv is None else argv)
    interrupts.reset()
    library = logging.getLogger("daulat")
    if _notices not in library.handlers:
        library.addHandler(_notices)
        library.propagate = False  # printed once, here, not again by a root handler
    with _signals_as_interrupt():
        try:
            try:
                with _failures_audited(_shared._argv):
                    # A mistyped DAULAT_EVENT_LOOP stops every command before it does work
                    # (`daulat demo` would otherwise write its sample data first).
                    loops.chosen()
                    code = app(args=argv, prog_name="daulat", standalone_mode=False)
            except KeyboardInterrupt:
                code = 130
            if code == 130:
                # typer turns Ctrl-C outside the event loop into exit code 130.
                return _interrupted(interrupts.received() or signal.SIGINT)
            return code if isinstance(code, int) else 0
        except ExitCode as exc:
            return exc.code
        except Interrupted as exc:
            from daulat.transfer import Summary

            if not isinstance(exc.result, Summary):  # a transfer printed its own summary
                return _interrupted(exc.signum)
            return exc.exit_code
        except typer.Exit as exc:
            return int(exc.exit_code)
        except SystemExit as exc:  # typer's shell completion ends with sys.exit, not typer.Exit
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or 0
            return _fail(str(exc.code), 1)
        except typer.Abort:
            return _fail("aborted", 130)
        except typer.TyperException as exc:
            # Usage errors (bad option, missing argument, bad value): one style with daulat's.
            return _usage_error(exc)
        except DaulatError as exc:
            return _failed(exc)
        except sqlite3.Error as exc:
            return _fail(f"the local state database failed: {exc}", 2)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            return _fail(f"cannot use{where}: {exc.strerror or exc}", 1)


def main() -> None:
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: obstore's runtime threads can abort the process (exit 134) while
    # Python finalises, which would make the exit code lie. Everything is flushed and closed here.
    os._exit(code)
