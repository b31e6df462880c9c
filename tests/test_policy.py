"""Policy as code: ``[[policies]]`` judged against the catalogue, the manifest and the journal.

Every scenario builds real state with the real library -- ``scan_store`` into the manifest and
``run_transfer`` (the engine behind ``daulat exit``) into the journal -- over local filesystem
stores and over S3 stores on the session's SeaweedFS that are *declared* as Alibaba Cloud Jakarta
or AWS Jakarta/Frankfurt: residency and jurisdiction come from those declarations through the
provider catalogue, never from where the endpoint (127.0.0.1) is.
"""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import textwrap
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import begin_audit, run, s3_store_config
from rich.console import Console
from servers import S3Server

from daulat.config import Config, load_config, parse_config
from daulat.crypto import new_identity, parse_recipients
from daulat.errors import ConfigError
from daulat.inventory import Manifest, scan_store
from daulat.policy import (
    Finding,
    PolicyResult,
    Status,
    evaluate_policies,
    load_policies,
    render_findings,
)
from daulat.stores import open_store
from daulat.transfer import Kind, Options, run_transfer
from daulat.transfer.journal import JOURNAL_NAME

_names = itertools.count()
ELECTION = "election data stays in Indonesia, two copies, encrypted where foreign law reaches"

# --------------------------------------------------------------------------------------------
# helpers


def bucket(tag: str) -> str:
    return f"pol{next(_names)}-{uuid.uuid4().hex[:6]}-{tag}"


def alibaba_jakarta(server: S3Server, name: str) -> dict[str, Any]:
    """An S3 bucket on the local server, declared as Alibaba Cloud OSS in Jakarta."""
    raw = s3_store_config(server, name, bucket(name))
    del raw["country"]
    return raw | {"provider": "alibaba", "region": "ap-southeast-5", "addressing": "path"}


def aws(server: S3Server, name: str, region: str) -> dict[str, Any]:
    raw = s3_store_config(server, name, bucket(name))
    del raw["country"]
    return raw | {"provider": "aws", "region": region, "addressing": "path"}


def self_hosted(server: S3Server, name: str, country: str) -> dict[str, Any]:
    return s3_store_config(server, name, bucket(name)) | {"country": country}


def local(root: Path, name: str, country: str) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    return {"name": name, "url": f"file://{root}", "provider": "local", "country": country}


def make_config(
    tmp_path: Path, stores: Mapping[str, dict[str, Any]], policies: list[dict[str, Any]]
) -> Config:
    data = {
        "stores": {
            name: {k: v for k, v in raw.items() if k != "name"} for name, raw in stores.items()
        },
        "policies": policies,
    }
    return parse_config(data, tmp_path / "daulat.toml", {})


def dataset(prefix: str, n: int, base: int = 100) -> dict[str, bytes]:
    """n objects; object i has base + i bytes."""
    return {f"{prefix}{i:03d}.json": bytes([65 + i % 26]) * (base + i) for i in range(n)}


def put(config: Config, store: str, objects: Mapping[str, bytes]) -> None:
    async def go() -> None:
        s = open_store(config.store(store))
        try:
            for key, data in objects.items():
                await s.put(key, data)
        finally:
            await s.close()

    run(go())


def scan(config: Config, *names: str) -> None:
    begin_audit(config.state_dir)

    async def go() -> None:
        with Manifest.in_state_dir(config.state_dir) as manifest:
            for name in names:
                s = open_store(config.store(name))
                try:
                    await scan_store(s, manifest)
                finally:
                    await s.close()

    run(go())


def exit_(config: Config, src: str, dst: str, encrypt_to: str | None = None) -> None:
    begin_audit(config.state_dir)
    opts = Options(encrypt_to=parse_recipients([encrypt_to])) if encrypt_to else Options()
    summary = run(run_transfer(config, Kind.EXIT, src, dst, opts))
    assert summary.ok, summary.to_json()


def one(result: PolicyResult, rule: str, store: str | None = None) -> Finding:
    found = [f for f in result.findings if f.rule == rule and f.store == store]
    assert len(found) == 1, [(f.rule, f.store) for f in result.findings]
    return found[0]


def statuses(result: PolicyResult) -> dict[tuple[str, str | None], str]:
    return {(f.rule, f.store): f.status.value for f in result.findings}


