"""The ceiling for a second hop: a trivial S3 GET proxy that streams from SeaweedFS, no checks.

    python bench/passthrough.py PORT ENDPOINT BUCKET ACCESS_KEY SECRET_KEY

For bench/gateway.py --ceiling only. It answers ``GET /BUCKET/KEY`` with the object streamed
through obstore (the same S3 client as daulat serve) on uvicorn with uvloop and httptools (the
same server), ignores signatures, ranges and everything else, and checks nothing.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import unquote

import obstore
import uvicorn
from obstore.store import S3Store

PORT, ENDPOINT, BUCKET, KEY, SECRET = sys.argv[1:6]
store = S3Store(
    BUCKET,
    endpoint=ENDPOINT,
    access_key_id=KEY,
    secret_access_key=SECRET,
    region="us-east-1",
    client_options={"allow_http": True},
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    key = unquote(scope["raw_path"].decode().split("/", 2)[2])
    result = await obstore.get_async(store, key)
    headers = [
        (b"content-length", str(result.meta["size"]).encode()),
        (b"content-type", b"application/octet-stream"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] != "HEAD":
        async for chunk in result.stream(min_chunk_size=1024 * 1024):
            await send({"type": "http.response.body", "body": memoryview(chunk), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(PORT),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
