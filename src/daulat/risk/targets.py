"""Who a recorded restriction event was aimed at: the register's ``target_type`` and the
``daulat risk --sector`` choices. Apart from the register (:mod:`daulat.risk.register`, which
reads YAML into pydantic models) so that the command line lists the choices without loading
either.
"""

from __future__ import annotations

from enum import StrEnum


class TargetType(StrEnum):
    """Who was on the receiving end; also the ``sector`` filter of
    :func:`daulat.risk.register.events_for`."""

    COUNTRY = "country"
    GOVERNMENT = "government"
    MILITARY = "military"
    COMPANY = "company"
    USERS = "users"
    NGO = "ngo"
