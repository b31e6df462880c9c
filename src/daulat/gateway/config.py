"""The ``[gateway]`` table of ``daulat.toml`` → a validated :class:`GatewayConfig`.

::

    [gateway]
    listen = "127.0.0.1:9000"
    access_key_id = "${GW_ACCESS_KEY}"        # the key pair the gateway's own clients sign with
    secret_access_key = "${GW_SECRET_KEY}"
    identity = "kpu-identity.txt"             # optional: serves age-encrypted replicas decrypted
    tls_cert = "gw.crt"                       # optional, with tls_key: HTTPS
    tls_key = "gw.key"
    read_buffers = "64MiB"                    # optional: replica bytes all reads may hold at once
    allow_plain_http = false                  # a non-loopback listen needs TLS unless true
    write_spool = "4GiB"                      # optional: parts of multipart uploads on disk
    [gateway.buckets.pemilu]                  # the bucket name clients use
    replicas = ["kpu-alibaba", "vault:arsip", "offsite"]   # STORE[:PREFIX], preference order
    writable = false                          # optional: PutObject and multipart uploads
    quorum = 2                                # optional: stores holding a write verified

``writable = true`` takes writes (:mod:`daulat.gateway.writes`): acknowledged once ``quorum``
stores, the primary always among them, hold the object verified. The default quorum is 2
(1 for a bucket of one store): a write is acknowledged only once it exists twice.

Every problem is one line of a :class:`~daulat.errors.ConfigError` (the CLI exits 2). Secrets
take ``${ENV}`` references as store credentials do and are held as ``SecretStr``. Files are
relative to the config file's directory.
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import os
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt, ValidationError

from daulat.address import Address, parse_address
from daulat.config import Config, _describe, _expand_env
from daulat.crypto import Identity, load_identities
from daulat.errors import ConfigError
from daulat.plan.units import parse_bytes
from daulat.transfer.locations import location_of, overlaps
from daulat.transfer.safety import overlap_phrase

DEFAULT_LISTEN = "127.0.0.1:9000"
#: The replica bytes all reads in flight may hold at once (daulat.gateway.budget). 64 MiB
#: keeps 64 concurrent 256 MiB reads within about 300 MiB of resident memory (261 MiB
#: measured); a streamed read holds up to two 8 MiB chunks and a piece (about 18 MiB: one
#: chunk checked and being sent, the next being read), so three reads stream without waiting
#: and more take turns between chunks.
DEFAULT_READ_BUFFERS = 64 * 1024 * 1024
#: Below this, one read of an age-encrypted replica could not hold its decrypting stream.
MIN_READ_BUFFERS = 8 * 1024 * 1024
#: The parts of multipart uploads in progress all uploads may keep on disk at once.
DEFAULT_WRITE_SPOOL = 4 * 1024 * 1024 * 1024
#: A write is acknowledged once it exists twice (the primary and one more store), where there
#: are two stores: one copy is what the gateway is there to outlive.
DEFAULT_QUORUM = 2
# S3's rules for bucket names (path-style): 3-63 lower-case letters, digits, '.', '-'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class _Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: list[str] = Field(min_length=1)
    # Strict: a TOML string "yes" or a number is a mistake to report, never taken as true.
    writable: StrictBool = False
    quorum: StrictInt | None = Field(default=None, ge=1)


class _Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = DEFAULT_LISTEN
    access_key_id: SecretStr
    secret_access_key: SecretStr
    identity: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    region: str = Field(default="us-east-1", min_length=1)
    read_buffers: str | int = DEFAULT_READ_BUFFERS
    write_spool: str | int = DEFAULT_WRITE_SPOOL
    # Strict, as writable: a TOML string "yes" is a mistake, never consent to plain HTTP.
    allow_plain_http: StrictBool = False
    buckets: dict[str, _Bucket] = Field(min_length=1)


@dataclass(frozen=True)
class BucketConfig:
    name: str
    replicas: tuple[Address, ...]  # the first is the primary
    writable: bool = False
    quorum: int = 1  # stores (the primary among them) that must hold a write verified

    @property
    def primary(self) -> Address:
        return self.replicas[0]


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    access_key_id: str
    secret_access_key: SecretStr
    region: str
    buckets: dict[str, BucketConfig]
    identities: tuple[Identity, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    read_buffers: int = DEFAULT_READ_BUFFERS
    write_spool: int = DEFAULT_WRITE_SPOOL
    plain_http_exposed: bool = False  # listening beyond loopback without TLS, by opt-in

    def __repr__(self) -> str:  # never the secret, whatever prints this
        return f"GatewayConfig(listen={self.host}:{self.port}, buckets={sorted(self.buckets)})"


def parse_listen(value: str, where: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9000`` for IPv6) → (host, port); ConfigError when malformed."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", value.strip())
    if m is None:
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT (e.g. 127.0.0.1:9000)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is outside 1-65535")
    return host, port


def gateway_config(cfg: Config, listen: str | None = None) -> GatewayConfig:
    """Validate ``cfg``'s ``[gateway]`` table (``listen`` overrides its address)."""
    where = f"{cfg.path}: [gateway]"
    if cfg.raw_gateway is None:
        raise ConfigError(
            f"{cfg.path}: no [gateway] table: daulat serve needs access_key_id, "
            "secret_access_key and at least one [gateway.buckets.NAME] with replicas"
        )
    raw: Any = _expand_env(cfg.raw_gateway, dict(os.environ), where)
    try:
        model = _Gateway.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_invalid(exc, where))) from None
    problems: list[str] = []
    if not model.access_key_id.get_secret_value() or not model.secret_access_key.get_secret_value():
        problems.append(f"{where}: access_key_id and secret_access_key must not be empty")
    buckets: dict[str, BucketConfig] = {}
    for name, bucket in model.buckets.items():
        here = f"{where}: bucket {name!r}"
        if not _BUCKET.match(name) or ".." in name:
            problems.append(f"{here}: not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
            continue
        addresses: list[Address] = []
        for spec in bucket.replicas:
            try:
                address = parse_address(spec)
            except ConfigError as exc:
                problems.append(f"{here}: replicas: {exc}")
                continue
            if address.store not in cfg.stores:
                # Said here rather than by cfg.store(), whose message names the file again.
                problems.append(f"{here}: replicas: {_unknown_store(cfg, address.store)}")
                continue
            if address in addresses:
                problems.append(f"{here}: replicas: {spec!r} is listed twice")
                continue
            addresses.append(address)
        if len(addresses) != len(bucket.replicas):
            continue
        quorum = bucket.quorum or min(DEFAULT_QUORUM, len(addresses))
        if bucket.quorum is not None and not bucket.writable:
            # A quorum counts the stores holding a write: a read-only bucket takes none.
            problems.append(
                f"{here}: quorum = {bucket.quorum} needs writable = true: a read-only bucket "
                "takes no writes for a quorum to count"
            )
            continue
        if bucket.quorum is not None and bucket.quorum > len(addresses):
            problems.append(
                f"{here}: quorum = {bucket.quorum} is more than its {len(addresses)} replica(s): "
                "no write could ever be acknowledged"
            )
            continue
        if bucket.writable:
            problems += _write_problems(cfg, here, addresses)
        problems += _nested(cfg, here, addresses, bucket.writable)
        buckets[name] = BucketConfig(name, tuple(addresses), bucket.writable, quorum)
    base = cfg.path.parent

    def file(value: str | None, field: str) -> Path | None:
        if value is None:
            return None
        path = (base / Path(value).expanduser()).resolve()
        if not value.strip():
            problems.append(f"{where}: field {field!r} is empty: give a file, or leave it out")
        elif path.exists() and not path.is_file():
            problems.append(f"{where}: field {field!r}: {path} is not a file")
        elif not path.is_file():
            problems.append(f"{where}: field {field!r}: {path} does not exist")
        return path

    cert, key = file(model.tls_cert, "tls_cert"), file(model.tls_key, "tls_key")
    if (cert is None) != (key is None):
        problems.append(f"{where}: tls_cert and tls_key must be given together")
    elif cert is not None and key is not None and cert.is_file() and key.is_file():
        # Loaded here, as uvicorn will: a key that does not match the certificate (or a file
        # that is not PEM) is a configuration error before anything listens, not a failure
        # after the banner.
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            why = (
                exc.reason.lower().replace("_", " ")  # e.g. "key values mismatch"
                if exc.reason
                else "not a PEM certificate and the PEM private key that goes with it"
            )
            problems.append(f"{where}: tls_cert {cert} and tls_key {key} cannot be used: {why}")
        except OSError as exc:
            problems.append(f"{where}: tls_cert/tls_key: {exc.strerror or exc}")
    identity = file(model.identity, "identity")
    read_buffers = _read_buffers(model.read_buffers, where, problems)
    write_spool = _write_spool(model.write_spool, where, problems)
    try:
        host, port = parse_listen(
            listen if listen is not None else model.listen,
            "--listen" if listen is not None else f"{where}: field 'listen'",
        )
    except ConfigError as exc:
        problems.append(str(exc))
        host, port = "", 0
    host = _unmapped(host)
    if host and not _resolves(host):
        problems.append(f"{where}: listen {_hostport(host, port)}: the name does not resolve")
        host = ""
    exposed = bool(host) and cert is None and not is_loopback(host)
    if exposed and not model.allow_plain_http:
        # SigV4 authenticates requests but encrypts no response: objects (age replicas
        # decrypted) would cross the network in the clear.
        problems.append(
            f"{where}: listen {_hostport(host, port)} is reachable from other machines and would "
            "serve objects (age replicas decrypted) over plain HTTP: set tls_cert and tls_key, "
            "listen on 127.0.0.1, or set allow_plain_http = true to accept that"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    identities = tuple(load_identities(identity)) if identity is not None else ()
    return GatewayConfig(
        host=host,
        port=port,
        access_key_id=model.access_key_id.get_secret_value(),
        secret_access_key=model.secret_access_key,
        region=model.region,
        buckets=buckets,
        identities=identities,
        tls_cert=cert,
        tls_key=key,
        read_buffers=read_buffers,
        write_spool=write_spool,
        plain_http_exposed=exposed,
    )


def _invalid(exc: ValidationError, where: str) -> list[str]:
    """One line per mistake in the table. A misspelt field is one mistake, said once:
    ``unknown field 'acess_key_id' (did you mean 'access_key_id'?)``, and the required field
    it was meant to be is then not also reported missing."""
    errors = exc.errors()
    meant: set[str] = set()
    lines = []
    for e in errors:
        if e["type"] != "extra_forbidden":
            continue
        loc = _loc(e)
        parent, _, name = loc.rpartition(".")
        fields = _Bucket.model_fields if parent.startswith("buckets.") else _Gateway.model_fields
        close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.7)
        if not close:
            lines.append(f"{where}: {_describe(e)}")
            continue
        target = f"{parent}.{close[0]}" if parent else close[0]
        meant.add(target)
        lines.append(f"{where}: unknown field {loc!r} (did you mean {target!r}?)")
    for e in errors:
        if e["type"] == "extra_forbidden" or (e["type"] == "missing" and _loc(e) in meant):
            continue
        if e["type"] in ("model_type", "dict_type"):
            # pydantic would name its model class ("instance of _Bucket"): say what to write.
            lines.append(f"{where}: field {_loc(e)!r}: should be a table ([gateway.{_loc(e)}])")
            continue
        lines.append(f"{where}: {_describe(e)}")
    return lines


def _loc(err: Any) -> str:
    return ".".join(str(part) for part in err["loc"])


def _unknown_store(cfg: Config, name: str) -> str:
    known = sorted(cfg.stores)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown store {name!r} ({hint}known: {', '.join(known) or 'none configured'})"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unmapped(host: str) -> str:
    """An IPv4 address written as IPv6 (``::ffff:127.0.0.1``) as the IPv4 address it is: an
    IPv6-only socket cannot listen on it."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return str(mapped) if mapped is not None else host


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches only this machine: every address it
    resolves to is a loopback one. A name that does not resolve is not (refused, not guessed)."""
    try:
        return _loopback(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        _loopback(ipaddress.ip_address(str(a).partition("%")[0])) for a in addresses
    )


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, including an IPv4 loopback written as IPv6 (``::ffff:127.0.0.1``)."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _write_problems(cfg: Config, here: str, addresses: list[Address]) -> list[str]:
    """Why the stores of a ``writable`` bucket cannot take writes as the copy engine would."""
    out = []
    primary = cfg.store(addresses[0].store)
    if primary.encrypt_to:
        # The primary is served as stored: it must hold what clients read.
        out.append(
            f"{here}: writable = true: the primary's store {primary.name!r} declares "
            "encrypt_to, and the primary is served as stored: make a plain store the primary"
        )
    for address in addresses:
        store = cfg.store(address.store)
        if store.encrypt_names:
            # A protected name is a keyed hash only the copy engine's name key can make; a
            # write under the real name would put that name in the clear beside them.
            out.append(
                f"{here}: writable = true: store {store.name!r} protects names "
                "(encrypt_names), which gateway writes do not: copy into it with daulat instead"
            )
    return out


def _nested(cfg: Config, here: str, addresses: list[Address], writable: bool) -> list[str]:
    """Replicas of a bucket that are one place, or one inside the other (``prim`` and
    ``prim:sub``, or two stores on one directory). Writable, a write of ``report.csv`` to the
    outer would overwrite the inner's ``sub/report.csv`` (the check ``daulat sync`` makes).
    Read-only too: such a replica is no second copy (it is lost with the other, to the same
    provider), and the outer's listing serves the inner's copies as objects of its own."""
    why = (
        "a write to one would overwrite another's objects"
        if writable
        else "one is no copy apart from the other (a provider that cuts one off cuts off "
        "both), and the outer one lists the inner one's objects as its own"
    )

    async def check() -> list[str]:
        out = []
        places = [location_of(cfg.store(a.store), a.prefix) for a in addresses]
        for i, (a, la) in enumerate(zip(addresses, places, strict=True)):
            for b, lb in zip(addresses[i + 1 :], places[i + 1 :], strict=True):
                if await overlaps(la, lb):
                    out.append(
                        f"{here}: replicas {a.label!r} and {b.label!r} "
                        f"{overlap_phrase(la, lb)} ({la}, {lb}): {why}; give each replica "
                        "a place of its own"
                    )
        return out

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(check())
    # Called from a running loop (the tour): the host names resolve on a loop of their own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, check()).result()


def _write_spool(value: str | int, where: str, problems: list[str]) -> int:
    field = f"{where}: field 'write_spool'"
    try:
        return value if isinstance(value, int) else parse_bytes(value, field)
    except ConfigError as exc:
        problems.append(str(exc))
        return DEFAULT_WRITE_SPOOL


def _read_buffers(value: str | int, where: str, problems: list[str]) -> int:
    field = f"{where}: field 'read_buffers'"
    try:
        size = value if isinstance(value, int) else parse_bytes(value, field)
    except ConfigError as exc:
        problems.append(str(exc))
        return DEFAULT_READ_BUFFERS
    if size < MIN_READ_BUFFERS:
        problems.append(f"{field}: {value!r} is below the minimum of 8MiB")
    return size
