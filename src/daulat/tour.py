"""``daulat demo``: the whole tour on local stores, narrated, using the same library calls as the
commands."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from rich.console import Console

from daulat.auditing import record
from daulat.config import load_config
from daulat.errors import ConfigError, DaulatError
from daulat.inventory import scan_store, store_statuses
from daulat.manifest import Manifest, ScanSummary
from daulat.scaffold import DemoData, write_config
from daulat.stores import Store, open_store
from daulat.transfer import Kind, run_transfer, run_verify

TOUR_MARKER = ".daulat-demo-tour"


async def _scan(store: Store, manifest: Manifest) -> ScanSummary:
    try:
        return await scan_store(store, manifest)
    finally:
        await store.close()


def run_tour(directory: Path, console: Console) -> None:
    """Create demo stores in ``directory`` (replacing an earlier tour there) and walk through
    what daulat does with them."""
    marker = directory / TOUR_MARKER
    if directory.exists() and any(directory.iterdir()):
        if not marker.is_file():
            raise ConfigError(
                f"{directory} exists and is not a daulat demo directory; choose another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Only a directory carrying this marker is ever deleted by a later tour.
    marker.write_text("made by `daulat demo`; the next tour in this directory replaces it\n")

    console.rule("1. daulat init --demo")
    demo = write_config(directory, demo=True)
    assert isinstance(demo, DemoData)
    console.print(f"Wrote {demo.config} describing three local stores:")
    for name, path in demo.stores.items():
        console.print(f"  {name:<12} {path}")
    console.print(
        f"and filled kpu-primary with {demo.objects:,} sample objects "
        f"({demo.bytes / 2**20:.1f} MiB): election tally forms, scans, recap tables, archives."
    )
    config = load_config(demo.config)

    with Manifest.in_state_dir(config.state_dir) as manifest:
        console.rule("2. daulat stores")
        rows = asyncio.run(store_statuses(config, manifest))
        for r in rows:
            state = "reachable" if r.reachable else f"UNREACHABLE ({r.problem})"
            console.print(
                f"  {r.name:<12} provider={r.provider} country={r.country} "
                f"jurisdictions={','.join(r.jurisdictions)} {state}"
            )

        console.rule("3. daulat scan")
        for name, cfg in config.stores.items():
            s = asyncio.run(_scan(open_store(cfg), manifest))
            record(config.state_dir, "scan", {"store": name, "objects": s.objects, "id": s.id})
            console.print(
                f"  {name:<12} {s.objects:,} objects, {s.bytes / 2**20:.1f} MiB "
                f"(+{s.added:,} new since the last scan)"
            )
        console.print(f"The manifest is {manifest.path} (SQLite; query it with any SQLite tool).")

    console.rule("4. daulat exit kpu-primary vault")
    console.print(
        "Evacuate kpu-primary into vault: streamed, hashed (SHA-256) while copying, journaled "
        "so a crash resumes where it stopped, and verified object by object."
    )
    summary = asyncio.run(run_transfer(config, Kind.EXIT, "kpu-primary", "vault"))
    record(
        config.state_dir,
        "exit",
        {"src": "kpu-primary", "dst": "vault", "ok": summary.ok, "run_id": summary.run_id},
    )
    console.print(
        f"  copied {summary.copied_objects:,} objects ({summary.copied_bytes / 2**20:.1f} MiB) "
        f"in {summary.duration_s:.1f} s; verified {summary.verified_objects or 0:,} of "
        f"{summary.source_objects:,}; exit {'complete' if summary.ok else 'INCOMPLETE'}"
    )
    if summary.manifest_key:
        console.print(
            f"  vault now holds a manifest of the copy at {summary.manifest_key}: key, size and "
            "SHA-256 of every object, checkable with sha256sum and no daulat at all."
        )

    console.rule("5. daulat verify kpu-primary vault --full")
    report = asyncio.run(run_verify(config, "kpu-primary", "vault", full=True))
    record(
        config.state_dir,
        "verify",
        {"src": "kpu-primary", "dst": "vault", "full": True, "ok": report.ok},
    )
    console.print(
        f"  re-read and hashed both sides: {report.verified:,} of {report.objects:,} objects "
        f"identical, {len(report.problems)} problems"
    )
    if not (summary.ok and report.ok):
        raise DaulatError("the demo exit did not verify; see the messages above")

    console.rule("Done")
    console.print(
        f"Try it yourself:  cd {directory} && daulat stores && daulat verify kpu-primary vault"
    )