def rendered(result: PolicyResult) -> str:
    buf = io.StringIO()
    render_findings(result, Console(file=buf, width=400, color_system=None, soft_wrap=True))
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# the election commission


def test_election_commission_alibaba_jakarta(s3_server: S3Server, tmp_path: Path) -> None:
    stores = {
        "kpu-alibaba": alibaba_jakarta(s3_server, "kpu-alibaba"),
        "vault": self_hosted(s3_server, "vault", "ID"),
        "aws-jkt": aws(s3_server, "aws-jkt", "ap-southeast-3"),
    }
    two = {
        "name": ELECTION,
        "stores": ["kpu-alibaba", "vault"],
        "residency": ["ID"],
        "min_replicas": 2,
        "encrypt_when_foreign_law": True,
    }
    cfg = make_config(tmp_path, stores, [two])
    data = dataset("pemilu-2024/tps-", 12)
    total = sum(len(v) for v in data.values())
    put(cfg, "kpu-alibaba", data)
    scan(cfg, "kpu-alibaba")

    # Before any copy: one verified copy (the primary) of two; Jakarta is in Indonesia.
    before = evaluate_policies(cfg)
    assert statuses(before) == {
        ("residency", "kpu-alibaba"): "pass",
        ("residency", "vault"): "pass",
        ("encrypt_when_foreign_law", "kpu-alibaba"): "fail",
        ("encrypt_when_foreign_law", "vault"): "pass",
        ("min_replicas", None): "fail",
    }
    report = before.policies[0]
    assert report.primary == "kpu-alibaba" and report.primary_reason.startswith("first listed")
    residency = one(before, "residency", "kpu-alibaba")
    assert "ID (Alibaba Cloud region ap-southeast-5" in residency.why
    assert (residency.objects, residency.bytes) == (12, total)
    assert residency.data["country"] == "ID"
    replicas = one(before, "min_replicas")
    assert replicas.why.startswith("1 of 2 required verified copies: 12 objects")
    assert "vault: no verified copy (0 of 12)" in replicas.why
    assert (replicas.objects, replicas.bytes) == (12, total)
    assert replicas.data["under_replicated"] == 12 and replicas.data["verified_copies"] == 1
    assert replicas.fix == "`daulat exit kpu-alibaba vault`"
    assert before.status == Status.FAIL and before.exit_code == 1

    # A plain exit to the vault: two verified copies. The vault is reached only by Indonesian
    # law, so plaintext is fine there; Alibaba is reached by Chinese law, and the original is
    # plaintext at Alibaba: that stays a violation, with the way out in the fix.
    exit_(cfg, "kpu-alibaba", "vault")
    after = evaluate_policies(cfg)
    assert statuses(after) == {
        ("residency", "kpu-alibaba"): "pass",
        ("residency", "vault"): "pass",
        ("encrypt_when_foreign_law", "kpu-alibaba"): "fail",
        ("encrypt_when_foreign_law", "vault"): "pass",
        ("min_replicas", None): "pass",
    }
    replicas = one(after, "min_replicas")
    assert replicas.why.startswith("2 of 2 required verified copies")
    assert "vault: complete verified copy (12/12)" in replicas.why
    assert replicas.data["copies"]["vault"]["verified"] == 12
    assert replicas.data["copies"]["vault"]["verified_bytes"] == total
    primary_enc = one(after, "encrypt_when_foreign_law", "kpu-alibaba")
    assert (
        "CN law (Alibaba Cloud is headquartered in CN: National Intelligence Law" in primary_enc.why
    )
    assert "the primary, where the data originates in clear: 12 objects" in primary_enc.why
    assert (primary_enc.objects, primary_enc.bytes) == (12, total)
    assert primary_enc.data["foreign"] == ["CN"]
    assert primary_enc.fix is not None
    assert "`daulat exit kpu-alibaba vault`" in primary_enc.fix
    assert "server-side encryption does not count" in primary_enc.fix
    vault_enc = one(after, "encrypt_when_foreign_law", "vault")
    assert vault_enc.why.startswith("only ID law reaches vault")
    assert (vault_enc.objects, vault_enc.bytes) == (12, total)
    assert after.exit_code == 1
    assert json.loads(json.dumps(after.to_json()))["policies"][0]["status"] == "fail"

    # A third copy at AWS Jakarta: in Indonesia, but the US CLOUD Act reaches it.
    three = two | {"stores": ["kpu-alibaba", "vault", "aws-jkt"], "min_replicas": 3}
    cfg3 = make_config(tmp_path, stores, [three])
    exit_(cfg3, "kpu-alibaba", "aws-jkt")
    plain = evaluate_policies(cfg3)
    assert one(plain, "residency", "aws-jkt").status == Status.PASS
    assert one(plain, "min_replicas").status == Status.PASS
    aws_enc = one(plain, "encrypt_when_foreign_law", "aws-jkt")
    assert aws_enc.status == Status.FAIL
    assert "US law (Amazon Web Services is headquartered in US" in aws_enc.why
    assert "CLOUD Act" in aws_enc.why
    assert "12 objects" in aws_enc.why and "written in clear" in aws_enc.why
    assert (aws_enc.objects, aws_enc.bytes) == (12, total)
    assert aws_enc.data["plaintext"] == 12 and aws_enc.data["encrypted"] == 0
    assert aws_enc.fix is not None
    assert aws_enc.fix.startswith(
        "re-copy encrypted: `daulat exit kpu-alibaba aws-jkt --encrypt-to age1"
    )

    # Re-made encrypted: every key's latest write is age ciphertext.
    recipient = new_identity(tmp_path / "kpu.key")
    exit_(cfg3, "kpu-alibaba", "aws-jkt", encrypt_to=recipient)
    enc = evaluate_policies(cfg3)
    aws_enc = one(enc, "encrypt_when_foreign_law", "aws-jkt")
    assert aws_enc.status == Status.PASS
    assert "all 12 objects" in aws_enc.why and "age-encrypted" in aws_enc.why
    assert aws_enc.data["plaintext"] == 0 and aws_enc.data["encrypted"] == 12
    replicas = one(enc, "min_replicas")
    assert replicas.status == Status.PASS and replicas.data["complete_replicas"] == [
        "vault",
        "aws-jkt",
    ]
    # Only the plaintext original at Alibaba is left.
    assert [(f.rule, f.store) for f in enc.findings if f.status != Status.PASS] == [
        ("encrypt_when_foreign_law", "kpu-alibaba")
    ]
    text = rendered(enc)
    assert f"policy #1: {ELECTION}  FAIL" in text
    assert "✘ FAIL" in text and "encrypt_when_foreign_law" in text
    assert "findings: 1 fail, 0 unknown, 6 pass" in text


