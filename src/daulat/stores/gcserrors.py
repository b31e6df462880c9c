"""Errors of the Google Cloud Storage client as daulat's errors (see :mod:`daulat.errors`).

Google's exceptions quote request URLs, and a resumable session's URL is a bearer capability;
their text is never used in a message: messages name the HTTP status or the exception's class.
"""

from __future__ import annotations

from typing import Any

from daulat.errors import AccessDenied, NotFound, StoreError, Transient


def bucket_missing(exc: Any) -> bool:
    """Whether a 404 is about the bucket rather than the object (Google's message says so)."""
    return "bucket" in str(getattr(exc, "message", "")).lower()


def translate(
    exc: BaseException, *, store: str, key: str | None, op: str
) -> tuple[StoreError, bool]:
    """An exception of the Google client as a daulat error, and whether it was a timeout.

    Google's exceptions quote request URLs (a resumable session's is a bearer capability), so
    their text is never used: messages name the HTTP status or the exception's class only.
    """
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    if isinstance(exc, StoreError):
        return exc, False
    if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    where = f"{op} {key!r}" if key is not None else op
    status: int | None = None
    if isinstance(exc, gexc.GoogleAPICallError):
        status = exc.code
    elif isinstance(exc, InvalidResponse):
        status = getattr(exc.response, "status_code", None)
    if isinstance(exc, aexc.TransportError) and exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]  # the token endpoint could not be reached: what happened there
    timed_out = isinstance(exc, (TimeoutError, requests.exceptions.Timeout))
    if isinstance(exc, aexc.RefreshError):
        if getattr(exc, "retryable", False):
            return Transient(
                f"store {store!r}: {where} failed: the token endpoint failed (try again)",
                store=store,
                key=key,
            ), False
        return AccessDenied(
            f"store {store!r} refused {where}: Google refused to issue an access token "
            "(RefreshError); the credentials may be wrong, disabled or revoked",
            store=store,
            key=key,
        ), False
    if isinstance(exc, aexc.GoogleAuthError) and status is None:
        return AccessDenied(
            f"store {store!r} refused {where}: cannot use the Google credentials "
            f"({type(exc).__name__})",
            store=store,
            key=key,
        ), False
    if isinstance(exc, DataCorruption):
        return Transient(
            f"store {store!r}: {where} failed: the bytes received do not match Google's CRC32C",
            store=store,
            key=key,
        ), False
    if status is None:
        if timed_out:
            reason = "timed out"
        elif isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
            reason = "cannot connect" if "refused" in str(exc).lower() else "connection failed"
        elif isinstance(exc, (requests.exceptions.RequestException, OSError)):
            reason = type(exc).__name__
        else:
            return StoreError(
                f"store {store!r}: {where} failed ({type(exc).__name__})", store=store, key=key
            ), False
        return Transient(f"store {store!r}: {where} failed ({reason})", store=store, key=key), (
            timed_out
        )
    reason = f"HTTP {status}"
    if status == 404:
        if bucket_missing(exc):
            return AccessDenied(
                f"store {store!r} refused {where} ({reason}): the bucket does not exist",
                store=store,
                key=key,
            ), False
        return NotFound(f"store {store!r}: {key!r} does not exist", store=store, key=key), False
    if status in (401, 403):
        return AccessDenied(
            f"store {store!r} refused {where} ({reason}): credentials may be wrong or revoked, "
            "or the bucket may be missing or not theirs to use",
            store=store,
            key=key,
        ), False
    if status in (408, 429) or status >= 500:
        return Transient(f"store {store!r}: {where} failed ({reason})", store=store, key=key), (
            status == 408
        )
    return StoreError(f"store {store!r}: {where} failed ({reason})", store=store, key=key), False
