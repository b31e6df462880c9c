"""Where an endpoint's objects really are, whatever the store is called.

Two store names can reach one place (an alias, a second spelling of one server, a store whose URL
is a prefix of another's); a run between them copies a store into itself. So before any run both
endpoints are resolved to a :class:`Location`:

- object stores: the normalised endpoint URL (scheme, lower-cased host, explicit port, no
  trailing slash; the provider catalogue's default endpoint when none is configured), the Azure
  account, the bucket or container, and the key prefix;
- directories: the real path, symlinks resolved (for a path that does not exist yet, its existing
  ancestors are resolved and the rest appended).

Two locations *overlap* when they are the same or one lies inside the other at a path-segment
boundary (``a/`` and ``ab/`` do not). Host names are compared by what they resolve to: two
spellings of one server (``localhost`` and ``127.0.0.1``) are one server. The comparison errs on
the side of "same": any shared address makes two hosts one, and providers whose bucket names are
global (AWS, Alibaba OSS) are one namespace whatever regional endpoint names them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from daulat.address import normalise_prefix
from daulat.config import StoreConfig
from daulat.providers import load_catalogue

__all__ = ["Location", "location_of", "overlaps", "same_space"]

# Bucket names unique across every endpoint of the provider: one namespace, whatever the region.
_GLOBAL_NAMESPACES = (".amazonaws.com.cn", ".amazonaws.com", ".aliyuncs.com")
_DNS_TIMEOUT = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    """The real place behind an endpoint.

    ``path`` is the key prefix inside the bucket (object stores) or the real directory
    (``file``), always empty or ending in ``/``, so that containment is a string prefix test.
    """

    kind: Literal["file", "s3", "az", "gs"]
    server: str = ""  # normalised endpoint URL; empty for directories
    account: str = ""  # Azure storage account
    container: str = ""  # bucket or container
    path: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    @property
    def port(self) -> int | None:
        return urlsplit(self.server).port

    def __str__(self) -> str:
        if self.kind == "file":
            return f"directory {self.path.rstrip('/') or '/'}"
        what = "container" if self.kind == "az" else "bucket"
        account = f" account {self.account}" if self.account else ""
        inside = f" prefix {self.path!r}" if self.path else ""
        return f"{self.kind} {what} {self.container!r}{inside} at {self.server}{account}"

    def child(self, prefix: str) -> Location:
        """The location of ``prefix`` (normalised, ending in '/') inside this one."""
        return Location(self.kind, self.server, self.account, self.container, self.path + prefix)


def location_of(
    cfg: StoreConfig, prefix: str = "", env: Mapping[str, str] | None = None
) -> Location:
    """Resolve store ``cfg`` plus endpoint ``prefix`` to its real location (no network I/O)."""
    sub = _normalise(prefix)
    if cfg.scheme == "file":
        return Location("file", path=_real_dir(cfg.path / sub if sub else cfg.path))
    base = _normalise(cfg.prefix)
    if cfg.scheme == "az":
        environ = os.environ if env is None else env
        creds = cfg.credentials
        account = (creds.account_name if creds else None) or environ.get(
            "AZURE_STORAGE_ACCOUNT_NAME", ""
        )
        endpoint = cfg.endpoint or f"https://{account}.blob.core.windows.net"
        return Location("az", _server(endpoint), account, cfg.bucket, base + sub)
    if cfg.scheme == "gs":
        gcs = cfg.endpoint or "https://storage.googleapis.com"
        return Location("gs", _server(gcs), "", cfg.bucket, base + sub)
    return Location("s3", _server(_s3_endpoint(cfg), bucket=cfg.bucket), "", cfg.bucket, base + sub)


def _normalise(prefix: str) -> str:
    return normalise_prefix(prefix)


def _real_dir(path: Path) -> str:
    # strict=False resolves the existing ancestors and appends the rest, so a directory that a
    # copy is about to create is compared by where it will be.
    try:
        real = str(Path(os.path.abspath(path)).resolve(strict=False))
    except (OSError, RuntimeError):  # a symlink loop, an unreadable directory
        real = os.path.normpath(os.path.abspath(path))
    return real if real.endswith("/") else real + "/"


def _s3_endpoint(cfg: StoreConfig) -> str:
    """The endpoint the S3 client talks to, derived as ``stores.s3`` derives it."""
    if cfg.endpoint is not None:
        return cfg.endpoint
    provider = load_catalogue().provider(cfg.provider)
    region = cfg.region or "us-east-1"
    if provider.s3 is not None:
        found = provider.s3.endpoint_for(region)
        if found is not None:
            return found
    # The SDKs' own default: AWS's regional endpoint.
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


def _server(endpoint: str, *, bucket: str = "") -> str:
    """scheme://host:port[/path]: lower-cased host, explicit port, no trailing slash.

    A virtual-hosted endpoint that already names the bucket (``bucket.host``) is the host's.
    """
    parts = urlsplit(endpoint.strip())
    scheme = parts.scheme.lower() or "https"
    host = (parts.hostname or "").rstrip(".")
    if bucket and host.startswith(bucket.lower() + "."):
        host = host[len(bucket) + 1 :]
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 443)
    except ValueError:
        port = _DEFAULT_PORTS.get(scheme, 443)
    if ":" in host:
        host = f"[{host}]"
    path = parts.path.rstrip("/")
    return f"{scheme}://{host}:{port}{path}"


def _namespace(host: str) -> str | None:
    for suffix in _GLOBAL_NAMESPACES:
        if host == suffix[1:] or host.endswith(suffix):
            return suffix[1:]
    return None


_resolved: dict[str, frozenset[str]] = {}


async def _addresses(host: str) -> frozenset[str]:
    """The addresses ``host`` resolves to; the name itself when it does not resolve."""
    bare = host.strip("[]")
    try:
        return frozenset({str(ipaddress.ip_address(bare))})
    except ValueError:
        pass
    if bare in _resolved:
        return _resolved[bare]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(bare, None, type=socket.SOCK_STREAM), _DNS_TIMEOUT
        )
        found = frozenset(str(ipaddress.ip_address(info[4][0])) for info in infos)
    except (OSError, TimeoutError, ValueError):
        # Unresolvable here: only the same spelling counts as the same server.
        found = frozenset()
    result = found | {bare}
    _resolved[bare] = result
    return result


async def _same_server(a: Location, b: Location) -> bool:
    if a.server == b.server:
        return True
    pa, pb = urlsplit(a.server), urlsplit(b.server)
    ns = _namespace(a.host)
    if ns is not None:
        return ns == _namespace(b.host)
    # The scheme is left out: one port of one host cannot serve two services.
    if a.port != b.port or pa.path != pb.path:
        return False
    return bool(await _addresses(a.host) & await _addresses(b.host))


async def same_space(a: Location, b: Location) -> bool:
    """Whether ``a`` and ``b`` name one key space: one directory tree, or one bucket or
    container of one account on one server."""
    if a.kind != b.kind and {a.kind, b.kind} != {"s3", "gs"}:
        # Google's S3-compatible (XML) API and its JSON API reach the same buckets.
        return False
    if a.kind == "file":
        return True
    if a.container != b.container or a.account != b.account:
        return False
    return await _same_server(a, b)


async def overlaps(a: Location, b: Location) -> bool:
    """Whether ``a`` and ``b`` are the same place or one lies inside the other."""
    if not (a.path.startswith(b.path) or b.path.startswith(a.path)):
        return False
    return await same_space(a, b)
