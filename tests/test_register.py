"""The packaged provider risk register: schema, sourcing and filters."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
from collections import Counter

import pytest
import yaml

from daulat.risk import (
    Action,
    DataAccessLost,
    Event,
    ProviderId,
    RegisterError,
    TargetType,
    Trigger,
    events_for,
    load_register,
    parse_register,
)

DATE_RE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


def raw_entries() -> list[dict[str, object]]:
    """The data file exactly as YAML sees it, independent of the loader."""
    text = importlib.resources.files("daulat").joinpath("data/events.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, list)
    return data


def by_id() -> dict[str, Event]:
    return {e.id: e for e in load_register()}


GOOD_ENTRY = """
- id: example-cut-2020
  date: "2020-05-04"
  provider: Example Cloud
  provider_id: other
  provider_hq_country: US
  services: [cloud-storage]
  target_type: company
  target: "Example customer"
  target_country: [ID]
  action: terminate
  trigger: sanctions
  data_access_lost: "yes"
  notice_days: 0
  summary: "An example event used only by the tests."
  sources:
    - https://example.org/report
"""


# --- the packaged register -------------------------------------------------------------


def test_register_loads_and_validates() -> None:
    events = load_register()
    assert all(isinstance(e, Event) for e in events)


def test_register_has_at_least_fifty_events() -> None:
    assert len(load_register()) >= 50


def test_every_event_has_a_source() -> None:
    for e in load_register():
        assert len(e.sources) >= 1, e.id
        for s in e.sources:
            assert s.startswith(("https://", "http://")) or re.search(
                r", \d{4}(-\d{2}){0,2}$", s
            ), (e.id, s)


def test_ids_are_unique_in_the_file() -> None:
    counts = Counter(entry["id"] for entry in raw_entries())
    assert [i for i, n in counts.items() if n > 1] == []
    assert len(counts) == len(load_register())


def test_dates_parse_and_are_not_in_the_future() -> None:
    today = dt.date.today()
    for entry in raw_entries():
        text = entry["date"]
        assert isinstance(text, str), f"{entry['id']}: quote the date"
        assert DATE_RE.match(text), (entry["id"], text)
        fmt = "%Y-%m-%d" if len(text) == 10 else "%Y-%m"
        parsed = dt.datetime.strptime(text, fmt).date()
        assert parsed <= today, (entry["id"], text)
    for e in load_register():
        assert e.start <= today
        assert e.day_known == (len(e.date) == 10)


def test_enum_fields_hold_valid_values() -> None:
    for entry in raw_entries():
        assert entry["provider_id"] in {p.value for p in ProviderId}, entry["id"]
        assert entry["action"] in {a.value for a in Action}, entry["id"]
        assert entry["trigger"] in {t.value for t in Trigger}, entry["id"]
        assert entry["target_type"] in {t.value for t in TargetType}, entry["id"]
        assert entry["data_access_lost"] in {d.value for d in DataAccessLost}, entry["id"]
    for e in load_register():
        assert isinstance(e.action, Action)
        assert isinstance(e.trigger, Trigger)
        assert isinstance(e.target_type, TargetType)
        assert isinstance(e.data_access_lost, DataAccessLost)


def test_country_codes_and_one_line_summaries() -> None:
    for e in load_register():
        assert COUNTRY_RE.match(e.provider_hq_country), e.id
        assert all(COUNTRY_RE.match(c) for c in e.target_country), e.id
        assert "\n" not in e.summary and e.summary.strip() == e.summary, e.id
        assert e.notice_days is None or e.notice_days >= 0, e.id


def test_provider_ids_match_the_named_company() -> None:
    names = {
        ProviderId.AWS: ("Amazon",),
        ProviderId.AZURE: ("Microsoft",),
        ProviderId.GCP: ("Google",),
        ProviderId.ALIBABA: ("Alibaba",),
    }
    for e in load_register():
        if e.provider_id in names:
            assert any(n in e.provider for n in names[e.provider_id]), (e.id, e.provider)
        # GitHub and LinkedIn are separately run subsidiaries: they count as "other".
        if e.provider.startswith(("GitHub", "LinkedIn")):
            assert e.provider_id is ProviderId.OTHER, e.id


def test_aws_parler_event_present() -> None:
    e = by_id()["aws-parler-2021"]
    assert e.provider_id is ProviderId.AWS
    assert e.date == "2021-01-10"
    assert e.target == "Parler"
    assert e.action is Action.TERMINATE
    assert e.notice_days == 1


def test_microsoft_imod_event_present() -> None:
    e = by_id()["microsoft-imod-azure-2025"]
    assert e.provider_id is ProviderId.AZURE
    assert e.target_type is TargetType.MILITARY
    assert e.target_country == ("IL",)
    assert e.action is Action.TERMINATE
    assert len(e.sources) >= 2


def test_register_is_sorted_and_cached() -> None:
    events = load_register()
    assert events is load_register()
    keys = [(e.start, e.id) for e in events]
    assert keys == sorted(keys)


def test_every_daulat_cloud_provider_has_events() -> None:
    for pid in ("aws", "azure", "gcp", "alibaba"):
        assert events_for(pid), pid


# --- filters ---------------------------------------------------------------------------


def test_events_for_filters_by_provider_country_and_sector() -> None:
    azure_ru = events_for("azure", country="RU")
    assert {e.id for e in azure_ru} >= {
        "microsoft-russia-new-sales-2022",
        "microsoft-russia-cloud-cutoff-2024",
    }
    assert all(e.provider_id is ProviderId.AZURE and "RU" in e.target_country for e in azure_ru)

    companies = events_for("azure", sector=TargetType.COMPANY)
    assert companies and all(e.target_type is TargetType.COMPANY for e in companies)

    both = events_for("AZURE", country="ru", sector=TargetType.COMPANY)
    assert [e.id for e in both] == ["microsoft-russia-cloud-cutoff-2024"]


def test_eu_target_matches_member_states_only() -> None:
    ids_de = {e.id for e in events_for("azure", country="DE")}
    assert "microsoft-eu-data-boundary-2025" in ids_de
    ids_us = {e.id for e in events_for("azure", country="US")}
    assert "microsoft-eu-data-boundary-2025" not in ids_us


def test_unknown_provider_has_no_events() -> None:
    assert events_for("self-hosted") == []
    assert events_for("local", country="ID") == []


def test_events_for_accepts_explicit_events() -> None:
    events = parse_register(GOOD_ENTRY)
    assert [e.id for e in events_for("other", country="ID", events=events)] == ["example-cut-2020"]
    assert events_for("aws", events=events) == []


# --- validation errors name the event and the field -----------------------------------


def test_good_entry_parses() -> None:
    (e,) = parse_register(GOOD_ENTRY)
    assert e.data_access_lost is DataAccessLost.YES
    assert e.cut_data_access
    assert e.start == dt.date(2020, 5, 4)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("action: terminate", "action: nuke", "action"),
        ("trigger: sanctions", "trigger: whim", "trigger"),
        ("target_type: company", "target_type: planet", "target_type"),
        ('data_access_lost: "yes"', "data_access_lost: maybe", "data_access_lost"),
        ("provider_id: other", "provider_id: oracle", "provider_id"),
        ('date: "2020-05-04"', 'date: "2020-13"', "date"),
        ('date: "2020-05-04"', 'date: "2023-02-30"', "date"),
        ('date: "2020-05-04"', 'date: "04/05/2020"', "date"),
        ('date: "2020-05-04"', 'date: "2999-01-01"', "date"),
        ("provider_hq_country: US", "provider_hq_country: usa", "provider_hq_country"),
        ("target_country: [ID]", "target_country: [ID, NO]", "target_country"),
        ("notice_days: 0", "notice_days: -3", "notice_days"),
        ("notice_days: 0", 'notice_days: "5"', "notice_days"),
        ("    - https://example.org/report", "    - somebody said so", "sources"),
        ("  sources:\n    - https://example.org/report", "  sources: []", "sources"),
        (
            'summary: "An example event used only by the tests."',
            'summary: "two\\nlines"',
            "summary",
        ),
        ("id: example-cut-2020", "id: Example_Cut", "id"),
    ],
)
def test_errors_name_event_and_field(old: str, new: str, field: str) -> None:
    bad = GOOD_ENTRY.replace(old, new)
    assert bad != GOOD_ENTRY
    with pytest.raises(RegisterError) as info:
        parse_register(bad)
    message = str(info.value)
    expected_label = "Example_Cut" if field == "id" else "example-cut-2020"
    assert repr(expected_label) in message
    assert f"'{field}" in message


def test_missing_and_unknown_fields_are_named() -> None:
    missing = GOOD_ENTRY.replace('  target: "Example customer"\n', "")
    with pytest.raises(RegisterError, match=r"'example-cut-2020'.*'target'"):
        parse_register(missing)
    extra = GOOD_ENTRY + "  verified: true\n"
    with pytest.raises(RegisterError, match=r"'example-cut-2020'.*'verified'"):
        parse_register(extra)


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(RegisterError, match=r"'example-cut-2020'.*duplicate"):
        parse_register(GOOD_ENTRY + GOOD_ENTRY)


def test_month_only_and_unquoted_dates() -> None:
    (month,) = parse_register(GOOD_ENTRY.replace('"2020-05-04"', '"2020-05"'))
    assert month.date == "2020-05" and not month.day_known
    assert month.start == dt.date(2020, 5, 1)
    (unquoted,) = parse_register(GOOD_ENTRY.replace('"2020-05-04"', "2020-05-04"))
    assert unquoted.date == "2020-05-04"


def test_citation_sources_need_a_date() -> None:
    ok = GOOD_ENTRY.replace("https://example.org/report", '"NPR, 2024-04"')
    assert parse_register(ok)[0].sources == ("NPR, 2024-04",)
    with pytest.raises(RegisterError, match="sources"):
        parse_register(GOOD_ENTRY.replace("https://example.org/report", '"NPR"'))


def test_top_level_must_be_a_list() -> None:
    with pytest.raises(RegisterError, match="list"):
        parse_register("id: x\n")
