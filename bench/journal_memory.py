"""Peak memory of the transfer journal's work for N objects, without servers.

    python bench/journal_memory.py [N ...]        # default: 10000 100000 300000

Each N runs in a fresh process: list N objects into the source listing, plan against an empty
destination, record every object done in the engine's batches, list the destination again, run
the verification SQL and read the manifest rows, exactly as an exit does, with the SQLite
settings daulat uses. Prints the process's peak RSS before and after. Growth that stops
increasing with N is SQLite's page caches filling to their cap (2 MiB per database by default),
not state kept per object.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import datetime as dt, resource, sys, tempfile
from pathlib import Path
from daulat.stores.base import ObjectInfo
from daulat.transfer.journal import BatchWriter, Journal, Outcome, State
from daulat.transfer.verify import check_listed

n = int(sys.argv[1])
journal = Journal(Path(tempfile.mkdtemp()) / "transfers.sqlite")
now = dt.datetime.now(dt.UTC)


def listing(table):
    journal.new_listing(table)
    for start in range(0, n, 1000):
        batch = [
            ObjectInfo(f"d{i % 100:02d}/obj{i:07d}.bin", 1024, now, f"{i:032x}", "s3")
            for i in range(start, min(n, start + 1000))
        ]
        journal.add_to_listing(table, "", batch)


def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


before = peak()
listing("src")
journal.new_listing("dst")
run = journal.begin_run("exit", "p", "a", "b")
journal.plan("p")
writer = BatchWriter(journal, "p", run)
for item in journal.work():
    writer.add(Outcome(item.key, item.size, item.etag, State.DONE, sha256="ab" * 32,
                       dst_size=item.size, dst_etag=item.etag, plain_size=item.size))
writer.flush()
listing("dst")
report = check_listed(journal, "p", run_id=run)
assert report.verified == n, report
for _ in journal.db.execute("SELECT key, size, sha256 FROM journal WHERE pair = 'p' ORDER BY key"):
    pass
print(f"{n:>9,} objects: peak RSS {before:.1f} MiB before, {peak():.1f} MiB after "
      f"(+{peak() - before:.1f})")
"""


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [10_000, 100_000, 300_000]
    for n in sizes:
        subprocess.run([sys.executable, "-c", CHILD, str(n)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
