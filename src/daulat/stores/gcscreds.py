"""The credentials of a Google Cloud Storage store: one chain per store, resolved once.

In this order:

1. the store's ``[stores.NAME.credentials] service_account_file``: a service account's JSON
   key, or any credentials file google-auth reads (workload identity federation's
   ``external_account``, ``authorized_user``, ``impersonated_service_account``);
2. the file ``GOOGLE_APPLICATION_CREDENTIALS`` names;
3. application default credentials: gcloud's ``application_default_credentials.json``
   (``gcloud auth application-default login``; ``CLOUDSDK_CONFIG`` moves it) and, on Google
   Cloud, the metadata server (``GCE_METADATA_HOST`` moves it).

A store with an ``endpoint`` (an emulator) takes only step 1 and otherwise sends no
credentials at all: a token meant for Google never goes to another endpoint because it happened
to be in the environment.

Files (steps 1 and 2) are read when the store is opened, so a missing or unreadable one is a
configuration error before anything runs; step 3 may ask the metadata server over the network,
so it runs at the store's first request, on a worker thread. google-auth refreshes tokens
before they expire, from the token endpoint the file names (``token_uri``).

Messages name the step and the file, never a file's contents.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daulat.errors import AccessDenied, ConfigError

if TYPE_CHECKING:
    from daulat.config import StoreConfig

#: Read and write objects, nothing else (no bucket or IAM changes).
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

#: Where the chain looks, for the message when it finds nothing.
CHAIN_DESCRIPTION = (
    "credentials.service_account_file, GOOGLE_APPLICATION_CREDENTIALS, gcloud's application "
    "default credentials and the metadata server"
)

ENV_FILE = "GOOGLE_APPLICATION_CREDENTIALS"

#: The credentials files google-auth reads.
KNOWN_TYPES = (
    "service_account",
    "authorized_user",
    "external_account",
    "external_account_authorized_user",
    "impersonated_service_account",
    "gdch_service_account",
)


class GcsCredentialChain:
    """The credentials one store signs with (a google-auth ``Credentials``), found once.

    ``source`` says where they come from: ``service_account_file``,
    ``GOOGLE_APPLICATION_CREDENTIALS``, ``application default`` or ``none`` (an emulator).
    Thread-safe: the first requests of a store may ask for them at once.
    """

    def __init__(self, store: str, *, source: str, credentials: Any = None) -> None:
        self.store = store
        self.source = source
        self._credentials = credentials
        self._lock = threading.Lock()

    @classmethod
    def for_store(
        cls, cfg: StoreConfig, env: Mapping[str, str] | None = None
    ) -> GcsCredentialChain:
        """The chain of a configured store; files are read now (:class:`ConfigError`)."""
        environ: Mapping[str, str] = os.environ if env is None else env
        creds = cfg.credentials
        configured = creds.service_account_file if creds is not None else None
        if configured:
            return cls(
                cfg.name,
                source="service_account_file",
                credentials=_from_file(
                    cfg.name, Path(configured), "credentials.service_account_file"
                ),
            )
        if cfg.endpoint is not None:
            from google.auth.credentials import AnonymousCredentials

            return cls(cfg.name, source="none", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        named = environ.get(ENV_FILE)
        if named:
            return cls(
                cfg.name, source=ENV_FILE, credentials=_from_file(cfg.name, Path(named), ENV_FILE)
            )
        return cls(cfg.name, source="application default")

    def credentials(self) -> Any:
        """The credentials (blocking: application default ones may ask the metadata server).

        :class:`AccessDenied` when none can be found."""
        with self._lock:
            if self._credentials is None:
                self._credentials = _application_default(self.store)
            return self._credentials


def _from_file(store: str, path: Path, where: str) -> Any:
    """Credentials from a file of the operator's: a service account key, gcloud's user
    credentials, or another type google-auth knows (workload identity federation ...)."""
    from google.auth.exceptions import GoogleAuthError

    path = path.expanduser()
    problem = f"store {store!r}: {where} ({str(path)!r})"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{problem} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{problem} cannot be read ({type(exc).__name__})") from None
    except ValueError:
        # json's message quotes the text around the error: the file's contents.
        raise ConfigError(f"{problem} is not a Google credentials file (not JSON)") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind not in KNOWN_TYPES:
        raise ConfigError(
            f"{problem} is not a Google credentials file (its type is {kind!r}; expected one "
            f"of {', '.join(KNOWN_TYPES)})"
        )
    try:
        return _load(info, path)
    except (GoogleAuthError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{problem} is not a usable {kind} credentials file ({type(exc).__name__})"
        ) from None


def _load(info: dict[str, Any], path: Path) -> Any:
    kind = info["type"]
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
    import google.auth

    # The other types (external_account ...) have no loader of their own in google-auth's
    # public API; the generic one warns about files from untrusted sources, which the
    # operator's own configuration is not (google.auth.default loads them the same way).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        credentials_, _project = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(path), scopes=SCOPES
        )
    return credentials_


def _application_default(store: str) -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

    try:
        credentials, _project = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise AccessDenied(
            f"store {store!r}: no Google credentials found (looked in {CHAIN_DESCRIPTION})",
            store=store,
        ) from None
    except GoogleAuthError as exc:
        raise AccessDenied(
            f"store {store!r}: cannot load Google credentials ({type(exc).__name__})", store=store
        ) from None
    return credentials