def test_eu_bank_frankfurt_primary(s3_server: S3Server, tmp_path: Path) -> None:
    stores = {
        "bank-aws": aws(s3_server, "bank-aws", "eu-central-1"),
        "bank-vault": self_hosted(s3_server, "bank-vault", "DE"),
    }
    policy = {
        "name": "DORA exit plan",
        "stores": ["bank-vault", "bank-aws"],
        "primary": "bank-aws",
        "residency": ["DE", "FR", "NL", "EU"],
        "min_replicas": 2,
        "distinct_providers": 2,
        "distinct_jurisdictions": 2,
        "max_exit_hours": 24,
    }
    cfg = make_config(tmp_path, stores, [policy])
    loans = dataset("loans/", 3, base=1000)
    ledger = dataset("ledger/", 5, base=2000)
    put(cfg, "bank-aws", loans | ledger)
    all_bytes = sum(map(len, (loans | ledger).values()))
    ledger_bytes = sum(map(len, ledger.values()))
    scan(cfg, "bank-aws")

    before = evaluate_policies(cfg)
    assert statuses(before) == {
        ("residency", "bank-vault"): "pass",
        ("residency", "bank-aws"): "pass",
        ("min_replicas", None): "fail",
        ("distinct_providers", None): "fail",
        ("distinct_jurisdictions", None): "fail",
        ("max_exit_hours", "bank-aws"): "unknown",
    }
    assert before.policies[0].primary_reason == "declared with primary = …"
    assert "DE (Amazon Web Services region eu-central-1" in one(before, "residency", "bank-aws").why
    replicas = one(before, "min_replicas")
    assert replicas.why.startswith("1 of 2 required verified copies: 8 objects")
    assert (replicas.objects, replicas.bytes) == (8, all_bytes)
    juris = one(before, "distinct_jurisdictions")
    assert "1 distinct home jurisdiction(s) of 2 required — US: bank-aws" in juris.why
    assert (
        juris.fix is not None and "bank-vault (DE): `daulat exit bank-aws bank-vault`" in juris.fix
    )

    # Only the loans are copied: a partial replica, said with counts.
    exit_(cfg, "bank-aws:loans/", "bank-vault:loans/")
    partial = evaluate_policies(cfg)
    replicas = one(partial, "min_replicas")
    assert replicas.status == Status.FAIL
    assert "5 objects" in replicas.why and "have fewer than 2" in replicas.why
    assert "bank-vault: partial replica, 3 of 8 objects verified (38%)" in replicas.why
    assert (replicas.objects, replicas.bytes) == (5, ledger_bytes)
    assert replicas.data["partial_replicas"] == ["bank-vault"]
    assert replicas.data["copies"]["bank-vault"]["missing"] == 5
    assert (
        "partial replicas do not count: bank-vault 3/8"
        in one(partial, "distinct_jurisdictions").why
    )

    # The whole store: two jurisdictions (US via AWS's seat, DE for the bank's own vault).
    exit_(cfg, "bank-aws", "bank-vault")
    after = evaluate_policies(cfg)
    assert statuses(after) == {
        ("residency", "bank-vault"): "pass",
        ("residency", "bank-aws"): "pass",
        ("min_replicas", None): "pass",
        ("distinct_providers", None): "pass",
        ("distinct_jurisdictions", None): "pass",
        ("max_exit_hours", "bank-aws"): "unknown",
    }
    assert one(after, "distinct_jurisdictions").data["groups"] == {
        "US": ["bank-aws"],
        "DE": ["bank-vault"],
    }
    assert (
        "Amazon Web Services: bank-aws; your own infrastructure: bank-vault"
        in one(after, "distinct_providers").why
    )
    # Unknown does not fail the check unless --strict.
    assert after.status == Status.UNKNOWN and after.exit_code == 0
    assert evaluate_policies(cfg, strict=True).exit_code == 1
    text = rendered(after)
    assert "warning: 1 finding(s) could not be evaluated — unknown ≠ pass" in text

    # A ledger entry rewritten at the primary (different size) after the copy: its copy is stale.
    put(cfg, "bank-aws", {"ledger/000.json": b"rewritten"})
    scan(cfg, "bank-aws")
    stale = one(evaluate_policies(cfg), "min_replicas")
    assert stale.status == Status.FAIL
    assert (
        "bank-vault: partial replica, 7 of 8 objects verified (88%), 1 changed at the primary since copied"
        in stale.why
    )
    assert (stale.objects, stale.bytes) == (1, len(b"rewritten"))


