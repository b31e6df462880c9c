"""``daulat serve``: an S3 endpoint in front of a bucket's verified replicas (read-only unless a
bucket is ``writable``).

Applications keep one endpoint; the gateway reads each object from the first replica that holds
a verified copy of its current version and answers, checks every byte it serves against the
copy's per-chunk SHA-256 hashes, and continues a response from the next replica at the same
byte offset when one fails. Modules: :mod:`.config` (the ``[gateway]`` table), :mod:`.auth`
(SigV4), :mod:`.app` (S3 operations), :mod:`.bucket` and :mod:`.replicas` (which replica may
serve what), :mod:`.reading` (checked reads and failover), :mod:`.health` (circuit breakers),
:mod:`.runtime` and :mod:`.server` (uvicorn). Writes: :mod:`.writeops` (the S3 operations),
:mod:`.payload` (bodies and their checks), :mod:`.writes` and :mod:`.fanout` (one body to
every replica, quorum), :mod:`.ledger` (journal rows), :mod:`.spool` (multipart parts);
:mod:`.lag` (what each replica lacks of the writes, for ``daulat stores``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daulat.gateway.config import GatewayConfig, gateway_config
    from daulat.gateway.server import serve

# Imported on first use (daulat.lazy): `daulat stores` reads .standing and .lag, and would
# otherwise pay for uvicorn and the whole gateway.
_WHERE = {
    "daulat.gateway.config": ("GatewayConfig", "gateway_config"),
    "daulat.gateway.server": ("serve",),
}

__all__ = ["GatewayConfig", "gateway_config", "serve"]

if not TYPE_CHECKING:
    from daulat import lazy

    __getattr__, __dir__ = lazy.exports(
        __name__, {n: m for m, names in _WHERE.items() for n in names}, __all__
    )
