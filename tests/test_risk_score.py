"""The exposure score, checked against hand-built events and the documented formula.

Every test passes its events in explicitly, so nothing here depends on what the packaged
register happens to contain.
"""

from __future__ import annotations

from typing import Any

import pytest

from daulat.risk import Action, Event, Exposure, TargetType, Trigger, score_exposure
from daulat.risk import score as score_module


def make_event(event_id: str, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": event_id,
        "date": "2021-06-01",
        "provider": "Example Cloud",
        "provider_id": "aws",
        "provider_hq_country": "US",
        "services": ["cloud"],
        "target_type": "company",
        "target": "someone",
        "target_country": ["US"],
        "action": "terminate",
        "trigger": "sanctions",
        "data_access_lost": "no",
        "notice_days": None,
        "summary": "Hand-built fixture event.",
        "sources": ["https://example.org/fixture"],
    }
    base.update(fields)
    return Event.model_validate(base)


# Seven events: five for "aws" that matter, one "aws" restore and protest that must add no
# points, and one for "azure" that must be ignored when scoring aws.
FIXTURE = [
    make_event(
        "f-terminate-company-us",
        action="terminate",
        target_type="company",
        target_country=["US"],
        data_access_lost="yes",
        notice_days=14,
        date="2020-01-15",
    ),
    make_event(
        "f-restrict-users-id",
        action="restrict-access",
        target_type="users",
        target_country=["ID"],
        data_access_lost="partial",
        notice_days=None,
        trigger="law",
        date="2021-03",
    ),
    make_event(
        "f-new-sales-country-id",
        action="suspend-new-sales",
        target_type="country",
        target_country=["ID"],
        data_access_lost="no",
        notice_days=0,  # not a cut-off: must not drive the notice component
        date="2022-07-01",
    ),
    make_event(
        "f-delete-company-eu",
        action="delete-data",
        target_type="company",
        target_country=["EU"],
        data_access_lost="yes",
        notice_days=40,
        trigger="acceptable-use",
        date="2023-02-10",
    ),
    make_event(
        "f-restore-id",
        action="restore",
        target_type="country",
        target_country=["ID"],
        date="2024-05",
    ),
    make_event(
        "f-protest-government",
        action="protest",
        target_type="government",
        target_country=["ID"],
        trigger="political-pressure",
        date="2024-05-20",
    ),
    make_event(
        "f-other-provider",
        provider_id="azure",
        action="terminate",
        target_country=["ID"],
        data_access_lost="yes",
        notice_days=0,
        date="2025-01-01",
    ),
]


def values(exposure: Exposure) -> dict[str, int]:
    return {c.name: c.value for c in exposure.components}


def test_components_match_hand_computation() -> None:
    exposure = score_exposure("aws", "US", "ID", sector=TargetType.COMPANY, events=FIXTURE)
    # By hand, from the formula in the module docstring:
    #   CUT = terminate-company-us, restrict-users-id, delete-company-eu        -> 3
    #   LOST = all three (yes, partial, yes)                                   -> 3
    #   RESTRICTIVE targeting ID = restrict-users-id, new-sales-country-id     -> 2
    #   RESTRICTIVE with target_type company = terminate-..., delete-...       -> 2
    #   shortest known notice among CUT = 14 days (the 0 belongs to a sales stop)
    expected = {
        "jurisdiction": 30,  # US != ID
        "track_record": min(20, 4 * 3),  # 12
        "data_lost": min(15, 5 * 3),  # 15
        "country": min(15, 5 * 2),  # 10
        "sector": min(10, 5 * 2),  # 10
        "notice": 5,  # 2..30 days
    }
    assert values(exposure) == expected
    assert exposure.score == sum(expected.values()) == 82


def test_user_country_widens_the_country_component() -> None:
    # With users in DE, the delete-data event targeting "EU" also counts: 3 events.
    exposure = score_exposure("aws", "US", "ID", user_country="DE", events=FIXTURE)
    assert exposure.component("country").value == min(15, 5 * 3)
    assert exposure.component("sector").value == 0
    assert exposure.score == 30 + 12 + 15 + 15 + 0 + 5


def test_foreign_hq_scores_higher_than_same_country_on_identical_events() -> None:
    foreign = score_exposure("aws", "US", "ID", sector="company", events=FIXTURE)
    domestic = score_exposure("aws", "ID", "ID", sector="company", events=FIXTURE)
    assert foreign.score > domestic.score
    assert foreign.score - domestic.score == 30
    assert domestic.component("jurisdiction").value == 0
    assert {k: v for k, v in values(foreign).items() if k != "jurisdiction"} == {
        k: v for k, v in values(domestic).items() if k != "jurisdiction"
    }


@pytest.mark.parametrize("provider", ["aws", "azure", "gcp", "alibaba", "other", "local"])
@pytest.mark.parametrize("hq", ["US", "CN", "ID"])
@pytest.mark.parametrize("sector", [None, *TargetType])
def test_score_is_the_sum_of_components(provider: str, hq: str, sector: TargetType | None) -> None:
    exposure = score_exposure(provider, hq, "ID", user_country="DE", sector=sector, events=FIXTURE)
    assert exposure.score == sum(c.value for c in exposure.components)
    assert 0 <= exposure.score <= 100
    for c in exposure.components:
        assert 0 <= c.value <= c.weight
        assert f"(+{c.value})" in c.reason
    assert [c.name for c in exposure.components] == list(score_module.COMPONENT_NAMES)
    assert sum(c.weight for c in exposure.components) == 100


