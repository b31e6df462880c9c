"""`daulat plan`: the exit-time model (shared with the drill's projection), the deadline
inversion, decimal units, the sourced tables, the request counts, the providers' limits, and
the command as a user runs it on real drills (filesystem, Azurite, SeaweedFS).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import azure_store_config, begin_audit, fs_store_config, run, s3_store_config
from rich.console import Console
from servers import AzuriteServer, S3Server

from daulat.cli import run as cli
from daulat.config import Config, StoreConfig, load_config
from daulat.drill import DRILLS_NAME, SIZE_CLASSES, run_drill, size_class_of
from daulat.drill.units import human_duration
from daulat.errors import ConfigError
from daulat.inventory import Manifest, scan_store
from daulat.plan import (
    DRIVER_OBJECTS_PER_S,
    LABEL,
    WORKER_START_S,
    ClassCost,
    Fit,
    Fitted,
    Overheads,
    Workload,
    census_from_totals,
    estimate,
    make_plan,
    parse_bytes,
    parse_count,
    parse_hours,
    part_rule_for,
    predict,
    render_plan,
    requests_of,
    workers_for,
    workers_for_upper,
)
from daulat.plan.census import BLOCK_PARTS, S3_PARTS
from daulat.plan.tables import NOT_READ, TableError, load_tables, parse_tables, tiered_cost
from daulat.plan.units import count, decimal_bytes
from daulat.stores import Store, open_store

KiB, MiB = 1024, 1024 * 1024
PB = 10**15
CONF = 0.95


# --------------------------------------------------------------------------------------------
# A synthetic drill: known per-class costs, replicates scattered around them


def synthetic(seed: int = 1, replicates: int = 400) -> Fitted:
    """Per-worker costs of the kind a drill measures: small objects cost per object, large
    ones per byte; replicates within +-25 % of the point (a bootstrap's spread)."""
    fit = Fit(
        {
            0: ClassCost(2e-3, 1 / 20e6),
            2: ClassCost(4e-3, 1 / 150e6),
            4: ClassCost(30e-3, 1 / 400e6),
        },
        ClassCost(3e-3, 1 / 300e6),
    )
    rng = random.Random(seed)

    def jitter(c: ClassCost) -> ClassCost:
        return ClassCost(
            c.per_object_s * rng.uniform(0.75, 1.25), c.per_byte_s * rng.uniform(0.75, 1.25)
        )

    reps = tuple(
        Fit({i: jitter(c) for i, c in fit.classes.items()}, jitter(fit.across or fit.classes[0]))
        for _ in range(replicates)
    )
    # The driver's own listing and bookkeeping are not divided among the workers: at these
    # costs 4.9 billion objects keep it busy 9.5 h, so deadlines of a day can be met.
    return Fitted(fit, reps, Overheads(2e-6, 5e-6, 2.0))


WORK = Workload({0: (4_000_000_000, 60 * 10**12), 2: (900_000_000, 2 * PB), 4: (2_000_000, 3 * PB)})


def test_model_is_monotonic_in_workers_and_link() -> None:
    fitted = synthetic()
    totals = [predict(WORK, fitted.fit, fitted.overheads, w).total_s for w in range(1, 400)]
    assert all(a >= b for a, b in itertools_pairs(totals))
    assert totals[0] > totals[9] > totals[99]  # more workers help until the driver binds
    driver = WORK.objects / DRIVER_OBJECTS_PER_S
    assert totals[-1] >= driver + fitted.overheads.fixed_s - 1e-6
    links = [1e6, 1e7, 1e8, 1e9, 1e10, 1e11]  # bytes/s
    by_link = [predict(WORK, fitted.fit, fitted.overheads, 20, bw).total_s for bw in links]
    assert all(a >= b for a, b in itertools_pairs(by_link))
    assert by_link[0] > by_link[-1]
    # A link faster than every measured throughput changes nothing; a slow one binds.
    free = predict(WORK, fitted.fit, fitted.overheads, 20, None)
    assert predict(WORK, fitted.fit, fitted.overheads, 20, 1e12).total_s == pytest.approx(
        free.total_s
    )
    slow = predict(WORK, fitted.fit, fitted.overheads, 20, 1e6)
    assert all(slow.link_bound.values()) and not any(free.link_bound.values())


def itertools_pairs(values: list[float]) -> list[tuple[float, float]]:
    return list(itertools.pairwise(values))


def test_one_worker_adds_up_the_drill_and_workers_divide_it() -> None:
    fitted = synthetic()
    f, o = fitted.fit, fitted.overheads
    one = predict(WORK, f, o)
    by_hand = sum(
        n * f.classes[i].per_object_s + b * f.classes[i].per_byte_s
        for i, (n, b) in WORK.classes.items()
    )
    assert one.copy_s == pytest.approx(by_hand)
    assert one.listing_s == pytest.approx(WORK.objects * o.list_s_per_object)
    assert one.total_s == pytest.approx(by_hand + one.listing_s + one.bookkeeping_s + o.fixed_s)
    ten = predict(WORK, f, o, 10)
    assert ten.copy_s == pytest.approx(one.copy_s / 10)
    # The driver lists, plans, verifies and writes the manifest alone: not divided.
    assert ten.listing_s == pytest.approx(one.listing_s)
    assert ten.bookkeeping_s == pytest.approx(one.bookkeeping_s)
    assert ten.total_s == pytest.approx(
        o.fixed_s + one.listing_s + one.bookkeeping_s + max(ten.copy_s, ten.driver_s)
    )
    # With a link, each class takes the longer of its own measured time and the link's.
    linked = predict(WORK, f, o, 10, 1e8)
    for i, (n, b) in WORK.classes.items():
        own = n * f.classes[i].per_object_s + b * f.classes[i].per_byte_s
        assert linked.classes[i] == pytest.approx(max(own, b / 1e8) / 10)
        assert linked.link_bound[i] == (b / 1e8 > own)


def test_deadline_inversion_agrees_with_the_forward_prediction() -> None:
    fitted = synthetic()
    f, o = fitted.fit, fitted.overheads
    for link in (None, 625e6):
        for w in (1, 2, 3, 17, 150, 1000):
            target = predict(WORK, f, o, w, link).total_s
            needed = workers_for(target, WORK, f, o, link)
            assert needed.workers is not None and needed.workers <= w
            assert predict(WORK, f, o, needed.workers, link).total_s <= target
        for hours in (24, 72, 240, 2000):
            needed = workers_for(hours * 3600, WORK, f, o, link)
            assert needed.workers is not None
            assert predict(WORK, f, o, needed.workers, link).total_s <= hours * 3600
            if needed.workers > 1:
                assert predict(WORK, f, o, needed.workers - 1, link).total_s > hours * 3600
            upper = workers_for_upper(hours * 3600, WORK, fitted, CONF, link)
            assert upper.workers is not None and upper.workers >= needed.workers
            assert estimate(WORK, fitted, CONF, upper.workers, link).high_s <= hours * 3600


def test_unreachable_deadline_says_why() -> None:
    fitted = synthetic()
    below_fixed = workers_for(1.0, WORK, fitted.fit, fitted.overheads)
    assert below_fixed.workers is None and "fixed" in (below_fixed.reason or "")
    o = fitted.overheads
    serial = o.fixed_s + WORK.objects * (o.list_s_per_object + o.bookkeeping_s_per_object)
    below_serial = workers_for(serial * 0.99, WORK, fitted.fit, o)
    assert below_serial.workers is None and "listing and bookkeeping" in (below_serial.reason or "")
    driver = WORK.objects / DRIVER_OBJECTS_PER_S
    below_driver = workers_for(serial + driver / 2, WORK, fitted.fit, o)
    assert below_driver.workers is None and "journal" in (below_driver.reason or "")
    # Just beyond both, enough workers meet it.
    above = workers_for(serial + driver * 1.01, WORK, fitted.fit, o)
    assert above.workers is not None and above.predicted_s is not None
    assert above.predicted_s <= serial + driver * 1.01


def test_the_workers_start_up_adds_only_beyond_the_listing() -> None:
    """More than one worker: Ray's worker processes start while the driver lists the source,
    so what WORKER_START_S exceeds the listing by adds once, whatever the workers; one worker
    (one process, no Ray) adds none, nor does a listing longer than the start."""
    f = Fit({0: ClassCost(1e-3, 1e-8)})
    small = Workload({0: (10_000, 10_000 * 65_536)})
    o = Overheads(15e-6, 60e-6, 0.02)  # the scaling benchmark's drill: a 0.15 s listing
    one = predict(small, f, o, 1)
    assert one.startup_s == 0
    listing = small.objects * o.list_s_per_object
    for w in (2, 4, 150):
        many = predict(small, f, o, w)
        assert many.startup_s == pytest.approx(WORKER_START_S - listing)
        assert many.total_s == pytest.approx(
            o.fixed_s + listing + many.bookkeeping_s + many.startup_s + many.copy_s
        )
    slow_listing = Overheads(WORKER_START_S / small.objects * 2, 60e-6, 0.02)
    assert predict(small, f, slow_listing, 4).startup_s == 0
    # A deadline between the serial part with and without the start-up: not reachable, and
    # the reason names the start-up.
    serial = o.fixed_s + listing + one.bookkeeping_s
    needed = workers_for(serial + (WORKER_START_S - listing) / 2, small, f, o)
    assert needed.workers is None and "start-up" in (needed.reason or "")
    reachable = workers_for(one.total_s * 0.6, small, f, o)
    assert reachable.workers is not None and reachable.predicted_s is not None
    assert reachable.predicted_s == pytest.approx(predict(small, f, o, reachable.workers).total_s)
    assert reachable.predicted_s <= one.total_s * 0.6


def test_one_object_is_never_split_over_workers() -> None:
    fitted = synthetic()
    f, o = fitted.fit, fitted.overheads
    link = 625e6  # 5 Gbit/s
    # One 8 PB object: a thousand workers copy it no faster than one, at its link's speed.
    one_huge = Workload({4: (1, 8 * PB)})
    alone = predict(one_huge, f, o, 1, link)
    many = predict(one_huge, f, o, 1000, link)
    assert many.busy_workers == 1 and many.object_bound
    assert many.copy_s == pytest.approx(alone.copy_s)
    assert many.copy_s >= 8 * PB / link
    needed = workers_for(24 * 3600, one_huge, f, o, link)
    assert needed.workers is None and "largest object" in (needed.reason or "")
    assert "whatever the workers" in (needed.reason or "")
    upper = workers_for_upper(24 * 3600, one_huge, fitted, CONF, link)
    assert upper.workers is None
    # A hundred 1 TB objects: workers beyond a hundred do nothing, and no fewer than one
    # object's whole time on one worker (its measured per-byte cost, slower than the link).
    hundred = Workload({4: (100, 100 * 10**12)})
    at_100 = predict(hundred, f, o, 100, link)
    at_1000 = predict(hundred, f, o, 1000, link)
    assert at_1000.busy_workers == 100 and at_1000.copy_s == pytest.approx(at_100.copy_s)
    per_object = f.classes[4].per_object_s + 10**12 * f.classes[4].per_byte_s
    assert at_1000.copy_s >= per_object > 10**12 / link
    # The largest object of a class, when known, bounds it: not its mean.
    skewed = Workload({4: (100, 100 * 10**12)}, None, {4: 50 * 10**12})
    assert predict(skewed, f, o, 100, link).copy_s >= 50 * 10**12 * f.classes[4].per_byte_s
    # A deadline the largest object meets: the fewest workers, never more than the objects.
    fits = workers_for(4 * 3600, hundred, f, o, link)
    assert fits.workers is not None and fits.workers <= 100
    assert predict(hundred, f, o, fits.workers, link).total_s <= 4 * 3600


def test_interval_contains_the_point_estimate() -> None:
    fitted = synthetic()
    for w in (1, 7, 150):
        for link in (None, 1e8):
            e = estimate(WORK, fitted, CONF, w, link)
            assert e.low_s <= e.point.total_s <= e.high_s
            assert e.low_s < e.high_s
            for i in WORK.classes:
                lo, hi = e.class_interval(i, CONF)
                assert lo <= e.point.classes[i] <= hi
    # Replicates that all lie above the point: the interval still holds the point.
    high = Fitted(
        fitted.fit,
        tuple(
            Fit(
                {
                    i: ClassCost(c.per_object_s * 2, c.per_byte_s * 2)
                    for i, c in fitted.fit.classes.items()
                }
            )
            for _ in range(50)
        ),
        fitted.overheads,
    )
    e = estimate(WORK, high, CONF, 3)
    assert e.low_s == pytest.approx(e.point.total_s) and e.high_s > e.point.total_s


def test_a_class_the_drill_did_not_measure_is_costed_by_a_stand_in() -> None:
    fitted = synthetic()
    b = predict(Workload({1: (1000, 10**9)}), fitted.fit, fitted.overheads)
    assert b.stand_ins == {1: "the fit across the measured classes"}
    one = Fit({2: ClassCost(1e-3, 1e-8)})
    assert one.cost_of(4) == (one.classes[2], "measured class 2")


def test_units_are_decimal() -> None:
    assert parse_bytes("8PB") == 8 * PB
    assert parse_bytes("8 PB") == parse_bytes("8e15") == parse_bytes("8000TB") == 8 * PB
    assert parse_bytes("1.5 TB") == 1_500_000_000_000
    assert parse_bytes("1PiB") == 2**50  # binary only when it says so
    assert parse_count("5e9") == parse_count("5G") == parse_count("5,000,000,000") == 5 * 10**9
    assert parse_hours("72") == parse_hours("72h") == parse_hours("3d") == 72
    assert decimal_bytes(8 * PB) == "8 PB" and decimal_bytes(5 * 10**12) == "5 TB"
    census = census_from_totals(5 * 10**9, 5 * PB, S3_PARTS)
    assert census.bytes == 5 * PB and census.objects == 5 * 10**9
    (c,) = census.classes
    assert c.index == size_class_of(10**6)  # 1 MB (decimal) each: in 64 KiB - 1 MiB
    for bad in ("", "8XB", "-1PB", "PB", "1e999"):
        with pytest.raises(ConfigError):
            parse_bytes(bad)
    for bad in ("0", "1.5", "-3", "many"):
        with pytest.raises(ConfigError):
            parse_count(bad)
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigError):
            parse_hours(bad)


