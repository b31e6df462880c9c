"""Ray that cannot be reached or started is one clear error (exit 2), never a traceback."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daulat.apiargs import reach_ray
from daulat.errors import ConfigError
from daulat.scale import cluster


class _RayThatTimesOut:
    """Ray's own failure when a local node does not come up in time: a bare Exception."""

    def __init__(self) -> None:
        self.shutdowns = 0

    def init(self, **kwargs: Any) -> None:
        raise Exception(
            "The current node timed out during startup. This could happen because some of "
            "the raylet failed to startup or the GCS has become overloaded."
        )

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_local_ray_that_does_not_start_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _RayThatTimesOut()
    monkeypatch.setattr(cluster, "require_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError) as caught:
        cluster.connect(None, local_cpus=1)
    text = str(caught.value)
    assert text.startswith("could not start a local Ray for the run: The current node timed out")
    assert "ray start --head" in text and "--ray-address" in text
    assert fake.shutdowns == 1  # what it half started is stopped


def test_an_address_nobody_answers_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nmore lines")

    monkeypatch.setattr(
        cluster, "require_ray", lambda: SimpleNamespace(init=refuse, shutdown=lambda: None)
    )
    with pytest.raises(
        ConfigError,
        match=r"^cannot connect to Ray at 10\.0\.0\.9:6379: Could not find any running Ray instance\.$",
    ):
        cluster.connect("10.0.0.9:6379")


def test_an_address_where_something_else_answers_is_refused_at_once() -> None:
    """A typo'd port that hits another service (here a web server) is not Ray: refused in
    seconds, where ray.init would wait on it for many minutes, deaf to Ctrl-C."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"answers, but not as a Ray cluster") as caught:
            reach_ray(f"127.0.0.1:{server.server_port}")
        assert time.monotonic() - started < 10
        assert f"127.0.0.1:{server.server_port}" in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


def _two_directory_stores(tmp_path: Path, *holding_a: str) -> None:
    """A daulat.toml of directory stores src and dst; those named hold one object, a."""
    for name in holding_a:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a").write_bytes(b"a")
    (tmp_path / "daulat.toml").write_text(
        "".join(
            f'[stores.{n}]\nurl = "file://{tmp_path / n}"\nprovider = "local"\ncountry = "ID"\n'
            for n in ("src", "dst")
        )
    )


@pytest.mark.parametrize("address", ["", "  "])
def test_an_empty_ray_address_is_refused_not_taken_as_a_local_ray(
    tmp_path: Path, address: str
) -> None:
    # "--ray-address $HEAD" with HEAD unset: a cluster's exit must not run on this machine.
    _two_directory_stores(tmp_path, "src")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            *("daulat", "exit", "src", "dst", "--engine", "ray"),
            "--ray-address",
            address,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--ray-address is empty" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "dst").exists() or not any((tmp_path / "dst").iterdir())


def test_a_local_ray_gets_no_more_slots_than_the_machine_has_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --workers 500 on a small machine: Ray would start a worker process per slot.
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        cluster,
        "require_ray",
        lambda: SimpleNamespace(init=lambda **kw: seen.update(kw), shutdown=lambda: None),
    )
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cluster.connect(None, local_cpus=500)
    assert seen["address"] == "local" and seen["num_cpus"] == 2
    cluster.connect(None, local_cpus=1)
    assert seen["num_cpus"] == 1


def test_verify_without_full_says_that_engine_ray_does_not_apply(tmp_path: Path) -> None:
    _two_directory_stores(tmp_path, "src", "dst")
    done = subprocess.run(
        [sys.executable, "-m", "daulat", "verify", "src", "dst", "--engine", "ray"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--engine ray spreads only verify --full" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
