"""The provider risk register: sourced events of providers cutting customers off.

The register lives in ``daulat/data/events.yaml`` (shipped as package data). Each entry is
one recorded event: a provider suspending sales, terminating or restricting service,
deleting data, or a related residency decision, protest or restoration. Every event keeps
the sources its facts came from, and its summary is written in our own words.

:func:`load_register` parses and validates the file once per process. A malformed entry
raises :class:`RegisterError` naming the event id and the field at fault, so a bad edit
to the data file is caught by the first test that loads it.

Dates are stored as text in one of two forms, ``YYYY-MM-DD`` or ``YYYY-MM`` when the day
is not known, and are checked to be real calendar dates that are not in the future.
:attr:`Event.start` gives the earliest day the date can mean (the 1st for a month), which
is what sorting and "most recent" use.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from daulat.errors import DaulatError
from daulat.risk.targets import TargetType as TargetType

__all__ = [
    "EU_MEMBER_STATES",
    "Action",
    "DataAccessLost",
    "Event",
    "ProviderId",
    "RegisterError",
    "TargetType",
    "Trigger",
    "events_for",
    "load_register",
    "parse_register",
]

REGISTER_RESOURCE = "data/events.yaml"


class ProviderId(StrEnum):
    """Which daulat provider an event counts against.

    ``aws``, ``azure``, ``gcp`` and ``alibaba`` are the companies behind those clouds
    (Amazon, Microsoft, Google, Alibaba Cloud); ``other`` is everyone else, including
    separately run subsidiaries such as GitHub and LinkedIn.
    """

    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    ALIBABA = "alibaba"
    OTHER = "other"


class Action(StrEnum):
    """What the provider (or the rule binding it) did."""

    SUSPEND_NEW_SALES = "suspend-new-sales"
    TERMINATE = "terminate"
    RESTRICT_ACCESS = "restrict-access"
    DELETE_DATA = "delete-data"
    PROTEST = "protest"
    RESIDENCY_DECISION = "residency-decision"
    RESTORE = "restore"


class Trigger(StrEnum):
    """Why it happened."""

    SANCTIONS = "sanctions"
    POLICY = "policy"
    ACCEPTABLE_USE = "acceptable-use"
    POLITICAL_PRESSURE = "political-pressure"
    LAW = "law"


class DataAccessLost(StrEnum):
    """Whether the customer lost access to its own data."""

    YES = "yes"
    NO = "no"
    PARTIAL = "partial"
    UNKNOWN = "unknown"


# Member states of the European Union, so that an event targeting "EU" matches a store
# whose data sits in, say, DE. ("EU" is an exceptionally reserved ISO 3166-1 code.)
EU_MEMBER_STATES: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()  # noqa: SIM905
)

_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_DATE_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATE_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
# A citation that is not a URL must end in ", YYYY", ", YYYY-MM" or ", YYYY-MM-DD".
_CITATION_RE = re.compile(r"^\S.*\S, \d{4}(?:-\d{2}(?:-\d{2})?)?$")
_MAX_SUMMARY = 320


class RegisterError(DaulatError, ValueError):
    """The register file is malformed; the message names the event and field."""


def _parse_date(text: str) -> tuple[dt.date, bool]:
    """Return (earliest day the text can mean, whether the day is known)."""
    if m := _DATE_DAY_RE.match(text):
        year, month, day = (int(g) for g in m.groups())
        return dt.date(year, month, day), True
    if m := _DATE_MONTH_RE.match(text):
        year, month = (int(g) for g in m.groups())
        return dt.date(year, month, 1), False
    raise ValueError(f"date {text!r} is not YYYY-MM-DD or YYYY-MM")


def _check_date(value: str) -> str:
    try:
        start, _ = _parse_date(value)
    except ValueError as exc:  # bad shape, or e.g. month 13 / 30 February
        raise ValueError(f"invalid date {value!r}: {exc}") from None
    if start > dt.date.today():
        raise ValueError(f"date {value!r} is in the future")
    return value


def _date_to_text(value: Any) -> Any:
    # An unquoted 2024-03-13 in YAML arrives as datetime.date; keep one representation.
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _check_country(value: str) -> str:
    if not _COUNTRY_RE.match(value):
        raise ValueError(f"{value!r} is not an upper-case ISO 3166-1 alpha-2 code")
    return value


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if value is None:
        return []
    return value


def _check_source(value: str) -> str:
    text = value.strip()
    if text != value or not text:
        raise ValueError("source must be non-empty with no surrounding whitespace")
    if text.startswith(("https://", "http://")):
        if " " in text:
            raise ValueError(f"source URL {text!r} contains a space")
        return text
    if not _CITATION_RE.match(text):
        raise ValueError(f"source {text!r} is neither a URL nor 'Publication, YYYY-MM[-DD]'")
    return text


Country = Annotated[str, AfterValidator(_check_country)]
DateText = Annotated[str, BeforeValidator(_date_to_text), AfterValidator(_check_date)]
Source = Annotated[str, AfterValidator(_check_source)]
NonEmpty = Annotated[str, Field(min_length=1)]


class Event(BaseModel):
    """One recorded provider restriction event, with its sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty
    date: DateText
    provider: NonEmpty
    provider_id: ProviderId
    provider_hq_country: Country
    services: tuple[NonEmpty, ...] = Field(min_length=1)
    target_type: TargetType
    target: NonEmpty
    target_country: Annotated[tuple[Country, ...], BeforeValidator(_one_or_many)]
    action: Action
    trigger: Trigger
    data_access_lost: DataAccessLost
    notice_days: Annotated[int, Field(ge=0, strict=True)] | None
    summary: NonEmpty
    sources: tuple[Source, ...] = Field(min_length=1)
    notes: NonEmpty | None = None

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"id {value!r} must be lower-case words joined by '-'")
        return value

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("summary must be a single line")
        if value != value.strip():
            raise ValueError("summary has surrounding whitespace")
        if len(value) > _MAX_SUMMARY:
            raise ValueError(f"summary is {len(value)} characters; keep it to {_MAX_SUMMARY}")
        return value

    @property
    def start(self) -> dt.date:
        """Earliest day the date can mean: the date itself, or the 1st of the month."""
        return _parse_date(self.date)[0]

    @property
    def day_known(self) -> bool:
        """False when the register only records the month."""
        return _parse_date(self.date)[1]

    @property
    def cut_data_access(self) -> bool:
        """True when the customer lost all or part of its access to its own data."""
        return self.data_access_lost in (DataAccessLost.YES, DataAccessLost.PARTIAL)

    def targets_country(self, country: str) -> bool:
        """Whether ``country`` (ISO alpha-2) is among the targets; "EU" covers members."""
        code = country.upper()
        if code in self.target_country:
            return True
        return code in EU_MEMBER_STATES and "EU" in self.target_country


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<entry>"
        parts.append(f"field {field!r}: {err['msg']}")
    return "; ".join(parts)


