"""``daulat serve``: an S3 endpoint (read-only) in front of a bucket's verified replicas.

Applications keep one endpoint; the gateway reads each object from the first replica that holds
a verified copy of its current version and answers, checks every byte it serves against the
copy's per-chunk SHA-256 hashes, and continues a response from the next replica at the same
byte offset when one fails. Modules: :mod:`.config` (the ``[gateway]`` table), :mod:`.auth`
(SigV4), :mod:`.app` (S3 operations), :mod:`.bucket` and :mod:`.replicas` (which replica may
serve what), :mod:`.reading` (checked reads and failover), :mod:`.health` (circuit breakers),
:mod:`.runtime` and :mod:`.server` (uvicorn).
"""

from __future__ import annotations

from daulat.gateway.config import GatewayConfig, gateway_config
from daulat.gateway.server import loop_factory, serve

__all__ = ["GatewayConfig", "gateway_config", "loop_factory", "serve"]
