"""Policy as code: ``[[policies]]`` in ``daulat.toml`` → findings, like tests for where data lives.

A policy names the stores that hold one body of data and the rules that data must obey::

    [[policies]]
    name = "election data stays in Indonesia, two copies, encrypted where foreign law reaches"
    stores = ["kpu-alibaba", "vault"]   # or a selector: stores = { holding = "pemilu-2024/" }
    primary = "kpu-alibaba"             # optional: where the data originates (see below)
    residency = ["ID"]                  # countries where the data may be stored ("EU", "EEA" too)
    min_replicas = 2                    # verified copies across distinct stores, primary included
    distinct_providers = 2              # optional: verified copies with this many providers
    distinct_jurisdictions = 2          # optional: ... under this many provider home jurisdictions
    encrypt_when_foreign_law = true     # copies a foreign law can reach must be age-encrypted
    max_verify_age_days = 7             # every replica re-verified within this many days
    max_exit_hours = 24                 # predicted full exit of the primary (needs drill data)

Every key but ``stores`` is optional, but a policy must state at least one rule. Policies are
validated with pydantic (unknown keys, unknown stores, bad country codes, wrong types): every
problem becomes one line of a :class:`~daulat.errors.ConfigError` naming the file, the policy (by
index and name) and the field, so ``daulat check`` exits 2 without a traceback.

Stores and the primary
    ``stores = [...]`` lists configured store names. The selector ``stores = { holding = PREFIX }``
    picks (a) every store whose latest manifest scan lists a key starting with ``PREFIX`` (a plain
    string prefix, usually ending in ``/``) and (b) every store daulat copied such keys to (journal
    pairs from a store of (a) whose source prefix overlaps ``PREFIX``), in ``daulat.toml`` order;
    the data the policy governs is then the keys under ``PREFIX`` at the primary (with a list it is
    the whole primary store); a selector that matches no store yields a single "unknown" finding
    with rule ``stores``. The *primary* is where the data originates: ``primary = NAME`` if
    given; else the first policy store that daulat copied from (to another policy store) and never
    into (restores aside); else the first store of the list. Replicas are the other stores.

What each rule looks at (read-only; nothing under ``.daulat/`` is created or changed)
    - ``residency``: the country of each store, from its declared ``region`` via the provider
      catalogue, or its declared ``country`` -- never from where an IP address seems to resolve.
      A policy store outside the list fails even before it holds anything: the policy names it
      as a place for this data.
    - ``encrypt_when_foreign_law``: the jurisdictions reaching a store are the data-centre country
      and the provider's home country (``hq_country``; none for self-hosted/local). A foreign law
      reaches the store when one of them is outside ``residency`` (without ``residency``: differs
      from the data-centre country). At a replica, each key daulat wrote counts by its latest
      write: encrypted when that write came through an ``[age:...]`` pair of the journal (so a
      plaintext copy later re-made encrypted passes, and one made before ``encrypt_to`` was
      declared still fails); a store daulat wrote nothing to passes when it declares
      ``encrypt_to``, is "unknown" when a scan shows objects daulat did not write (or it was
      never scanned), and passes when a scan shows it empty. **The primary** cannot be
      encrypted by daulat (the data is born there in clear): when a foreign law reaches it the rule
      *fails*, naming the plaintext objects, and the fix says what ends the exposure -- move the
      data's home to a store only allowed law reaches (``daulat exit``) or encrypt in the
      application before upload. Provider-side encryption does not count: the provider holds those
      keys. We chose "fail" over "unknown" or "pass" because the exposure is real and known.
    - ``min_replicas``: per object of the primary (latest scan), the number of stores holding a
      *verified* copy: the primary itself plus each replica whose journal row for that object is
      done, verified by the latest verification of its pair, and recorded from the same source
      version (size and ETag as the scan saw them). Every object needs ``min_replicas`` copies. A
      replica holding only some objects is reported as partial, with counts; objects copied but
      not verified, changed at the primary since the copy, or never copied are counted apart.
    - ``distinct_providers`` / ``distinct_jurisdictions``: among the stores holding a complete
      verified copy (the primary and complete replicas). Self-hosted and local stores count as one
      provider (your own infrastructure); their home jurisdiction is their declared country.
    - ``max_verify_age_days``: per replica, the oldest of the newest successful verifications of
      its verified objects (with one pair per replica: simply the last ``daulat verify``/``exit``).
    - ``max_exit_hours``: the predicted hours to evacuate the primary, from the
      ``latest_exit_hours`` hook of :func:`evaluate_policies`; by default from a ``drills`` table
      in ``.daulat/`` (see :func:`drill_exit_hours`). Without drill data the rule is "unknown".

Statuses and exit codes
    Each rule yields :class:`Finding` objects with status ``pass``, ``fail`` or ``unknown``. A rule
    that cannot be evaluated yet (a store never scanned, no drill data) is ``unknown``, never
    ``pass``. :attr:`PolicyResult.exit_code` is the exit code ``daulat check`` must return:

    - **1** if any finding fails;
    - **0** if none fails -- also when some are unknown: unknown ≠ pass, so the findings and
      :func:`render_findings` show a visible warning, but nothing was shown to be violated;
    - **1** also when some finding is unknown and ``strict=True`` (``daulat check --strict``), for
      CI gates that must prove every rule; likewise with no policies at all;
    - **2** for configuration errors: :func:`evaluate_policies` raises
      :class:`~daulat.errors.ConfigError` (the CLI already maps it to 2).

Usage::

    result = evaluate_policies(config, strict=strict)
    if as_json: print(json.dumps(result.to_json()))
    else: render_findings(result, console)
    exit_code = result.exit_code
"""

from __future__ import annotations

from daulat.policy.context import DrillLookup
from daulat.policy.evaluate import check_policies, evaluate_policies
from daulat.policy.exit_time import drill_exit_hours
from daulat.policy.findings import Finding, PolicyReport, PolicyResult, Status
from daulat.policy.render import render_findings
from daulat.policy.spec import COUNTRY_GROUPS, RULES, HoldingSelector, PolicySpec, load_policies

__all__ = [
    "COUNTRY_GROUPS",
    "RULES",
    "DrillLookup",
    "Finding",
    "HoldingSelector",
    "PolicyReport",
    "PolicyResult",
    "PolicySpec",
    "Status",
    "check_policies",
    "drill_exit_hours",
    "evaluate_policies",
    "load_policies",
    "render_findings",
]
