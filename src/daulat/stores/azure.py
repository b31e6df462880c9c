"""Azure Blob Storage stores (and the Azurite emulator), over obstore.

Credentials, in this order: the store's ``account_key`` or ``sas_token`` (with
``account_name``); else obstore's own chain from the environment: ``AZURE_STORAGE_ACCOUNT_NAME``
with ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_KEY``, a service principal
(``AZURE_CLIENT_ID``/``AZURE_TENANT_ID`` with ``AZURE_CLIENT_SECRET`` or
``AZURE_FEDERATED_TOKEN_FILE`` for workload identity), and managed identity on Azure VMs
(endpoint ``AZURE_MSI_ENDPOINT``/``AZURE_IDENTITY_ENDPOINT``; ``AZURE_OBJECT_ID``,
``AZURE_MSI_RESOURCE_ID`` pick an identity). Every request of an Azure store goes through this
one obstore client, so there is one chain per store here too.

Blob names: obstore addresses only portable keys (no empty, ``.`` or ``..`` segment, no control
character), and the Blob service stores a backslash as ``/``; such keys are refused per object
with :class:`~daulat.errors.InvalidKey`, never renamed. The service cannot hold most of them
exactly anyway (it resolves ``.``/``..`` segments in URLs), so no second client is needed;
``tests/test_azure_names.py`` runs the odd but legal names it can hold (reserved URL characters,
``%`` sequences, leading and trailing spaces, Unicode, 1,024-character names) through Azurite.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from obstore.store import AzureStore

from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.stores.azureblocks import AzureBlocks
from daulat.stores.base import Capabilities, portable_key_problem
from daulat.stores.objectstore import AZURE_MAX_METADATA, RETRY_CONFIG, ObstoreStore
from daulat.stores.timeouts import client_options

#: Azure Blob's longest blob name, in characters (the portable rule caps a key at 1,024 bytes).
AZURE_MAX_NAME = 1024


def open_azure(cfg: StoreConfig) -> ObstoreStore:
    config: dict[str, Any] = {}
    creds = cfg.credentials
    if creds is not None:
        if creds.account_name:
            config["account_name"] = creds.account_name
        if creds.account_key is not None:
            key = creds.account_key.get_secret_value()
            if not _is_base64(key):
                # obstore's own error blames the account name; the key is what is wrong.
                raise ConfigError(
                    f"store {cfg.name!r}: credentials.account_key is not a valid Azure account "
                    "key (it is the base64 text shown as key1/key2 in the portal; check that it "
                    "was copied whole)"
                )
            config["account_key"] = key
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
    store = ObstoreStore(
        cfg.name,
        inner,
        etag_scheme="azure",
        request_timeout=cfg.request_timeout,
        key_problem=functools.partial(azure_key_problem, prefix=cfg.prefix or ""),
        capabilities=Capabilities(max_metadata=AZURE_MAX_METADATA),
    )
    # Large objects: resumable block uploads (daulat.stores.azureblocks), found by the engine
    # through this attribute.
    store.resumable = AzureBlocks.from_config(cfg)
    return store


def azure_key_problem(key: str, prefix: str = "") -> str | None:
    """Why Azure cannot hold ``key`` exactly (under the store's ``prefix``), or None. Beyond
    the portable rules: the Blob service (and Azurite) stores a backslash as '/', which would
    put the object under another name, perhaps another object's; and a blob name, prefix
    included, has at most 1,024 characters."""
    if "\\" in key:
        return "Azure Blob stores '\\' as '/' (the object would land under another name)"
    problem = portable_key_problem(key)
    if problem is not None:
        return problem
    head = prefix.strip("/")
    if head and len(head) + 1 + len(key) > AZURE_MAX_NAME:
        return f"longer than {AZURE_MAX_NAME} characters with the store's prefix (Azure's limit)"
    return None


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        return False
