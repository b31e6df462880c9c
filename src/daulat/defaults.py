"""Defaults the command line shows in its help and the library applies, in a module that imports
nothing: building ``daulat --help`` (or any command's options) reads them before the machinery
they belong to is imported, and the library's own modules import them from here, so the two
never disagree.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

#: Unfinished multipart uploads the journal does not know are aborted only when older than
#: this (``--abort-uploads-older-than``; :mod:`daulat.transfer.uploads`).
DEFAULT_MAX_AGE: Final = dt.timedelta(days=7)

#: ``sync --delete`` refuses to delete more than this share of the destination's objects unless
#: ``--max-delete`` says otherwise (:data:`daulat.transfer.model.DEFAULT_MAX_DELETE`).
DEFAULT_MAX_DELETE_PERCENT: Final = 50.0

#: Listings in flight at once by default. Each is one chain of round trips; beyond a few dozen
#: a provider's per-prefix request rate, not the round trip, is the limit.
DEFAULT_SHARDS: Final = 8

#: The most listings a scan runs at once: far beyond what any provider serves one client, and
#: each costs memory before it lists anything (a million never started listing).
MAX_SHARDS: Final = 10_000

#: Seconds to reach a Ray cluster's address before the run is refused: ``ray.init`` itself
#: retries an address where nothing answers for many minutes.
RAY_CONNECT_TIMEOUT: Final = 10.0
