"""``daulat init``: write a commented ``daulat.toml``; with ``--demo``, local stores with sample data."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from daulat.config import CONFIG_NAME
from daulat.errors import ConfigError

DEMO_DIR = "daulat-demo"

_HEADER = """\
# daulat.toml: where your data lives, under whose law, and where it can go.
#
# Each [stores.NAME] table describes one bucket, container or directory:
#   url       s3://bucket[/prefix] | az://container[/prefix] | file:///absolute/path
#             | gs://bucket[/prefix] (Google Cloud Storage: pip install 'daulat[gcs]')
#   provider  aws | azure | alibaba | gcp | self-hosted | local
#   region    the provider's region id; daulat's catalogue gives its country
#   country   ISO 3166-1 code; required for self-hosted and local stores
#   endpoint  optional: an S3-compatible server or an emulator
# Credentials are optional; without them each provider's standard environment variables apply.
# Values may reference the environment as "${NAME}", so secrets need not live in this file.
#
# Examples:
#
# [stores.kpu-alibaba]
# url = "s3://pemilu-2024/c1"
# provider = "alibaba"
# region = "ap-southeast-5"          # Jakarta -> ID; Alibaba is reached by China's laws too
# [stores.kpu-alibaba.credentials]
# access_key_id = "${KPU_KEY_ID}"
# secret_access_key = "${KPU_SECRET}"
#
# [stores.bank-primary]
# url = "s3://core-banking-archive"
# provider = "aws"
# region = "eu-central-1"            # Frankfurt -> DE; the US CLOUD Act reaches it
#
# [stores.vault]
# url = "s3://vault"
# provider = "self-hosted"
# endpoint = "https://s3.vault.example.go.id"
# country = "ID"
#
# [stores.ledger-azure]
# url = "az://ledger"
# provider = "azure"
# region = "indonesiacentral"
# [stores.ledger-azure.credentials]
# account_name = "ledgerstore"
# account_key = "${LEDGER_KEY}"
"""


_DEMO_POLICIES = """
# Policies: rules checked by `daulat check` (exit 1 on any violation).
[[policies]]
name = "election data stays in Indonesia, two verified copies"
stores = ["kpu-primary", "vault"]
residency = ["ID"]
min_replicas = 2
max_verify_age_days = 7

[[policies]]
name = "every copy of the election data stays in Indonesia"
stores = ["kpu-primary", "vault", "offsite"]
residency = ["ID"]
"""


@dataclass(frozen=True)
class DemoData:
    """What ``init --demo`` created."""

    config: Path
    stores: dict[str, Path]
    objects: int
    bytes: int


def write_config(directory: Path, *, demo: bool = False, force: bool = False) -> Path | DemoData:
    """Write ``daulat.toml`` into ``directory``; with ``demo``, also sample stores beside it.

    Refuses to overwrite an existing config unless ``force``, so a user's work is never lost.
    """
    path = directory / CONFIG_NAME
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    if not demo:
        data_dir = (directory / "data").resolve()
        body = _HEADER + (
            "\n# A local directory, to start with:\n"
            "[stores.local]\n"
            f'url = "{data_dir.as_uri()}"\n'
            'provider = "local"\n'
            'country = "ID"                     # change to where this machine is\n'
        )
        path.write_text(body, encoding="utf-8")
        # A store's directory must exist to be read (a missing one is an error, not an empty
        # store); the one named here is made now so the config works straight away.
        data_dir.mkdir(parents=True, exist_ok=True)
        return path
    root = (directory / DEMO_DIR).resolve()
    stores = {
        "kpu-primary": root / "kpu-primary",
        "vault": root / "vault",
        "offsite": root / "offsite",
        "restored": root / "restored",
    }
    for p in stores.values():
        p.mkdir(parents=True, exist_ok=True)
    objects, size = make_sample_data(stores["kpu-primary"])
    body = _HEADER + (
        "\n# Demo stores (local directories standing in for a provider and two replicas):\n"
        "[stores.kpu-primary]\n"
        f'url = "{stores["kpu-primary"].as_uri()}"\n'
        'provider = "local"\n'
        'country = "ID"\n'
        "\n[stores.vault]\n"
        f'url = "{stores["vault"].as_uri()}"\n'
        'provider = "local"\n'
        'country = "ID"\n'
        "\n[stores.offsite]\n"
        f'url = "{stores["offsite"].as_uri()}"\n'
        'provider = "local"\n'
        'country = "SG"\n'
        "\n# Where a restore writes: a store of its own, outside every replica (a restore into\n"
        "# vault:restored would add objects vault's verification does not expect).\n"
        "[stores.restored]\n"
        f'url = "{stores["restored"].as_uri()}"\n'
        'provider = "local"\n'
        'country = "ID"\n' + _DEMO_POLICIES
    )
    path.write_text(body, encoding="utf-8")
    return DemoData(config=path, stores=stores, objects=objects, bytes=size)


_PROVINCES = [
    "aceh",
    "sumatera-utara",
    "dki-jakarta",
    "jawa-barat",
    "jawa-tengah",
    "jawa-timur",
    "bali",
    "kalimantan-timur",
    "sulawesi-selatan",
    "papua",
]


def make_sample_data(root: Path, *, seed: int = 2024) -> tuple[int, int]:
    """Fill ``root`` with an election-like data set: nested prefixes, many small objects (tally
    forms, scanned images, recap tables) and a few large archives. Deterministic for a seed."""
    rng = random.Random(seed)
    objects = size = 0

    def write(key: str, data: bytes) -> None:
        nonlocal objects, size
        path = root.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        objects += 1
        size += len(data)

    for province in _PROVINCES:
        for regency in range(1, 4):
            rows = ["tps,paslon_01,paslon_02,paslon_03,sah,tidak_sah"]
            for tps in range(1, rng.randint(30, 50)):
                votes = [rng.randint(0, 120) for _ in range(3)]
                form = {
                    "provinsi": province,
                    "kabupaten": f"kab-{regency:02d}",
                    "tps": f"{tps:03d}",
                    "suara": {"01": votes[0], "02": votes[1], "03": votes[2]},
                    "tidak_sah": rng.randint(0, 5),
                    "saksi": [f"saksi-{rng.randint(1000, 9999)}" for _ in range(3)],
                }
                base = f"pemilu-2024/{province}/kab-{regency:02d}/tps-{tps:03d}"
                write(f"{base}/c1.json", json.dumps(form, indent=2).encode())
                write(f"{base}/c1-scan.jpg", _noise(rng, rng.randint(8_000, 60_000)))
                rows.append(
                    f"{tps},{votes[0]},{votes[1]},{votes[2]},{sum(votes)},{form['tidak_sah']}"
                )
            write(f"rekap/{province}/kab-{regency:02d}.csv", ("\n".join(rows) + "\n").encode())
    for i, mib in enumerate((8, 16, 24)):
        write(f"arsip/sirekap-backup-{i + 1}.tar", _noise(rng, mib * 1024 * 1024))
    return objects, size


def _noise(rng: random.Random, n: int) -> bytes:
    # Incompressible but cheap: expand a random seed with SHAKE rather than n calls to rng.
    return hashlib.shake_256(rng.randbytes(32)).digest(n)
