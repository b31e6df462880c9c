"""``daulat demo``: the whole tour on local stores, narrated, using the same library calls as the
commands (and so audited as they are)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from rich.console import Console

from daulat.config import Config, load_config
from daulat.crypto import parse_recipients
from daulat.drill import drill_history, run_drill
from daulat.errors import ConfigError, DaulatError
from daulat.feedback import human_bytes
from daulat.interrupts import run
from daulat.inventory import Manifest, scan, store_statuses
from daulat.newkeys import new_keys
from daulat.plurals import plural
from daulat.policy import check_policies
from daulat.report import write_report
from daulat.scaffold import DemoData, write_config
from daulat.transfer import Kind, Options, run_transfer, run_verify

TOUR_MARKER = ".daulat-demo-tour"


def _scan_all(config: Config, console: Console, *, new: str) -> None:
    with Manifest.in_state_dir(config.state_dir) as manifest:
        for name in config.stores:
            s = run(scan(config, name, manifest))
            console.print(
                f"  {name:<12} {plural(s.objects, 'object')}, {human_bytes(s.bytes)} (+{s.added:,} {new})"
            )


def _gateway_step(config: Config, console: Console) -> None:
    console.print(
        "Applications speak to one endpoint. `daulat serve` is an S3 endpoint in front of "
        "kpu-primary and its verified copy in vault: it reads from the primary while it "
        "answers, from vault when it does not, and checks every byte against the copy's hashes."
    )
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        console.print("  (skipped: the gateway needs `pip install 'daulat[gateway]'`)")
        return
    from daulat.gateway.tourstep import read_through_gateway

    with Manifest.in_state_dir(config.state_dir) as manifest:
        largest = max(manifest.objects("kpu-primary"), key=lambda o: o.size, default=None)
    if largest is None:
        raise DaulatError("the demo's primary holds no object to read through the gateway")
    key = largest.key
    got = run(read_through_gateway(config, "kpu-primary", "vault", key))
    console.print(
        f"  GET s3://pemilu/{key} from {got.endpoint} (SigV4, as any S3 client): {got.size:,} "
        f"bytes, SHA-256 {got.sha256[:16]}..., served by kpu-primary"
    )
    console.print(
        "  now kpu-primary refuses every request (403, as a provider that cut its customer "
        "off answers)"
    )
    same = "the same bytes" if got.again_sha256 == got.sha256 else "OTHER BYTES"
    console.print(
        f"  GET again: {same} (SHA-256 {got.again_sha256[:16]}...), served by vault after "
        f"kpu-primary refused {got.denied} request(s); the refusal is in the audit log "
        "(gateway.revoked) and `daulat stores` shows it."
    )
    if got.again_sha256 != got.sha256:
        raise DaulatError("the gateway served other bytes; see the messages above")


def run_tour(directory: Path, console: Console) -> None:
    """Create demo stores in ``directory`` (replacing an earlier tour there) and walk through
    what daulat does with them."""
    marker = directory / TOUR_MARKER
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory; choose another --dir")
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
        rows = run(store_statuses(config, manifest))
        for r in rows:
            state = "reachable" if r.reachable else f"UNREACHABLE ({r.problem})"
            console.print(
                f"  {r.name:<12} provider={r.provider} country={r.country} "
                f"jurisdictions={','.join(r.jurisdictions)} {state}"
            )

    console.rule("3. daulat scan")
    _scan_all(config, console, new="new since the last scan")
    console.print(
        f"The manifest is {config.state_dir / 'manifest.sqlite'} (SQLite; query it with any "
        "SQLite tool)."
    )

    console.rule("4. daulat drill kpu-primary vault")
    drilled = run(run_drill(config, "kpu-primary", "vault", sample=300, seed=2024))
    console.print(
        f"  copied a stratified sample of {plural(drilled.sampled_objects, 'object')} to a scratch prefix "
        f"(removed again), measured per size class, and predicts a full exit takes "
        f"{drilled.predicted_s:.1f} s (95 % interval {drilled.low_s:.1f} to {drilled.high_s:.1f} "
        "s). On a real provider the same drill gives the hours a regulator asks for."
    )

    console.rule("5. daulat exit kpu-primary vault")
    console.print(
        "Evacuate kpu-primary into vault: streamed, hashed (SHA-256) while copying, journaled "
        "so a crash resumes where it stopped, and verified object by object."
    )
    summary = run(run_transfer(config, Kind.EXIT, "kpu-primary", "vault"))
    console.print(
        f"  copied {plural(summary.copied_objects, 'object')} ({human_bytes(summary.copied_bytes)}) "
        f"in {summary.duration_s:.1f} s; verified {summary.verified_objects or 0:,} of "
        f"{summary.source_objects:,}; exit {'complete' if summary.ok else 'INCOMPLETE'}"
    )
    history = [h for h in drill_history(config) if h.drill_id == drilled.id]
    if history and history[0].error_pct is not None:
        # "(-55 %)" after the exit's time read as "faster": say which way the prediction erred.
        error = history[0].error_pct
        console.print(
            f"  the drill predicted {history[0].predicted_s:.1f} s; the exit took "
            f"{history[0].actual_s or 0:.1f} s (the prediction {abs(error):.0f} % "
            f"{'under' if error < 0 else 'over'}); `daulat drill --history` keeps this record."
        )
    if summary.manifest_key:
        console.print(
            f"  vault now holds a manifest of the copy at {summary.manifest_key}: key, size and "
            "SHA-256 of every object, checkable with sha256sum and no daulat at all."
        )

    console.rule("6. daulat verify kpu-primary vault --full")
    report = run(run_verify(config, "kpu-primary", "vault", full=True))
    console.print(
        f"  re-read and hashed both sides: {report.verified:,} of {plural(report.objects, 'object')} "
        f"identical, {plural(len(report.problems), 'problem')}"
    )
    if not (summary.ok and report.ok):
        raise DaulatError("the demo exit did not verify; see the messages above")

    console.rule("7. daulat keys new")
    made = new_keys(directory / "kpu-identity.txt", demo.config)
    recipient = made.recipient
    console.print(
        f"  wrote {made.identity} (mode 0600): the secret key stays with the election commission."
    )
    console.print(f"  its public key (recipient) is {recipient}")
    console.print(
        f"  wrote {made.signing_file} (mode 0600), the key that signs the manifests of copies, "
        f"and pinned it in {demo.config.name} (signers, signing_key): a restore believes only "
        "manifests signed by a pinned signer"
        + (
            "; the state directory's own key, which signed vault's manifest in step 5, is "
            "pinned too"
            if made.pinned and made.pinned.added_also
            else ""
        )
        + "."
    )
    # What was pinned applies from the next run on, as it does for the command.
    config = load_config(demo.config)

    console.rule("8. daulat exit kpu-primary offsite --encrypt-to age1...")
    enc = run(
        run_transfer(
            config,
            Kind.EXIT,
            "kpu-primary",
            "offsite",
            Options(encrypt_to=parse_recipients([recipient])),
        )
    )
    console.print(
        f"  copied {plural(enc.copied_objects, 'object')} to offsite as age ciphertext and verified "
        f"{enc.verified_objects or 0:,}; whoever runs offsite sees only ciphertext. Anyone "
        "with the identity file can decrypt them with the plain `age` tool."
    )
    if not enc.ok:
        raise DaulatError("the demo's encrypted exit did not verify; see the messages above")

    console.rule("9. daulat scan (again)")
    console.print(
        "The exits changed what vault and offsite hold; scanning again keeps the manifest, and "
        "so the report's store table, in step with the policies, which read the journal."
    )
    _scan_all(config, console, new="new")

    console.rule("10. daulat serve")
    _gateway_step(config, console)

    console.rule("11. daulat check")
    result = check_policies(config)
    for policy in result.policies:
        console.print(f"  {policy.status.value.upper():<7} {policy.name}")
        for f in policy.findings:
            if f.status.value != "pass":
                console.print(f"           {f.rule} at {f.store or 'policy'}: {f.why}")
                if f.fix:
                    console.print(f"           fix: {f.fix}")
    console.print(
        "  The first policy holds: two verified copies, both in Indonesia. The second fails on "
        "purpose: offsite is in Singapore, and encryption does not change where data is stored. "
        "`daulat check` exits 1 on such a violation, so CI can fail on it."
    )

    console.rule("12. daulat report")
    report_path = directory / "daulat-report.html"
    data = write_report(config, report_path).data
    console.print(
        f"  wrote {report_path}: one HTML file that opens offline, with where the data lives, "
        "the policies, replicas, the drill against the real exit, risk and the audit log's head "
        f"({(data.audit.head_hash or '')[:16]}...)."
    )

    console.rule("Done")
    console.print(f"Open the report: {report_path.resolve()}")
    # `daulat check` exits 1 on the violation shown above, so the commands are separated
    # with `;`, not `&&`: the line runs as written and every command in it runs.
    console.print(
        f"Try it yourself:  cd {shlex.quote(str(directory))} && daulat stores; daulat check; "
        "daulat risk; daulat restore offsite restored --identity kpu-identity.txt; "
        "daulat verify kpu-primary vault"
    )
