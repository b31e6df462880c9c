"""Configuration: every mistake in daulat.toml ends in exit code 2 with one clear line naming the
store and the field, never a traceback and never a secret; good configs load with their values.

The CLI runs in-process through ``daulat.cli.run`` and, for a few cases, through the installed
``daulat`` console script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from daulat.audit import audit_log
from daulat.cli import run
from daulat.config import load_config
from daulat.errors import ConfigError
from daulat.inventory import MANIFEST_NAME
from daulat.providers import ProviderId, load_catalogue

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-SECRET"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    code = run(argv)
    captured = capsys.readouterr()
    return Result(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))


def write_config(directory: Path, text: str) -> Path:
    path = directory / "daulat.toml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_config_error(res: Result, *expected: str) -> str:
    """Exit 2, exactly one line on stderr containing every expected fragment, no traceback."""
    assert res.code == 2, f"exit {res.code}; stderr: {res.err!r}"
    assert "Traceback" not in res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {res.err!r}"
    message = lines[0]
    assert message.startswith("error:"), message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    return message


# --- bad configurations through `daulat stores` ------------------------------------------

BAD_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unknown store key": (
        """
        [stores.kpu-archive]
        url = "s3://pemilu-2024"
        provider = "aws"
        region = "ap-southeast-3"
        regoin = "x"
        """,
        ("store 'kpu-archive'", "'regoin'"),
    ),
    "unknown provider": (
        """
        [stores.kpu-archive]
        url = "s3://pemilu-2024"
        provider = "hetzner"
        """,
        (
            "store 'kpu-archive'",
            "'provider'",
            "'hetzner'",
            *(f"{p.value}" for p in ProviderId),
        ),
    ),
    "unknown region": (
        """
        [stores.kpu-archive]
        url = "s3://pemilu-2024"
        provider = "aws"
        region = "ap-southeast-99"
        """,
        ("store 'kpu-archive'", "'region'", "'ap-southeast-99'"),
    ),
    "country contradicts region": (
        """
        [stores.kpu-alibaba]
        url = "s3://pemilu-2024"
        provider = "alibaba"
        region = "ap-southeast-5"
        country = "SG"
        """,
        ("store 'kpu-alibaba'", "'country'", "'SG'", "'ap-southeast-5'", "in ID"),
    ),
    "unknown endpoint_kind": (
        """
        [stores.kpu-alibaba]
        url = "s3://pemilu-2024"
        provider = "alibaba"
        region = "ap-southeast-5"
        endpoint_kind = "private"
        """,
        ("store 'kpu-alibaba'", "endpoint_kind", "'public'", "'internal'", "'accelerate'"),
    ),
    "endpoint_kind of a provider without kinds": (
        """
        [stores.kpu-archive]
        url = "s3://pemilu-2024"
        provider = "aws"
        region = "ap-southeast-3"
        endpoint_kind = "internal"
        """,
        ("store 'kpu-archive'", "'endpoint_kind'", "provider 'aws' has no 'internal'"),
    ),
    "endpoint_kind beside endpoint": (
        """
        [stores.kpu-alibaba]
        url = "s3://pemilu-2024"
        provider = "alibaba"
        region = "ap-southeast-5"
        endpoint = "https://data.kpu.example"
        endpoint_kind = "internal"
        """,
        ("store 'kpu-alibaba'", "'endpoint_kind'", "leave it out when 'endpoint' is given"),
    ),
    "self-hosted without country": (
        """
        [stores.vault]
        url = "s3://vault"
        provider = "self-hosted"
        endpoint = "https://s3.vault.example.go.id"
        """,
        ("store 'vault'", "'country'", "self-hosted"),
    ),
    "file URL for aws": (
        """
        [stores.bank]
        url = "file:///srv/archive"
        provider = "aws"
        region = "eu-central-1"
        """,
        ("store 'bank'", "'url'", "s3://", "file:///srv/archive"),
    ),
    "bad URL scheme": (
        """
        [stores.gcs]
        url = "gs://x"
        provider = "gcp"
        region = "us-central1"
        """,
        ("store 'gcs'", "'url'", "gs://x", "s3://bucket[/prefix]"),
    ),
    "unsupported URL scheme": (
        """
        [stores.gcs]
        url = "swift://x"
        provider = "gcp"
        region = "us-central1"
        """,
        ("store 'gcs'", "'url'", "swift://x", "s3://bucket[/prefix]", "gs://bucket[/prefix]"),
    ),
    "gs URL for another provider": (
        """
        [stores.arsip]
        url = "gs://pemilu-arsip"
        provider = "aws"
        region = "ap-southeast-3"
        """,
        ("store 'arsip'", "'url'", "gs://", "provider 'gcp'"),
    ),
    "Azure URL for gcp": (
        """
        [stores.arsip]
        url = "az://pemilu-arsip"
        provider = "gcp"
        region = "asia-southeast2"
        """,
        ("store 'arsip'", "'url'", "gs:// URL", "s3://"),
    ),
    "not a GCS bucket name": (
        """
        [stores.arsip]
        url = "gs://Pemilu_Arsip"
        provider = "gcp"
        region = "asia-southeast2"
        """,
        ("store 'arsip'", "'url'", "'Pemilu_Arsip'", "bucket name"),
    ),
    "GCS region typo": (
        """
        [stores.arsip]
        url = "gs://pemilu-arsip"
        provider = "gcp"
        region = "asia-southeast22"
        """,
        ("store 'arsip'", "'region'", "'asia-southeast22'"),
    ),
    "S3 keys on a gs store": (
        f"""
        [stores.arsip]
        url = "gs://pemilu-arsip"
        provider = "gcp"
        region = "asia-southeast2"
        [stores.arsip.credentials]
        access_key_id = "GOOG1EXAMPLE"
        secret_access_key = "{SECRET}"
        """,
        ("store 'arsip'", "'credentials'", "service_account_file"),
    ),
    "service account file on an S3 store": (
        """
        [stores.bank]
        url = "s3://core-banking"
        provider = "aws"
        region = "eu-central-1"
        [stores.bank.credentials]
        service_account_file = "sa.json"
        """,
        ("store 'bank'", "'credentials'", "service_account_file", "gs://"),
    ),
    "Azure credentials on an S3 store": (
        f"""
        [stores.bank]
        url = "s3://core-banking"
        provider = "aws"
        region = "eu-central-1"
        [stores.bank.credentials]
        account_name = "ledgerstore"
        account_key = "{SECRET}"
        """,
        ("store 'bank'", "'credentials'", "access_key_id"),
    ),
    "S3 key without its secret": (
        """
        [stores.bank]
        url = "s3://core-banking"
        provider = "aws"
        region = "eu-central-1"
        [stores.bank.credentials]
        access_key_id = "AKIAEXAMPLE"
        """,
        ("store 'bank'", "'credentials'", "secret_access_key"),
    ),
    "lower-case country": (
        """
        [stores.local]
        url = "file:///srv/data"
        provider = "local"
        country = "id"
        """,
        ("store 'local'", "'country'", "'id'"),
    ),
    "empty encrypt_to: would copy plaintext to a store meant for ciphertext": (
        """
        [stores.vault]
        url = "file:///srv/vault"
        provider = "local"
        country = "ID"
        encrypt_to = []
        """,
        ("store 'vault'", "'encrypt_to'", "empty", "age1"),
    ),
    "invalid store name": (
        """
        [stores."my store"]
        url = "file:///srv/data"
        provider = "local"
        country = "ID"
        """,
        ("store 'my store'", "invalid name"),
    ),
    "stores is not a table": (
        """
        stores = "kpu"
        """,
        ("'stores'", "[stores.NAME]"),
    ),
    "policies is not an array of tables": (
        """
        policies = 3
        """,
        ("'policies'", "[[policies]]"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(
    case: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD_CONFIGS[case]
    path = write_config(in_tmp, text)
    res = cli(["stores"], capsys)
    message = assert_config_error(res, str(path), *expected)
    assert SECRET not in res.err + res.out
    assert SECRET not in message
    assert not (in_tmp / ".daulat").exists(), "a bad config must not create state"


def test_unknown_region_suggests_close_ids(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(in_tmp, BAD_CONFIGS["unknown region"][0])
    message = assert_config_error(cli(["stores"], capsys), "did you mean")
    suggested = re.findall(r"\bap-southeast-\d+\b", message.split("did you mean", 1)[1])
    aws_regions = load_catalogue().provider("aws").regions
    assert suggested, message
    assert "ap-southeast-99" not in suggested
    assert all(r in aws_regions for r in suggested), suggested


def test_unknown_top_level_key(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(
        in_tmp,
        """
        colour = "blue"
        [stores.local]
        url = "file:///srv/data"
        provider = "local"
        country = "ID"
        """,
    )
    assert_config_error(cli(["stores"], capsys), "top-level", "'colour'")


def test_malformed_toml(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        in_tmp,
        f"""
        [stores.bank
        url = "s3://x"
        secret_access_key = "{SECRET}"
        """,
    )
    res = cli(["stores"], capsys)
    assert_config_error(res, str(path), "TOML", "line 1")
    assert SECRET not in res.err


def test_missing_env_var_names_the_variable_not_the_secrets(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env_secret = "from-the-environment-" + SECRET
    monkeypatch.delenv("KPU_KEY_ID", raising=False)
    monkeypatch.setenv("KPU_SESSION", env_secret)
    write_config(
        in_tmp,
        f"""
        [stores.kpu-alibaba]
        url = "s3://pemilu-2024"
        provider = "alibaba"
        region = "ap-southeast-5"
        [stores.kpu-alibaba.credentials]
        session_token = "${{KPU_SESSION}}"
        access_key_id = "${{KPU_KEY_ID}}"
        secret_access_key = "{SECRET}"
        """,
    )
    res = cli(["stores"], capsys)
    assert_config_error(res, "store 'kpu-alibaba'", "credentials.access_key_id", "KPU_KEY_ID")
    assert SECRET not in res.err + res.out
    assert env_secret not in res.err + res.out


def test_secret_never_in_error_messages(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Errors in the same store as a secret, including a typo inside the credentials table."""
    write_config(
        in_tmp,
        f"""
        [stores.bank]
        url = "s3://core-banking"
        provider = "aws"
        region = "eu-central-1"
        endpiont = "https://s3.example.com"
        [stores.bank.credentials]
        access_key_id = "AKIAEXAMPLE"
        secret_acess_key = "{SECRET}"

        [stores.ledger]
        url = "az://ledger"
        provider = "azure"
        region = "indonesiacentral"
        [stores.ledger.credentials]
        account_name = "ledgerstore"
        account_key = "{SECRET}"
        secret_access_key = "{SECRET}"
        """,
    )
    res = cli(["stores"], capsys)
    assert res.code == 2
    assert "Traceback" not in res.err
    assert SECRET not in res.err + res.out
    assert "'endpiont'" in res.err
    assert "'credentials.secret_acess_key'" in res.err
    assert "store 'ledger'" in res.err


def test_every_problem_is_reported_one_per_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(
        in_tmp,
        """
        [stores.one]
        url = "s3://a"
        provider = "hetzner"

        [stores.two]
        url = "file:///srv/two"
        provider = "local"

        [stores.three]
        url = "file:///srv/three"
        provider = "local"
        country = "ID"
        """,
    )
    res = cli(["stores"], capsys)
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 2, res.err
    assert "store 'one'" in lines[0] and "'provider'" in lines[0]
    assert "store 'two'" in res.err and "'country'" in lines[1]
    assert "three" not in res.err


def test_missing_config_suggests_init(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = cli(["stores"], capsys)
    assert_config_error(res, "daulat.toml", "daulat init")
    assert not (in_tmp / ".daulat").exists()


def test_config_option_pointing_to_missing_file(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = in_tmp / "elsewhere" / "prod.toml"
    assert_config_error(cli(["stores", "--config", str(missing)], capsys), str(missing))


def test_config_option_pointing_elsewhere_is_used(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = in_tmp / "ops"
    other.mkdir()
    (other / "data").mkdir()
    path = write_config(
        other,
        f"""
        [stores.ops-local]
        url = "{(other / "data").as_uri()}"
        provider = "local"
        country = "DE"
        """,
    )
    res = cli(["stores", "--json", "-c", str(path)], capsys)
    assert res.code == 0, res.err
    assert '"ops-local"' in res.out and '"DE"' in res.out
    # State lives beside the config, not in the working directory.
    assert (other / ".daulat" / "manifest.sqlite").is_file()
    assert not (in_tmp / ".daulat").exists()


def test_scan_unknown_store_exits_2(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "data").mkdir()
    write_config(
        in_tmp,
        f"""
        [stores.local]
        url = "{(in_tmp / "data").as_uri()}"
        provider = "local"
        country = "ID"
        """,
    )
    assert_config_error(cli(["scan", "nope"], capsys), "'nope'", "local")
    assert not (in_tmp / ".daulat" / MANIFEST_NAME).exists(), (
        "nothing may be scanned when a name is wrong"
    )
    # The refusal itself is recorded once, as failed (tests/test_audit_commands.py).
    entries = [e.to_dict() for e in audit_log(in_tmp / ".daulat").entries()]
    assert [(e["operation"], e["details"]["outcome"]) for e in entries] == [("scan", "failed")]


# --- the real console script --------------------------------------------------------------


def daulat_exe(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    assert shutil.which("daulat"), "the daulat console script is not installed"
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    environ["COLUMNS"] = "300"
    environ.update(env or {})
    proc = subprocess.run(
        ["daulat", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    "case", ["unknown store key", "bad URL scheme", "Azure credentials on an S3 store"]
)
def test_console_script_bad_config_exit_2_without_traceback(case: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[case]
    write_config(tmp_path, text)
    res = daulat_exe(["stores"], tmp_path)
    assert "Traceback" not in res.err, res.err
    assert_config_error(res, *expected)
    assert SECRET not in res.err + res.out


def test_console_script_missing_env_var(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        f"""
        [stores.kpu]
        url = "s3://pemilu"
        provider = "aws"
        region = "ap-southeast-3"
        [stores.kpu.credentials]
        access_key_id = "${{DAULAT_TEST_UNSET_KEY}}"
        secret_access_key = "{SECRET}"
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "DAULAT_TEST_UNSET_KEY"}
    res = daulat_exe(["stores"], tmp_path, env)
    assert_config_error(res, "store 'kpu'", "DAULAT_TEST_UNSET_KEY")
    assert SECRET not in res.err + res.out


def test_console_script_no_config_and_unknown_store(tmp_path: Path) -> None:
    res = daulat_exe(["stores"], tmp_path)
    assert_config_error(res, "daulat init")
    (tmp_path / "data").mkdir()
    write_config(
        tmp_path,
        f"""
        [stores.local]
        url = "{(tmp_path / "data").as_uri()}"
        provider = "local"
        country = "ID"
        """,
    )
    assert_config_error(daulat_exe(["scan", "nope"], tmp_path), "'nope'")


# --- good configurations -------------------------------------------------------------------


def test_env_references_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        tmp_path,
        """
        [stores.kpu-alibaba]
        url = "s3://pemilu-2024/${PREFIX}"
        provider = "alibaba"
        region = "ap-southeast-5"
        endpoint = "https://${OSS_HOST}:8443"
        [stores.kpu-alibaba.credentials]
        access_key_id = "${KPU_KEY_ID}"
        secret_access_key = "${KPU_SECRET}"
        """,
    )
    env = {
        "PREFIX": "c1",
        "OSS_HOST": "oss.example.id",
        "KPU_KEY_ID": "LTAI-key-id",
        "KPU_SECRET": SECRET,
    }
    # The env argument is the whole environment: the process environment is not consulted.
    monkeypatch.setenv("KPU_KEY_ID", "from-os-environ")
    cfg = load_config(path, env=env)
    store = cfg.store("kpu-alibaba")
    assert store.url == "s3://pemilu-2024/c1"
    assert (store.bucket, store.prefix) == ("pemilu-2024", "c1")
    assert store.endpoint == "https://oss.example.id:8443"
    assert store.credentials is not None
    assert store.credentials.access_key_id is not None
    assert store.credentials.secret_access_key is not None
    assert store.credentials.access_key_id.get_secret_value() == "LTAI-key-id"
    assert store.credentials.secret_access_key.get_secret_value() == SECRET
    placement = cfg.placement("kpu-alibaba")
    assert placement.country == "ID"
    assert placement.jurisdictions == ["ID", "CN"]

    with pytest.raises(ConfigError) as info:
        load_config(path, env={k: v for k, v in env.items() if k != "KPU_SECRET"})
    assert "KPU_SECRET" in str(info.value)
    assert "'kpu-alibaba'" in str(info.value)


def test_literal_dollar_without_braces_is_kept(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        [stores.s]
        url = "s3://b"
        provider = "aws"
        region = "us-east-1"
        [stores.s.credentials]
        access_key_id = "AKID"
        secret_access_key = "pa$$word$HOME"
        """,
    )
    creds = load_config(path, env={}).store("s").credentials
    assert creds is not None and creds.secret_access_key is not None
    assert creds.secret_access_key.get_secret_value() == "pa$$word$HOME"


def test_two_stores_on_one_provider_keep_their_own_credentials(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        [stores.prod]
        url = "s3://prod-archive"
        provider = "aws"
        region = "eu-central-1"
        [stores.prod.credentials]
        access_key_id = "${PROD_ID}"
        secret_access_key = "${PROD_SECRET}"

        [stores.dr]
        url = "s3://dr-archive/replica"
        provider = "aws"
        region = "ap-southeast-3"
        [stores.dr.credentials]
        access_key_id = "AKIA-DR"
        secret_access_key = "dr-secret"
        session_token = "dr-token"
        """,
    )
    cfg = load_config(path, env={"PROD_ID": "AKIA-PROD", "PROD_SECRET": "prod-secret"})
    assert sorted(cfg.stores) == ["dr", "prod"]

    def values(name: str) -> tuple[str | None, ...]:
        creds = cfg.store(name).credentials
        assert creds is not None
        return tuple(
            s.get_secret_value() if s is not None else None
            for s in (creds.access_key_id, creds.secret_access_key, creds.session_token)
        )

    assert values("prod") == ("AKIA-PROD", "prod-secret", None)
    assert values("dr") == ("AKIA-DR", "dr-secret", "dr-token")
    assert cfg.placement("prod").country == "DE"
    assert cfg.placement("dr").country == "ID"
    assert cfg.placement("prod").jurisdictions == ["DE", "US"]


def test_secrets_do_not_appear_in_repr(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""
        [stores.bank]
        url = "s3://core-banking"
        provider = "aws"
        region = "eu-central-1"
        [stores.bank.credentials]
        access_key_id = "AKIA-{SECRET}"
        secret_access_key = "${{BANK_SECRET}}"
        session_token = "tok-{SECRET}"

        [stores.ledger]
        url = "az://ledger"
        provider = "azure"
        region = "indonesiacentral"
        [stores.ledger.credentials]
        account_name = "ledgerstore"
        account_key = "{SECRET}"
        """,
    )
    cfg = load_config(path, env={"BANK_SECRET": "env-" + SECRET})
    for text in (
        repr(cfg),
        str(cfg),
        repr(cfg.stores),
        repr(cfg.store("bank").credentials),
        cfg.store("bank").model_dump_json(),
        cfg.store("ledger").model_dump_json(),
        str(cfg.store("ledger").model_dump()),
    ):
        assert SECRET not in text, text
    assert "ledgerstore" in repr(cfg)  # the account name is not a secret


def test_init_config_round_trips(tmp_path: Path) -> None:
    """The commented examples in the written header are valid once uncommented."""
    code = run(["init", "--dir", str(tmp_path)])
    assert code == 0
    text = (tmp_path / "daulat.toml").read_text(encoding="utf-8")
    header = text.split("# Examples:", 1)[1]
    example_lines = []
    for line in header.splitlines()[1:]:
        if not line.startswith("#"):
            break
        example_lines.append(line.removeprefix("#").removeprefix(" "))
    (tmp_path / "examples.toml").write_text("\n".join(example_lines), encoding="utf-8")
    env = {"KPU_KEY_ID": "k", "KPU_SECRET": "s", "LEDGER_KEY": "l"}
    cfg = load_config(tmp_path / "examples.toml", env=env)
    assert sorted(cfg.stores) == ["bank-primary", "kpu-alibaba", "ledger-azure", "vault"]
    assert cfg.placement("kpu-alibaba").jurisdictions == ["ID", "CN"]
    assert cfg.placement("bank-primary").jurisdictions == ["DE", "US"]
    assert cfg.placement("vault").jurisdictions == ["ID"]


def test_gs_stores_load_with_their_key_file_relative_to_the_config(tmp_path: Path) -> None:
    """A gs:// store: bucket, prefix, the region's country, and a credentials file named
    relative to daulat.toml (found from any working directory). s3:// with provider gcp (the
    S3-compatible API) keeps working."""
    from daulat.config import placement_of

    config = write_config(
        tmp_path,
        """
        [stores.arsip]
        url = "gs://pemilu-arsip/2024/c1"
        provider = "gcp"
        region = "ASIA-SOUTHEAST2"
        request_timeout = 12.5
        [stores.arsip.credentials]
        service_account_file = "keys/sa.json"

        [stores.absolute]
        url = "gs://pemilu-arsip"
        provider = "gcp"
        country = "ID"
        region = "asia-southeast2"
        [stores.absolute.credentials]
        service_account_file = "/etc/daulat/sa.json"

        [stores.emulated]
        url = "gs://local-bucket"
        provider = "gcp"
        region = "europe-west3"
        endpoint = "http://127.0.0.1:4443"

        [stores.interop]
        url = "s3://pemilu-arsip"
        provider = "gcp"
        region = "asia-southeast2"
        """,
    )
    cfg = load_config(config)
    arsip = cfg.store("arsip")
    assert (arsip.scheme, arsip.bucket, arsip.prefix) == ("gs", "pemilu-arsip", "2024/c1")
    assert arsip.request_timeout == 12.5
    assert arsip.credentials is not None
    assert arsip.credentials.service_account_file == str(tmp_path / "keys" / "sa.json")
    absolute = cfg.store("absolute").credentials
    assert absolute is not None and absolute.service_account_file == "/etc/daulat/sa.json"
    assert placement_of(arsip).country == "ID"
    assert placement_of(arsip).jurisdictions == ["ID", "US"]
    assert placement_of(cfg.store("emulated")).country == "DE"
    assert cfg.store("emulated").credentials is None
    assert cfg.store("interop").scheme == "s3"


@pytest.mark.parametrize(
    ("spelling", "directory"),
    [("file:data", "data"), ("file:./data", "data"), ("file:../side/data", "../side/data")],
)
def test_relative_file_url_is_relative_to_the_config_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spelling: str,
    directory: str,
) -> None:
    """``url = "file:data"`` names the same directory from wherever daulat runs: the one
    beside daulat.toml (as signing_key and .daulat/ are), never the current directory."""
    cfg_dir = tmp_path / "project" / "cfg"
    cfg_dir.mkdir(parents=True)
    target = (cfg_dir / directory).resolve()
    target.mkdir(parents=True, exist_ok=True)
    (target / "beside-the-config.txt").write_bytes(b"the right one")
    decoy = tmp_path / "elsewhere"
    decoy.mkdir()
    wrong = (decoy / directory).resolve()
    wrong.mkdir(parents=True, exist_ok=True)
    (wrong / "in-the-current-directory.txt").write_bytes(b"the wrong one")
    config = cfg_dir / "daulat.toml"
    config.write_text(
        f'[stores.rel]\nurl = "{spelling}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    assert load_config(config).store("rel").path == target
    for cwd in (decoy, tmp_path, cfg_dir):
        monkeypatch.chdir(cwd)
        res = cli(["ls", "rel", "--config", str(config)], capsys)
        assert (res.code, res.out.split()) == (0, ["beside-the-config.txt"]), (cwd, res)
        res = cli(["stores", "--json", "--config", str(config)], capsys)
        assert f'"url": "{target.as_uri()}"' in res.out, res.out  # shown absolute
    # A copy into a relative destination lands beside the config too.
    with config.open("a", encoding="utf-8") as f:
        f.write('[stores.out]\nurl = "file:./out"\nprovider = "local"\ncountry = "ID"\n')
    monkeypatch.chdir(decoy)
    assert cli(["copy", "rel", "out", "--config", str(config)], capsys).code == 0
    assert (cfg_dir / "out" / "beside-the-config.txt").read_bytes() == b"the right one"
    assert not (decoy / "out").exists()


# --- finding daulat.toml -------------------------------------------------------------------


def test_config_is_found_in_a_parent_directory_with_paths_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a subdirectory, the nearest daulat.toml above is used (as git finds .git); its
    ``file:data`` store and its state directory stay beside it, not in the subdirectory."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "beside-the-config.txt").write_bytes(b"right")
    write_config(project, '[stores.rel]\nurl = "file:data"\nprovider = "local"\ncountry = "ID"\n')
    deep = project / "notes" / "2026"
    (deep / "data").mkdir(parents=True)  # a decoy relative to the working directory
    (deep / "data" / "in-the-working-directory.txt").write_bytes(b"wrong")
    monkeypatch.chdir(deep)
    res = cli(["ls", "rel"], capsys)
    assert (res.code, res.out.split()) == (0, ["beside-the-config.txt"]), res
    assert cli(["scan", "rel"], capsys).code == 0
    assert (project / ".daulat" / "manifest.sqlite").is_file()
    assert not (deep / ".daulat").exists() and not (project / "notes" / ".daulat").exists()

    # A nearer daulat.toml wins over the parent's.
    (deep / "data2").mkdir()
    write_config(deep, '[stores.near]\nurl = "file:data2"\nprovider = "local"\ncountry = "DE"\n')
    res = cli(["stores", "--json"], capsys)
    assert res.code == 0 and '"near"' in res.out and '"rel"' not in res.out, res


def test_no_config_here_or_above_says_so(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub = in_tmp / "a" / "b"
    sub.mkdir(parents=True)
    os.chdir(sub)
    message = assert_config_error(cli(["stores"], capsys), "daulat init", "DAULAT_CONFIG")
    assert f"no daulat.toml in {sub} or any parent directory" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_parent_config_of_another_user_is_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone else's daulat.toml above the working directory (a shared /tmp) is not obeyed;
    naming it with --config still works."""
    (in_tmp / "data").mkdir()
    config = write_config(
        in_tmp, '[stores.theirs]\nurl = "file:data"\nprovider = "local"\ncountry = "ID"\n'
    )
    os.chown(config, 4242, 4242)
    sub = in_tmp / "mine"
    sub.mkdir()
    os.chdir(sub)
    assert_config_error(cli(["stores"], capsys), str(config), "another user", "--config")
    assert not (in_tmp / ".daulat").exists()
    assert cli(["stores", "--json", "--config", str(config)], capsys).code == 0


def test_a_parent_config_anyone_could_change_is_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daulat.toml above the working directory that every user may write, or that sits in a
    directory every user may write without the sticky bit, could name other signers, stores
    or policies: refused, and --config still names it deliberately."""
    (in_tmp / "data").mkdir()
    config = write_config(
        in_tmp, '[stores.ours]\nurl = "file:data"\nprovider = "local"\ncountry = "ID"\n'
    )
    sub = in_tmp / "mine"
    sub.mkdir()
    os.chdir(sub)
    assert cli(["stores", "--json"], capsys).code == 0  # trusted as it is
    config.chmod(0o666)
    assert_config_error(cli(["stores"], capsys), str(config), "writable by every user")
    config.chmod(0o644)
    in_tmp.chmod(0o777)
    try:
        assert_config_error(cli(["stores"], capsys), str(config), "every user may write")
        in_tmp.chmod(0o1777)  # sticky, as /tmp: others cannot replace our file
        assert cli(["stores", "--json"], capsys).code == 0
    finally:
        in_tmp.chmod(0o755)
    assert cli(["stores", "--json", "--config", str(config)], capsys).code == 0


def test_daulat_config_names_the_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = in_tmp / "ops"
    (other / "data").mkdir(parents=True)
    config = write_config(
        other, '[stores.ops]\nurl = "file:data"\nprovider = "local"\ncountry = "DE"\n'
    )
    monkeypatch.setenv("DAULAT_CONFIG", str(config))
    res = cli(["stores", "--json"], capsys)
    assert res.code == 0 and '"ops"' in res.out, res
    monkeypatch.setenv("DAULAT_CONFIG", str(in_tmp / "missing.toml"))
    assert_config_error(cli(["stores"], capsys), "missing.toml", "does not exist")
