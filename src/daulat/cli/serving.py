"""``serve`` (the read-only S3 gateway) and ``demo`` (the whole tour on local stores)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from daulat.cli._shared import (
    ConfigOpt,
    ExitCode,
    _load,
    _run,
    err,
    out,
)
from daulat.errors import (
    Interrupted,
)
from daulat.plurals import plural
from daulat.terminal import styled


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Working directory for the tour.")
    ] = Path("daulat-demo-tour"),
) -> None:
    """Run the whole tour on local stores: init --demo, stores, scan, drill, exit, verify,
    keys, check and report."""
    from daulat.tour import run_tour

    run_tour(directory, out)


def serve(
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            # "\\[" keeps rich from taking "[gateway]" as markup and printing nothing.
            help="Address to listen on (default: \\[gateway] listen, else 127.0.0.1:9000).",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    r"""Serve the \[gateway] buckets over S3 from whichever replica holds a verified copy and
    answers; every byte served is checked against the copy's chunk hashes. Read-only, except
    buckets with writable = true (writes go to every replica, acknowledged at a quorum)."""
    from daulat.gateway import gateway_config
    from daulat.gateway import serve as run_gateway
    from daulat.gateway.server import GRACEFUL, REPEAT_WINDOW, banner, listen_socket

    cfg = _load(config)
    gw = gateway_config(cfg, listen)
    sock = listen_socket(gw)  # before the banner: a port in use is one error line

    def announce() -> None:
        err.print(banner(gw), markup=False, highlight=False)

    cut: list[int] = []
    try:
        _run(
            run_gateway(cfg, gw, sock=sock, announce=announce, cut=cut.append),
            repeat_window=REPEAT_WINDOW,
        )
    except Interrupted as exc:
        # A server resumes no run: say what stopping did, and what the next start takes over.
        name = signal.Signals(exc.signum).name
        late = sum(cut)
        err.print(
            styled(
                ("stopped", "bold"),
                f" by {name}: daulat serve took no new requests and let those in flight "
                f"finish (at most {GRACEFUL} s)"
                + (
                    f": {plural(late, 'request')} still running after {GRACEFUL} s "
                    f"{'was' if late == 1 else 'were'} cut off"
                    if late
                    else ""
                )
                + "; multipart uploads in progress are kept, and the next daulat serve on "
                "this state directory takes them over",
            )
        )
        raise ExitCode(128 + exc.signum) from None
