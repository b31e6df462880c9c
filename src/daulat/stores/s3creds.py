"""One credential chain per S3 store, shared by both of its clients, and its network settings.

A store is reached by two clients: obstore (bulk data) and botocore (listings, odd keys,
multipart uploads, server-side copy; see :mod:`daulat.stores.s3raw`). Both must sign with the
same credentials, whatever their source, so they are resolved once per store, here:

1. the store's own ``[stores.NAME.credentials]`` (access key, secret, optional session token);
2. the provider's standard variables beyond AWS's (Alibaba: ``ALIBABA_CLOUD_ACCESS_KEY_ID`` ...,
   ``OSS_ACCESS_KEY_ID`` ...);
3. botocore's standard chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
   ``AWS_SESSION_TOKEN``, the shared credentials and config files (the store's ``profile``,
   else ``AWS_PROFILE``, else ``default``; ``credential_process``, SSO, ``role_arn``),
   web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``), the container
   endpoint (ECS/EKS pod identity) and the instance role (IMDSv2; the endpoint is
   ``AWS_EC2_METADATA_SERVICE_ENDPOINT``).

Resolution is lazy (building a store does no network I/O) and happens once; temporary
credentials (roles, web identity) are botocore's refreshable credentials, and obstore gets
them through its ``credential_provider`` callback together with their expiry, so it asks
again before they lapse and both clients move to the new ones.

With no credentials anywhere every request fails with :class:`AccessDenied` naming the
places looked in; nothing is sent unsigned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import os
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daulat.errors import AccessDenied
from daulat.providers import ProviderId

if TYPE_CHECKING:
    from daulat.config import StoreConfig

#: Where the chain looks, for the message when it finds nothing.
CHAIN_DESCRIPTION = (
    "the store's credentials, the provider's environment variables, AWS_ACCESS_KEY_ID, "
    "the shared profile, web identity, the container endpoint and the instance role"
)

# Standard environment variables per provider, beyond the AWS_* ones botocore reads itself.
_ENV_KEYS = {
    ProviderId.ALIBABA: (
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "ALIBABA_CLOUD_SECURITY_TOKEN",
        ),
        ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"),
    ),
}


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """Access key, secret and optional session token. ``repr`` never shows the secrets."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Credentials as they stand now; ``expires`` is None for long-term keys."""

    credentials: S3Credentials
    expires: dt.datetime | None


class CredentialChain:
    """The credentials of one store: fixed ones, or botocore's chain (optionally a profile).

    Thread-safe: obstore calls :meth:`obstore_credential` from its own threads, S3Raw calls
    :meth:`botocore_session` from its worker threads.
    """

    def __init__(
        self, store: str, *, static: S3Credentials | None = None, profile: str | None = None
    ) -> None:
        self.store = store
        self.static = static
        self.profile = profile
        self._lock = threading.Lock()
        self._session: Any = None
        self._credentials: Any = None  # botocore Credentials (maybe refreshable), once resolved
        self._resolved = False

    @classmethod
    def for_store(cls, cfg: StoreConfig, env: Mapping[str, str] | None = None) -> CredentialChain:
        """The chain for a configured store (steps 1 and 2 read now, step 3 on first use)."""
        environ: Mapping[str, str] = os.environ if env is None else env
        return cls(cfg.name, static=_static_credentials(cfg, environ), profile=cfg.profile)

    @property
    def identity(self) -> tuple[str, ...]:
        """Equal for two chains that sign alike (server-side copy needs one identity)."""
        if self.static is not None:
            s = self.static
            secret = hashlib.sha256(s.secret_access_key.encode()).hexdigest()
            return ("static", s.access_key_id, secret, s.session_token or "")
        return ("chain", self.profile or "")

    def botocore_session(self) -> Any:
        """A botocore session holding this chain's credentials (blocking: may fetch them)."""
        with self._lock:
            if self._session is None:
                with paused_gc():
                    import botocore.session

                    session = botocore.session.Session(profile=self.profile)
                session.register_component("data_loader", _shared_loader())
                if self.static is not None:
                    s = self.static
                    session.set_credentials(s.access_key_id, s.secret_access_key, s.session_token)
                self._session = session
            return self._session

    def botocore_credentials(self) -> Any:
        """botocore's credentials object (refreshable for roles), or raise AccessDenied."""
        session = self.botocore_session()
        with self._lock:
            if not self._resolved:
                self._credentials = _load(session, self.store)
                self._resolved = True
            creds = self._credentials
        if creds is None:
            raise AccessDenied(
                f"store {self.store!r}: no credentials found (looked in {CHAIN_DESCRIPTION})",
                store=self.store,
            )
        return creds

    def resolve(self) -> Resolved:
        """The current credentials, refreshed by botocore when they are about to expire."""
        creds = self.botocore_credentials()
        frozen = creds.get_frozen_credentials()
        expiry = getattr(creds, "_expiry_time", None)  # RefreshableCredentials only
        expires = expiry.astimezone(dt.UTC) if isinstance(expiry, dt.datetime) else None
        # An empty token is no token (a metadata service may send "").
        token = frozen.token or None
        return Resolved(S3Credentials(frozen.access_key, frozen.secret_key, token), expires)

    def obstore_credential(self) -> dict[str, Any]:
        """obstore's ``credential_provider`` callback: the same credentials and their expiry.

        botocore refreshes temporary credentials 15 minutes before they expire; obstore asks
        again shortly before ``expires_at``, by when botocore has new ones.
        """
        now = self.resolve()
        return {
            "access_key_id": now.credentials.access_key_id,
            "secret_access_key": now.credentials.secret_access_key,
            "token": now.credentials.session_token,
            "expires_at": now.expires,
        }


