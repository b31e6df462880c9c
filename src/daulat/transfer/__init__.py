"""Copy, sync, exit and verify between configured stores.

:func:`run_transfer` is what the commands call: it resolves ``STORE[:PREFIX]`` addresses against
the configuration, opens the stores and the journal, runs the engine and closes everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from daulat.config import Config, placement_of
from daulat.crypto import Identity, parse_recipients
from daulat.errors import AccessDenied, ConfigError
from daulat.stores import open_store
from daulat.transfer.adoption import proof_key
from daulat.transfer.engine import Endpoint, Kind, Options, Progress, Summary, transfer
from daulat.transfer.journal import Journal
from daulat.transfer.names import existing_name_key, name_key_for_run

if TYPE_CHECKING:
    from daulat.verify import VerifyReport

__all__ = [
    "Endpoint",
    "Kind",
    "Options",
    "Progress",
    "Summary",
    "open_endpoint",
    "run_transfer",
    "run_verify",
]


def open_endpoint(config: Config, spec: str) -> Endpoint:
    """``STORE`` or ``STORE:PREFIX`` → an Endpoint (store opened, no I/O yet)."""
    name, _, prefix = spec.partition(":")
    if not name:
        raise ConfigError(f"{spec!r}: expected STORE or STORE:PREFIX")
    cfg = config.store(name)
    placement = placement_of(cfg)
    norm = Endpoint.normalise(prefix)
    return Endpoint(
        store=open_store(cfg),
        prefix=norm,
        label=f"{name}:{norm}" if norm else name,
        describe={
            "provider": cfg.provider.value,
            "region": cfg.region,
            "country": placement.country,
        },
    )


async def run_transfer(
    config: Config,
    kind: Kind,
    src_spec: str,
    dst_spec: str,
    options: Options | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    identities: Sequence[Identity] = (),
) -> Summary:
    """Run one transfer between configured stores.

    The destination store's ``encrypt_to`` and ``encrypt_names`` apply unless ``options`` says
    otherwise. ``identities`` recover the destination's name key when this machine lacks it.
    """
    opts = options or Options()
    dst_cfg = config.store(dst_spec.partition(":")[0])
    if not opts.encrypt_to and not opts.decrypt_with and dst_cfg.encrypt_to:
        opts = replace(opts, encrypt_to=parse_recipients(dst_cfg.encrypt_to))
    if opts.encrypt_to and dst_cfg.encrypt_names:
        opts = replace(opts, encrypt_names=True)
    if opts.encrypt_names and not opts.encrypt_to:
        raise ConfigError(
            "--encrypt-names needs --encrypt-to AGE_RECIPIENT (or encrypt_to on store "
            f"{dst_cfg.name!r}): names are protected only inside encrypted copies"
        )
    if opts.proof_key is None and not opts.dry_run:
        # Objects written carry a MAC under this key, so that a re-run after a crash adopts
        # what is complete at the destination instead of sending it again.
        opts = replace(opts, proof_key=proof_key(config.state_dir))
    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    if src.store.name == dst.store.name and (
        src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)
    ):
        raise ConfigError(
            f"{src_spec!r} and {dst_spec!r} overlap: a store cannot be copied into itself"
        )
    try:
        if opts.encrypt_names and opts.name_key is None:
            key = await name_key_for_run(
                config.state_dir,
                dst,
                opts.encrypt_to,
                identities,
                dry_run=opts.dry_run,
                retry=opts.retry,
            )
            opts = replace(opts, name_key=key)
        with Journal.in_state_dir(config.state_dir) as journal:
            return await transfer(kind, src, dst, journal, opts, on_progress)
    finally:
        await src.store.close()
        await dst.store.close()


async def run_verify(
    config: Config,
    src_spec: str,
    dst_spec: str,
    *,
    full: bool = False,
    concurrency: int = 16,
    identities: Sequence[Identity] = (),
) -> VerifyReport:
    from daulat.verify import verify

    src = open_endpoint(config, src_spec)
    dst = open_endpoint(config, dst_spec)
    try:
        try:
            name_key = await existing_name_key(config.state_dir, dst, identities)
        except AccessDenied:
            # verify meets the same refusal when it lists the destination, and reports it.
            name_key = None
        with Journal.in_state_dir(config.state_dir) as journal:
            return await verify(
                src,
                dst,
                journal,
                full=full,
                concurrency=concurrency,
                identities=identities,
                name_key=name_key,
            )
    finally:
        await src.store.close()
        await dst.store.close()
