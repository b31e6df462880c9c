"""Azure Blob (Azurite): odd but legal blob names round-trip exactly, names obstore cannot
address are refused per object (never renamed), a bad account key is blamed as such, an endpoint
spelled with a trailing '/' is the same endpoint, and ``daulat stores`` leaves nothing on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import azure_store_config, run
from servers import AzuriteServer

from daulat.config import StoreConfig, load_config
from daulat.errors import ConfigError, InvalidKey
from daulat.stores import Store, open_store

SRC = str(Path(__file__).resolve().parents[1] / "src")

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


def _azure_config(tmp_path: Path, server: AzuriteServer, stores: dict[str, dict[str, str]]) -> Path:
    """daulat.toml with Azure stores NAME → {container, endpoint[, account_key]}."""
    lines: list[str] = []
    for name, spec in stores.items():
        server.create_container(spec["container"])
        lines += [
            f"[stores.{name}]",
            f'url = "az://{spec["container"]}"',
            'provider = "azure"',
            'region = "indonesiacentral"',
            f'endpoint = "{spec.get("endpoint", server.endpoint)}"',
            f"[stores.{name}.credentials]",
            f'account_name = "{server.account_name}"',
            f'account_key = "{spec.get("account_key", server.account_key)}"',
        ]
    path = tmp_path / "daulat.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _daulat(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "daulat", *argv, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_stores_with_healthy_azurite_says_nothing_on_stderr(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    """``daulat stores`` reads one page of each store and stops listing: the page it had
    asked for ahead must be dropped quietly (it printed "Future exception was never retrieved
    ... StopAsyncIteration: stream exhausted")."""
    stores = {f"healthy{i}": {"container": f"healthy{i}"} for i in range(3)}
    config = _azure_config(tmp_path, azurite_server, stores)
    for name in stores:
        store = open_store(load_config(config).store(name))

        async def fill(store: Store = store) -> None:
            for n in range(3):
                await store.put(f"obj-{n}", b"x" * n)
            await store.close()

        run(fill())
    for _attempt in range(3):
        done = _daulat(config, "stores", "--json")
        assert done.returncode == 0, done.stderr
        assert [r["reachable"] for r in json.loads(done.stdout)] == [True] * 3
        assert done.stderr == ""
        done = _daulat(config, "stores")
        assert done.returncode == 0 and done.stderr == "", done.stderr


def test_an_endpoint_with_a_trailing_slash_is_the_same_endpoint(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    config = _azure_config(
        tmp_path,
        azurite_server,
        {
            "plain": {"container": "slashes"},
            "slash": {"container": "slashes", "endpoint": azurite_server.endpoint + "/"},
            "other": {"container": "slashes2", "endpoint": azurite_server.endpoint + "//"},
        },
    )
    assert load_config(config).store("slash").endpoint == azurite_server.endpoint
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"alpha")
    with config.open("a", encoding="utf-8") as f:
        f.write(f'[stores.src]\nurl = "{(tmp_path / "src").as_uri()}"\nprovider = "local"\n')
        f.write('country = "ID"\n')
    done = _daulat(config, "stores", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(r["reachable"] for r in json.loads(done.stdout)), done.stdout
    done = _daulat(config, "exit", "src", "slash:in")
    assert done.returncode == 0, done.stdout + done.stderr
    done = _daulat(config, "ls", "plain:in", "--all")  # the replica's .daulat/ too
    assert done.stdout.split() == [".daulat/", "a.txt"], done.stdout + done.stderr
    done = _daulat(config, "verify", "src", "other:in")  # nothing there: differences, not errors
    assert done.returncode == 1 and "GenericError" not in done.stdout + done.stderr
    # One place however the endpoint is spelled: a copy onto itself is refused.
    done = _daulat(config, "copy", "plain", "slash")
    assert done.returncode == 2 and "same place" in done.stderr, done.stderr


def test_the_cli_blames_an_account_key_that_is_not_base64(
    azurite_server: AzuriteServer, tmp_path: Path
) -> None:
    config = _azure_config(
        tmp_path,
        azurite_server,
        {"badkey": {"container": "badkey2", "account_key": "not base64!!"}},
    )
    for argv in (["ls", "badkey"], ["stores"]):
        done = _daulat(config, *argv)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "account_key" in done.stderr and "base64" in done.stderr, done.stderr
        assert "not base64!!" not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
