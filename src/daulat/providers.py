"""The provider catalogue: where a provider can keep your data, and whose law reaches it.

daulat answers "under whose law does this bucket live?". Two facts decide that: the country
of the data centre (its law applies to anything on its soil) and the country of the company
that runs the service (some laws, like the US CLOUD Act or China's National Intelligence Law,
follow the company rather than the disk). The catalogue holds both, per provider and per
region, in ``daulat/data/providers.toml`` with a source URL for every claim, so that a
report can cite where each answer came from and a reviewer can check it.

The data lives in TOML rather than in code so that regions can be added without touching
logic, and it is validated when loaded so that a typo (``"de"`` instead of ``"DE"``, a law
without a source) fails loudly in tests instead of producing a wrong answer for a user.

Usage::

    from daulat.providers import load_catalogue

    catalogue = load_catalogue()
    region = catalogue.region("alibaba", "ap-southeast-5")        # Jakarta, ID
    catalogue.provider("alibaba").jurisdictions(region.country)   # ["ID", "CN"]
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from daulat.errors import DaulatError

__all__ = [
    "ISO_3166_ALPHA2",
    "Catalogue",
    "CatalogueError",
    "Caveat",
    "Law",
    "Provider",
    "ProviderId",
    "Region",
    "S3Profile",
    "UnknownProvider",
    "UnknownRegion",
    "load_catalogue",
    "parse_catalogue",
]

# Officially assigned ISO 3166-1 alpha-2 codes (249). Kept here rather than taken from a
# dependency because the set changes about once a decade and a shape check alone
# ("two capital letters") would accept nonsense such as "EU" or "UK".
_ISO_3166_ALPHA2_TEXT = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET
    FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
    HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT
    JE JM JO JP
    KE KG KH KI KM KN KP KR KW KY KZ
    LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ
    OM
    PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA
    RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
    UA UG UM US UY UZ
    VA VC VE VG VI VN VU
    WF WS
    YE YT
    ZA ZM ZW
"""
ISO_3166_ALPHA2: frozenset[str] = frozenset(_ISO_3166_ALPHA2_TEXT.split())

_DATA_FILE = "data/providers.toml"


def _country_code(code: str) -> str:
    """Accept only an assigned ISO 3166-1 alpha-2 code, written in upper case.

    Upper case is required rather than normalised so that the data file has one spelling
    per country and comparisons elsewhere can use plain equality.
    """
    if code not in ISO_3166_ALPHA2:
        raise ValueError(f"{code!r} is not an upper-case ISO 3166-1 alpha-2 country code")
    return code


def _url(value: str) -> str:
    """Require an absolute http(s) URL: a source nobody can open is no source."""
    if not value.startswith(("https://", "http://")) or len(value) < 12:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    return value


def _text(value: str) -> str:
    """Refuse blank strings: an empty name or summary would print as nothing in a report."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


CountryCode = Annotated[str, AfterValidator(_country_code)]
Url = Annotated[str, AfterValidator(_url)]
Text = Annotated[str, AfterValidator(_text)]


class _Model(BaseModel):
    """Immutable, strict base: the loaded catalogue is cached and shared by every caller,
    so nobody may change it in place, and unknown keys in the data file are typos."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ProviderId(StrEnum):
    """The kinds of store daulat knows. ``self-hosted`` and ``local`` are not clouds: their
    data sits wherever the operator put it, so the operator must declare the country."""

    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    ALIBABA = "alibaba"
    SELF_HOSTED = "self-hosted"
    LOCAL = "local"


class CatalogueError(DaulatError, ValueError):
    """The catalogue data is malformed or inconsistent. This is a bug in the data file,
    never in user input, so it is raised at load time for tests to catch."""


class UnknownProvider(DaulatError, KeyError):
    """No provider has this id. Carries the valid ids so the message can list them."""

    def __init__(self, provider: str, valid: Sequence[str]) -> None:
        super().__init__(provider)
        self.provider = provider
        self.valid: tuple[str, ...] = tuple(valid)

    def __str__(self) -> str:
        # KeyError.__str__ would print only repr(provider); say what would have worked.
        return f"unknown provider {self.provider!r}; valid providers: {', '.join(self.valid)}"


