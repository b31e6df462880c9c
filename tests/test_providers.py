"""Tests for the provider catalogue: the data file's facts and the loader's guarantees."""

from __future__ import annotations

import copy
import re
import tomllib
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from daulat.providers import (
    ISO_3166_ALPHA2,
    Catalogue,
    CatalogueError,
    ProviderId,
    UnknownProvider,
    UnknownRegion,
    load_catalogue,
    parse_catalogue,
)

US_PROVIDERS = (ProviderId.AWS, ProviderId.AZURE, ProviderId.GCP)
CLOUDS = (*US_PROVIDERS, ProviderId.ALIBABA)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def raw_document() -> dict[str, Any]:
    """A fresh, mutable copy of the shipped TOML document."""
    text = resources.files("daulat").joinpath("data/providers.toml").read_text(encoding="utf-8")
    return copy.deepcopy(tomllib.loads(text))


# --- loading -------------------------------------------------------------------------


def test_load_is_cached_and_complete(catalogue: Catalogue) -> None:
    assert load_catalogue() is catalogue
    assert set(catalogue.providers) == set(ProviderId)


def test_loader_keeps_every_region_in_the_file(catalogue: Catalogue) -> None:
    raw = raw_document()["providers"]
    for pid in ProviderId:
        assert set(catalogue.provider(pid).regions) == set(raw[pid.value].get("regions", {}))


def test_catalogue_is_immutable(catalogue: Catalogue) -> None:
    with pytest.raises(ValidationError):
        catalogue.provider("aws").name = "Something else"


# --- data quality ----------------------------------------------------------------------


def test_every_region_country_is_an_iso_alpha2_code(catalogue: Catalogue) -> None:
    bad = [
        (provider.id.value, region.id, region.country)
        for provider in catalogue.providers.values()
        for region in provider.regions.values()
        if not re.fullmatch(r"[A-Z]{2}", region.country) or region.country not in ISO_3166_ALPHA2
    ]
    assert bad == []


def test_iso_table_has_every_assigned_code() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    assert {"DE", "ID", "CN", "US", "HK", "TW", "GB"} <= ISO_3166_ALPHA2
    assert not {"EU", "UK", "XX"} & ISO_3166_ALPHA2


@pytest.mark.parametrize(
    ("provider", "region", "country"),
    [
        ("aws", "ap-southeast-3", "ID"),
        ("alibaba", "ap-southeast-5", "ID"),
        ("azure", "indonesiacentral", "ID"),
        ("gcp", "asia-southeast2", "ID"),
        ("aws", "eu-central-1", "DE"),
        ("alibaba", "cn-hangzhou", "CN"),
        ("azure", "westeurope", "NL"),
        ("aws", "us-east-1", "US"),
        ("aws", "af-south-1", "ZA"),
        ("aws", "ap-southeast-5", "MY"),
        ("aws", "ap-southeast-7", "TH"),
        ("aws", "ap-east-2", "TW"),
        ("aws", "mx-central-1", "MX"),
        ("aws", "il-central-1", "IL"),
        ("aws", "me-central-1", "AE"),
        ("aws", "ca-west-1", "CA"),
        ("aws", "us-gov-west-1", "US"),
        ("aws", "cn-northwest-1", "CN"),
        ("azure", "northeurope", "IE"),
        ("azure", "malaysiawest", "MY"),
        ("azure", "newzealandnorth", "NZ"),
        ("azure", "eastasia", "HK"),
        ("gcp", "me-central2", "SA"),
        ("gcp", "africa-south1", "ZA"),
        ("gcp", "northamerica-south1", "MX"),
        ("gcp", "europe-west4", "NL"),
        ("alibaba", "ap-southeast-3", "MY"),
        ("alibaba", "ap-southeast-6", "PH"),
        ("alibaba", "ap-southeast-7", "TH"),
        ("alibaba", "eu-west-1", "GB"),
        ("alibaba", "me-central-1", "SA"),
        ("alibaba", "cn-hongkong", "HK"),
    ],
)
def test_known_region_countries(
    catalogue: Catalogue, provider: str, region: str, country: str
) -> None:
    assert catalogue.region(provider, region).country == country


@pytest.mark.parametrize(
    ("provider", "minimum"),
    # The counts found when the catalogue was written; a drop means regions were lost.
    [("aws", 39), ("azure", 70), ("gcp", 46), ("alibaba", 33)],
)
def test_region_counts(catalogue: Catalogue, provider: str, minimum: int) -> None:
    assert len(catalogue.provider(provider).regions) >= minimum


