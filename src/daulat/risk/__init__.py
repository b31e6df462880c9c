"""Provider risk: the sourced register of provider restriction events, and a transparent
exposure score built on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Where each name lives, imported the first time it is read (daulat.lazy): the command line
# imports daulat.risk.targets for its --sector choices, and the register's YAML and models are
# for the risk command only. The TYPE_CHECKING block says the same for type checkers.
_WHERE: dict[str, tuple[str, ...]] = {
    "daulat.risk.register": (
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
    ),
    "daulat.risk.score": (
        "CUT_ACTIONS",
        "FORMULA",
        "RESTRICTIVE_ACTIONS",
        "Component",
        "Exposure",
        "score_exposure",
    ),
}

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

if not TYPE_CHECKING:
    from daulat import lazy

    __getattr__, __dir__ = lazy.exports(
        __name__, {n: m for m, names in _WHERE.items() for n in names}, __all__
    )