def test_caps_hold_with_many_events() -> None:
    many = [
        make_event(
            f"m-{i}",
            action="terminate",
            target_type="company",
            target_country=["ID"],
            data_access_lost="yes",
            notice_days=0,
        )
        for i in range(30)
    ]
    exposure = score_exposure("aws", "US", "ID", sector="company", events=many)
    assert values(exposure) == {
        "jurisdiction": 30,
        "track_record": 20,
        "data_lost": 15,
        "country": 15,
        "sector": 10,
        "notice": 10,
    }
    assert exposure.score == 100


@pytest.mark.parametrize(
    ("days", "points"),
    [(0, 10), (1, 10), (2, 5), (30, 5), (31, 0), (365, 0), (None, 0)],
)
def test_notice_bands(days: int | None, points: int) -> None:
    events = [make_event("n-1", notice_days=days)]
    notice = score_exposure("aws", "US", "US", events=events).component("notice")
    assert notice.value == points
    if days is None:
        assert "no notice period recorded" in notice.reason
    else:
        unit = "day" if days == 1 else "days"
        assert f"shortest recorded notice: {days} {unit}" in notice.reason


def test_no_events_scores_only_jurisdiction() -> None:
    exposure = score_exposure("aws", "US", "ID", sector="company", events=[])
    assert values(exposure) == {
        "jurisdiction": 30,
        "track_record": 0,
        "data_lost": 0,
        "country": 0,
        "sector": 0,
        "notice": 0,
    }
    assert exposure.most_recent_event is None
    assert exposure.events_considered == 0
    assert exposure.notice_days_observed == ()


def test_reasons_are_plain_english() -> None:
    exposure = score_exposure("aws", "US", "ID", sector="company", events=FIXTURE)
    reasons = {c.name: c.reason for c in exposure.components}
    assert reasons["jurisdiction"] == (
        "foreign law reaches data: provider HQ US ≠ data country ID (+30)"
    )
    assert reasons["sector"].startswith(
        "2 recorded events of aws restricting customers in sector company, "
        "of which 2 cut data access"
    )
    assert reasons["notice"].startswith(
        "shortest recorded notice: 14 days (f-terminate-company-us)"
    )
    assert "3 recorded events of aws cutting customers off" in reasons["track_record"]
    none_given = score_exposure("aws", "US", "ID", events=FIXTURE).component("sector")
    assert none_given.reason == "sector not given (+0)"


def test_counts_recent_event_and_notices() -> None:
    exposure = score_exposure("aws", "US", "ID", events=FIXTURE)
    assert exposure.events_considered == 6  # the azure event is not counted
    assert exposure.counts_by_action == {
        Action.SUSPEND_NEW_SALES: 1,
        Action.TERMINATE: 1,
        Action.RESTRICT_ACCESS: 1,
        Action.DELETE_DATA: 1,
        Action.PROTEST: 1,
        Action.RESIDENCY_DECISION: 0,
        Action.RESTORE: 1,
    }
    assert exposure.counts_by_trigger == {
        Trigger.SANCTIONS: 3,
        Trigger.POLICY: 0,
        Trigger.ACCEPTABLE_USE: 1,
        Trigger.POLITICAL_PRESSURE: 1,
        Trigger.LAW: 1,
    }
    assert sum(exposure.counts_by_action.values()) == exposure.events_considered
    # 2024-05-20 is later than 2024-05 (read as the 1st of May).
    assert exposure.most_recent_event is not None
    assert exposure.most_recent_event.id == "f-protest-government"
    assert exposure.notice_days_observed == (0, 14, 40)


def test_restore_and_protest_add_no_points() -> None:
    quiet = [e for e in FIXTURE if e.action in (Action.RESTORE, Action.PROTEST)]
    exposure = score_exposure("aws", "ID", "ID", sector="government", events=quiet)
    assert exposure.score == 0
    assert exposure.events_considered == 2


def test_eu_hq_with_member_state_data_is_one_jurisdiction() -> None:
    same = score_exposure("other", "EU", "DE", events=[])
    assert same.component("jurisdiction").value == 0
    foreign = score_exposure("other", "EU", "US", events=[])
    assert foreign.component("jurisdiction").value == 30


def test_inputs_are_normalised_and_checked() -> None:
    exposure = score_exposure(" AWS ", "us", "id", user_country="de", events=FIXTURE)
    assert (exposure.provider_id, exposure.provider_hq_country, exposure.data_country) == (
        "aws",
        "US",
        "ID",
    )
    assert exposure.user_country == "DE"
    with pytest.raises(ValueError):
        score_exposure("aws", "USA", "ID", events=[])
    with pytest.raises(ValueError):
        score_exposure("aws", "US", "I1", events=[])
    with pytest.raises(ValueError):
        score_exposure("aws", "US", "ID", sector="bank", events=[])


def test_formula_is_in_the_module_docstring() -> None:
    assert score_module.__doc__ is not None
    assert score_module.FORMULA in score_module.__doc__
    exposure = score_exposure("aws", "US", "ID", events=[])
    assert exposure.formula == score_module.FORMULA
    assert "exposure 30/100" in exposure.explain()
