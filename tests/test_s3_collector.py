"""The S3 store keeps the garbage collector off botocore's objects while it is open.

A built botocore client holds tens of thousands of long-lived objects; frozen
(``daulat.stores.s3creds.freeze_long_lived``) they cost the collections of a run nothing. These
tests hold what that must never change: the freeze ends when the store closes, garbage that was
frozen meanwhile is collected then (delayed, never lost), and a program that froze objects of
its own keeps its permanent generation as it was.

Each check runs in a fresh interpreter: the collector's permanent generation belongs to the
whole process, and other tests of this one may hold stores open.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from conftest import s3_store_config
from servers import S3Server

BUCKET = "collector"

_PRELUDE = textwrap.dedent(
    """
    import asyncio, gc, json, sys, weakref
    from daulat.config import StoreConfig
    from daulat.stores import s3creds
    from daulat.stores.s3 import open_s3

    CFG = StoreConfig.model_validate(json.loads(sys.argv[1]))

    class Cycle:  # in a reference cycle: only the cyclic collector frees it
        def __init__(self):
            self.me = self

    async def listed(store):
        n = 0
        async for batch in store.list(""):  # builds the botocore client (it lists)
            n += len(batch)
        return n

    def opened():
        store = open_s3(CFG)
        asyncio.run(listed(store))
        return store

    def close(store):
        asyncio.run(store.close())
    """
)


def _run(s3_server: S3Server, body: str) -> dict[str, Any]:
    cfg = s3_store_config(s3_server, "gc", BUCKET)
    res = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_a_built_client_is_frozen_until_its_store_closes(s3_server: S3Server) -> None:
    out = _run(
        s3_server,
        """
        store = opened()
        open_ = (s3creds._freezes, gc.get_freeze_count())
        close(store)
        print(json.dumps({"open": open_, "closed": (s3creds._freezes, gc.get_freeze_count())}))
        """,
    )
    freezes, frozen = out["open"]
    assert freezes == 1
    assert frozen > 10_000  # botocore's model, endpoint rules and handlers among them
    assert out["closed"] == [0, 0]


def test_garbage_frozen_while_a_store_is_open_is_collected_after_it_closes(
    s3_server: S3Server,
) -> None:
    out = _run(
        s3_server,
        """
        cycle = Cycle()
        gone = weakref.ref(cycle)
        store = opened()
        del cycle
        gc.collect()
        while_open = gone() is None
        close(store)
        gc.collect()
        print(json.dumps({"while_open": while_open, "after_close": gone() is None}))
        """,
    )
    assert out == {"while_open": False, "after_close": True}


def test_a_program_that_froze_objects_keeps_its_own_freeze(s3_server: S3Server) -> None:
    out = _run(
        s3_server,
        """
        gc.freeze()
        before = gc.get_freeze_count()
        store = opened()
        open_ = (s3creds._freezes, gc.get_freeze_count())
        close(store)
        print(json.dumps({"before": before, "open": open_, "closed": gc.get_freeze_count()}))
        """,
    )
    before, (freezes, while_open), closed = out["before"], out["open"], out["closed"]
    assert freezes == 0  # daulat froze nothing
    # Frozen objects freed by reference counting leave the count; none joined it, and the
    # program's freeze was not undone at close.
    assert 0 < closed <= while_open <= before
