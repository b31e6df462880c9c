"""Notes ``daulat stores`` shows beside a store: what the provider's documentation says that
store needs and the configuration does not show (from the catalogue, with its source)."""

from __future__ import annotations

from daulat.config import StoreConfig
from daulat.providers import UnknownRegion, load_catalogue

#: How the notes name the countries of a custom-domain rule.
_AREA = {"CN": "the Chinese mainland"}


def store_notes(cfg: StoreConfig) -> list[str]:
    """What ``cfg`` needs by its provider's documentation beyond what it configures."""
    provider = load_catalogue().provider(cfg.provider)
    profile = provider.s3
    rule = profile.custom_domain if profile is not None else None
    if rule is None or cfg.scheme != "s3" or cfg.region is None or cfg.endpoint is not None:
        return []  # an endpoint of the user's own (a custom domain, a gateway) is not the rule's
    if cfg.endpoint_kind == "internal":
        return []  # the rule restricts the default public endpoints
    try:
        region = provider.region(cfg.region)
    except UnknownRegion:
        return []
    if region.country not in rule.countries:
        return []
    area = _AREA.get(region.country, region.country)
    return [
        f"bucket in {region.id} ({region.location}, {area}): {provider.name} requires "
        f"accounts created on or after {rule.since.isoformat()} to use a custom domain (CNAME) "
        "bound to the bucket for data operations there; its default public endpoints refuse "
        f"them. Set 'endpoint' to that domain. Source: {rule.source}"
    ]
