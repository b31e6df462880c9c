"""S3-family stores: AWS S3, Alibaba Cloud OSS (S3 API), Google Cloud Storage interop and any
S3-compatible server. Provider quirks come from the catalogue's S3 profile, not from code here."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from obstore.store import S3Store

from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.providers import ProviderId, load_catalogue
from daulat.stores.base import Store
from daulat.stores.objectstore import ObstoreStore

# obstore's default 30 s timeout covers a whole request body: too short for 8 MiB parts on a slow
# link. Stalls are still caught by the connect timeout and by the retry layer.
CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": timedelta(seconds=10),
    "timeout": timedelta(minutes=10),
}

# obstore retries a failed request itself (cheap: a multipart part is retried alone), but only
# briefly: persistent throttling must reach daulat's retry layer, which backs off per object and
# lowers the concurrency (obstore's default, 10 retries over 3 minutes, hides it entirely).
RETRY_CONFIG: dict[str, Any] = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {
        "init_backoff": timedelta(milliseconds=50),
        "max_backoff": timedelta(seconds=1),
        "base": 2,
    },
}

# Standard environment variables per provider, beyond the AWS_* ones obstore reads itself.
_ENV_KEYS = {
    ProviderId.ALIBABA: (
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "ALIBABA_CLOUD_SECURITY_TOKEN",
        ),
        ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"),
    ),
}


def open_s3(cfg: StoreConfig, env: dict[str, str] | None = None) -> Store:
    """The S3 store: obstore for ordinary keys, S3Raw for listings and for the keys obstore
    cannot address faithfully (see :mod:`daulat.stores.s3raw`)."""
    from daulat.stores.s3raw import open_fallback_s3

    return open_fallback_s3(cfg, open_s3_obstore(cfg, env), env)


def open_s3_obstore(cfg: StoreConfig, env: dict[str, str] | None = None) -> ObstoreStore:
    """The obstore-only S3 store: portable keys only, and its listing renames some keys."""
    environ = os.environ if env is None else env
    provider = load_catalogue().provider(cfg.provider)
    profile = provider.s3
    region = cfg.region or "us-east-1"
    endpoint = cfg.endpoint
    virtual = cfg.addressing == "virtual"
    if endpoint is None and profile is not None:
        endpoint = profile.endpoint_for(region)
        if profile.virtual_hosted_style and cfg.addressing is None:
            virtual = True
    if virtual and endpoint is not None:
        # With virtual-hosted addressing obstore expects the bucket in the endpoint host.
        scheme, _, host = endpoint.partition("://")
        if not host.startswith(cfg.bucket + "."):
            endpoint = f"{scheme}://{cfg.bucket}.{host}"
    config: dict[str, Any] = {"region": region, "virtual_hosted_style_request": virtual}
    if endpoint is not None:
        config["endpoint"] = endpoint
    options = dict(CLIENT_OPTIONS)
    if endpoint is not None and endpoint.startswith("http://"):
        options["allow_http"] = True
    credentials = _credentials(cfg, environ)
    provider_cb = None
    if credentials is not None:
        # A fixed credential provider stops obstore mixing in AWS_* variables meant for another
        # store (two stores on one provider with different keys must not share a session token).
        def provider_cb() -> dict[str, Any]:
            return credentials

    try:
        inner = S3Store(
            cfg.bucket,
            prefix=cfg.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=RETRY_CONFIG,  # type: ignore[arg-type]
            credential_provider=provider_cb,  # type: ignore[arg-type]
        )
    except Exception as exc:  # obstore validates the configuration eagerly
        raise ConfigError(
            f"store {cfg.name!r}: cannot configure S3 client ({type(exc).__name__})"
        ) from None
    return ObstoreStore(cfg.name, inner, etag_scheme="s3")


def _credentials(cfg: StoreConfig, env: Any) -> dict[str, Any] | None:
    creds = cfg.credentials
    if (
        creds is not None
        and creds.access_key_id is not None
        and creds.secret_access_key is not None
    ):
        token = creds.session_token.get_secret_value() if creds.session_token else None
        return {
            "access_key_id": creds.access_key_id.get_secret_value(),
            "secret_access_key": creds.secret_access_key.get_secret_value(),
            "token": token,
            "expires_at": None,
        }
    for key_var, secret_var, token_var in _ENV_KEYS.get(cfg.provider, ()):
        if env.get(key_var) and env.get(secret_var):
            return {
                "access_key_id": env[key_var],
                "secret_access_key": env[secret_var],
                "token": env.get(token_var) or None,
                "expires_at": None,
            }
    return None
