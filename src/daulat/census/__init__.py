"""Taking stock of a store at scale: listing it in parallel shards (:mod:`.sharded`) and
reading the provider's own inventory reports instead of listing (:mod:`.imported`,
:mod:`.reports`, :mod:`.rows`, :mod:`.s3_inventory`, :mod:`.azure_inventory`)."""

from daulat.census.sharded import DEFAULT_SHARDS, ListingStats, list_sharded, sharded_list

__all__ = ["DEFAULT_SHARDS", "ListingStats", "list_sharded", "sharded_list"]