# --------------------------------------------------------------------------------------------
# unknowns, selectors, freshness, drills


def test_unknown_is_never_pass_and_state_is_not_created(tmp_path: Path) -> None:
    stores = {
        "a": local(tmp_path / "a", "a", "ID"),
        "b": local(tmp_path / "b", "b", "SG"),
    }
    policy = {
        "stores": ["a", "b"],
        "residency": ["ID"],
        "min_replicas": 2,
        "distinct_providers": 1,
        "encrypt_when_foreign_law": True,
        "max_verify_age_days": 7,
        "max_exit_hours": 24,
    }
    cfg = make_config(tmp_path, stores, [policy])
    result = evaluate_policies(cfg)
    assert statuses(result) == {
        ("residency", "a"): "pass",
        ("residency", "b"): "fail",  # declared in Singapore: judged from the declaration alone
        ("encrypt_when_foreign_law", "a"): "pass",
        ("encrypt_when_foreign_law", "b"): "unknown",
        ("min_replicas", None): "unknown",
        ("distinct_providers", None): "unknown",
        ("max_verify_age_days", "b"): "unknown",
        ("max_exit_hours", "a"): "unknown",
    }
    assert result.policies[0].name == "policy #1"
    assert "what it holds is unknown (never scanned" in one(result, "residency", "b").why
    replicas = one(result, "min_replicas")
    assert replicas.why.startswith("there is no manifest yet")
    assert replicas.fix == "`daulat scan a`" and replicas.objects is None
    assert "SG law (the data sits in SG)" in one(result, "encrypt_when_foreign_law", "b").why
    exit_hours = one(result, "max_exit_hours", "a")
    assert "no exit drill of a is recorded" in exit_hours.why
    assert exit_hours.fix == "run an exit drill: `daulat drill a b`"
    assert result.exit_code == 1  # the residency failure
    assert not cfg.state_dir.exists()  # evaluation never creates state

    # Without the failing store: unknowns only -> exit 0, or 1 when strict.
    cfg_a = make_config(
        tmp_path, stores, [{"stores": ["a"], "min_replicas": 1, "max_exit_hours": 24}]
    )
    lenient = evaluate_policies(cfg_a)
    assert lenient.status == Status.UNKNOWN and lenient.exit_code == 0
    assert lenient.to_json()["counts"] == {"pass": 0, "fail": 0, "unknown": 2}
    assert evaluate_policies(cfg_a, strict=True).exit_code == 1
    text = rendered(lenient)
    assert "? unknown  min_replicas" in text
    assert "unknown ≠ pass; not counted as violations (exit 0 unless something fails" in text

    # The drill hook decides max_exit_hours once it has data.
    put(cfg_a, "a", dataset("x/", 2))
    scan(cfg_a, "a")
    slow = evaluate_policies(cfg_a, latest_exit_hours=lambda store: 30.0)
    assert statuses(slow) == {("min_replicas", None): "pass", ("max_exit_hours", "a"): "fail"}
    assert (
        "predicts a full exit of a in 30.0 h; the policy allows 24 h"
        in one(slow, "max_exit_hours", "a").why
    )
    fast = evaluate_policies(cfg_a, latest_exit_hours={"a": 3.5}.get)
    assert fast.status == Status.PASS and fast.exit_code == 0

    # The default hook reads the drill record (.daulat/drills.sqlite, through
    # daulat.drill.latest_exit_hours): the latest complete drill of the whole store; drills of
    # one prefix and failed drills do not count. Only the columns that lookup reads are made.
    with sqlite3.connect(cfg_a.state_dir / "drills.sqlite") as db:
        db.execute(
            "CREATE TABLE drills (id TEXT PRIMARY KEY, status TEXT, src TEXT, src_store TEXT, "
            "src_prefix TEXT, predicted_s REAL, high_s REAL)"
        )
        h = 3600.0
        db.executemany(
            "INSERT INTO drills VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("d1", "complete", "a", "a", "", 40 * h, 50 * h),
                ("d2", "complete", "a", "a", "", 20 * h, 22 * h),
                ("d3", "complete", "a:x/", "a", "x/", 1 * h, 2 * h),
                ("d4", "failed", "a", "a", "", None, None),
                ("d5", "running", "a", "a", "", None, None),
            ],
        )
    db.close()
    drilled = one(evaluate_policies(cfg_a), "max_exit_hours", "a")
    assert drilled.status == Status.PASS and drilled.data["predicted_hours"] == 20.0

    # No policies at all: nothing was checked.
    empty = evaluate_policies(make_config(tmp_path, stores, []))
    assert (empty.status, empty.exit_code) == (Status.UNKNOWN, 0)
    assert evaluate_policies(make_config(tmp_path, stores, []), strict=True).exit_code == 1


