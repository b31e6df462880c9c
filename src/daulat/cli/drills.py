"""Predicting an exit: ``drill`` measures a sample copy, ``plan`` projects it to many machines."""

from __future__ import annotations

from typing import Annotated

import typer

from daulat import interrupts
from daulat.cli._shared import (
    AllowPlaintextOpt,
    ConcurrencyOpt,
    ConfigOpt,
    EncryptNamesOpt,
    EncryptOpt,
    ExcludeOpt,
    ExitCode,
    FilterFromOpt,
    FilterRuleOpt,
    IncludeOpt,
    JsonOpt,
    QuietOpt,
    RequestTimeoutOpt,
    _filter,
    _load,
    _print_json,
    _recipients,
    _resume_command,
    _run,
    err,
    out,
)
from daulat.errors import ConfigError, Interrupted
from daulat.terminal import styled

# A drill's and a plan's machinery is imported by the command that runs it (see
# daulat.cli._shared).


def drill(
    src: Annotated[str | None, typer.Argument(metavar="SRC[:PREFIX]")] = None,
    dst: Annotated[str | None, typer.Argument(metavar="DST")] = None,
    sample: Annotated[
        str | None,
        typer.Option("--sample", help="Objects to sample: a count (500) or a share (5%)."),
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(
            "--link", help="What-if projection: each worker's link bandwidth, e.g. 10Gbit/s."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="What-if projection: machines in parallel (as `daulat plan`)."
        ),
    ] = 1,
    concurrency: ConcurrencyOpt = 64,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for the random sample.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Show past drills against the real exits after them.")
    ] = False,
    encrypt_to: EncryptOpt = None,
    encrypt_names: EncryptNamesOpt = False,
    allow_plaintext: AllowPlaintextOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    filter_rule: FilterRuleOpt = None,
    filter_from: FilterFromOpt = None,
    config: ConfigOpt = None,
    request_timeout: RequestTimeoutOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure a sample copy and predict how long a full exit of SRC to DST would take.

    The sample is copied to a scratch prefix in DST's store and removed afterwards; where DST
    holds daulat's ciphertext (or protected names) the drill needs --encrypt-to (and
    --encrypt-names), as an exit there would.

    With filters the sample and the prediction are of the objects they select (keys relative
    to SRC's prefix), as an exit with the same filters would copy.
    """
    from daulat.drill import (
        drill_history,
        parse_bandwidth,
        parse_sample,
        render_drill,
        render_history,
        run_drill,
    )
    from daulat.feedback import Feedback

    flt = _filter(include, exclude, filter_rule, filter_from)
    try:
        # A usage error like any bad option value: named, with the usage line.
        picked = parse_sample(sample) if sample else None
    except ConfigError as e:
        raise typer.BadParameter(
            str(e).removeprefix("--sample "), param_hint="'--sample'"
        ) from None
    try:
        link_bps = parse_bandwidth(link) if link else None
    except ConfigError as e:
        raise typer.BadParameter(str(e).removeprefix("--link "), param_hint="'--link'") from None
    cfg = _load(config)
    if history:
        rows = drill_history(cfg)
        if as_json:
            _print_json([r.to_json() for r in rows])
        else:
            render_history(rows, out)
        return
    if src is None or dst is None:
        raise typer.BadParameter("give SRC and DST, or --history")
    try:
        result = _run(
            run_drill(
                cfg,
                src,
                dst,
                sample=picked,
                link_bps=link_bps,
                workers=workers,
                concurrency=concurrency,
                seed=seed,
                encrypt_to=_recipients(encrypt_to),
                on_event=None if as_json else Feedback(err, quiet=quiet).say,
                filter=flt,
                encrypt_names=encrypt_names,
                allow_plaintext=allow_plaintext,
            )
        )
    except Interrupted as exc:
        if not interrupts.begun():
            raise  # before anything started: the command line's usual words
        # A drill does not resume: its scratch copy is removed, and a new run starts afresh.
        err.print(
            styled(
                ("interrupted", "bold red"),
                f" by {exc.signal_name}: the drill stopped cleanly and predicted nothing (a "
                f"drill does not resume). Run the same command again for a new drill: "
                f"{_resume_command()}",
            )
        )
        raise ExitCode(exc.exit_code) from None
    if as_json:
        _print_json(result.to_json())
    else:
        render_drill(result, out)
    if not result.ok:
        raise ExitCode(1)


def plan(
    src: Annotated[str, typer.Argument(metavar="SRC[:PREFIX]")],
    dst: Annotated[str, typer.Argument(metavar="DST")],
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Machines, each running one worker.")
    ] = 1,
    link: Annotated[
        str | None,
        typer.Option("--link", metavar="BW", help="Each worker's own link, e.g. 5Gbit/s or 5G."),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option("--deadline", metavar="HOURS", help="Workers needed to finish within it."),
    ] = None,
    objects: Annotated[
        str | None,
        typer.Option("--objects", metavar="N", help="What-if: objects (with --bytes), e.g. 5e9."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option("--bytes", metavar="B", help="What-if: bytes, decimal (8PB = 8e15 bytes)."),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """PROJECTION: how long an exit of SRC to DST takes on many machines, what binds, what
    it costs.

    Extrapolates the latest drill of SRC and the census (the latest scan, or --objects and
    --bytes for a what-if) to --workers machines, each with --link to itself. The model, its
    assumptions and every price's and limit's source are printed with the plan.
    """
    from daulat.drill import parse_bandwidth
    from daulat.plan import make_plan, parse_bytes, parse_count, parse_hours, render_plan

    cfg = _load(config)
    result = make_plan(
        cfg,
        src,
        dst,
        workers=workers,
        link_bps=parse_bandwidth(link) if link is not None else None,
        deadline_hours=parse_hours(deadline) if deadline is not None else None,
        objects=parse_count(objects) if objects is not None else None,
        size=parse_bytes(size) if size is not None else None,
    )
    if as_json:
        _print_json(result.to_json())
    else:
        render_plan(result, out)
