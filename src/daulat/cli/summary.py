"""How a transfer's outcome is printed for people: the summary, the dry run's lists, what an
interrupt leaves and how to resume.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import TYPE_CHECKING

from rich.text import Text

from daulat.cli import _shared
from daulat.cli._shared import (
    _excluded_line,
    _human_bytes,
    _resume_command,
    _verified_by,
    err,
    out,
)
from daulat.plurals import plural
from daulat.terminal import printable, styled

# Imported by the command line's every process (through daulat.cli.transfers); what is printed
# here is printed after a transfer ran, which imported the engine.
if TYPE_CHECKING:
    from daulat.transfer import Kind, Options, Summary
    from daulat.transfer.safety import PlannedChanges

# What a human dry run shows of each list; --json has them whole.
DRY_RUN_SHOWN = 20


class _DryRunListing:
    """Receives a dry run's plan: with --json streams every key to stdout as the start of the
    JSON object (the summary's fields follow), otherwise keeps the first few to print."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # The real stdout: while the progress bar is live, rich sends sys.stdout to its console
        # (stderr), which would split the JSON document.
        self.stdout = sys.stdout
        self.streamed = False
        self.copies: list[tuple[str, int]] = []
        self.deletions: list[tuple[str, int]] = []
        self.copy_objects = 0
        self.delete_objects = 0

    def __call__(self, plan: PlannedChanges) -> None:
        self.copy_objects, self.delete_objects = plan.copy_objects, plan.delete_objects
        if not self.as_json:
            self.copies = list(itertools.islice(plan.copies(), DRY_RUN_SHOWN))
            self.deletions = list(itertools.islice(plan.deletions(), DRY_RUN_SHOWN))
            return
        write = self.stdout.write
        for name, rows in (("would_copy", plan.copies()), ("would_delete", plan.deletions())):
            write(("{" if name == "would_copy" else ", ") + json.dumps(name) + ": [")
            for i, (key, size) in enumerate(rows):
                write((",\n  " if i else "\n  ") + json.dumps({"key": key, "size": size}))
            write("]")
        self.streamed = True

    def finish_json(self, summary: Summary) -> None:
        """The summary's fields after the streamed lists, closing the JSON object."""
        rest = json.dumps(summary.to_json(), default=str, indent=2)
        self.stdout.write(",\n" + rest[1:].lstrip("\n") + "\n")
        self.stdout.flush()

    def print_human(self) -> None:
        for label, rows, total in (
            ("would copy", self.copies, self.copy_objects),
            ("would delete", self.deletions, self.delete_objects),
        ):
            if not total:
                continue
            out.print(f"  {label} {plural(total, 'object')}:", highlight=False)
            for key, size in rows:
                out.print(f"    {key!r} ({_human_bytes(size)})", highlight=False, markup=False)
            if total > len(rows):
                out.print(f"    ... and {total - len(rows):,} more (see --json)", highlight=False)


def _remaining(s: Summary, what: str = "remain", noun: str | None = "object(s)") -> str:
    """How much is left, or that nobody knows yet (stopped before the listing finished);
    ``noun`` None: "object" or "objects" as the count needs."""
    if s.remaining_known:
        deletions = (
            f", and {s.left_deletions:,} planned deletion(s) not done" if s.left_deletions else ""
        )
        left = plural(s.left_objects, "object") if noun is None else f"{s.left_objects:,} {noun}"
        return f"{left} ({_human_bytes(s.left_bytes)}) {what}{deletions}"
    return (
        f"the listing did not finish ({s.listed_objects:,} source object(s), "
        f"{_human_bytes(s.listed_bytes)} listed so far): how many {what} is unknown"
    )


def _interrupted_note(s: Summary) -> Text:
    return styled(
        ("interrupted", "bold red"),
        f" by {s.interrupted}: the journal holds every object finished so far, and nothing "
        f"partial is visible as done.\n  {_remaining(s)}; resume with: {_resume_command()}",
    )


def _print_summary(s: Summary, kind: Kind, src: str, dst: str, options: Options) -> None:
    from daulat.transfer import Kind
    from daulat.transfer.proof import REPLACED, retry_would_help
    from daulat.transfer.unproven import UNPROVEN_AGE

    head = f"{kind.value} {printable(src)} → {printable(dst)}"
    if s.dry_run and not s.interrupted:
        out.print(
            f"{head} (dry run): {plural(s.source_objects, 'object')} ({_human_bytes(s.source_bytes)}) at "
            f"the source; would copy {s.planned_objects:,} ({_human_bytes(s.planned_bytes)}), "
            f"skip {s.skipped_objects:,} already copied"
            + (f", delete {s.deleted_objects:,}" if s.deleted_objects else "")
        )
        if s.filter is not None:
            out.print(
                "  " + _excluded_line(s.excluded_objects, s.excluded_bytes, s.filter),
                markup=False,
                highlight=False,
            )
        _print_kept(s, "would leave alone")
        return
    # The command's whole time, start-up included, and the rate over that same time: the
    # engine's own duration starts after listing and planning, and bytes over it could read
    # as more than --bwlimit (its token bucket starts with a second's worth).
    elapsed = max(_shared._elapsed(), s.duration_s)
    moved = max(s.copied_bytes, s.sent_bytes)
    rate = _human_bytes(int(moved / elapsed) if elapsed > 0 else 0) + "/s"
    at_source = (
        f"{plural(s.source_objects, 'object')}, {_human_bytes(s.source_bytes)} at the source"
        if s.remaining_known
        else f"the listing did not finish ({s.listed_objects:,} source objects listed)"
    )
    out.print(f"{head}: {at_source}; {elapsed:.1f} s, {rate}")
    parts = [f"copied {s.copied_objects:,} ({_human_bytes(s.copied_bytes)})"]
    if s.sent_bytes > s.copied_bytes:
        # Bytes that went out for objects not finished (an interrupt mid-upload, retries):
        # moved all the same, and what the rate above is computed from.
        parts.append(f"sent {_human_bytes(s.sent_bytes)} in all")
    parts.append(f"skipped {s.skipped_objects:,}")
    if s.verified_objects is not None:
        parts.append(f"verified {s.verified_objects:,}")
    if kind == Kind.SYNC and options.delete:
        parts.append(f"deleted {s.deleted_objects:,}")
        if s.left_deletions:
            parts.append(f"not deleted {s.left_deletions:,}")
    parts += [
        f"failed {len(s.failed):,}",
        f"refused {len(s.refused):,}",
        f"left {s.left_objects:,} ({_human_bytes(s.left_bytes)})"
        if s.remaining_known
        else "left unknown (the listing did not finish)",
    ]
    if s.retries:
        parts.append(f"retries {s.retries:,}")
    out.print("  " + ", ".join(parts))
    if s.remaining_known:
        out.print(f"  verified by: {_verified_by(s.verified_by)}", highlight=False, markup=False)
    if s.filter is not None:
        out.print(
            "  " + _excluded_line(s.excluded_objects, s.excluded_bytes, s.filter),
            markup=False,
            highlight=False,
        )
    for label, rows in (("failed", s.failed), ("refused", s.refused), ("unverified", s.unverified)):
        for key, reason in rows[:20]:
            out.print(f"  {label}: {printable(repr(key))}: {printable(reason)}")
        if len(rows) > 20:
            out.print(f"  ... and {len(rows) - 20:,} more {label} (see --json)")
    for key in s.reserved[:20]:
        out.print(
            f"  reserved: {printable(repr(key))}: under .daulat/, which daulat keeps for its "
            "manifests and keys at every destination; not copied",
            highlight=False,
            markup=False,
        )
    if s.reserved_objects > min(len(s.reserved), 20):
        out.print(f"  ... and {s.reserved_objects - min(len(s.reserved), 20):,} more reserved")
    for key, reason in s.unproven[:20]:
        out.print(f"  unproven: {key!r}: {reason}", highlight=False, markup=False)
    if len(s.unproven) > 20:
        out.print(f"  ... and {len(s.unproven) - 20:,} more unproven (see --json)")
    for key in s.unproven_restored[:20]:
        out.print(
            f"  unproven, restored anyway: {key!r}: not listed in the manifest",
            highlight=False,
            markup=False,
        )
    _print_kept(s, "left alone")
    if s.provenance:
        out.print(f"  origin: {s.provenance}", highlight=False, markup=False)
    if s.names_protected:
        out.print("  names protected: objects are stored under keyed hashes of their names")
    if s.manifest_key:
        out.print(
            f"  manifest of the copy: {printable(dst.split(':')[0])}:{printable(s.manifest_key)}"
        )
    if s.manifest_error:
        err.print(
            "  the manifest could not be written at the destination: " + printable(s.manifest_error)
        )
    for note in s.notes:
        err.print(f"  note: {note}")
    if s.interrupted:
        err.print(_interrupted_note(s))
    elif s.stopped and "cannot decrypt" in s.stopped:
        err.print(
            styled(
                ("stopped:", "bold red"),
                f" {printable(s.stopped)}\n"
                "  Nothing was written with the wrong key. Run again with the identity file whose "
                f"recipient the data was encrypted to: daulat {kind.value} {printable(src)} "
                f"{printable(dst)} --identity FILE",
            )
        )
    elif s.stopped:
        err.print(
            styled(
                ("stopped:", "bold red"),
                f" {printable(s.stopped)}\n"
                f"  {_remaining(s, 'remain to copy', None)}; nothing already copied is "
                "lost.\n"
                f"  Once access is back, resume with: {_resume_command()}",
            )
        )
    elif s.ok:
        detail = {
            Kind.EXIT: ": every object the filters select verified"
            if s.filter is not None
            else ": every object verified",
            Kind.RESTORE: f": every object {'restored' if s.restored_plain else 'decrypted'} "
            "and verified"
            + (" against the source manifest" if s.checked_against_manifest else " by age")
            + ("; origin NOT proven" if (s.provenance or "").startswith("origin not") else "")
            + (
                f"; {len(s.unproven_restored):,} unproven object(s) restored anyway"
                if s.unproven_restored
                else ""
            ),
        }.get(kind, "")
        out.print(styled("  ", ("complete", "green"), detail))
    elif s.kept_existing_objects and not (
        s.failed or s.refused or s.left_objects or s.unverified or s.unproven
    ):
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": {s.kept_existing_objects:,} file(s) at {printable(dst)} differ from the "
                "replica's and were left alone (listed above): they may hold changes made "
                "since. Keep what you need, then run again with --overwrite to replace them: "
                f"{_resume_command()} --overwrite",
            )
        )
    elif s.reserved_objects and not (
        s.failed or s.refused or s.left_objects or s.unverified or s.unproven
    ):
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": {s.reserved_objects:,} object(s) ({_human_bytes(s.reserved_bytes)}) under "
                f"the source's .daulat/ were not copied (listed above): daulat reserves .daulat/ "
                "at every destination for its own manifests and keys. Move or rename them at "
                f"the source (outside .daulat/) and run again: {_resume_command()}",
            )
        )
    elif s.unproven and not (s.failed or s.refused or s.left_objects or s.unverified):
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": {len(s.unproven):,} object(s) at {src} are not listed in its signed manifest "
                "and were not restored (they may have been planted); --allow-unproven restores "
                "them anyway",
            )
        )
    elif not retry_would_help(s):
        # Refused, forged or damaged objects stay so: a rerun would only repeat this. Say
        # which of these it is: a plain copy has no signed manifest to blame.
        why = []
        if s.refused:
            why.append(
                f"{printable(dst.split(':')[0])} cannot hold the names refused above (rename "
                "them at the source, or store them under keyed hashes with --encrypt-to "
                "AGE_RECIPIENT --encrypt-names)"
            )
        replaced = [k for k, r in s.failed if r.startswith(REPLACED)]
        if replaced:
            # Said only where a sub-prefix's signed manifest proves it (transfer.replaced).
            were, them = ("was", "it") if len(replaced) == 1 else ("were", "them")
            why.append(
                f"{plural(len(replaced), 'object')} failed above {were} "
                "replaced by a plaintext copy by a later signed run into a sub-prefix "
                "(--allow-plaintext) and not restored from here; restore that sub-prefix "
                f"itself, as named above, to restore {them}"
            )
        armored = {k for k, r in s.failed if r.startswith(UNPROVEN_AGE + " in ASCII armor")}
        if armored:
            were, files, them = (
                ("was", "an ASCII-armored age file", "it")
                if len(armored) == 1
                else ("were", "ASCII-armored age files", "them")
            )
            why.append(
                f"{plural(len(armored), 'object')} failed above {were} {files} not listed in "
                f"the manifest, not written: `age -d` reads {them}"
            )
        unopened = [k for k, r in s.failed if r.startswith(UNPROVEN_AGE) and k not in armored]
        if unopened:
            # Unproven age files: never written as ciphertext (transfer.unproven).
            were, it, them = (
                ("was", "it was", "it") if len(unopened) == 1 else ("were", "they were", "them")
            )
            why.append(
                f"{plural(len(unopened), 'object')} failed above {were} age-encrypted and not "
                "listed in the manifest, and not written as ciphertext: --identity FILE with the "
                f"key {it} encrypted to decrypts {them} (origin still not proven)"
            )
        others = len(s.failed) - len(replaced) - len(unopened) - len(armored)
        if others and s.checked_against_manifest:
            why.append(
                f"the {'other ' if replaced or unopened or armored else ''}objects failed above "
                "are not "
                "what the signed manifest says (forged, damaged or withheld at the source)"
            )
        elif others:
            why.append("the objects failed above are damaged at the source")
        err.print(
            styled(
                ("incomplete", "yellow"),
                ": "
                + "; ".join(why or ["the objects listed above cannot be copied as they are"])
                + "; running the same command again will not change that"
                + (
                    f". {len(s.unproven):,} object(s) not listed in the manifest were not "
                    + (
                        "restored, even with --allow-unproven (why is said above)"
                        if "--allow-unproven" in _shared._argv
                        else "restored; --allow-unproven restores them anyway"
                    )
                    if s.unproven
                    else ""
                ),
            )
        )
    else:
        err.print(
            styled(
                ("incomplete", "yellow"),
                f": run the same command again to retry what is left: {_resume_command()}",
            )
        )


def _print_kept(s: Summary, what: str) -> None:
    """A restore's existing destination files that differ from the replica's, not replaced."""
    for key in s.kept_existing[:20]:
        out.print(
            f"  {what}: {printable(repr(key))}: exists at the destination with other content "
            "(--overwrite replaces it)",
            highlight=False,
            markup=False,
        )
    if s.kept_existing_objects > min(len(s.kept_existing), 20):
        more = s.kept_existing_objects - min(len(s.kept_existing), 20)
        out.print(f"  ... and {more:,} more {what} (see --json)", highlight=False)