def test_never_scanned_primary_is_unknown_even_after_copies(tmp_path: Path) -> None:
    stores = {"src": local(tmp_path / "s", "src", "ID"), "dst": local(tmp_path / "d", "dst", "ID")}
    cfg = make_config(
        tmp_path, stores, [{"stores": ["dst", "src"], "min_replicas": 2, "max_verify_age_days": 7}]
    )
    put(cfg, "src", dataset("", 4))
    exit_(cfg, "src", "dst")
    result = evaluate_policies(cfg)
    report = result.policies[0]
    # Listed second, but daulat only ever copied out of it: it is where the data originates.
    assert report.primary == "src"
    assert report.primary_reason == "inferred: daulat copied from it to dst and never into it"
    assert statuses(result) == {
        ("min_replicas", None): "unknown",
        ("max_verify_age_days", "dst"): "unknown",
    }
    assert one(result, "min_replicas").why.startswith("there is no manifest yet")
    scan(cfg, "dst")  # the manifest exists now, but the primary is still unscanned
    assert one(evaluate_policies(cfg), "min_replicas").why.startswith(
        "src, the primary, has never been scanned completely"
    )
    scan(cfg, "src")
    assert evaluate_policies(cfg).status == Status.PASS


def test_selector_holding_prefix(tmp_path: Path) -> None:
    stores = {
        "kpu": local(tmp_path / "kpu", "kpu", "ID"),
        "backup": local(tmp_path / "backup", "backup", "ID"),
        "unrelated": local(tmp_path / "other", "unrelated", "ID"),
    }
    policy = {"name": "pemilu", "stores": {"holding": "pemilu-2024/"}, "min_replicas": 2}
    cfg = make_config(tmp_path, stores, [policy])
    election = dataset("pemilu-2024/", 6)
    put(cfg, "kpu", election | dataset("payroll/", 4))
    put(cfg, "unrelated", dataset("payroll/", 2))
    scan(cfg, "kpu", "unrelated")

    result = evaluate_policies(cfg)
    report = result.policies[0]
    assert (report.stores, report.primary, report.prefix) == (["kpu"], "kpu", "pemilu-2024/")
    replicas = one(result, "min_replicas")
    assert replicas.status == Status.FAIL
    assert replicas.why.startswith("1 of 2 required verified copies: 6 objects")
    assert "under 'pemilu-2024/'" in replicas.why
    assert "add 1 more store(s) to this policy" in (replicas.fix or "")

    # The election prefix copied to the root of another store: the journal selects that store.
    exit_(cfg, "kpu:pemilu-2024/", "backup")
    result = evaluate_policies(cfg)
    report = result.policies[0]
    assert (report.stores, report.primary) == (["kpu", "backup"], "kpu")
    replicas = one(result, "min_replicas")
    assert replicas.status == Status.PASS
    assert (replicas.objects, replicas.bytes) == (6, sum(map(len, election.values())))
    assert "backup: complete verified copy (6/6)" in replicas.why

    nothing = make_config(tmp_path, stores, [{"stores": {"holding": "none/"}, "min_replicas": 1}])
    found = evaluate_policies(nothing).findings
    assert [(f.rule, f.status.value) for f in found] == [("stores", "unknown")]
    assert "no scanned store holds keys under 'none/'" in found[0].why