def test_china_regions_name_their_operator(catalogue: Catalogue) -> None:
    aws = catalogue.provider("aws")
    notes = {rid: aws.regions[rid].note or "" for rid in ("cn-north-1", "cn-northwest-1")}
    assert "Sinnet" in notes["cn-north-1"]
    assert "NWCD" in notes["cn-northwest-1"]
    assert "21Vianet" in (catalogue.region("azure", "chinanorth3").note or "")


def test_region_ids_match_their_keys(catalogue: Catalogue) -> None:
    for provider in catalogue.providers.values():
        for key, region in provider.regions.items():
            assert key == region.id == key.lower()


# --- laws and jurisdictions ----------------------------------------------------------


@pytest.mark.parametrize("pid", US_PROVIDERS)
def test_us_providers_carry_the_cloud_act(catalogue: Catalogue, pid: ProviderId) -> None:
    provider = catalogue.provider(pid)
    assert provider.hq_country == "US"
    cloud_act = [law for law in provider.laws if law.id == "us-cloud-act"]
    assert len(cloud_act) == 1
    assert cloud_act[0].citation == "18 U.S.C. § 2713"
    assert cloud_act[0].jurisdiction == "US"
    assert cloud_act[0].source.startswith("https://")


def test_alibaba_carries_the_national_intelligence_law(catalogue: Catalogue) -> None:
    alibaba = catalogue.provider("alibaba")
    assert alibaba.hq_country == "CN"
    law_ids = {law.id for law in alibaba.laws}
    assert "cn-national-intelligence-law-art7" in law_ids
    assert all(law.jurisdiction == "CN" for law in alibaba.laws)


def test_every_law_has_a_source_and_summary(catalogue: Catalogue) -> None:
    for provider in catalogue.providers.values():
        for law in provider.laws:
            assert law.source.startswith(("https://", "http://")), law.id
            assert law.summary.strip(), law.id


def test_jurisdictions_put_the_data_centre_first(catalogue: Catalogue) -> None:
    alibaba = catalogue.provider("alibaba")
    assert alibaba.jurisdictions(catalogue.region("alibaba", "ap-southeast-5").country) == [
        "ID",
        "CN",
    ]
    assert catalogue.provider("aws").jurisdictions("DE") == ["DE", "US"]
    # Data stored in the provider's own country: one jurisdiction, not a duplicate.
    assert catalogue.provider("gcp").jurisdictions("US") == ["US"]
    assert alibaba.jurisdictions("CN") == ["CN"]


def test_self_hosted_and_local_follow_the_declared_country(catalogue: Catalogue) -> None:
    for pid in (ProviderId.SELF_HOSTED, ProviderId.LOCAL):
        provider = catalogue.provider(pid)
        assert provider.country_required
        assert provider.hq_country is None
        assert provider.regions == {}
        assert provider.laws == []
        assert provider.s3 is None
        assert provider.jurisdictions("de") == ["DE"]


def test_jurisdictions_refuse_non_iso_codes(catalogue: Catalogue) -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        catalogue.provider("aws").jurisdictions("EU")


# --- lookups and errors --------------------------------------------------------------


def test_unknown_region_suggests_close_names(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownRegion) as info:
        catalogue.region("aws", "eu-central-3")
    err = info.value
    assert isinstance(err, LookupError)
    assert err.provider is ProviderId.AWS
    assert err.region == "eu-central-3"
    assert {"eu-central-1", "eu-central-2"} <= set(err.suggestions)
    assert "eu-central-1" in str(err)

    with pytest.raises(UnknownRegion) as info:
        catalogue.region("azure", "westeurop")
    assert info.value.suggestions[0] == "westeurope"


def test_unknown_region_for_store_without_regions(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownRegion, match="declare their country"):
        catalogue.region("local", "eu-central-1")


def test_region_lookup_accepts_display_spellings(catalogue: Catalogue) -> None:
    assert catalogue.region("azure", "West Europe").id == "westeurope"
    assert catalogue.region("gcp", "US-CENTRAL1").id == "us-central1"
    assert catalogue.region(ProviderId.ALIBABA, " cn-hangzhou ").id == "cn-hangzhou"


def test_unknown_provider_lists_valid_ids(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownProvider) as info:
        catalogue.provider("oracle")
    err = info.value
    assert isinstance(err, KeyError)
    assert err.valid == tuple(p.value for p in ProviderId)
    assert "self-hosted" in str(err) and "oracle" in str(err)


def test_provider_accepts_enum_and_string(catalogue: Catalogue) -> None:
    assert catalogue.provider(ProviderId.GCP) is catalogue.provider("GCP")


# --- S3 profiles -----------------------------------------------------------------------


