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

Each name is imported the first time it is read (:mod:`daulat.lazy`), so ``import daulat``
itself imports nothing of the library, and ``daulat.exit`` costs its imports once, on first use.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Where each public name lives, imported the first time it is read (daulat.lazy): `import
# daulat` alone costs next to nothing, and neither does a command that needs little of the
# library. The TYPE_CHECKING block above says the same for type checkers (a test holds the two
# together).
_WHERE: dict[str, tuple[str, ...]] = {
    "daulat.aio": (
        "ConfigLike",
        "DrillProgress",
        "OpenedStore",
        "ScanProgress",
        "TransferProgress",
    ),
    "daulat.api": (
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
    ),
    "daulat.audit": ("AuditLogError",),
    "daulat.config": ("Config",),
    "daulat.crypto": (
        "CryptoError",
        "DecryptError",
        "EncryptError",
        "KeyFileError",
        "RecipientError",
    ),
    "daulat.drill": ("DrillFailed", "DrillResult"),
    "daulat.errors": (
        "AccessDenied",
        "CallbackFailed",
        "ConfigError",
        "DaulatError",
        "EmptySource",
        "FilterOnProtectedNames",
        "InsideEventLoop",
        "IntegrityError",
        "Interrupted",
        "InvalidKey",
        "ManifestError",
        "MissingRoot",
        "NotFound",
        "OverlappingLocations",
        "PlaintextOverCiphertext",
        "SafetyRefusal",
        "SourceChanged",
        "StateError",
        "StoreError",
        "TooManyDeletions",
        "Transient",
        "Unresponsive",
        "Unsupported",
    ),
    "daulat.inventory": ("ScanFailure", "ScanResults", "ScanSummary"),
    "daulat.policy": ("Finding", "PolicyResult"),
    "daulat.signing": ("SignatureError",),
    "daulat.stores": ("ObjectInfo", "ObjectReader", "Store"),
    "daulat.transfer": ("Summary",),
    "daulat.transfer.names": ("NameKeyError",),
    "daulat.transfer.recipients": ("RecipientsChanged",),
    "daulat.transfer.verify": ("VerifyReport",),
}

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

if not TYPE_CHECKING:
    import importlib

    from daulat import lazy

    __getattr__, __dir__ = lazy.exports(
        __name__,
        {"aio": "daulat.aio"} | {n: m for m, names in _WHERE.items() for n in names},
        __all__,
    )

    # daulat.drill is the API's function and the name of a subpackage. Importing a
    # subpackage the first time sets it as an attribute of its parent, over whatever had the
    # name; so the subpackage (whose own names are lazy too: this costs nothing) is imported
    # here, before anything can read daulat.drill, and the attribute it set is dropped, leaving
    # the name to __getattr__, which gives the function. `from daulat.drill import X` and
    # `import daulat.drill.run` find the subpackage in sys.modules as before (`import
    # daulat.drill.run as m` never worked: it reads the attribute daulat.drill).
    importlib.import_module("daulat.drill")
    del globals()["drill"], importlib