class UnknownRegion(DaulatError, LookupError):
    """The provider has no region with this id in the catalogue.

    Raised instead of guessing a country: a wrong jurisdiction is worse than none. Carries
    a few close matches because the usual cause is a typo or a provider's display name.
    """

    def __init__(
        self,
        provider: ProviderId,
        region: str,
        suggestions: Sequence[str],
        *,
        country_required: bool = False,
    ) -> None:
        self.provider = provider
        self.region = region
        self.suggestions: tuple[str, ...] = tuple(suggestions)
        self.country_required = country_required
        super().__init__(self._message())

    def _message(self) -> str:
        base = f"{self.provider.value} has no region {self.region!r} in the catalogue"
        if self.country_required:
            return f"{base}: {self.provider.value} stores have no regions, declare their country"
        if self.suggestions:
            return f"{base}; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
        return base


class Law(_Model):
    """A law that lets a state compel a provider to hand over data.

    Only laws that reach data *regardless of where it is stored* are recorded per provider;
    the law of the data-centre country always applies and needs no entry. ``source`` is
    mandatory because a legal claim without a citation cannot be checked.
    """

    id: Text
    name: Text
    citation: Text
    jurisdiction: CountryCode
    summary: Text
    source: Url


class Region(_Model):
    """One place a provider can store data. ``country`` is where the disks are, hence
    whose territorial law applies; ``note`` flags regions run by another legal entity
    (AWS China, Azure China, partner regions), restricted or closing regions, and
    locations that are not a single data centre."""

    id: Text
    country: CountryCode
    location: Text
    note: Text | None = None


class Caveat(_Model):
    """A provider behaviour that breaks naive S3 clients but fits no boolean field."""

    summary: Text
    source: Url


_S3_QUIRKS = (
    "endpoint",
    "endpoints",
    "virtual_hosted_style",
    "aws_chunked_encoding",
    "signing_region",
)
#: The ``endpoint_kind`` values a store's table may name.
ENDPOINT_KINDS = ("public", "internal", "accelerate")


class Guide(_Model):
    """The provider's own guide for S3 clients that the profile follows, and when daulat's
    profile was last checked against it (``read``; ``updated``: the date the page gave)."""

    url: Url
    also: list[Url] = []
    updated: Text | None = None
    read: date


class CustomDomain(_Model):
    """Regions (by country) where the provider requires new accounts to reach buckets through
    a custom domain of their own for data operations, since ``since``."""

    countries: list[CountryCode]
    since: date
    source: Url