def test_a_lowercase_b_is_refused_as_ambiguous() -> None:
    # 8Pb is petabits (1 PB), not 8 PB: a size in bits or bytes is never guessed.
    for bad in ("8Pb", "8pb", "500 Tb", "1.5tb", "8b", "2 kib"):
        with pytest.raises(ConfigError, match=r"write [A-Za-z]*B for bytes") as e:
            parse_bytes(bad)
        assert "bits" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="write PB for bytes"):
        parse_bytes("8Pb")
    assert parse_bytes("8PB") == parse_bytes("8pB") == parse_bytes("8P") == 8 * PB
    assert parse_bytes("1KiB") == 1024 and parse_bytes("512B") == 512


def test_absurd_sizes_are_refused_and_sizes_are_exact() -> None:
    # Beyond 10^21 bytes (a zettabyte) or 10^15 objects no exit is planned: refused, one line.
    for bad in ("1e30", "1e22", "1.000001ZB", "1000001EB", "1e999999"):
        with pytest.raises(ConfigError) as e:
            parse_bytes(bad)
        assert "\n" not in str(e.value)
    for bad in ("1e30", "1e16", "1000000000000001"):
        with pytest.raises(ConfigError, match="at most"):
            parse_count(bad)
    assert parse_bytes("1e21") == 10**21 and parse_count("1e15") == 10**15
    # Read exactly, not through a float: every digit given is the byte count.
    assert parse_bytes("123456789012345678901") == 123456789012345678901
    assert parse_bytes("1.1PB") == 1_100_000_000_000_000
    assert parse_count("999999999999999") == 999_999_999_999_999
    # A what-if's mean size is whole bytes computed exactly, never a float's digits.
    census = census_from_totals(3, 9 * 10**20, None)
    assert "300,000,000,000,000,000,000 bytes" in census.source
    assert census.classes[0].largest == 3 * 10**20
    assert decimal_bytes(10**21) == "1 ZB" and count(10**15) == "1 quadrillion"
    # Durations beyond what days and hours mean are not printed to the hour.
    assert human_duration(3.2e12) == "37,000,000 d"
    assert human_duration(2 * 86400 + 4 * 3600) == "2 d 4 h"


