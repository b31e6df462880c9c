"""Stores: one protocol, one small adapter per kind. ``open_store`` picks the adapter."""

from __future__ import annotations

from daulat.config import StoreConfig
from daulat.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PutResult,
    Store,
    check_portable_key,
    portable_key_problem,
)


def open_store(cfg: StoreConfig) -> Store:
    """Build the Store for a configured store. Does no network I/O."""
    if cfg.scheme == "file":
        from daulat.stores.fs import FsStore

        return FsStore(cfg.name, cfg.path)
    if cfg.scheme == "az":
        from daulat.stores.azure import open_azure

        return open_azure(cfg)
    if cfg.scheme == "gs":
        from daulat.stores.gcs import open_gcs

        return open_gcs(cfg)
    from daulat.stores.s3 import open_s3

    return open_s3(cfg)


__all__ = [
    "Capabilities",
    "ObjectInfo",
    "ObjectReader",
    "PutResult",
    "Store",
    "check_portable_key",
    "open_store",
    "portable_key_problem",
]
