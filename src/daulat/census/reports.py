"""Where a provider's inventory report is read from, and what a malformed one raises.

An inventory report is a small JSON manifest naming data files (CSV, CSV.gz, Parquet) that
sit beside it in the bucket or container the provider wrote them to. ``--from-inventory``
takes the manifest's address in one of three forms:

``s3://BUCKET/KEY``, ``az://CONTAINER/PATH``
    Read through the first configured store of that scheme and bucket (its endpoint and
    credentials), at the bucket's root: the manifest names data files by their full key.
``STORE:PATH``
    A key under configured store ``STORE`` (its prefix applies to ``PATH`` only).
a local path or ``file:`` URL
    A report already downloaded. Data files are looked for under each directory above the
    manifest (a copy of the bucket's tree, as ``aws s3 sync`` makes) and beside it.

Every data file is copied to a private temporary directory before it is read, so a report
of billions of rows is read in bounded memory, and the size (and MD5, where the manifest
gives one) the manifest states for it is checked first: a truncated or altered file is
refused by name, never read in part.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from daulat.config import Config, StoreConfig
from daulat.errors import ConfigError, NotFound
from daulat.stores import Store, open_store

__all__ = ["InventoryError", "ReportFiles", "made_when", "open_report"]


class InventoryError(ConfigError):
    """An inventory report that cannot be read as its provider documents it: the message
    names the file and, where there is one, the line (``unit``: "row" in a Parquet file,
    which has rows, not lines; CLI exit 2)."""

    def __init__(
        self, file: str, what: str, line: int | None = None, *, unit: str = "line"
    ) -> None:
        where = f"{file}, {unit} {line}" if line is not None else file
        super().__init__(f"inventory report {where}: {what}")
        self.file = file
        self.line = line


def made_when(file: str, field: str, value: object, when: dt.datetime | None) -> dt.datetime:
    """The date a report's manifest gives for when the provider made it (``field``, whose
    raw ``value`` parsed to ``when``): the census is as of then. A report without a
    believable one (missing, not a date, in the future) is refused, naming ``file``."""
    if when is None:
        raise InventoryError(file, f"has no valid {field} ({value!r}): when was it made?")
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    # An hour of leeway for a clock that is a little behind the provider's.
    if when > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1):
        raise InventoryError(
            file, f"says it was made in the future ({field} {when:%Y-%m-%d %H:%M} UTC)"
        )
    return when


class ReportFiles(ABC):
    """The manifest of one report and the data files it names."""

    #: How the manifest is named in messages.
    manifest_name: str

    @abstractmethod
    async def manifest(self) -> bytes:
        """The manifest's bytes."""

    @abstractmethod
    async def sibling(self, name: str) -> bytes | None:
        """A small file beside the manifest (its checksum file), or None when absent."""

    @abstractmethod
    async def fetch(self, name: str, size: int | None, md5_hex: str | None) -> Path:
        """A local copy of data file ``name`` (as the manifest names it), checked against
        ``size`` and ``md5_hex`` where given; raises :class:`InventoryError` otherwise."""

    def describe(self, name: str) -> str:
        """``name`` as messages show it."""
        return name

    async def close(self) -> None:  # noqa: B027 (a local report opens nothing)
        """Remove local copies and close what was opened."""


def _check(file: str, path: Path, size: int | None, md5_hex: str | None) -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        raise InventoryError(file, f"is {got:,} bytes; the manifest says {size:,}")
    if md5_hex:
        h = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != md5_hex.lower():
            raise InventoryError(file, "does not match the MD5 the manifest gives for it")