class S3Profile(_Model):
    """How to talk S3 to this provider without tripping over its differences from AWS.

    - ``endpoint``: URL template with ``{region}``, or a fixed URL, or ``None`` when the
      AWS SDK default is right (AWS itself).
    - ``virtual_hosted_style``: address buckets as ``bucket.host`` rather than
      ``host/bucket``. Alibaba OSS refuses path style (``SecondLevelDomainForbidden``).
    - ``aws_chunked_encoding``: whether the service accepts ``aws-chunked`` request bodies
      (streaming SigV4 and checksum trailers, which recent AWS SDKs send by default). When
      false, clients must send plain bodies and compute checksums only when required.

    Every quirk has a source: either its own entry in ``sources`` or the profile-wide
    ``source``.
    """

    endpoint: Text | None = None
    endpoints: dict[str, Text] = {}
    virtual_hosted_style: bool
    aws_chunked_encoding: bool
    signing_region: Text | None = None
    source: Url | None = None
    sources: dict[str, Url] = {}
    caveats: list[Caveat] = []
    guide: Guide | None = None
    custom_domain: CustomDomain | None = None

    @model_validator(mode="after")
    def _every_quirk_has_a_source(self) -> S3Profile:
        unknown = sorted(set(self.sources) - set(_S3_QUIRKS))
        if unknown:
            raise ValueError(f"sources for unknown S3 quirks: {', '.join(unknown)}")
        for quirk in _S3_QUIRKS:
            if getattr(self, quirk) in (None, {}):
                continue
            if self.source_for(quirk) is None:
                raise ValueError(f"S3 quirk {quirk!r} has no source")
        for url in (self.endpoint, *self.endpoints.values()):
            if url is not None and not url.startswith("https://"):
                raise ValueError(f"S3 endpoint {url!r} must use https")
        unknown_kinds = sorted(set(self.endpoints) - set(ENDPOINT_KINDS))
        if unknown_kinds:
            raise ValueError(f"unknown endpoint kinds: {', '.join(unknown_kinds)}")
        if self.endpoints and self.endpoints.get("public") != self.endpoint:
            raise ValueError("endpoints.public must be the profile's endpoint")
        return self

    def source_for(self, quirk: str) -> str | None:
        """The URL that documents ``quirk``: its own source, else the profile's."""
        return self.sources.get(quirk, self.source)

    def endpoint_for(self, region: str, kind: str | None = None) -> str | None:
        """The endpoint URL for ``region`` (of ``kind``, one of :attr:`endpoints`; the default
        one when None), or ``None`` to let the SDK choose.

        Plain substitution rather than ``str.format`` so that a stray brace in the data
        cannot raise or expand anything else. The region is not checked here: look it up
        with :meth:`Catalogue.region` first so an unknown one fails with suggestions. A kind
        the profile does not have raises ``ValueError`` (the config check refuses it first).
        """
        template = self.endpoint
        if kind is not None:
            if kind not in self.endpoints:
                raise ValueError(f"no {kind!r} endpoint for this provider")
            template = self.endpoints[kind]
        if template is None:
            return None
        return template.replace("{region}", region)

    def signing_region_for(self, region: str) -> str:
        """The region requests to ``region`` are signed for (SigV4 credential scope)."""
        if self.signing_region is None:
            return region
        return self.signing_region.replace("{region}", region)


def _normalise_region(region_id: str) -> str:
    """Map the spellings people paste to catalogue ids: Azure display names ("West
    Europe"), Cloud Storage's upper-case locations ("US-CENTRAL1"), stray whitespace."""
    return "".join(region_id.split()).lower()


class Provider(_Model):
    """A storage provider: who runs it, which laws follow it, and where it keeps data."""

    id: ProviderId
    name: Text
    hq_country: CountryCode | None = None
    laws: list[Law]
    regions: dict[str, Region] = {}
    s3: S3Profile | None = None
    country_required: bool = False
    sources: list[Url] = []

    @model_validator(mode="after")
    def _consistent(self) -> Provider:
        for key, region in self.regions.items():
            if key != region.id:
                raise ValueError(f"region key {key!r} does not match its id {region.id!r}")
            if key != _normalise_region(key):
                # Lookups normalise to lower case without spaces; ids must already be so,
                # or two spellings could collide.
                raise ValueError(f"region id {key!r} must be lower case without spaces")
        if self.country_required:
            # Operator-declared location: catalogued regions or a company seat would
            # contradict the declaration.
            if self.regions or self.hq_country is not None:
                raise ValueError(f"{self.id.value}: country_required excludes regions/hq")
        else:
            if not self.regions:
                raise ValueError(f"{self.id.value}: a cloud provider needs regions")
            if self.hq_country is None:
                raise ValueError(f"{self.id.value}: a cloud provider needs hq_country")
            if not self.sources:
                raise ValueError(f"{self.id.value}: region list has no sources")
        return self

    def region(self, region_id: str) -> Region:
        """Look up a region by id, accepting case and spacing variants.

        Raises :class:`UnknownRegion` with up to three close matches rather than
        returning ``None``, because callers would otherwise report no jurisdiction at all.
        """
        key = _normalise_region(region_id)
        found = self.regions.get(key)
        if found is None:
            close = difflib.get_close_matches(key, list(self.regions), n=3, cutoff=0.6)
            raise UnknownRegion(self.id, region_id, close, country_required=self.country_required)
        return found

    def jurisdictions(self, country: str) -> list[str]:
        """ISO codes of the states whose law can compel access to data stored in
        ``country`` at this provider.

        The data-centre country comes first (territorial law always applies), then the
        provider's home country (its laws follow the company, e.g. the CLOUD Act). For
        self-hosted and local stores there is no company, so only ``country`` counts.
        """
        where = _country_code(country.strip().upper())
        found = [where]
        if self.hq_country is not None and self.hq_country != where:
            found.append(self.hq_country)
        return found


