"""The ``daulat`` command's entry point, outside the ``daulat`` package on purpose.

Importing the command line (typer, rich, the command modules) takes a tenth of a second or so,
and seconds on a busy machine; the library itself is imported by the command that runs (see
:mod:`daulat.lazy`). Python's own SIGINT handler would turn a Ctrl-C in that time into a
traceback. This
module imports nothing of daulat's until it has installed handlers that end such an early
interrupt with one line and the signal's exit code (130, 143); :func:`daulat.cli.run` then
installs its own, which stop a started run cleanly.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from types import FrameType

_EARLY = (signal.SIGINT, signal.SIGTERM)


def _printable(text: str) -> str:
    """Control characters of the command line escaped, as daulat prints names."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _early(signum: int, frame: FrameType | None) -> None:
    # Nothing has been started: no state, no audit entry, nothing to clean up.
    command = _printable(shlex.join(["daulat", *sys.argv[1:]]))
    name = signal.Signals(signum).name
    os.write(
        2,
        f"interrupted by {name} before anything was started. Run the same command again: "
        f"{command}\n".encode("utf-8", "backslashreplace"),
    )
    os._exit(128 + signum)


def main() -> None:
    """Install the early handlers, then import and run the command line."""
    for signum in _EARLY:
        signal.signal(signum, _early)
    from daulat.cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