def parse_register(text: str, *, source: str = REGISTER_RESOURCE) -> list[Event]:
    """Parse and validate register YAML text; raise :class:`RegisterError` on any fault."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegisterError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, list):
        raise RegisterError(f"{source}: expected a list of events at the top level")
    events: list[Event] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise RegisterError(f"{source}: entry #{index + 1} is not a mapping")
        event_id = entry.get("id")
        label = f"event {event_id!r}" if isinstance(event_id, str) else f"entry #{index + 1}"
        try:
            event = Event.model_validate(entry)
        except ValidationError as exc:
            raise RegisterError(f"{source}: {label}: {_describe(exc)}") from exc
        if event.id in seen:
            raise RegisterError(f"{source}: {label}: field 'id': duplicate id")
        seen.add(event.id)
        events.append(event)
    return events


@functools.cache
def load_register() -> list[Event]:
    """Load the packaged register, validated, sorted oldest first (cached; do not mutate)."""
    # Read through importlib.resources so it works from a wheel or a zip, not only a checkout.
    resource = importlib.resources.files("daulat").joinpath(REGISTER_RESOURCE)
    events = parse_register(resource.read_text(encoding="utf-8"))
    return sorted(events, key=lambda e: (e.start, e.id))


def events_for(
    provider_id: str,
    *,
    country: str | None = None,
    sector: TargetType | None = None,
    events: Iterable[Event] | None = None,
) -> list[Event]:
    """Events counted against ``provider_id``, optionally narrowed by target.

    ``country`` keeps events whose targets include that ISO alpha-2 code (an event
    targeting "EU" matches every member state). ``sector`` keeps events whose
    ``target_type`` is that value. ``events`` defaults to :func:`load_register`; pass a
    list to filter something else (tests pass hand-built fixtures).

    A provider id the register does not use (e.g. ``self-hosted`` or ``local``) has no
    events, so the result is empty. Note that ``other`` pools many unrelated providers.
    """
    pool: Sequence[Event] | Iterable[Event] = load_register() if events is None else events
    wanted = provider_id.strip().lower()
    result = [e for e in pool if e.provider_id.value == wanted]
    if country is not None:
        result = [e for e in result if e.targets_country(country)]
    if sector is not None:
        kind = TargetType(sector)
        result = [e for e in result if e.target_type is kind]
    return result