def test_a_deadline_beyond_reason_is_refused_in_hours() -> None:
    for bad in ("1e308", "1e7", "1e400", "99999999d"):
        with pytest.raises(ConfigError, match="hours") as e:
            parse_hours(bad)
        assert "seconds" not in str(e.value)
    assert parse_hours("1e6") == 10**6  # 114 years: the longest deadline planned


def test_part_rules_count_requests_as_the_stores_write() -> None:
    # The S3 store: 8 MiB parts, doubling every 1,000 parts; a 5 TB object fits in 10,000.
    assert S3_PARTS.parts(8 * MiB) == 0 and S3_PARTS.parts(8 * MiB + 1) == 2
    assert S3_PARTS.parts(1000 * 8 * MiB) == 1000 and S3_PARTS.parts(1000 * 8 * MiB + 1) == 1001
    assert S3_PARTS.parts(5 * 10**12) <= 10_000
    assert BLOCK_PARTS.parts(80 * MiB) == 10
    db = sqlite3.connect(":memory:")
    rng = random.Random(3)
    for size in [0, 8 * MiB, 8 * MiB + 1, 8000 * MiB + 1] + [
        int(10 ** rng.uniform(0, 13)) for _ in range(300)
    ]:
        for rule in (S3_PARTS, BLOCK_PARTS):
            (sql,) = db.execute(f"SELECT {rule.sql(str(size))}").fetchone()
            assert sql == rule.parts(size)
    assert part_rule_for("file") is None
    reqs = requests_of(census_from_totals(10, 10 * 20 * MiB, S3_PARTS))
    assert reqs.source_get == 10 and reqs.multipart_uploads == 10 and reqs.parts == 30
    assert reqs.destination_writes == 30 + 2 * 10 and reqs.destination_put == 0


