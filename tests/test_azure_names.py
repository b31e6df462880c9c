"""Azure Blob (Azurite): odd but legal blob names round-trip exactly, names obstore cannot
address are refused per object (never renamed), and a bad account key is blamed as such."""

from __future__ import annotations

import pytest
from conftest import azure_store_config, run
from servers import AzuriteServer

from daulat.config import StoreConfig
from daulat.errors import ConfigError, InvalidKey
from daulat.stores import open_store

# Legal blob names beyond the conformance suite's ODD_KEYS: reserved URL characters that must
# be escaped, percent sequences that look encoded, spaces at either end, and the longest name
# Azure allows (1,024 characters).
AZURE_ODD_NAMES = [
    "query?x=1&y=2",
    "fragment#part",
    "percent%2Fslash%00nul%zz",
    "colon:semi;at@dollar$",
    "dots.in.the..middle",
    "trailing space ",
    " leading space",
    "deep/" * 100 + "leaf",
    "n" * 1024,
]


def test_odd_legal_blob_names_round_trip(azurite_server: AzuriteServer) -> None:
    store = open_store(
        StoreConfig.model_validate(azure_store_config(azurite_server, "odd", "oddnames"))
    )

    async def go() -> None:
        for i, name in enumerate(AZURE_ODD_NAMES):
            await store.put(name, f"v{i}".encode(), metadata={"sha256": str(i)})
        listed = sorted([o.key async for batch in store.list() for o in batch])
        assert listed == sorted(AZURE_ODD_NAMES)
        for i, name in enumerate(AZURE_ODD_NAMES):
            reader = await store.get(name)
            assert await reader.read_all() == f"v{i}".encode()
            assert reader.metadata == {"sha256": str(i)}
        # Names Azure would rename ('\\' becomes '/') or obstore cannot address.
        for name in ("back\\slash", "../escape", "a//b", "/abs", "ctl\x01", "a/./b"):
            with pytest.raises(InvalidKey):
                await store.put(name, b"x")
        for name in AZURE_ODD_NAMES:
            await store.delete(name)
        assert [o async for batch in store.list() for o in batch] == []
        await store.close()

    run(go())


def test_an_account_key_that_is_not_base64_is_blamed(azurite_server: AzuriteServer) -> None:
    raw = azure_store_config(azurite_server, "badkey", "badkey")
    raw["credentials"] = {**raw["credentials"], "account_key": "not-base64-at-all!"}
    with pytest.raises(ConfigError) as err:
        open_store(StoreConfig.model_validate(raw))
    text = str(err.value)
    assert "account_key" in text and "base64" in text
    assert "account_name" not in text and "not-base64-at-all!" not in text
