"""Mistakes in ``[gateway]`` as a hostile (or hurried) user makes them: each one is one line
on stderr that names the config file once, exit 2, never a traceback. ``daulat serve`` runs
as the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_gateway import KEY_ID, SECRET

pytestmark = pytest.mark.timeout(300)

KEYS = 'access_key_id = "${GW_KEY}"\nsecret_access_key = "${GW_SECRET}"\n'
BUCKET = '[gateway.buckets.pemilu]\nreplicas = ["prim"]\n'


@pytest.mark.parametrize(
    "gateway_toml, line",
    [
        # A misspelt required field is one mistake: not also "missing required field".
        (
            'acess_key_id = "${GW_KEY}"\nsecret_access_key = "${GW_SECRET}"\n' + BUCKET,
            "[gateway]: unknown field 'acess_key_id' (did you mean 'access_key_id'?)",
        ),
        (
            KEYS + 'lisen = "127.0.0.1:9000"\n' + BUCKET,
            "[gateway]: unknown field 'lisen' (did you mean 'listen'?)",
        ),
        (
            KEYS + '[gateway.bucket.pemilu]\nreplicas = ["prim"]\n',
            "[gateway]: unknown field 'bucket' (did you mean 'buckets'?)",
        ),
        (
            KEYS + '[gateway.buckets.pemilu]\nreplica = ["prim"]\n',
            "[gateway]: unknown field 'buckets.pemilu.replica' "
            "(did you mean 'buckets.pemilu.replicas'?)",
        ),
        (
            KEYS + BUCKET + "writeable = true\n",
            "[gateway]: unknown field 'buckets.pemilu.writeable' "
            "(did you mean 'buckets.pemilu.writable'?)",
        ),
        (
            KEYS + '[gateway.buckets.pemilu]\nreplicas = ["prm"]\n',
            "[gateway]: bucket 'pemilu': replicas: unknown store 'prm' (did you mean 'prim'? "
            "known: prim)",
        ),
        (
            KEYS + 'allow_plain_http = "yes"\n' + BUCKET,
            "[gateway]: field 'allow_plain_http': Input should be a valid boolean",
        ),
        (
            KEYS + 'listen = "127.0.0.1:99999"\n' + BUCKET,
            "[gateway]: field 'listen': port 99999 is outside 1-65535",
        ),
        # Not "<the config's directory> does not exist".
        (
            KEYS + 'identity = ""\n' + BUCKET,
            "[gateway]: field 'identity' is empty: give a file, or leave it out",
        ),
        (
            KEYS + 'identity = "prim"\n' + BUCKET,
            "[gateway]: field 'identity': {dir}/prim is a directory, not a file",
        ),
        # Not pydantic's "instance of _Bucket".
        (
            KEYS + "[gateway.buckets]\npemilu = 3\n",
            "[gateway]: field 'buckets.pemilu': should be a table ([gateway.buckets.pemilu])",
        ),
        (
            KEYS + 'region = ""\n' + BUCKET,
            "[gateway]: field 'region': String should have at least 1 character",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_the_file_once(
    tmp_path: Path, gateway_toml: str, line: str
) -> None:
    (tmp_path / "prim").mkdir()
    config = tmp_path / "daulat.toml"
    config.write_text(
        f'[stores.prim]\nurl = "{(tmp_path / "prim").as_uri()}"\nprovider = "local"\n'
        f'country = "ID"\n[gateway]\n{gateway_toml}'
    )
    env = {**os.environ, "GW_KEY": KEY_ID, "GW_SECRET": SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "daulat", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = line.format(dir=tmp_path.resolve())
    assert proc.stderr.splitlines() == [f"error: {config}: {line}"], proc.stderr