# --------------------------------------------------------------------------------------------
# The tables


def test_tables_load_and_every_entry_is_sourced_and_dated_or_not_read() -> None:
    t = load_tables()
    assert t.limits and t.prices and t.programmes and t.laws
    entries: list[Any] = [*t.limits, *t.prices, *t.programmes, *t.laws]
    for e in entries:
        assert e.source.startswith("https://"), e
        assert e.read is not None or e.note.lower().startswith(NOT_READ), e
    for lim in t.limits:
        assert (lim.value is None) == (lim.read is None), lim.id
    for p in t.prices:
        assert (p.tiers is None) == (p.read is None), p.id
        if p.reported is not None:
            assert p.reported.source.startswith("https://") and p.reported.read is not None
    assert {p.provider for p in t.programmes} == {"aws", "azure", "gcp"}
    for g in t.programmes:
        assert g.conditions or (g.reported and g.reported.conditions)
    (law,) = t.laws
    assert "2023/2854" in law.citation and any("12 January 2027" in r for r in law.rules)
    # The Azure account egress ceiling, as read: 200 Gbit/s in the listed regions.
    by_id = {x.id: x for x in t.limits}
    assert by_id["azure-account-egress-listed"].value == 200e9
    assert "westeurope" in by_id["azure-account-egress-listed"].regions
    assert by_id["azure-account-egress-other"].value == 50e9
    assert by_id["aws-s3-prefix-reads"].value == 5500