class LocalReport(ReportFiles):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest_name = str(path)

    async def manifest(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise InventoryError(str(self.path), f"cannot be read ({exc.strerror})") from None

    async def sibling(self, name: str) -> bytes | None:
        try:
            return (self.path.parent / name).read_bytes()
        except OSError:
            return None

    def _find(self, name: str) -> Path | None:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise InventoryError(
                self.manifest_name, f"names a data file {name!r} outside the report"
            )
        for above in (self.path.parent, *self.path.parent.parents):
            candidate = above.joinpath(*rel.parts)
            if candidate.is_file():
                return candidate
        beside = self.path.parent / rel.name
        return beside if beside.is_file() else None

    async def fetch(self, name: str, size: int | None, md5_hex: str | None) -> Path:
        found = self._find(name)
        if found is None:
            raise InventoryError(
                self.manifest_name,
                f"names data file {name!r}, found neither under a directory above the "
                "manifest nor beside it",
            )
        _check(str(found), found, size, md5_hex)
        return found

    def describe(self, name: str) -> str:
        found = self._find(name)
        return str(found) if found is not None else name


class StoreReport(ReportFiles):
    """A report in a bucket or container, read through a configured store opened at its
    root (``root``: that store; ``key``: the manifest's key from the root)."""

    def __init__(self, root: Store, url: str, key: str, tmp: Path) -> None:
        self.root = root
        self.url = url
        self.key = key
        self.tmp = tmp
        self.manifest_name = f"{url}/{key}"
        self._n = 0

    async def _read(self, key: str) -> bytes:
        reader = await self.root.get(key)
        return await reader.read_all()

    async def manifest(self) -> bytes:
        try:
            return await self._read(self.key)
        except NotFound:
            raise InventoryError(self.manifest_name, "not found") from None

    async def sibling(self, name: str) -> bytes | None:
        parent = self.key.rpartition("/")[0]
        try:
            return await self._read(f"{parent}/{name}" if parent else name)
        except NotFound:
            return None

    async def fetch(self, name: str, size: int | None, md5_hex: str | None) -> Path:
        self._n += 1
        path = self.tmp / f"{self._n:06d}-{PurePosixPath(name).name[-80:]}"
        try:
            reader = await self.root.get(name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                async for chunk in reader:
                    out.write(chunk)
        except NotFound:
            raise InventoryError(
                self.manifest_name, f"names data file {name!r}, which is not there"
            ) from None
        _check(self.describe(name), path, size, md5_hex)
        return path

    def describe(self, name: str) -> str:
        return f"{self.url}/{name}"

    async def close(self) -> None:
        await self.root.close()


def _root_view(cfg: StoreConfig) -> StoreConfig:
    """``cfg`` at its bucket's (container's) root: same endpoint and credentials."""
    return cfg.model_copy(update={"url": f"{cfg.scheme}://{cfg.bucket}"})


@contextlib.asynccontextmanager
async def open_report(config: Config, address: str) -> AsyncIterator[ReportFiles]:
    """The report at ``address`` (see the module docstring). Raises :class:`ConfigError`
    when the address names no configured store that can read it."""
    files = _locate(config, address)
    try:
        yield files
    finally:
        await files.close()
        tmp = getattr(files, "tmp", None)
        if isinstance(tmp, Path):
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()


def _locate(config: Config, address: str) -> ReportFiles:
    parts = urlsplit(address)
    if parts.scheme in ("s3", "az", "gs") and parts.netloc:
        key = unquote(parts.path).lstrip("/")
        for cfg in config.stores.values():
            if cfg.scheme == parts.scheme and cfg.bucket == parts.netloc:
                return _store_report(config, cfg, key)
        raise ConfigError(
            f"--from-inventory {address}: no configured store is in {parts.scheme}://"
            f"{parts.netloc}; configure one there (its endpoint and credentials read the report)"
        )
    if parts.scheme == "file":
        return LocalReport(Path(unquote(parts.path)))
    name, sep, rest = address.partition(":")
    if sep and name in config.stores and config.stores[name].scheme != "file":
        cfg = config.stores[name]
        key = "/".join(p for p in (cfg.prefix, rest.lstrip("/")) if p)
        return _store_report(config, cfg, key)
    if sep and name in config.stores:
        return LocalReport(config.stores[name].path / rest.lstrip("/"))
    return LocalReport(Path(address).expanduser().resolve())


def _store_report(config: Config, cfg: StoreConfig, key: str) -> StoreReport:
    if not key:
        raise ConfigError("--from-inventory: give the manifest's key, not a bucket")
    root = _root_view(cfg)
    store = open_store(root)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="inventory-", dir=config.state_dir))
    return StoreReport(store, root.url, key, tmp)
