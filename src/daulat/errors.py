"""daulat's exception hierarchy.

Users of the library catch these, never a provider SDK's exceptions::

    DaulatError
    ├── ConfigError            daulat.toml is missing, malformed or inconsistent (CLI exit 2)
    ├── StoreError             an operation on one store failed
    │   ├── NotFound           the key does not exist
    │   ├── InvalidKey         this store cannot hold this key (per object; the run goes on)
    │   ├── IntegrityError     content did not match the expected hash; nothing was written
    │   ├── AccessDenied       the provider refused: bad or revoked credentials, no permission,
    │   │   │                  missing bucket or disabled account (permanent: stop, do not retry)
    │   │   └── Unresponsive   the endpoint never answered within the request timeout
    │   ├── Transient          throttling, 5xx, timeouts, resets (worth retrying)
    │   └── Unsupported        the store kind cannot do this operation
    └── ManifestError          the local state database is unusable

Messages never contain secrets: adapters build them from the store name, the key and a short
reason, not from the SDK's text (which can echo request headers or signed URLs).
"""

from __future__ import annotations


class DaulatError(Exception):
    """Base class of every error daulat raises on purpose."""


class ConfigError(DaulatError):
    """The configuration cannot be used. The message names the store and the field."""


class ManifestError(DaulatError):
    """The manifest database cannot be opened or is inconsistent."""


class StoreError(DaulatError):
    """An operation on a store failed.

    ``store`` is the configured store name and ``key`` the object key involved, if any.
    """

    def __init__(self, message: str, *, store: str = "", key: str | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.key = key


class NotFound(StoreError):
    """The object does not exist."""


class InvalidKey(StoreError):
    """This store cannot hold the key; refused per object, nothing was written."""


class IntegrityError(StoreError):
    """The uploaded content did not match its expected hash; nothing is left behind."""


class AccessDenied(StoreError):
    """The provider refused the request; retrying will not help until access is restored."""


class Unresponsive(AccessDenied):
    """The endpoint accepted connections (or none) but has not answered one request within the
    request timeout since the store was opened: a wrong or dead endpoint, not a passing fault,
    so the run stops instead of retrying."""


class Transient(StoreError):
    """A temporary failure (throttling, server error, timeout); retrying may succeed."""


class Unsupported(StoreError):
    """The store kind cannot perform this operation."""
