"""Scale-out: ``--engine ray`` runs a transfer's plan on a Ray cluster.

The driver (the ``daulat`` process) lists, plans, adopts, verifies and writes the manifest
exactly as a single-process run does; only the copying of planned objects moves out:

- :mod:`daulat.scale.shards` cuts the plan into shards of bounded objects and bytes (an object
  is never split: its SHA-256 and age stream are sequential, so a very large object is a shard
  of its own);
- :mod:`daulat.scale.worker` runs one shard on a Ray worker with the same async engine
  (:func:`daulat.transfer.engine.copy_items`), opening the stores itself from the config file
  and the worker's environment, and streams per-object results back in batches;
- :mod:`daulat.scale.driver` keeps at most ``--workers`` shards in flight and is the only
  writer of the journal. A worker lost mid-shard: the driver adopts by proof what the lost
  attempt completed but had not reported, and sends only the rest again;
- :mod:`daulat.scale.verifying` runs ``verify --full``'s re-reading and hashing on workers
  in the same way; the driver lists, records and reports;
- :mod:`daulat.scale.warmup` connects and starts one warm worker process per slot while the
  driver lists and plans (every run is a new Ray job, whose processes start and import);
- :mod:`daulat.scale.cluster` connects to Ray (``--ray-address``, else ``RAY_ADDRESS``, else a
  local Ray started for the run and stopped after it).
"""

from daulat.scale.cluster import RayUnavailable, ray_available

__all__ = ["RayUnavailable", "ray_available"]