def test_tables_refuse_unsourced_or_undated_values() -> None:
    good = {
        "id": "x",
        "provider": "aws",
        "side": "source",
        "metric": "read_rps",
        "scope": "prefix",
        "region_class": "all",
        "other_regions": True,
        "unit": "requests/s",
        "source": "https://example.org/limits",
    }
    parse_tables({"limits": [good | {"value": 5, "read": "2026-12-04"}]}, {})
    parse_tables({"limits": [good | {"note": "not read: the page was down"}]}, {})
    bad = [
        good | {"value": 5},  # no date
        good | {"note": "guessed"},  # no value, and not "not read"
        good | {"value": 5, "read": "2026-12-04", "source": "http://example.org"},
        good | {"value": 5, "read": "yesterday"},
        good | {"value": 5, "read": "2026-12-04", "unit": "bit/s"},
        good | {"value": 5, "read": "2026-12-04", "provider": "nimbus"},
        good | {"read": "2026-12-04", "note": "not read"},  # a date without a value
    ]
    for entry in bad:
        with pytest.raises(TableError):
            parse_tables({"limits": [entry]}, {})
    price = {
        "id": "p",
        "provider": "gcp",
        "item": "egress",
        "region_class": "all",
        "other_regions": True,
        "unit": "USD/GB",
        "source": "https://example.org/prices",
    }
    with pytest.raises(TableError):  # tiers without a date
        parse_tables({}, {"prices": [price | {"tiers": [{"price": 0.1}]}]})
    with pytest.raises(TableError):  # an open tier before the last
        parse_tables(
            {},
            {
                "prices": [
                    price | {"read": "2026-12-04", "tiers": [{"price": 0.1}, {"price": 0.05}]}
                ]
            },
        )
    tiers = (
        parse_tables(
            {},
            {
                "prices": [
                    price
                    | {
                        "read": "2026-12-04",
                        "tiers": [
                            {"up_to": 100, "price": 0.0},
                            {"up_to": 1000, "price": 0.1},
                            {"price": 0.05},
                        ],
                    }
                ]
            },
        )
        .prices[0]
        .tiers
    )
    assert tiers is not None
    assert tiered_cost(tiers, 50) == 0 and tiered_cost(tiers, 600) == pytest.approx(50.0)
    assert tiered_cost(tiers, 2000) == pytest.approx(90 + 50)


# --------------------------------------------------------------------------------------------
# The command on real drills


def write_config(directory: Path, stores: list[Mapping[str, Any]]) -> Config:
    lines = []
    for raw in stores:
        lines.append(f"[stores.{raw['name']}]")
        for key, value in raw.items():
            if key == "name":
                continue
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path = directory / "daulat.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(path)


def dataset(seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    out = {f"small/s{i:03d}": rng.randbytes(rng.randrange(1, 60 * KiB)) for i in range(120)}
    out |= {
        f"medium/m{i:02d}": rng.randbytes(rng.randrange(70 * KiB, 400 * KiB)) for i in range(20)
    }
    out |= {f"large/l{i}": rng.randbytes(9 * MiB + i) for i in range(2)}  # multipart at S3
    return out


def put_files(root: Path, objects: Mapping[str, bytes]) -> None:
    for key, data in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


async def fill(store: Store, data: Mapping[str, bytes]) -> None:
    sem = asyncio.Semaphore(16)

    async def one(k: str, v: bytes) -> None:
        async with sem:
            await store.put(k, v)

    await asyncio.gather(*(one(k, v) for k, v in data.items()))


def scan(config: Config, name: str) -> None:
    begin_audit(config.state_dir)

    async def go() -> None:
        store = open_store(config.store(name))
        try:
            with Manifest.in_state_dir(config.state_dir) as manifest:
                await scan_store(store, manifest)
        finally:
            await store.close()

    run(go())


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, dict[str, bytes]]:
    objects = dataset()
    put_files(tmp_path / "src", objects)
    (tmp_path / "dst").mkdir()
    config = write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    monkeypatch.chdir(tmp_path)
    return config, objects


