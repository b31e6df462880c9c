"""What a `daulat` process costs before it does anything: CPU and wall time of short commands.

    python bench/startup.py [--runs 5] [--before REV] [--no-results]

Runs, in a demo project (`daulat init --demo`, local directory stores) made in a temporary
directory, each of

* `daulat --help` (parsing and help: no library work at all),
* `daulat stores` (the configuration, the stores' reachability, the manifest),
* `daulat ls kpu-primary` (the configuration and one listing of a directory store),
* `python -c "import daulat"` (the package alone, as a script using the API starts),

`--runs` times through the installed `daulat` script (this Python's, not a shim that would add
its own start-up), with PYTHONPATH at this checkout's src/. With `--before REV`, the same
commands also run with PYTHONPATH at REV's src/ (exported with `git archive`), in rounds that
alternate the two so that load drifts hit both. Reported: the median CPU seconds (user + sys)
and wall seconds of each, and the 1-minute load average the runs started at. The "startup"
section of bench/RESULTS.md is rewritten (other sections are kept).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO_DIR,
    Measure,
    bin_dir,
    git_describe,
    machine,
    now_utc,
    run_measured,
    update_section,
)

COMMANDS: dict[str, list[str]] = {
    "daulat --help": ["daulat", "--help"],
    "daulat stores": ["daulat", "stores"],
    "daulat ls kpu-primary": ["daulat", "ls", "kpu-primary"],
    'python -c "import daulat"': ["python", "-c", "import daulat"],
}


def export_src(rev: str, into: Path) -> Path:
    """REV's src/ under ``into``, from git (nothing is checked out)."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "src"], cwd=REPO_DIR, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(argv: list[str], src: Path, cwd: Path) -> Measure:
    exe = {"daulat": str(bin_dir() / "daulat"), "python": sys.executable}[argv[0]]
    env = {**os.environ, "PYTHONPATH": str(src)}
    m = run_measured([exe, *argv[1:]], env=env, cwd=cwd, timeout=300)
    if m.rc != 0:
        raise RuntimeError(f"{' '.join(argv)} (src {src}) exited {m.rc}")
    return m


def render(results: dict[tuple[str, str], list[Measure]], trees: dict[str, str], runs: int) -> str:
    lines = [
        "## Start-up — what a `daulat` process costs before it does anything",
        "",
        f"- Date: {now_utc()}; {machine()}; Python {sys.version.split()[0]}.",
        "- Trees: " + "; ".join(f"{label} = {what}" for label, what in trees.items()) + ".",
        f"- Each cell: median of {runs} runs (the trees' runs alternate), CPU = user + sys "
        "seconds of the process (`/usr/bin/time`), wall in seconds; the installed `daulat` "
        "script with PYTHONPATH at the tree's src/, in a `daulat init --demo` project "
        "(local directory stores). Load = the 1-minute load average the runs started at "
        "(lowest-highest). Reproduce: `python bench/startup.py --before REV`.",
        "",
        "| command | " + " | ".join(f"{t} CPU s | {t} wall s" for t in trees) + " | load |",
        "|---|" + "---:|---:|" * len(trees) + "---|",
    ]
    for name in COMMANDS:
        cells = []
        loads: list[float] = []
        for tree in trees:
            ms = results[(name, tree)]
            cells.append(f"{statistics.median(m.cpu for m in ms):.2f}")
            cells.append(f"{statistics.median(m.wall for m in ms):.2f}")
            loads += [m.load_before for m in ms]
        lines.append(
            f"| `{name}` | " + " | ".join(cells) + f" | {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--before", metavar="REV", help="also measure REV's src/ (a git revision)")
    p.add_argument("--no-results", action="store_true", help="print, do not write RESULTS.md")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="daulat-startup-") as tmp:
        work = Path(tmp)
        srcs = {"this tree": REPO_DIR / "src"}
        trees = {"this tree": git_describe()}
        if args.before:
            (work / "before").mkdir()
            srcs = {"before": export_src(args.before, work / "before"), **srcs}
            trees = {"before": args.before, **trees}
        project = work / "project"
        project.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO_DIR / "src")}
        subprocess.run(
            [str(bin_dir() / "daulat"), "init", "--demo"],
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
        results: dict[tuple[str, str], list[Measure]] = {}
        for i in range(args.runs):
            order = list(srcs) if i % 2 == 0 else list(reversed(srcs))
            for name, command in COMMANDS.items():
                for tree in order:
                    m = measure(command, srcs[tree], project)
                    results.setdefault((name, tree), []).append(m)
                    print(f"{name} [{tree}] cpu {m.cpu:.2f} s wall {m.wall:.2f} s", flush=True)
        text = render(results, trees, args.runs)
    print(text)
    if not args.no_results:
        update_section("startup", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
