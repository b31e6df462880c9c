"""daulat's exception hierarchy.

Users of the library catch these, never a provider SDK's exceptions::

    DaulatError
    ├── ConfigError            daulat.toml is missing, malformed or inconsistent (CLI exit 2)
    ├── SafetyRefusal          a run refused before it could destroy or expose data (CLI exit 2)
    │   ├── OverlappingLocations   source and destination are (inside) one real location
    │   ├── EmptySource            sync --delete or exit from a source that lists nothing
    │   ├── TooManyDeletions       sync --delete would delete more than --max-delete allows
    │   ├── PlaintextOverCiphertext  an unencrypted write into encrypted (or name-protected) data
    │   └── FilterOnProtectedNames   sync --delete with filters where names are protected
    ├── StoreError             an operation on one store failed
    │   ├── NotFound           the key does not exist
    │   ├── InvalidKey         this store cannot hold this key (per object; the run goes on)
    │   │   ├── MetadataTooLarge  nor this object's metadata (a filesystem's extended
    │   │   │                  attributes hold a few KB)
    │   │   └── NameConflict   a directory store holds 'a' as a file and 'a/b' is asked, or
    │   │                      the reverse (no copy can mend it while both exist)
    │   ├── IntegrityError     content did not match the expected hash; nothing was written
    │   ├── AccessDenied       the provider refused: bad or revoked credentials, no permission,
    │   │   │                  missing bucket or disabled account (permanent: stop, do not retry)
    │   │   └── Unresponsive   the endpoint never answered (or refused every connection)
    │   │                      within the request timeout
    │   ├── Transient          throttling, 5xx, timeouts, resets (worth retrying)
    │   │   └── SourceChanged  the object changed while it was read (read it again)
    │   ├── Unsupported        the store kind cannot do this operation
    │   └── MissingRoot        a directory store's root does not exist (a source cannot be
    │                          read; a destination is empty, and its first put creates it)
    ├── InsideEventLoop        a synchronous call (daulat.exit…) made inside a running event
    │                          loop: await its twin in daulat.aio there
    ├── CallbackFailed         the caller's progress callback raised; the run stopped there
    ├── ManifestError          the local state database is unusable
    │   └── StateError         a file under .daulat/ is damaged, not daulat's, or cannot be
    │                          made private (CLI exit 2)
    └── Interrupted            SIGINT/SIGTERM stopped the run; carries what was done (CLI exit
                               130/143)

Messages never contain secrets: adapters build them from the store name, the key and a short
reason, not from the SDK's text (which can echo request headers or signed URLs).
"""

from __future__ import annotations

import signal


class DaulatError(Exception):
    """Base class of every error daulat raises on purpose."""


class ConfigError(DaulatError):
    """The configuration cannot be used. The message names the store and the field."""


class SafetyRefusal(DaulatError):
    """A run refused before writing anything: as asked, it could destroy or expose data.

    The message names what was found and the option that overrides the refusal, if any.
    """


class OverlappingLocations(SafetyRefusal):
    """Source and destination resolve to the same place, or one lies inside the other."""


class EmptySource(SafetyRefusal):
    """``sync --delete`` or ``exit`` from a source that lists no objects (a typo, most often)."""


class TooManyDeletions(SafetyRefusal):
    """``sync --delete`` would delete more destination objects than ``max_delete`` allows."""


class PlaintextOverCiphertext(SafetyRefusal):
    """An unencrypted write into a destination that holds daulat-encrypted objects (or
    objects under protected names)."""


class RealNamesLeft(SafetyRefusal):
    """A run with ``--encrypt-names`` (and without ``sync --delete``) into a destination that
    holds copies under the real names of source objects, from a run without name protection."""


class FilterOnProtectedNames(SafetyRefusal):
    """``sync --delete`` with filters into a destination whose names are protected: its keys
    are keyed hashes, so no filter can tell which of them it would exclude."""


class InsideEventLoop(DaulatError):
    """A synchronous entry point (``daulat.exit`` and the others) was called from code that
    runs in an event loop, where it cannot start one of its own: await the coroutine of the
    same name in :mod:`daulat.aio` instead."""


class CallbackFailed(DaulatError):
    """The ``progress`` callback given to a library call raised: the run stopped there, as
    any failure stops it (what was finished is kept; a rerun resumes). The callback's own
    exception is the ``__cause__``."""


class ManifestError(DaulatError):
    """The manifest database cannot be opened or is inconsistent."""


class StateError(ManifestError):
    """A file of daulat's local state cannot be used; the message names the file."""


class Interrupted(DaulatError):
    """A signal (SIGINT or SIGTERM) stopped the run cleanly.

    ``result`` is what the run had done when it stopped (a transfer's ``Summary``, for
    instance), or None when nothing can be reported; ``exit_code`` is 128 + the signal number,
    as a shell reports a process ended by that signal.
    """

    def __init__(self, signum: int, result: object | None = None) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.result = result
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


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


class NameConflict(InvalidKey):
    """A directory store cannot hold the key beside another object of the store: one of them
    would be a file and a directory at once ('a' and 'a/b'). Refused per object."""


class MetadataTooLarge(InvalidKey):
    """This store cannot keep the object's metadata beside it (more than its limit); refused
    per object, nothing was written."""


class IntegrityError(StoreError):
    """The uploaded content did not match its expected hash; nothing is left behind."""


class AccessDenied(StoreError):
    """The provider refused the request; retrying will not help until access is restored."""


class Unresponsive(AccessDenied):
    """The endpoint accepted connections (or none) but has not answered one request within the
    request timeout since the store was opened, or has refused every connection for that long:
    a wrong or dead endpoint, not a passing fault, so the run stops instead of retrying."""


class Transient(StoreError):
    """A temporary failure (throttling, server error, timeout); retrying may succeed."""


class SourceChanged(Transient):
    """The object changed while it was read, so what was read may be torn; reading it again may
    succeed. Not a sign of an overloaded store: retried without slowing down."""


class Unsupported(StoreError):
    """The store kind cannot perform this operation."""


class MissingRoot(StoreError):
    """A filesystem store's root directory does not exist.

    Listing such a store raises this rather than answering "no objects", so a mistyped source is
    an error and not an empty store. A destination may start out missing: its first put creates
    the root.
    """