def test_max_verify_age_days_from_the_journal(tmp_path: Path) -> None:
    stores = {"src": local(tmp_path / "s", "src", "DE"), "dst": local(tmp_path / "d", "dst", "DE")}
    policy = {
        "name": "fresh",
        "stores": ["src", "dst"],
        "min_replicas": 2,
        "max_verify_age_days": 7,
    }
    cfg = make_config(tmp_path, stores, [policy])
    data = dataset("", 5)
    put(cfg, "src", data)
    scan(cfg, "src")
    exit_(cfg, "src", "dst")

    fresh = one(evaluate_policies(cfg), "max_verify_age_days", "dst")
    assert fresh.status == Status.PASS
    assert fresh.why.startswith("dst was last verified ") and "within 7 days" in fresh.why
    assert (fresh.objects, fresh.bytes) == (5, sum(map(len, data.values())))

    # The last verification moved to ten days ago (rows and the verification record alike).
    old = (datetime.now(UTC) - timedelta(days=10)).isoformat(timespec="seconds")
    with sqlite3.connect(cfg.state_dir / JOURNAL_NAME) as db:
        db.execute("UPDATE journal SET verified = ?", (old,))
        db.execute("UPDATE verifications SET time = ?", (old,))
    db.close()
    result = evaluate_policies(cfg)
    stale = one(result, "max_verify_age_days", "dst")
    assert stale.status == Status.FAIL
    assert stale.why == f"dst was last verified 10.0 days ago ({old}); the policy allows 7 days"
    assert stale.fix is not None and stale.fix.startswith("`daulat verify src dst`")
    assert one(result, "min_replicas").status == Status.PASS
    assert result.exit_code == 1

    # A later verification that found one object broken leaves its old `verified` time behind;
    # that object no longer counts as a verified copy.
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with sqlite3.connect(cfg.state_dir / JOURNAL_NAME) as db:
        db.execute("UPDATE journal SET verified = ? WHERE key != '000.json'", (now,))
        db.execute("UPDATE verifications SET time = ?", (now,))
    db.close()
    result = evaluate_policies(cfg)
    replicas = one(result, "min_replicas")
    assert replicas.status == Status.FAIL
    assert (
        "dst: partial replica, 4 of 5 objects verified (80%), 1 copied but not verified"
        in replicas.why
    )
    assert replicas.fix == "`daulat verify src dst`"
    assert one(result, "max_verify_age_days", "dst").status == Status.PASS


