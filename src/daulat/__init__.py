"""daulat: where your data lives, under whose law, and how to leave with proof.

The public Python API (README, "Using daulat from Python")::

    import daulat
    cfg = daulat.load_config("daulat.toml")
    summary = daulat.exit(cfg, "kpu-alibaba", "vault", encrypt_to=["age1..."])
    assert summary.ok and summary.verified_objects == summary.source_objects

Every name in ``__all__`` is public and typed; the same functions as coroutines are in
:mod:`daulat.aio`. Everything else is internal and may change. Every error raised is a
:class:`DaulatError`.

``daulat.verify`` and ``daulat.drill`` are the API's functions; the drill module of the same
name stays importable (``from daulat.drill import DrillResult``); verification's module is
:mod:`daulat.transfer.verify`.
"""

__version__ = "0.1.0"

# After __version__: modules imported from here read it (the report prints it).
from daulat import aio
from daulat.aio import (
    ConfigLike,
    DrillProgress,
    OpenedStore,
    ScanProgress,
    TransferProgress,
)
from daulat.api import (
    check,
    copy,
    drill,
    exit,
    load_config,
    open_store,
    restore,
    scan,
    sync,
    verify,
)
from daulat.audit import AuditLogError
from daulat.config import Config
from daulat.crypto import (
    CryptoError,
    DecryptError,
    EncryptError,
    KeyFileError,
    RecipientError,
)
from daulat.drill import DrillFailed, DrillResult
from daulat.errors import (
    AccessDenied,
    CallbackFailed,
    ConfigError,
    DaulatError,
    EmptySource,
    FilterOnProtectedNames,
    InsideEventLoop,
    IntegrityError,
    Interrupted,
    InvalidKey,
    ManifestError,
    MissingRoot,
    NotFound,
    OverlappingLocations,
    PlaintextOverCiphertext,
    SafetyRefusal,
    SourceChanged,
    StateError,
    StoreError,
    TooManyDeletions,
    Transient,
    Unresponsive,
    Unsupported,
)
from daulat.inventory import ScanFailure, ScanResults, ScanSummary
from daulat.policy import Finding, PolicyResult
from daulat.signing import SignatureError
from daulat.stores import ObjectInfo, ObjectReader, Store
from daulat.transfer import Summary
from daulat.transfer.names import NameKeyError
from daulat.transfer.recipients import RecipientsChanged
from daulat.transfer.verify import VerifyReport

__all__ = [
    "AccessDenied",
    "AuditLogError",
    "CallbackFailed",
    "Config",
    "ConfigError",
    "ConfigLike",
    "CryptoError",
    "DaulatError",
    "DecryptError",
    "DrillFailed",
    "DrillProgress",
    "DrillResult",
    "EmptySource",
    "EncryptError",
    "FilterOnProtectedNames",
    "Finding",
    "InsideEventLoop",
    "IntegrityError",
    "Interrupted",
    "InvalidKey",
    "KeyFileError",
    "ManifestError",
    "MissingRoot",
    "NameKeyError",
    "NotFound",
    "ObjectInfo",
    "ObjectReader",
    "OpenedStore",
    "OverlappingLocations",
    "PlaintextOverCiphertext",
    "PolicyResult",
    "RecipientError",
    "RecipientsChanged",
    "SafetyRefusal",
    "ScanFailure",
    "ScanProgress",
    "ScanResults",
    "ScanSummary",
    "SignatureError",
    "SourceChanged",
    "StateError",
    "Store",
    "StoreError",
    "Summary",
    "TooManyDeletions",
    "TransferProgress",
    "Transient",
    "Unresponsive",
    "Unsupported",
    "VerifyReport",
    "__version__",
    "aio",
    "check",
    "copy",
    "drill",
    "exit",
    "load_config",
    "open_store",
    "restore",
    "scan",
    "sync",
    "verify",
]
