"""S3-family stores: AWS S3, Alibaba Cloud OSS (S3 API), Google Cloud Storage interop and any
S3-compatible server. Provider quirks come from the catalogue's S3 profile, not from code here.

A store has two clients, obstore for ordinary requests and botocore (:mod:`.s3raw`) for the
rest; both take their credentials from the store's one :class:`~.s3creds.CredentialChain` and
their proxy from the same environment variables, and both time out on the same
``request_timeout``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from obstore.store import S3Store

from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.providers import load_catalogue
from daulat.stores.base import Capabilities, Store
from daulat.stores.objectstore import RETRY_CONFIG, S3_MAX_METADATA, ObstoreStore
from daulat.stores.s3creds import CredentialChain, proxy_options
from daulat.stores.s3raw import FallbackS3Store, S3Raw
from daulat.stores.timeouts import client_options


def open_s3(cfg: StoreConfig, env: Mapping[str, str] | None = None) -> Store:
    """The S3 store: obstore for ordinary requests, S3Raw (botocore) for listings, streamed
    uploads and the keys obstore cannot address faithfully (see :mod:`daulat.stores.s3raw`),
    both signing with one credential chain."""
    chain = CredentialChain.for_store(cfg, env)
    fast = open_s3_obstore(cfg, env, chain=chain)
    return FallbackS3Store(fast, S3Raw.from_config(cfg, env, chain=chain))


def open_s3_obstore(
    cfg: StoreConfig,
    env: Mapping[str, str] | None = None,
    *,
    chain: CredentialChain | None = None,
) -> ObstoreStore:
    """The obstore-only S3 store: portable keys only, and its listing renames some keys."""
    environ = os.environ if env is None else env
    provider = load_catalogue().provider(cfg.provider)
    profile = provider.s3
    region = cfg.region or "us-east-1"
    endpoint = cfg.endpoint
    virtual = cfg.addressing == "virtual"
    if endpoint is None and profile is not None:
        endpoint = profile.endpoint_for(region, cfg.endpoint_kind)
        if profile.virtual_hosted_style and cfg.addressing is None:
            virtual = True
    if virtual and endpoint is not None:
        # With virtual-hosted addressing obstore expects the bucket in the endpoint host.
        scheme, _, host = endpoint.partition("://")
        if not host.startswith(cfg.bucket + "."):
            endpoint = f"{scheme}://{cfg.bucket}.{host}"
    # The region requests are signed for: the provider's guide says which (Alibaba: the
    # region id, as its SigV4 examples).
    signing = profile.signing_region_for(region) if profile is not None else region
    config: dict[str, Any] = {"region": signing, "virtual_hosted_style_request": virtual}
    if endpoint is not None:
        config["endpoint"] = endpoint
    if profile is None or profile.aws_chunked_encoding:
        # Every PUT carries x-amz-checksum-sha256, which the server checks before it stores
        # anything: a body cut short or altered on the way is refused. The payload is then
        # not hashed a second time for the signature (as with botocore, see s3raw).
        # Providers without AWS's newer headers keep the signed payload, which their server
        # checks against the body in the same way.
        config["checksum_algorithm"] = "SHA256"
        config["unsigned_payload"] = True
    options: dict[str, Any] = {
        **client_options(cfg.request_timeout),
        **proxy_options(endpoint, environ),
    }
    if endpoint is not None and endpoint.startswith("http://"):
        options["allow_http"] = True
    # The store's own chain, never obstore's: it would mix in AWS_* variables meant for
    # another store, and could resolve other credentials than the listing client's.
    chain = chain or CredentialChain.for_store(cfg, env)
    try:
        inner = S3Store(
            cfg.bucket,
            prefix=cfg.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=RETRY_CONFIG,  # type: ignore[arg-type]
            credential_provider=chain.obstore_credential,  # type: ignore[arg-type]
        )
    except Exception as exc:  # obstore validates the configuration eagerly
        raise ConfigError(
            f"store {cfg.name!r}: cannot configure S3 client ({type(exc).__name__})"
        ) from None
    return ObstoreStore(
        cfg.name,
        inner,
        etag_scheme="s3",
        request_timeout=cfg.request_timeout,
        capabilities=Capabilities(max_metadata=S3_MAX_METADATA),
    )
