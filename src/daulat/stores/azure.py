"""Azure Blob Storage stores (and the Azurite emulator)."""

from __future__ import annotations

from typing import Any

from obstore.store import AzureStore

from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.stores.objectstore import ObstoreStore
from daulat.stores.s3 import RETRY_CONFIG
from daulat.stores.timeouts import client_options


def open_azure(cfg: StoreConfig) -> ObstoreStore:
    config: dict[str, Any] = {}
    creds = cfg.credentials
    if creds is not None:
        if creds.account_name:
            config["account_name"] = creds.account_name
        if creds.account_key is not None:
            config["account_key"] = creds.account_key.get_secret_value()
        if creds.sas_token is not None:
            config["sas_key"] = creds.sas_token.get_secret_value().lstrip("?")
    options = client_options(cfg.request_timeout)
    if cfg.endpoint is not None:
        config["endpoint"] = cfg.endpoint
        if cfg.endpoint.startswith("http://"):
            options["allow_http"] = True
    try:
        inner = AzureStore(
            cfg.bucket,
            prefix=cfg.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=RETRY_CONFIG,  # type: ignore[arg-type]
        )
    except Exception as exc:
        raise ConfigError(
            f"store {cfg.name!r}: cannot configure Azure client ({type(exc).__name__}); "
            "set credentials.account_name or AZURE_STORAGE_ACCOUNT_NAME"
        ) from None
    return ObstoreStore(
        cfg.name, inner, etag_scheme="azure", request_timeout=cfg.request_timeout
    )