def test_plan_from_a_real_drill_json_and_human(
    local: tuple[Config, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, objects = local
    assert cli(["scan", "src"]) == 0
    assert cli(["drill", "src", "dst", "--sample", "40", "--seed", "3", "--json"]) == 0
    capsys.readouterr()
    args = ["plan", "src", "dst", "--workers", "12", "--link", "2Gbit/s", "--deadline", "0.5"]
    assert cli([*args, "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["kind"] == "projection" and p["label"] == LABEL
    assert p["workers"] == 12 and p["link_bps"] == 2e9
    assert p["census"]["objects"] == len(objects)
    assert p["census"]["bytes"] == sum(len(v) for v in objects.values())
    assert p["census"]["whatif"] is False
    assert p["low_s"] <= p["predicted_s"] <= p["high_s"]
    assert p["predicted_hours"] == pytest.approx(p["predicted_s"] / 3600)
    # The links alone: the bytes over the twelve links, or the largest object over one.
    largest = max(len(v) for v in objects.values())
    spread = p["census"]["bytes"] * 8 / (12 * 2e9)
    assert p["link_floor_s"] == pytest.approx(max(spread, largest * 8 / 2e9))
    assert p["requests"]["source_get"] == len(objects)
    assert p["requests"]["billed_destination"] is False  # a filesystem makes no requests
    assert (
        p["deadline"]["workers"] >= 1 and p["deadline"]["workers_upper"] >= p["deadline"]["workers"]
    )
    assert p["drill"]["interval"] is True and p["assumptions"]
    assert p["bytes_unit"].startswith("decimal")
    assert p["limits"] == [] and p["costs"] == []  # local stores: no provider's limits or prices
    # The census holds each class's largest object, as scanned.
    by_label: dict[str, int] = {}
    for data in objects.values():
        label = SIZE_CLASSES[size_class_of(len(data))].label
        by_label[label] = max(by_label.get(label, 0), len(data))
    assert {c["label"]: c["largest_bytes"] for c in p["census"]["classes"]} == by_label
    assert p["largest_object_bytes"] == max(by_label.values())
    # A listing of a few dozen objects hides little of the workers' start-up: it adds.
    assert p["worker_start_s"] == pytest.approx(WORKER_START_S - p["listing_s"])
    assert p["worker_start_s"] > 0
    assert any("to start" in a for a in p["assumptions"])
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert "the Ray workers' start-up beyond the listing" in text
    assert "PROJECTION (not measured)" in text and "12 worker(s)" in text
    assert "assumptions:" in text and "EU Data Act" in text


def test_the_drill_projection_is_the_plan_model(local: tuple[Config, dict[str, bytes]]) -> None:
    config, _ = local
    scan(config, "src")
    result = run(run_drill(config, "src", "dst", sample=40, seed=8, workers=6, link_bps=4e8))
    assert result.projection is not None
    plan = make_plan(config, "src", "dst", workers=6, link_bps=4e8)
    assert plan.drill.id == result.id
    assert plan.predicted_s == pytest.approx(result.projection.predicted_s, rel=1e-9)
    assert plan.low_s == pytest.approx(result.projection.low_s, rel=1e-4)
    assert plan.high_s == pytest.approx(result.projection.high_s, rel=1e-4)
    # One worker and no link is the drill's own prediction.
    single = make_plan(config, "src", "dst")
    assert single.predicted_s == pytest.approx(result.predicted_s, rel=1e-9)
    # The record keeps the replicates; the drill's printed JSON does not carry them.
    db = sqlite3.connect(config.state_dir / DRILLS_NAME)
    (model,) = db.execute("SELECT model FROM drills WHERE id = ?", (result.id,)).fetchone()
    db.close()
    assert len(json.loads(model)["fitted"]["replicates"]) == 1000
    assert "fitted" not in result.to_json()


def test_whatif_census_and_the_refusals(
    local: tuple[Config, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = local
    # No drill recorded: nothing to base a projection on, what-if or not.
    assert cli(["plan", "src", "dst", "--objects", "5e9", "--bytes", "5PB"]) == 2
    err = capsys.readouterr().err
    assert "daulat drill src dst" in err and "Traceback" not in err
    assert cli(["scan", "src"]) == 0
    assert cli(["drill", "src", "dst", "--sample", "30", "--seed", "2", "--json"]) == 0
    capsys.readouterr()
    assert (
        cli(
            [
                "plan",
                "src",
                "dst",
                "--objects",
                "5e9",
                "--bytes",
                "5PB",
                "--workers",
                "150",
                "--json",
            ]
        )
        == 0
    )
    p = json.loads(capsys.readouterr().out)
    assert p["census"]["whatif"] is True
    assert p["census"]["objects"] == 5 * 10**9 and p["census"]["bytes"] == 5 * PB
    # One 8 PB object is one worker's whole time, whatever the workers and the deadline.
    huge = ["plan", "src", "dst", "--objects", "1", "--bytes", "8PB", "--workers", "1000"]
    huge += ["--link", "5G", "--deadline", "24"]
    assert cli([*huge, "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["copy_s"] >= 8 * PB / 625e6 and p["busy_workers"] == 1
    assert p["link_floor_s"] == pytest.approx(8 * PB / 625e6)
    assert p["largest_object_bytes"] == 8 * PB
    assert p["deadline"]["workers"] is None and "largest object" in p["deadline"]["reason"]
    assert any("nothing to copy" in n for n in p["notes"])
    assert cli(huge) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "deadline 24 h: not reachable" in text and "largest object" in text
    assert "999 worker(s) have nothing to copy" in text
    for bad in (
        ["--link", "fast"],
        ["--link", "0"],
        ["--deadline", "soon"],
        ["--deadline", "-2"],
        ["--deadline", "0"],
        ["--deadline", "1e308"],
        ["--bytes", "5XB", "--objects", "1"],
        ["--bytes", "8Pb", "--objects", "1"],
        ["--bytes", "1e30", "--objects", "1"],
        ["--bytes", "1PB", "--objects", "1e30"],
        ["--objects", "5e9"],  # --bytes missing
        ["--bytes", "1PB"],  # --objects missing
        ["--objects", "0", "--bytes", "1PB"],
        ["--workers", "0"],
    ):
        assert cli(["plan", "src", "dst", *bad]) == 2, bad
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip(), bad
    with pytest.raises(ConfigError, match="hours"):
        make_plan(config, "src", "dst", deadline_hours=1e308)
    assert cli(["plan", "src", "dst", "--deadline", "1e308"]) == 2
    err = capsys.readouterr().err
    assert "hours" in err and "seconds" not in err and len(err.strip().splitlines()) == 1
    assert cli(["plan", "nosuch", "dst"]) == 2
    assert "unknown store" in capsys.readouterr().err


def test_no_scan_without_whatif_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    config = write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    with pytest.raises(ConfigError, match="daulat drill"):
        make_plan(config, "src", "dst")


def test_azure_source_limits_accounts_and_costs(
    azurite_server: AzuriteServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """8 PB out of an Azure storage account in West Europe with 150 workers at 5 Gbit/s:
    the account egress ceiling (200 Gbit/s there) decides how many accounts it takes."""
    src_raw = azure_store_config(azurite_server, "az", "plan-src") | {"region": "westeurope"}
    (tmp_path / "dst").mkdir()
    config = write_config(tmp_path, [src_raw, fs_store_config(tmp_path / "dst", "dst")])

    async def setup() -> None:
        store = open_store(StoreConfig.model_validate(src_raw))
        try:
            await fill(store, dataset(7))
        finally:
            await store.close()

    run(setup())
    scan(config, "az")
    run(run_drill(config, "az", "dst", sample=30, seed=1))
    plan = make_plan(
        config, "az", "dst", workers=150, link_bps=5e9, objects=80_000_000, size=8 * PB
    )
    egress = next(x for x in plan.limits if x.id == "azure-account-egress-listed")
    assert egress.value == 200e9 and egress.read == "2026-12-04"
    rate = 8 * PB * 8 / plan.copy_s
    assert egress.demand == pytest.approx(rate)
    assert egress.needed == max(1, math.ceil(rate / 200e9))
    assert egress.single_unit_s == pytest.approx(8 * PB * 8 / 200e9)  # 320,000 s in one account
    assert {x.id for x in plan.limits} >= {
        "azure-account-egress-listed",
        "azure-account-requests-listed",
    }
    assert all("other" not in x.id for x in plan.limits)  # West Europe is a listed region
    # Linked at 5 Gbit/s, the 150 links alone need 8 PB / 750 Gbit/s.
    assert plan.link_floor_s == pytest.approx(8 * PB * 8 / 750e9)
    egress_cost = next(c for c in plan.costs if c.item == "egress")
    assert egress_cost.usd is None and egress_cost.quantity == 8 * PB  # Azure's page: not read
    assert plan.cost_usd is None and "azure egress" in plan.cost_unknown
    assert plan.programme is not None and plan.programme.provider == "azure"
    assert any("60 days" in c for c in plan.programme.conditions)
    console = Console(record=True, width=220)
    render_plan(plan, console)
    text = console.export_text()
    assert "PROJECTION (not measured)" in text and "storage account" in text
    assert "Free egress for customers leaving Azure" in text and "not read" in text
    # A deadline that leaves half the copying time of 150 workers needs about twice as many,
    # which ask more of each account at once. (From the plan itself: this tiny drill's
    # per-object listing and bookkeeping, which the driver does alone, take days at 80
    # million objects.)
    hours = (plan.predicted_s - plan.copy_s / 2) / 3600
    timed = make_plan(
        config,
        "az",
        "dst",
        workers=150,
        link_bps=5e9,
        deadline_hours=hours,
        objects=80_000_000,
        size=8 * PB,
    )
    assert timed.deadline is not None and timed.deadline["workers"] is not None
    w = timed.deadline["workers"]
    at_w = make_plan(config, "az", "dst", workers=w, link_bps=5e9, objects=80_000_000, size=8 * PB)
    eg = next(x for x in timed.limits if x.id == "azure-account-egress-listed")
    eg_w = next(x for x in at_w.limits if x.id == "azure-account-egress-listed")
    assert w > 150 and eg.deadline_workers == w and eg.needed_at_deadline == eg_w.needed
    assert at_w.predicted_s <= hours * 3600
    # The region decides the class: elsewhere 50 Gbit/s per account.
    other = write_config(
        tmp_path,
        [src_raw | {"region": "indonesiacentral"}, fs_store_config(tmp_path / "dst", "dst")],
    )
    plan2 = make_plan(
        other, "az", "dst", workers=150, link_bps=5e9, objects=80_000_000, size=8 * PB
    )
    (eg2,) = [x for x in plan2.limits if x.metric == "egress"]
    assert eg2.id == "azure-account-egress-other" and eg2.value == 50e9


def aws(raw: dict[str, Any], region: str) -> dict[str, Any]:
    """A SeaweedFS bucket declared as AWS S3 in ``region`` (the catalogue gives the country)."""
    out = raw | {"provider": "aws", "region": region}
    out.pop("country")
    return out


def test_s3_source_prefixes_requests_and_reported_prices(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """5 PB / 5 billion objects out of S3 into another S3: GETs per partitioned prefix at
    the source, PUTs and parts at the destination, AWS's prices as third parties report them."""
    src_raw = aws(s3_store_config(s3_server, "s3src", "plan-src"), "us-east-1")
    dst_raw = aws(s3_store_config(s3_server, "s3dst", "plan-dst"), "eu-west-1")
    config = write_config(tmp_path, [src_raw, dst_raw])
    data = dataset(11)

    async def setup() -> None:
        store = open_store(StoreConfig.model_validate(src_raw))
        try:
            await fill(store, data)
        finally:
            await store.close()

    run(setup())
    scan(config, "s3src")
    run(run_drill(config, "s3src", "s3dst", sample=30, seed=2))
    scanned = make_plan(config, "s3src", "s3dst", workers=2)
    large = [c for c in scanned.classes if c.multipart_objects]
    assert sum(c.multipart_objects for c in large) == 2  # the two 9 MiB objects
    assert sum(c.parts for c in large) == 4  # 8 MiB + the rest, each
    assert scanned.requests.destination_put == len(data) - 2
    assert {c.label for c in scanned.classes} == {
        SIZE_CLASSES[size_class_of(len(v))].label for v in data.values()
    }

    plan = make_plan(
        config,
        "s3src",
        "s3dst",
        workers=100,
        link_bps=5e9,
        deadline_hours=72,
        objects=5 * 10**9,
        size=5 * PB,
    )
    reads = next(x for x in plan.limits if x.id == "aws-s3-prefix-reads")
    assert reads.demand == pytest.approx(5 * 10**9 / plan.copy_s)
    assert reads.needed == max(1, math.ceil(reads.demand / 5500))
    writes = next(x for x in plan.limits if x.id == "aws-s3-prefix-writes")
    assert writes.side == "destination" and writes.value == 3500
    egress = next(c for c in plan.costs if c.item == "egress")
    assert egress.usd is None and egress.reported_usd == pytest.approx(
        tiered_cost(
            load_tables().price_for("aws", "us-east-1", "egress")[0].reported.tiers or (), 5e6
        )  # type: ignore[union-attr]
    )
    assert plan.cost_with_reported_usd is not None and plan.cost_usd is None
    assert plan.deadline is not None and plan.deadline["hours"] == 72
    if plan.deadline["workers"] is not None:
        check = make_plan(
            config,
            "s3src",
            "s3dst",
            workers=plan.deadline["workers"],
            link_bps=5e9,
            objects=5 * 10**9,
            size=5 * PB,
        )
        assert check.predicted_s <= 72 * 3600
    assert plan.programme is not None and plan.programme.read is None  # AWS's post: not read
    assert plan.programme.reported is not None and plan.programme.reported.conditions


def test_a_drill_that_skipped_sampled_objects_is_said_by_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names a plain directory cannot hold (a tab) are refused by the drill's scratch
    destination: the plan built on that drill says how many sampled objects it skipped and
    why, in its notes and its JSON."""
    objects = {f"ok/{i}": b"x" * (100 + i) for i in range(6)}
    objects |= {"odd/tab\there": b"a tab", "odd/tab\tagain": b"another"}
    put_files(tmp_path / "src", objects)
    (tmp_path / "dst").mkdir()
    write_config(
        tmp_path,
        [fs_store_config(tmp_path / "src", "src"), fs_store_config(tmp_path / "dst", "dst")],
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["scan", "src"]) == 0
    capsys.readouterr()
    assert cli(["drill", "src", "dst", "--sample", "8", "--seed", "1", "--json"]) == 1
    drill = json.loads(capsys.readouterr().out)
    assert drill["sampled_objects"] == 8 and drill["skipped_objects"] == 2
    assert {s["key"] for s in drill["skipped"]} == {"odd/tab\there", "odd/tab\tagain"}
    assert cli(["plan", "src", "dst", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert (p["drill"]["sampled_objects"], p["drill"]["skipped_objects"]) == (8, 2)
    assert {s["key"] for s in p["drill"]["skipped"]} == {"odd/tab\there", "odd/tab\tagain"}
    assert all("cannot hold key" in s["why"] for s in p["drill"]["skipped"]), p["drill"]
    (note,) = [n for n in p["notes"] if "skipped" in n]
    assert "skipped 2 sampled objects of 8" in note and "other 6" in note, note
    assert cli(["plan", "src", "dst"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "note: drill" in text and "skipped 2 sampled objects of 8" in text, text
    assert "odd/tab\\there" in text and "\t" not in text  # the key escaped, not a raw tab
