"""Resumable block-blob uploads on Azure (``azure-storage-blob``), for large objects.

obstore stages blocks under ids of its own and forgets them with the process, so a large
object cut off half-way starts again from its first byte. Here every block of an upload carries
in its id (``d1-SESSION-NUMBER-MD5``, 59 bytes before base64, the same length for every block as
Azure requires):

* daulat's upload-session id (16 hex digits, random, kept in the journal across resumed runs):
  blocks of another session, of another client or of a killed earlier session are never taken;
* the part number, so the blob is committed in order;
* the part's MD5, which Azure also checks on arrival (``Content-MD5``): a block is kept only
  when the source's bytes for that part now have the same MD5 and the listed size matches.

Azure's uncommitted block list gives only ids and sizes; it cannot say what a block holds. A
provider that swapped a block's bytes under its id is caught afterwards by ``verify --full``
(the object's SHA-256 is daulat's own), as it would be for any object it altered.

Azure discards uncommitted blocks a week after they were staged, and committing any other block
list discards them at once. A session none of whose blocks are listed any more is reported as
gone (:class:`~daulat.stores.resumable.UploadGone`) and begun afresh.

Uncommitted blocks cannot be deleted on their own: only committing a block list discards them,
and it discards *every* writer's. So :meth:`AzureBlocks.abort_session` discards a session's
blocks only when that touches nothing of anyone else: no committed blob of that name (it would
be rewritten) and no uncommitted block of another session or writer beside daulat's. Then it
commits an empty block list on condition that no blob exists (``If-None-Match: *``), which
discards the blocks, and deletes the empty blob that made, on condition that it is unchanged
(``If-Match``). Otherwise it raises :class:`~daulat.stores.resumable.SessionKept` and leaves the
blocks to Azure's own clean-up (a week), or to the commit of the run that writes the blob next.

Needs the ``azure`` extra (``pip install daulat[azure]``), and only stores with an account key or SAS (configured, or ``AZURE_STORAGE_ACCOUNT_NAME`` with
``AZURE_STORAGE_ACCOUNT_KEY``/``AZURE_STORAGE_SAS_KEY``) get this; with other credentials large
objects go through obstore and restart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, Mapping
from typing import Any

from daulat.config import StoreConfig
from daulat.errors import AccessDenied, NotFound, StoreError, Transient
from daulat.stores.base import PutResult
from daulat.stores.hashing import StreamHasher
from daulat.stores.objectstore import METADATA_PREFIX, PART_SIZE, normalise_etag
from daulat.stores.resumable import OnSession, ResumeStats, Session, SessionKept, UploadGone

ID_VERSION = "d1"
PARTS_IN_FLIGHT = 2


def block_id(session: str, number: int, md5_hex: str) -> str:
    """The id of part ``number`` (1-based) of ``session`` holding bytes with this MD5."""
    return f"{ID_VERSION}-{session}-{number:06d}-{md5_hex}"


class AzureBlocks:
    """Resumable uploads into one container (and key prefix) through azure-storage-blob."""

    def __init__(
        self,
        *,
        name: str,
        account_url: str,
        container: str,
        prefix: str,
        credential: Any,
        part_size: int = PART_SIZE,
        timeout: float | None = None,
    ) -> None:
        from azure.storage.blob import ContainerClient

        self.name = name
        self._account_url = account_url.rstrip("/")
        self.container = container
        self.prefix = prefix.strip("/")
        self._part_size = part_size
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["connection_timeout"] = timeout
            kwargs["read_timeout"] = timeout
        self._client = ContainerClient(
            self._account_url, container, credential=credential, **kwargs
        )

    @classmethod
    def from_config(
        cls, cfg: StoreConfig, env: Mapping[str, str] | None = None
    ) -> AzureBlocks | None:
        """The resumable half of an Azure store, or None when its credentials are not an
        account key or SAS (obstore then carries large objects alone)."""
        try:
            import azure.storage.blob  # noqa: F401  (the optional extra daulat[azure])
        except ImportError:
            return None
        environ = os.environ if env is None else env
        creds = cfg.credentials
        account = (creds.account_name if creds else None) or environ.get(
            "AZURE_STORAGE_ACCOUNT_NAME"
        )
        credential: Any = None
        if creds is not None and creds.account_key is not None and account:
            credential = {
                "account_name": account,
                "account_key": creds.account_key.get_secret_value(),
            }
        elif creds is not None and creds.sas_token is not None:
            credential = creds.sas_token.get_secret_value().lstrip("?")
        elif account and environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
            credential = {
                "account_name": account,
                "account_key": environ["AZURE_STORAGE_ACCOUNT_KEY"],
            }
        elif environ.get("AZURE_STORAGE_SAS_KEY"):
            credential = environ["AZURE_STORAGE_SAS_KEY"].lstrip("?")
        if credential is None or (not account and cfg.endpoint is None):
            return None
        url = cfg.endpoint or f"https://{account}.blob.core.windows.net"
        return cls(
            name=cfg.name,
            account_url=url,
            container=cfg.bucket,
            prefix=cfg.prefix,
            credential=credential,
            part_size=cfg.part_size or PART_SIZE,
            timeout=cfg.request_timeout,
        )

    @property
    def location(self) -> str:
        return f"{self._account_url}/{self.container}/{self.prefix}"

    @property
    def part_size(self) -> int:
        return self._part_size

    def _blob(self, key: str) -> Any:
        return self._client.get_blob_client(f"{self.prefix}/{key}" if self.prefix else key)

    async def _call(self, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ResourceNotFoundError:
            raise NotFound(
                f"store {self.name!r}: {key!r} does not exist", store=self.name, key=key
            ) from None
        except ClientAuthenticationError:
            raise AccessDenied(
                f"store {self.name!r}: access denied writing {key!r}", store=self.name, key=key
            ) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            code = getattr(exc, "error_code", None) or status
            if status in (401, 403):
                raise AccessDenied(
                    f"store {self.name!r}: access denied writing {key!r} ({code})",
                    store=self.name,
                    key=key,
                ) from None
            if status in (408, 429) or status >= 500:
                raise Transient(
                    f"store {self.name!r}: writing {key!r} failed ({code})",
                    store=self.name,
                    key=key,
                ) from None
            raise StoreError(
                f"store {self.name!r}: writing {key!r} failed ({code})", store=self.name, key=key
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise Transient(
                f"store {self.name!r}: writing {key!r} failed ({type(exc).__name__})",
                store=self.name,
                key=key,
            ) from None

    async def uncommitted(self, key: str, session: str) -> dict[str, int]:
        """Ids (decoded) and sizes of the session's uncommitted blocks of ``key``."""
        blob = self._blob(key)
        try:
            _, blocks = await self._call(key, blob.get_block_list, "uncommitted")
        except NotFound:
            return {}  # no blob and no blocks staged for it
        prefix = f"{ID_VERSION}-{session}-"
        found: dict[str, int] = {}
        for block in blocks:
            ident = str(block.id)  # the client decodes the base64 on the wire
            if ident.startswith(prefix):
                found[ident] = int(block.size)
        return found

    async def put_resumable(
        self,
        key: str,
        data: AsyncIterable[bytes],
        *,
        metadata: Mapping[str, str] | None,
        session: Session | None,
        on_session: OnSession,
        stats: ResumeStats,
    ) -> PutResult:
        """Stage the stream's parts as blocks (keeping the session's matching ones) and commit
        the list with ``metadata``; see the module docstring."""
        from azure.storage.blob import BlobBlock

        blob = self._blob(key)
        staged: dict[str, int] = {}
        if session is None:
            session = Session(secrets.token_hex(8), self.part_size)
            on_session(session)
        else:
            staged = await self.uncommitted(key, session.upload_id)
            if not staged:
                raise UploadGone(
                    f"store {self.name!r}: the staged blocks of {key!r} are gone (expired or "
                    "committed over); it starts again",
                    store=self.name,
                    key=key,
                )
            stats.resumed = True
        sid, size = session.upload_id, session.part_size
        hasher = StreamHasher()
        ids: list[str] = []
        in_flight: set[asyncio.Task[None]] = set()

        async def stage(number: int, body: bytes) -> None:
            md5 = await asyncio.to_thread(hashlib.md5, body)
            ident = block_id(sid, number, md5.hexdigest())
            ids.append(ident)
            if staged.get(ident) == len(body):
                stats.kept_parts += 1
                stats.kept_bytes += len(body)
                return
            if any(i.startswith(f"{ID_VERSION}-{sid}-{number:06d}-") for i in staged):
                stats.replaced_parts += 1
            await self._call(
                key,
                blob.stage_block,
                ident,
                body,
                length=len(body),
                headers={"Content-MD5": base64.b64encode(md5.digest()).decode()},
            )
            stats.sent_parts += 1
            stats.sent_bytes += len(body)

        async def launch(number: int, body: bytes) -> None:
            while len(in_flight) >= PARTS_IN_FLIGHT:
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    in_flight.discard(task)
                    task.result()
            in_flight.add(asyncio.ensure_future(stage(number, body)))

        buffer = bytearray()
        number = 1
        try:
            async for chunk in data:
                await hasher.update(chunk)
                buffer += chunk
                while len(buffer) >= size:
                    await launch(number, bytes(buffer[:size]))
                    del buffer[:size]
                    number += 1
            if buffer or number == 1:
                await launch(number, bytes(buffer))
            del buffer
            for task in asyncio.as_completed(list(in_flight)):
                await task
            in_flight.clear()
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        ordered = sorted(ids, key=lambda i: int(i.split("-")[2]))
        meta = {METADATA_PREFIX + k: v for k, v in (metadata or {}).items()}
        try:
            reply = await self._call(
                key,
                blob.commit_block_list,
                [BlobBlock(block_id=i) for i in ordered],
                metadata=meta,
            )
        except StoreError as exc:
            if "InvalidBlockList" in str(exc):
                # A block vanished between staging and commit (expired, committed over).
                raise UploadGone(
                    f"store {self.name!r}: staged blocks of {key!r} are gone; it starts again",
                    store=self.name,
                    key=key,
                ) from None
            raise
        etag = reply.get("etag") if isinstance(reply, Mapping) else None
        return PutResult(
            key=key,
            size=hasher.size,
            sha256=hasher.hexdigest(),
            etag=normalise_etag(str(etag)) if etag else None,
        )

    async def abort_session(self, key: str, session: Session) -> None:
        """Discard the session's uncommitted blocks when nothing else is touched by it, else
        :class:`SessionKept` (see the module docstring); succeeds when none is left."""
        from azure.core import MatchConditions

        blob = self._blob(key)
        try:
            _committed, blocks = await self._call(key, blob.get_block_list, "all")
        except NotFound:
            return  # no blob and no blocks staged for it
        prefix = f"{ID_VERSION}-{session.upload_id}-"
        ours = sum(1 for b in blocks if str(b.id).startswith(prefix))
        if not ours:
            return
        if ours != len(blocks):
            raise SessionKept(
                f"store {self.name!r}: the unfinished upload of {key!r} was left to Azure's "
                f"clean-up: {len(blocks) - ours} uncommitted block(s) of another writer are "
                "staged beside daulat's, and discarding daulat's would discard theirs",
                store=self.name,
                key=key,
            )
        kept = SessionKept(
            f"store {self.name!r}: the unfinished upload of {key!r} was left to Azure's "
            "clean-up: a committed blob of that name exists, and discarding the upload's "
            "blocks would rewrite it",
            store=self.name,
            key=key,
        )
        try:
            await self._call(key, blob.get_blob_properties)
        except NotFound:
            pass
        else:
            raise kept
        try:
            # Only while no blob exists: a writer who committed meanwhile keeps their blob.
            reply = await self._call(
                key, blob.commit_block_list, [], match_condition=MatchConditions.IfMissing
            )
        except (AccessDenied, Transient):
            raise
        except StoreError:  # 409/412: a blob appeared meanwhile
            raise kept from None
        try:
            await self._call(
                key,
                blob.delete_blob,
                etag=reply["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except NotFound:
            pass  # removed meanwhile
        except (AccessDenied, Transient):
            raise
        except StoreError:
            pass  # rewritten meanwhile by another writer: theirs now, left as it is

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