_loader_lock = threading.Lock()
_loader: Any = None


def _shared_loader() -> Any:
    """One botocore data loader for every store's session: each would otherwise parse and
    keep its own copy of the S3 service model and endpoint rules (~12 MiB per store).

    Before it loads a model, botocore's loader asks whether the service exists by listing
    every service it knows (~400 directories with their API versions, once for the model and
    once for the endpoint rules: ~0.04 CPU s of a run). This one looks in the directory of
    the service asked for; the whole list is still built when something iterates it."""
    global _loader
    with _loader_lock:
        if _loader is None:
            import botocore.loaders

            class Loader(botocore.loaders.Loader):  # type: ignore[misc]
                def list_available_services(self, type_name: str) -> _KnownServices:
                    return _KnownServices(self, type_name)

            _loader = Loader()
        return _loader


class _KnownServices:
    """What ``Loader.list_available_services`` returns (see :func:`_shared_loader`): ``in``
    checks the one service's directory; iterating lists them all, as botocore does."""

    def __init__(self, loader: Any, type_name: str) -> None:
        self._loader = loader
        self._type = type_name

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name or os.sep in name or name.startswith("."):
            return False
        for path in self._loader.search_paths:
            directory = os.path.join(path, name)
            if not os.path.isdir(directory):
                continue
            for version in os.listdir(directory):
                if self._loader.file_loader.exists(os.path.join(directory, version, self._type)):
                    return True
        return False

    def _all(self) -> list[str]:
        import botocore.loaders

        found: list[str] = botocore.loaders.Loader.list_available_services(self._loader, self._type)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index: int) -> str:
        return self._all()[index]


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while botocore is imported or a client of it is built.

    Both allocate tens of thousands of objects that live as long as the process (modules,
    handlers, the S3 service model), and the full collections this sets off scan the whole
    heap for no garbage: ~30 % of the CPU of importing botocore in a run. Collections of
    other threads wait as long (~0.2 s); nesting and concurrent pauses are counted."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


_freezes = 0  # open clients whose objects freeze_long_lived() froze


def freeze_long_lived() -> bool:
    """Keep the cyclic garbage collector off the objects that exist now, botocore's among them,
    until :func:`thaw_long_lived`; False (nothing done) when the program had frozen objects of
    its own (``gc.freeze``), whose permanent generation daulat leaves alone.

    A built client holds ~60,000 tracked objects (the S3 model, endpoint rules, handlers),
    three times the rest of a run's heap. They are no garbage, yet every full collection
    traversed them, and the first collections after :func:`paused_gc` traversed them once per
    generation: ~0.1 CPU s of a 2,000-object exit, most of its garbage collection. What else
    exists at that moment is frozen too; cycles among it that become garbage meanwhile are
    collected once the last client is closed, not lost."""
    global _freezes
    with _gc_lock:
        if _freezes == 0 and gc.get_freeze_count():
            return False
        gc.freeze()
        _freezes += 1
        return True


def thaw_long_lived() -> None:
    """Undo one :func:`freeze_long_lived` that returned True; the last one puts every frozen
    object back in the collector's oldest generation."""
    global _freezes
    with _gc_lock:
        _freezes -= 1
        if _freezes == 0:
            gc.unfreeze()


def _load(session: Any, store: str) -> Any:
    from botocore.exceptions import BotoCoreError

    try:
        return session.get_credentials()
    except BotoCoreError as exc:
        # ProfileNotFound, a broken config file, a role that cannot be assumed ... The
        # class name says which; botocore's own text may quote file contents.
        raise AccessDenied(
            f"store {store!r}: cannot load credentials ({type(exc).__name__})", store=store
        ) from None


def _static_credentials(cfg: StoreConfig, env: Mapping[str, str]) -> S3Credentials | None:
    creds = cfg.credentials
    if (
        creds is not None
        and creds.access_key_id is not None
        and creds.secret_access_key is not None
    ):
        token = creds.session_token.get_secret_value() if creds.session_token else None
        return S3Credentials(
            creds.access_key_id.get_secret_value(),
            creds.secret_access_key.get_secret_value(),
            token,
        )
    for key_var, secret_var, token_var in _ENV_KEYS.get(cfg.provider, ()):
        if env.get(key_var) and env.get(secret_var):
            return S3Credentials(env[key_var], env[secret_var], env.get(token_var) or None)
    return None


# ------------------------------------------------------------------------------ network


def proxy_options(endpoint: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """obstore client options for the proxy the environment names for ``endpoint``.

    The same variables botocore (urllib3) honours: ``HTTPS_PROXY`` for https endpoints,
    ``HTTP_PROXY`` for http ones (lower-case spellings too), and ``NO_PROXY`` as the list of
    hosts that bypass it.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    scheme = urllib.parse.urlsplit(endpoint).scheme if endpoint else "https"
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    proxy = next((environ[n] for n in names if environ.get(n)), None)
    if proxy is None:
        return {}
    options = {"proxy_url": proxy}
    excludes = environ.get("NO_PROXY") or environ.get("no_proxy")
    if excludes:
        options["proxy_excludes"] = excludes
    return options
