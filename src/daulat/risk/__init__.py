"""Provider risk: the sourced register of provider restriction events, and a transparent
exposure score built on it."""

from daulat.risk.register import (
    EU_MEMBER_STATES,
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
from daulat.risk.score import (
    CUT_ACTIONS,
    FORMULA,
    RESTRICTIVE_ACTIONS,
    Component,
    Exposure,
    score_exposure,
)

__all__ = [
    "CUT_ACTIONS",
    "EU_MEMBER_STATES",
    "FORMULA",
    "RESTRICTIVE_ACTIONS",
    "Action",
    "Component",
    "DataAccessLost",
    "Event",
    "Exposure",
    "ProviderId",
    "RegisterError",
    "TargetType",
    "Trigger",
    "events_for",
    "load_register",
    "parse_register",
    "score_exposure",
]