class Catalogue(_Model):
    """Every provider daulat knows, keyed by id. Load it with :func:`load_catalogue`."""

    providers: dict[ProviderId, Provider]

    @model_validator(mode="after")
    def _complete(self) -> Catalogue:
        missing = [p.value for p in ProviderId if p not in self.providers]
        if missing:
            # Every ProviderId must resolve, or code that switches on the enum breaks.
            raise ValueError(f"catalogue lacks providers: {', '.join(missing)}")
        for key, provider in self.providers.items():
            if key != provider.id:
                raise ValueError(f"provider key {key.value!r} does not match {provider.id!r}")
        return self

    def provider(self, pid: ProviderId | str) -> Provider:
        """The provider with this id; raises :class:`UnknownProvider` listing valid ids."""
        try:
            key = ProviderId(pid.strip().lower() if isinstance(pid, str) else pid)
        except ValueError:
            raise UnknownProvider(str(pid), [p.value for p in ProviderId]) from None
        return self.providers[key]

    def region(self, pid: ProviderId | str, region_id: str) -> Region:
        """The region ``region_id`` of provider ``pid``; raises :class:`UnknownProvider`
        or :class:`UnknownRegion`."""
        return self.provider(pid).region(region_id)


def parse_catalogue(raw: Mapping[str, Any]) -> Catalogue:
    """Build a validated catalogue from the parsed TOML document.

    The file defines each law once under ``[laws.<id>]`` and providers refer to laws by
    id, so the CLOUD Act is written once rather than three times; ids of providers,
    laws and regions come from their table keys. Raises :class:`CatalogueError` for any
    problem, with pydantic's field-level detail chained.
    """
    try:
        laws_table: Mapping[str, Any] = raw.get("laws", {})
        providers_table: Mapping[str, Any] = raw["providers"]
        extra = sorted(set(raw) - {"laws", "providers"})
        if extra:
            raise CatalogueError(f"unknown top-level keys: {', '.join(extra)}")
        laws = {lid: {**body, "id": lid} for lid, body in laws_table.items()}
        used: set[str] = set()
        providers: dict[str, Any] = {}
        for pid, body in providers_table.items():
            refs: list[str] = list(body.get("laws", []))
            unknown = [ref for ref in refs if ref not in laws]
            if unknown:
                raise CatalogueError(f"provider {pid!r} cites undefined laws: {unknown}")
            used.update(refs)
            regions = {rid: {**r, "id": rid} for rid, r in body.get("regions", {}).items()}
            providers[pid] = {
                **body,
                "id": pid,
                "laws": [laws[ref] for ref in refs],
                "regions": regions,
            }
        unused = sorted(set(laws) - used)
        if unused:
            raise CatalogueError(f"laws defined but cited by no provider: {unused}")
        return Catalogue.model_validate({"providers": providers})
    except ValidationError as exc:
        raise CatalogueError(f"invalid provider catalogue:\n{exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise CatalogueError(f"malformed provider catalogue: {exc!r}") from exc


@functools.cache
def load_catalogue() -> Catalogue:
    """Load and validate the catalogue shipped with daulat (cached: the file is package
    data and cannot change while the process runs).

    Read through :mod:`importlib.resources` so it works from a wheel or a zip, not only
    from a source checkout.
    """
    text = resources.files("daulat").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return parse_catalogue(tomllib.loads(text))
