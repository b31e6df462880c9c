"""Rules on where the data is and whose law reaches it: residency, encrypt_when_foreign_law."""

from __future__ import annotations

from daulat.policy.context import _Ctx, _EvaluatorBase
from daulat.policy.findings import Finding, Status
from daulat.policy.units import _amount


class _LawRules(_EvaluatorBase):
    def residency(self, ctx: _Ctx, store: str) -> Finding:
        pol = ctx.pol
        allowed = pol.allowed
        assert allowed is not None
        country = self.placement(store).country
        held = self.holding(ctx, store)
        amount = _amount(held.objects, held.bytes)
        data = {"country": country, "allowed": sorted(allowed), "holding_source": held.source}
        if country in allowed:
            why = f"{store} stores its data in {self.where(store)}, which the policy allows ({pol.residency_text})"
            return Finding(
                pol.label,
                "residency",
                store,
                Status.PASS,
                why,
                None,
                held.objects,
                held.bytes,
                data,
            )
        what = (
            f"it holds {amount} ({held.source})"
            if held.objects is not None
            else f"what it holds is unknown ({held.source})"
        )
        why = (
            f"{store} stores its data in {self.where(store)}, outside the allowed "
            f"{pol.residency_text}; {what}"
        )
        inside = [s for s in ctx.stores if s != store and self.placement(s).country in allowed]
        if store == ctx.primary:
            target = inside[0] if inside else "a store in " + pol.residency_text
            fix = (
                f"move the data's home into {pol.residency_text}: {self.exit_cmd(pol, store, ctx.prefix, target) if inside else f'`daulat exit {self.addr(store, ctx.prefix)} NEW_STORE` to {target}'}, "
                f"switch writers to it, then delete the data at {store}"
            )
        else:
            fix = (
                f"delete the copy at {store} and remove it from this policy; keep replicas in "
                f"{pol.residency_text}" + (f" (e.g. {', '.join(inside)})" if inside else "")
            )
        return Finding(
            pol.label, "residency", store, Status.FAIL, why, fix, held.objects, held.bytes, data
        )

    def encryption(self, ctx: _Ctx, store: str) -> Finding:
        pol = ctx.pol
        rule = "encrypt_when_foreign_law"
        pl = self.placement(store)
        foreign = self.foreign(store, pol)
        base = {"jurisdictions": pl.jurisdictions, "foreign": foreign}
        if not foreign:
            allowed = pol.residency_text or pl.country
            held = self.holding(ctx, store)
            why = (
                f"only {', '.join(pl.jurisdictions)} law reaches {store} "
                f"({pl.provider.name} in {pl.country}), all within {allowed}: no foreign law, "
                "plaintext allowed"
            )
            return Finding(
                pol.label, rule, store, Status.PASS, why, None, held.objects, held.bytes, base
            )
        reach = self.reach_text(store, foreign)
        safe = [s for s in ctx.stores if s != store and not self.foreign(s, pol)]
        if store == ctx.primary:
            held = self.holding(ctx, store)
            if held.objects == 0:
                why = f"{reach} reaches {store}, but it holds no objects ({held.source})"
                return Finding(pol.label, rule, store, Status.PASS, why, None, 0, 0, base)
            amount = (
                _amount(held.objects, held.bytes)
                if held.objects is not None
                else "its objects (never scanned: count unknown)"
            )
            why = (
                f"{reach} reaches {store}, the primary, where the data originates in clear: "
                f"{amount}. daulat can encrypt copies, not the original"
            )
            home = safe[0] if safe else None
            move = (
                self.exit_cmd(pol, store, ctx.prefix, home)
                if home
                else f"`daulat exit {self.addr(store, ctx.prefix)} NEW_STORE` to a store only {pol.residency_text or pl.country} law reaches"
            )
            fix = (
                f"end the exposure by moving the data's home: {move}, switch writers to it and "
                f"delete the data at {store}; or have the application encrypt before upload "
                "(server-side encryption does not count: the provider holds those keys). Until "
                "then keep an encrypted or domestic replica so the exit plan can be carried out"
            )
            return Finding(
                pol.label,
                rule,
                store,
                Status.FAIL,
                why,
                fix,
                held.objects,
                held.bytes,
                {**base, "primary": True},
            )
        cfg = self.config.stores[store]
        pn, pb, en, eb = self.state.writes(store, ctx.stores, ctx.prefix)
        data = {
            **base,
            "plaintext": pn,
            "plaintext_bytes": pb,
            "encrypted": en,
            "encrypted_bytes": eb,
            "declares_encrypt_to": bool(cfg.encrypt_to),
        }
        src = self.addr(ctx.primary, ctx.prefix)
        if pn:
            why = (
                f"{reach} reaches {store}, and {_amount(pn, pb)} there were last written in clear "
                f"by daulat"
                + (f" ({en:,} others are age-encrypted)" if en else "")
                + (
                    " — encrypt_to is declared, but only copies made since are encrypted"
                    if cfg.encrypt_to
                    else ""
                )
            )
            if cfg.encrypt_to:
                fix = f"run `daulat exit {src} {store}` again: the declared encrypt_to re-copies every object age-encrypted over the plaintext"
            else:
                fix = (
                    f"re-copy encrypted: `daulat exit {src} {store} --encrypt-to {self.recipient_hint([store])}` "
                    f"(key: `daulat keys new --out FILE`), and declare encrypt_to on store {store} so later copies are too"
                )
            return Finding(pol.label, rule, store, Status.FAIL, why, fix, pn, pb, data)
        if en:
            why = f"{reach} reaches {store}, but all {_amount(en, eb)} daulat wrote there are age-encrypted"
            return Finding(pol.label, rule, store, Status.PASS, why, None, en, eb, data)
        if cfg.encrypt_to:
            why = (
                f"{reach} reaches {store}; daulat has written nothing there yet, and the store "
                "declares encrypt_to, so copies will be age-encrypted"
            )
            return Finding(pol.label, rule, store, Status.PASS, why, None, 0, 0, data)
        scan = self.state.last_scan(store)
        advice = f"declare encrypt_to on store {store} (or pass --encrypt-to) so copies there are age-encrypted"
        if scan is not None:
            n, b = self.state.totals(store, ctx.prefix)
            if n == 0:
                why = f"{reach} reaches {store}, which holds nothing yet ({scan.described})"
                return Finding(pol.label, rule, store, Status.PASS, why, advice, 0, 0, data)
            why = (
                f"{reach} reaches {store}; it holds {_amount(n, b)} ({scan.described}) that "
                "daulat did not write, so it cannot tell whether they are encrypted"
            )
            fix = f"replace them with encrypted copies: `daulat exit {src} {store} --encrypt-to {self.recipient_hint([store])}`; {advice}"
            return Finding(pol.label, rule, store, Status.UNKNOWN, why, fix, n, b, data)
        why = f"{reach} reaches {store}; it was never scanned and daulat has copied nothing there, so what it holds is unknown"
        return Finding(
            pol.label,
            rule,
            store,
            Status.UNKNOWN,
            why,
            f"`daulat scan {store}`; {advice}",
            None,
            None,
            data,
        )
