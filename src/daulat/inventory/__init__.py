"""The inventory: what each store holds, as daulat last saw it.

* :mod:`daulat.inventory.database`: the SQLite database under ``.daulat/`` (``manifest.sqlite``)
  that keeps every scan, the latest state of every object and what each scan found changed.
* :mod:`daulat.inventory.scanning`: listing a store into that database (``daulat scan``), and
  the quick reachability probe of ``daulat stores``.

Not to be confused with the manifests daulat writes *beside a replica* in the destination store
(:mod:`daulat.transfer.manifests`): those travel with the data; this one stays on the machine.
How a store is listed fast (sharded listing, provider inventory reports) is in
:mod:`daulat.census`.

Modules inside daulat that only read the database import :mod:`daulat.inventory.database`
directly, so that the scanner (stores, configuration, audit log) does not come with it.
"""

from daulat.inventory.database import (
    MANIFEST_KIND,
    MANIFEST_NAME,
    Manifest,
    ObjectRow,
    ScanSummary,
)
from daulat.inventory.scanning import (
    SCAN_TRANSACTION,
    Progress,
    ScanFailure,
    ScanResults,
    StoreStatus,
    probe,
    scan,
    scan_details,
    scan_store,
    scan_stores,
    store_statuses,
)

__all__ = [
    "MANIFEST_KIND",
    "MANIFEST_NAME",
    "SCAN_TRANSACTION",
    "Manifest",
    "ObjectRow",
    "Progress",
    "ScanFailure",
    "ScanResults",
    "ScanSummary",
    "StoreStatus",
    "probe",
    "scan",
    "scan_details",
    "scan_store",
    "scan_stores",
    "store_statuses",
]