def test_alibaba_s3_profile(catalogue: Catalogue) -> None:
    """As Alibaba's guide "Access OSS using AWS SDKs" gives it: the S3-compatible endpoints,
    virtual-hosted addressing, no aws-chunked bodies, signed for the region id."""
    s3 = catalogue.provider("alibaba").s3
    assert s3 is not None
    assert s3.endpoint_for("ap-southeast-5") == "https://s3.oss-ap-southeast-5.aliyuncs.com"
    assert s3.endpoint_for("cn-hangzhou", "public") == "https://s3.oss-cn-hangzhou.aliyuncs.com"
    assert (
        s3.endpoint_for("cn-hangzhou", "internal")
        == "https://s3.oss-cn-hangzhou-internal.aliyuncs.com"
    )
    assert s3.endpoint_for("cn-hangzhou", "accelerate") == "https://s3.oss-accelerate.aliyuncs.com"
    assert s3.signing_region_for("cn-hangzhou") == "cn-hangzhou"
    assert s3.virtual_hosted_style is True
    assert s3.aws_chunked_encoding is False
    # The guide followed, and the date daulat's profile was checked against it.
    assert s3.guide is not None
    assert s3.guide.url == (
        "https://www.alibabacloud.com/help/en/oss/developer-reference/"
        "use-amazon-s3-sdks-to-access-oss"
    )
    assert s3.guide.read.isoformat() == "2026-12-04"
    assert s3.custom_domain is not None
    assert s3.custom_domain.countries == ["CN"]
    assert s3.custom_domain.since.isoformat() == "2025-03-20"


def test_an_endpoint_kind_a_profile_lacks_is_refused(catalogue: Catalogue) -> None:
    s3 = catalogue.provider("gcp").s3
    assert s3 is not None
    with pytest.raises(ValueError, match="internal"):
        s3.endpoint_for("us-central1", "internal")
    raw = raw_document()
    raw["providers"]["alibaba"]["s3"]["endpoints"]["internal"] = "http://plain.example"
    with pytest.raises(CatalogueError, match="https"):
        parse_catalogue(raw)
    raw = raw_document()
    raw["providers"]["alibaba"]["s3"]["endpoints"]["sideways"] = "https://x.example"
    with pytest.raises(CatalogueError, match="sideways"):
        parse_catalogue(raw)


def test_aws_uses_the_sdk_default_endpoint(catalogue: Catalogue) -> None:
    s3 = catalogue.provider("aws").s3
    assert s3 is not None
    assert s3.endpoint_for("eu-central-1") is None
    assert s3.aws_chunked_encoding is True


def test_azure_has_no_s3_profile(catalogue: Catalogue) -> None:
    assert catalogue.provider("azure").s3 is None


def test_every_s3_quirk_has_a_source(catalogue: Catalogue) -> None:
    for provider in catalogue.providers.values():
        if provider.s3 is None:
            continue
        for quirk in ("virtual_hosted_style", "aws_chunked_encoding"):
            source = provider.s3.source_for(quirk) or ""
            assert source.startswith("https://"), (provider.id, quirk)
        for quirk in ("endpoints", "signing_region"):
            if getattr(provider.s3, quirk):
                assert (provider.s3.source_for(quirk) or "").startswith("https://"), quirk
        for caveat in provider.s3.caveats:
            assert caveat.source.startswith("https://")


# --- validation of bad data ------------------------------------------------------------


def test_lower_case_country_is_rejected() -> None:
    raw = raw_document()
    raw["providers"]["aws"]["regions"]["eu-central-1"]["country"] = "de"
    with pytest.raises(CatalogueError, match="ISO 3166"):
        parse_catalogue(raw)


def test_law_without_source_is_rejected() -> None:
    raw = raw_document()
    del raw["laws"]["us-cloud-act"]["source"]
    with pytest.raises(CatalogueError, match="source"):
        parse_catalogue(raw)


def test_undefined_law_reference_is_rejected() -> None:
    raw = raw_document()
    raw["providers"]["gcp"]["laws"].append("us-patriot-act")
    with pytest.raises(CatalogueError, match="undefined laws"):
        parse_catalogue(raw)


def test_misspelt_field_is_rejected() -> None:
    raw = raw_document()
    raw["providers"]["alibaba"]["regions"]["cn-hangzhou"]["contry"] = "CN"
    with pytest.raises(CatalogueError, match="contry"):
        parse_catalogue(raw)


def test_missing_provider_is_rejected() -> None:
    raw = raw_document()
    del raw["providers"]["local"]
    with pytest.raises(CatalogueError, match="local"):
        parse_catalogue(raw)


def test_s3_quirk_without_source_is_rejected() -> None:
    raw = raw_document()
    s3 = raw["providers"]["alibaba"]["s3"]
    del s3["source"]
    del s3["sources"]["virtual_hosted_style"]
    with pytest.raises(CatalogueError, match="virtual_hosted_style"):
        parse_catalogue(raw)