# --------------------------------------------------------------------------------------------
# configuration errors


def write(tmp_path: Path, policies: str) -> Config:
    text = textwrap.dedent(
        f"""
        [stores.kpu-alibaba]
        url = "file://{tmp_path}/kpu"
        provider = "local"
        country = "ID"

        [stores.vault]
        url = "file://{tmp_path}/vault"
        provider = "local"
        country = "ID"
        """
    ) + textwrap.dedent(policies)
    path = tmp_path / "daulat.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        (
            """
            [[policies]]
            name = "election"
            stores = ["kpu-alibaba", "vault"]
            min_replica = 2
            """,
            "policy #1 'election': unknown field 'min_replica' (did you mean 'min_replicas'?)",
        ),
        (
            """
            [[policies]]
            name = "election"
            stores = ["kpu-alibaba", "vualt"]
            min_replicas = 2
            """,
            "policy #1 'election': field 'stores': unknown store 'vualt' (known: kpu-alibaba, "
            "vault); did you mean 'vault'?",
        ),
        (
            """
            [[policies]]
            name = "ok"
            stores = ["vault"]
            min_replicas = 1

            [[policies]]
            stores = ["vault"]
            residency = ["id"]
            """,
            "policy #2: field 'residency': 'id' is not an ISO 3166-1 alpha-2 country code such as "
            "'ID' or 'DE', nor a group (EU, EEA) (write it in capitals: 'ID')",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = ["vault"]
            residency = ["XX"]
            """,
            "policy #1 'x': field 'residency': 'XX' is not an ISO 3166-1 alpha-2 country code",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = ["vault"]
            min_replicas = "2"
            """,
            "policy #1 'x': field 'min_replicas': Input should be a valid integer (got '2')",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = { holding = "pemilu/", also = "y" }
            min_replicas = 1
            """,
            "policy #1 'x': field 'stores': unknown selector key 'also': a selector has one key, "
            "holding",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = ["vault"]
            """,
            "policy #1 'x': states no rule: give at least one of residency, ",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = ["kpu-alibaba", "vault"]
            min_replicas = 3
            """,
            "policy #1 'x': field 'min_replicas': 3 cannot be met by the 2 store(s) the policy lists",
        ),
        (
            """
            [[policies]]
            name = "x"
            stores = ["kpu-alibaba"]
            primary = "vault"
            min_replicas = 1
            """,
            "policy #1 'x': field 'primary': 'vault' is not among the policy's stores",
        ),
        (
            """
            [[policies]]
            stores = ["vault"]
            min_replicas = 0
            """,
            "policy #1: field 'min_replicas': Input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_policy_config_errors(tmp_path: Path, policies: str, expected: str) -> None:
    cfg = write(tmp_path, policies)
    with pytest.raises(ConfigError) as caught:
        evaluate_policies(cfg)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{tmp_path / 'daulat.toml'}: policy #")
    assert len(message.splitlines()) == 1
    assert not cfg.state_dir.exists()


def test_every_problem_is_one_line_and_good_policies_load(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        [[policies]]
        name = "a"
        stores = ["nope"]
        residency = ["ZZ"]
        encrypt_when_foreign_law = "yes"

        [[policies]]
        name = "a"
        stores = { holding = "pemilu-2024/" }
        residency = ["EU", "ID"]
        max_verify_age_days = 0.5
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_policies(cfg)
    lines = str(caught.value).splitlines()
    assert len(lines) == 4
    assert "policy #1 'a': field 'residency': 'ZZ' is not an ISO 3166-1" in lines[0]
    assert (
        "policy #1 'a': field 'encrypt_when_foreign_law': Input should be a valid boolean"
        in lines[1]
    )
    assert "policy #1 'a': field 'stores': unknown store 'nope'" in lines[2]
    assert "policy #2 'a': field 'name': policy #1 has the same name" in lines[3]

    good = write(
        tmp_path,
        """
        [[policies]]
        name = "pemilu"
        stores = { holding = "pemilu-2024/" }
        primary = "kpu-alibaba"
        residency = ["EEA", "ID"]
        max_verify_age_days = 0.5
        """,
    )
    (spec,) = load_policies(good)
    assert spec.primary == "kpu-alibaba" and spec.max_verify_age_days == 0.5
