"""``daulat.toml`` → validated configuration.

Every problem becomes a :class:`ConfigError` whose message names the file, the store and the
field, on one line per problem, so the CLI can print it and exit 2 without a traceback.
Credential values may reference the environment as ``"${NAME}"``; they are held as
``SecretStr`` so that printing a config never shows them.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from daulat.address import prefix_problem
from daulat.crypto import RecipientError, parse_recipient
from daulat.errors import ConfigError
from daulat.providers import (
    ISO_3166_ALPHA2,
    Provider,
    ProviderId,
    UnknownRegion,
    load_catalogue,
)
from daulat.signing import PublicKey, SignatureError, parse_public_key

CONFIG_NAME = "daulat.toml"
DEFAULT_REQUEST_TIMEOUT = 30.0
STATE_DIR = ".daulat"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class Credentials(BaseModel):
    """Explicit credentials for one store. Absent fields fall back to the provider's standard
    environment variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    account_name: str | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    #: Google Cloud Storage: a credentials file (a service account's JSON key, or another file
    #: google-auth reads), relative to the config file's directory.
    service_account_file: str | None = None


class StoreConfig(BaseModel):
    """One ``[stores.NAME]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    provider: ProviderId
    region: str | None = None
    endpoint: str | None = None
    country: str | None = None
    addressing: Literal["path", "virtual"] | None = None
    #: Which of the provider's documented endpoints to use when ``endpoint`` is not given
    #: (Alibaba OSS: ``public``, the default; ``internal`` inside Alibaba Cloud's network;
    #: ``accelerate`` for transfer acceleration).
    endpoint_kind: Literal["public", "internal", "accelerate"] | None = None
    credentials: Credentials | None = None
    encrypt_to: list[str] = Field(default_factory=list)
    encrypt_names: bool = False
    #: S3: the shared-config profile whose credentials the store uses (when it has none of its
    #: own); see :mod:`daulat.stores.s3creds` for the whole chain.
    profile: str | None = None
    #: Seconds a request may go without progress (no connection, no byte sent or received)
    #: before it fails; ``--request-timeout`` overrides it for a run.
    request_timeout: float | None = Field(default=DEFAULT_REQUEST_TIMEOUT, gt=0)
    #: Bytes per part of the large uploads daulat writes here (S3 multipart parts, Azure
    #: blocks, GCS resumable chunks; doubled every 1,000 parts on S3). A resumed upload keeps
    #: the part size it was begun with. None: the store's default (8 MiB).
    part_size: int | None = Field(default=None, ge=5 * 1024 * 1024, le=4000 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if scheme not in ("s3", "az", "gs", "file"):
            raise ValueError(
                f"unsupported URL {v!r}: use s3://bucket[/prefix], az://container[/prefix], "
                "gs://bucket[/prefix] or file:///path"
            )
        if scheme in ("s3", "az", "gs") and not urlsplit(v).netloc:
            raise ValueError(f"URL {v!r} names no bucket or container")
        if scheme == "gs" and not _GCS_BUCKET.match(urlsplit(v).netloc):
            raise ValueError(
                f"URL {v!r}: {urlsplit(v).netloc!r} is not a Cloud Storage bucket name "
                "(3-222 lower-case letters, digits, '-', '_' and '.', starting and ending with "
                "a letter or digit); store URLs are s3://bucket[/prefix], "
                "az://container[/prefix], gs://bucket[/prefix] or file:///path"
            )
        if scheme in ("s3", "az", "gs"):
            # The same rule as for STORE:PREFIX addresses (daulat.address).
            reason = prefix_problem(unquote(urlsplit(v).path).strip("/"))
            if reason is not None:
                raise ValueError(f"URL {v!r}: its prefix {reason}")
        if scheme == "file" and urlsplit(v).netloc not in ("", "localhost"):
            # file://relative/path would silently mean /path on host "relative".
            raise ValueError(
                f"URL {v!r} has a host part ({urlsplit(v).netloc!r}); a directory is "
                "file:///absolute/path (three slashes)"
            )
        if scheme == "file" and not urlsplit(v).path:
            raise ValueError(f"URL {v!r} names no directory")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint_without_trailing_slash(cls, v: str | None) -> str | None:
        # "http://host:10000/account/" and ".../account" are one endpoint (the overlap check
        # already says so); the clients join paths to it and break on the doubled '/'.
        if v is None:
            return v
        stripped = v.rstrip("/")
        return stripped if "://" in stripped and stripped.split("://", 1)[1] else v

    @field_validator("country")
    @classmethod
    def _iso_country(cls, v: str | None) -> str | None:
        # Assigned codes only: an unassigned one ("XX") would fail later, deep in the catalogue.
        if v is not None and v not in ISO_3166_ALPHA2:
            raise ValueError(f"{v!r} is not an ISO 3166-1 alpha-2 code such as 'ID' or 'DE'")
        return v

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def bucket(self) -> str:
        """Bucket or container name (empty for file:// stores)."""
        return urlsplit(self.url).netloc if self.scheme != "file" else ""

    @property
    def prefix(self) -> str:
        """Key prefix inside the bucket, without leading or trailing '/'."""
        return unquote(urlsplit(self.url).path).strip("/") if self.scheme != "file" else ""

    @property
    def path(self) -> Path:
        """Directory of a file:// store (absolute once loaded: a relative one is anchored at
        the config file's directory by load_config)."""
        return Path(unquote(urlsplit(self.url).path))


@dataclass(frozen=True)
class Placement:
    """Where a store's data sits and whose law reaches it."""

    provider: Provider
    country: str
    jurisdictions: list[str]


@dataclass(frozen=True)
class Config:
    """A loaded configuration."""

    path: Path
    stores: dict[str, StoreConfig]
    raw_policies: list[dict[str, Any]]
    # Public keys whose signatures on destination manifests (and name keys) are believed.
    signers: tuple[PublicKey, ...] = ()
    # The private key this machine signs manifests with (absolute; from ``signing_key``,
    # which is relative to the config file). None: the state directory's own key.
    signing_key: Path | None = None
    # The ``[gateway]`` table as written; ``daulat serve`` validates it (daulat.gateway.config).
    raw_gateway: dict[str, Any] | None = None

    @property
    def state_dir(self) -> Path:
        """Where daulat keeps its manifest, journals and audit log: beside the config."""
        return self.path.parent / STATE_DIR

    def store(self, name: str) -> StoreConfig:
        try:
            return self.stores[name]
        except KeyError:
            known = ", ".join(sorted(self.stores)) or "none configured"
            raise ConfigError(f"{self.path}: unknown store {name!r} (known: {known})") from None

    def placement(self, name: str) -> Placement:
        return placement_of(self.store(name))

    def with_request_timeout(self, seconds: float | None) -> Config:
        """This configuration with every store's ``request_timeout`` set to ``seconds`` (a
        run's ``--request-timeout``); unchanged when None."""
        if seconds is None:
            return self
        if not seconds > 0:
            raise ConfigError(
                f"request_timeout must be a positive number of seconds, not {seconds!r}"
            )
        stores = {
            name: store.model_copy(update={"request_timeout": seconds})
            for name, store in self.stores.items()
        }
        return replace(self, stores=stores)


def placement_of(store: StoreConfig) -> Placement:
    provider = load_catalogue().provider(store.provider)
    country = store.country
    if country is None and store.region is not None:
        country = load_catalogue().region(store.provider, store.region).country
    assert country is not None, "validated at load time"
    return Placement(provider, country, provider.jurisdictions(country))


def find_config(explicit: Path | None = None, cwd: Path | None = None) -> Path:
    """The config file to use: ``explicit`` (``--config``, ``DAULAT_CONFIG``) if given, else
    the first ``daulat.toml`` in the working directory or one of its parents.

    The search goes up to the filesystem root, as git looks for ``.git`` and ruff for its
    config: a command works from any subdirectory of the project, and a project need not be a
    git repository (nor is a repository's root a boundary anyone would expect). Relative paths
    inside the file (state directory, ``file://`` stores, keys) stay relative to the file's own
    directory, wherever the command was run. A file found in a parent directory but owned by
    another user (a shared ``/tmp``) is refused rather than obeyed, as git refuses such
    repositories.

    Raises :class:`ConfigError` when ``explicit`` is not a file or none is found.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            if directory != here:
                _check_owner(candidate)
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any parent directory: run `daulat init` to write one, "
        "or pass --config PATH (`daulat --config PATH COMMAND`, `daulat COMMAND --config PATH` "
        "or DAULAT_CONFIG=PATH)"
    )


def _check_owner(path: Path) -> None:
    """Refuse a config found above the working directory that another user could have put
    or changed there: a file another user owns (root's is trusted: root can change anything
    anyway), one anyone may write, or one in a directory another user owns or anyone may write
    without the sticky bit (a shared ``/tmp``): such a file could name other signers, stores or
    policies."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: no POSIX owners to compare
        return
    me = getuid()
    trusted = (me, 0)
    st = path.stat()
    parent = path.parent.stat()
    if st.st_uid not in trusted:
        why = f"belongs to another user (uid {st.st_uid})"
    elif st.st_mode & stat.S_IWOTH:
        why = "is writable by every user"
    elif parent.st_uid not in trusted:
        why = f"is in a directory of another user (uid {parent.st_uid})"
    elif parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
        why = "is in a directory every user may write to"
    else:
        return
    raise ConfigError(
        f"{path} was found in a parent directory but {why}; not using it. "
        "Pass --config PATH to use it anyway, or run `daulat init` here"
    )


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate ``path``. Raises :class:`ConfigError` listing every problem found."""
    environ = dict(os.environ) if env is None else env
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(data, path, environ)


def parse_config(data: dict[str, Any], path: Path, env: dict[str, str]) -> Config:
    problems: list[str] = []
    unknown = sorted(set(data) - {"stores", "policies", "signers", "signing_key", "gateway"})
    for key in unknown:
        problems.append(
            f"{path}: unknown top-level key {key!r} (expected 'stores', 'policies', 'signers', "
            "'signing_key', 'gateway')"
        )
    raw_gateway = data.get("gateway")
    if raw_gateway is not None and not isinstance(raw_gateway, dict):
        problems.append(f"{path}: 'gateway' must be a table ([gateway])")
        raw_gateway = None
    signers, signing_key = _signing_fields(data, path, problems)
    raw_stores = data.get("stores", {})
    if not isinstance(raw_stores, dict):
        raise ConfigError(f"{path}: 'stores' must be a table of [stores.NAME] sections")
    stores: dict[str, StoreConfig] = {}
    for name, raw in raw_stores.items():
        where = f"{path}: store {name!r}"
        if not _STORE_NAME.match(name):
            problems.append(f"{where}: invalid name (letters, digits, '.', '_', '-'; max 63)")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table with url and provider")
            continue
        try:
            raw = _expand_env(raw, env, where)
            store = StoreConfig.model_validate({**raw, "name": name})
            store = _anchor_file_url(store, path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except ValidationError as exc:
            problems.extend(f"{where}: {_describe(err)}" for err in exc.errors())
            continue
        problems.extend(f"{where}: {p}" for p in _check_store(store))
        stores[name] = _relative_to(store, path)
    policies = data.get("policies", [])
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        problems.append(f"{path}: 'policies' must be an array of [[policies]] tables")
        policies = []
    if problems:
        raise ConfigError("\n".join(problems))
    return Config(
        path=path.resolve(),
        stores=stores,
        raw_policies=policies,
        signers=signers,
        signing_key=signing_key,
        raw_gateway=raw_gateway,
    )


def _relative_to(store: StoreConfig, path: Path) -> StoreConfig:
    """``store`` with its credentials file, if any, relative to the config file's directory
    (as ``signing_key``), so that it is found from whatever directory daulat runs in."""
    creds = store.credentials
    if creds is None or not creds.service_account_file:
        return store
    file = Path(creds.service_account_file).expanduser()
    if file.is_absolute():
        return store
    absolute = str(path.resolve().parent / file)
    return store.model_copy(
        update={"credentials": creds.model_copy(update={"service_account_file": absolute})}
    )


def _anchor_file_url(store: StoreConfig, config_path: Path) -> StoreConfig:
    """A ``file:`` URL with a relative path (``file:data``, ``file:./data``) names a directory
    relative to the config file, as ``signing_key`` and the state directory are, never to the
    directory daulat happens to be run from; the store keeps it as an absolute URL, which is
    what every command shows."""
    if store.scheme != "file" or store.path.is_absolute():
        return store
    base = config_path.resolve().parent
    absolute = Path(os.path.normpath(base / store.path))
    return store.model_copy(update={"url": absolute.as_uri()})


def _signing_fields(
    data: dict[str, Any], path: Path, problems: list[str]
) -> tuple[tuple[PublicKey, ...], Path | None]:
    """Top-level ``signers`` (OpenSSH public key lines) and ``signing_key`` (a path relative
    to the config file)."""
    raw = data.get("signers", [])
    signers: list[PublicKey] = []
    if not isinstance(raw, list):
        problems.append(
            f"{path}: field 'signers': must be a list of OpenSSH public keys, "
            'e.g. signers = ["ssh-ed25519 AAAA..."]'
        )
        raw = []
    for i, line in enumerate(raw, start=1):
        if not isinstance(line, str):
            problems.append(f"{path}: field 'signers': entry {i} is not a string")
            continue
        try:
            key = parse_public_key(line)
        except SignatureError as exc:
            problems.append(f"{path}: field 'signers': entry {i}: {exc}")
            continue
        if key not in signers:
            signers.append(key)
    key_path: Path | None = None
    value = data.get("signing_key")
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path}: field 'signing_key': must be the path of a key file")
        else:
            key_path = (path.resolve().parent / Path(value).expanduser()).resolve()
    return tuple(signers), key_path


def _expand_env(value: Any, env: dict[str, str], where: str, field: str = "") -> Any:
    if isinstance(value, dict):
        return {
            k: _expand_env(v, env, where, f"{field}.{k}" if field else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand_env(v, env, where, field) for v in value]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in env:
                raise ConfigError(
                    f"{where}: field {field!r} refers to ${{{var}}}, which is not set in the "
                    "environment"
                )
            return env[var]

        return _ENV_REF.sub(sub, value)
    return value


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown field {loc!r}"
    if kind == "missing":
        return f"missing required field {loc!r}"
    if loc == "provider" and kind == "enum":
        valid = ", ".join(p.value for p in ProviderId)
        return f"field 'provider': unknown provider {err['input']!r} (one of: {valid})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"field {loc!r}: {msg}"


def _check_store(store: StoreConfig) -> list[str]:
    """Consistency between provider, URL, region and country."""
    problems: list[str] = []
    catalogue = load_catalogue()
    provider = catalogue.provider(store.provider)
    expected_scheme = {
        ProviderId.AZURE: "az",
        ProviderId.LOCAL: "file",
        ProviderId.GCP: "gs",
    }.get(store.provider, "s3")
    if store.provider == ProviderId.GCP and store.scheme == "s3":
        pass  # Google's S3-compatible (XML) API with HMAC keys
    elif store.scheme == "gs" and store.provider != ProviderId.GCP:
        problems.append(
            f"field 'url': gs:// URLs are Google Cloud Storage buckets: provider 'gcp', not "
            f"{store.provider.value!r}"
        )
    elif store.scheme != expected_scheme:
        also = " (or s3:// for Google's S3-compatible API)" if expected_scheme == "gs" else ""
        problems.append(
            f"field 'url': provider {store.provider.value!r} needs a {expected_scheme}:// "
            f"URL{also}, got {store.url!r}"
        )
    if store.region is not None and provider.regions:
        try:
            region = catalogue.region(store.provider, store.region)
        except UnknownRegion as exc:
            hint = getattr(exc, "suggestions", None)
            extra = f" (did you mean {', '.join(hint)}?)" if hint else ""
            problems.append(
                f"field 'region': unknown region {store.region!r} for {provider.name}{extra}"
            )
        else:
            if store.country is not None and store.country != region.country:
                problems.append(
                    f"field 'country': {store.country!r} contradicts region {store.region!r}, "
                    f"which is in {region.country}"
                )
    elif store.region is None and provider.regions and store.country is None:
        problems.append(
            f"field 'region': required for provider {store.provider.value!r} (it tells the "
            "country where the data sits)"
        )
    if provider.country_required and store.country is None:
        problems.append(
            f"field 'country': required for provider {store.provider.value!r} (where is the "
            "server?)"
        )
    if "encrypt_to" in store.model_fields_set and not store.encrypt_to:
        # An empty list would read as "not encrypted": copies meant to be ciphertext would be
        # written in plaintext without a word.
        problems.append(
            "field 'encrypt_to': empty; list at least one age recipient (age1...), or remove "
            "the line for a store that holds plaintext"
        )
    for value in store.encrypt_to:
        try:
            parse_recipient(value)
        except RecipientError as exc:
            problems.append(f"field 'encrypt_to': {exc}")
    if store.encrypt_names and not store.encrypt_to:
        problems.append(
            "field 'encrypt_names': needs encrypt_to (names are protected only inside encrypted "
            "copies)"
        )
    if store.endpoint is not None and not re.match(r"^https?://", store.endpoint):
        problems.append(f"field 'endpoint': {store.endpoint!r} must start with http:// or https://")
    if store.profile is not None and store.scheme != "s3":
        problems.append("field 'profile': only S3 stores read credentials from a shared profile")
    if store.endpoint_kind is not None:
        kinds = provider.s3.endpoints if provider.s3 is not None else {}
        if store.endpoint is not None:
            problems.append(
                "field 'endpoint_kind': leave it out when 'endpoint' is given (the endpoint "
                "names the server itself)"
            )
        elif store.scheme != "s3" or store.endpoint_kind not in kinds:
            offered = f" (it has: {', '.join(kinds)})" if kinds else ""
            problems.append(
                f"field 'endpoint_kind': provider {store.provider.value!r} has no "
                f"{store.endpoint_kind!r} S3 endpoint{offered}"
            )
    if store.addressing is not None and store.scheme == "gs":
        problems.append("field 'addressing': only S3 stores have path or virtual addressing")
    creds = store.credentials
    if creds is not None:
        s3_fields = (creds.access_key_id, creds.secret_access_key, creds.session_token)
        az_fields = (creds.account_name, creds.account_key, creds.sas_token)
        if store.scheme == "gs" and (any(s3_fields) or any(az_fields)):
            problems.append(
                "field 'credentials': gs:// stores take service_account_file (or, without it, "
                "GOOGLE_APPLICATION_CREDENTIALS or application default credentials)"
            )
        if store.scheme != "gs" and creds.service_account_file is not None:
            problems.append(
                "field 'credentials': service_account_file is for gs:// (Google Cloud Storage) "
                "stores"
            )
        if store.scheme == "az" and any(s3_fields):
            problems.append(
                "field 'credentials': Azure stores take account_name with account_key or "
                "sas_token, not access keys"
            )
        if store.scheme == "s3" and any(az_fields):
            problems.append(
                "field 'credentials': S3 stores take access_key_id and secret_access_key "
                "(optional session_token)"
            )
        if store.scheme == "s3" and bool(creds.access_key_id) != bool(creds.secret_access_key):
            problems.append(
                "field 'credentials': access_key_id and secret_access_key must be given together"
            )
        if store.scheme == "file" and (any(s3_fields) or any(az_fields)):
            problems.append("field 'credentials': local stores take no credentials")
    return problems
