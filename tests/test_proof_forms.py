"""The proof forms side by side: what the engine writes now (``3s``, one AES-GCM-SIV pass) and
what earlier versions left at destinations (``2s`` and ``1s``, HMAC-SHA256), which must still
verify under the same key, bind the same fields and name the same run. See
daulat.transfer.adoption; the behaviour of adoption itself is in test_exact_resume.py."""

from __future__ import annotations

import base64
import hashlib
import os
import string

import pytest

from daulat.transfer.adoption import PROOF_FIELD, Prover
from daulat.transfer.journal import Candidate

KEY = bytes(range(32))
CODEC = " [age:abc]"
CONTENT = hashlib.sha256(b"content").hexdigest()
# Written by the previous version (git f9522d7) with KEY and CODEC for run 41: "p/a/b.bin",
# source size 100 and ETag "e1", stored size 300; the 1s proof by a prover given no run.
OLD_2S = (
    "2s.zcugS7jnwG3CVp7lOSkGmNe2qOoyBo82ue54c11YgGx-eD6T30sjuuwB7wZIk_QDlEogXpbIbAtq8xJA5auXgQfW"
    "NPNPyvSLI7EMXklj1w258aPu8otamw"
)
OLD_1S = (
    "1s.R-7scFP4R861a9dl12_amOdQcpMYttPJyCqqzXpIiJs_SeZ70smNS6y5F4h5hrIuqTt5tVP5eF9hXnDoa_nUiMfiX"
    "xWpD0haLHKYkRu7Zls"
)
DIGITS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def _candidate(
    key: str = "a/b.bin",
    size: int = 100,
    etag: str | None = "e1",
    dst_size: int = 300,
    recorded_run: int | None = None,
) -> Candidate:
    return Candidate(1, key, None, size, etag, dst_size, "d1", None, recorded_run)


def _checker(key: bytes = KEY, codec: str = CODEC) -> Prover:
    return Prover(key, codec=codec, encrypting=True)


def _written(run: int = 41, *, aead: bool = True) -> str:
    prover = Prover(KEY, codec=CODEC, encrypting=True, run_id=run)
    if not aead:
        prover._aead = None  # a library without AES-GCM-SIV: the 2s form
    return prover.sealed("p/a/b.bin", 100, "e1", CONTENT, 300)[PROOF_FIELD]


def _flipped(value: str) -> list[str]:
    """``value`` with each base64 character's top bit flipped in turn (the last character's
    low bits are padding a decoder drops: flipping those would change nothing)."""
    return [
        value[:i] + DIGITS[DIGITS.index(value[i]) ^ 32] + value[i + 1 :]
        for i in range(3, len(value))
    ]


def test_a_new_proof_is_one_aead_pass_shorter_than_the_old_one() -> None:
    value = _written()
    assert value.startswith("3s.")
    # nonce 12, sealed SHA-256 and run 40, tag 16: 68 bytes against 2s's 88.
    assert len(base64.urlsafe_b64decode(value[3:] + "==")) == 68
    assert len(value) < len(OLD_2S)
    proven = _checker().check(value, _candidate(), "p/a/b.bin")
    assert proven is not None
    assert (proven.sha256, proven.plain_size, proven.run_id) == (CONTENT, 100, 41)


@pytest.mark.parametrize("form", ["3s", "2s"])
def test_either_form_is_adopted_only_when_written_after_the_recorded_run(form: str) -> None:
    """The same rule for the new form and the old: a proof naming a run after the one the done
    row was recorded by is adopted, one naming that run or an earlier one is not."""
    value = OLD_2S if form == "2s" else _written()
    assert value.startswith(form + ".")
    checker = _checker()
    proven = checker.check(value, _candidate(), "p/a/b.bin")
    assert proven is not None and (proven.sha256, proven.run_id) == (CONTENT, 41)
    assert checker.check(value, _candidate(recorded_run=40), "p/a/b.bin") == proven
    assert checker.check(value, _candidate(recorded_run=41), "p/a/b.bin") is None
    assert checker.check(value, _candidate(recorded_run=42), "p/a/b.bin") is None


def test_proofs_earlier_versions_wrote_still_verify() -> None:
    checker = _checker()
    for value, run in ((OLD_2S, 41), (OLD_1S, None)):
        proven = checker.check(value, _candidate(), "p/a/b.bin")
        assert proven is not None, value[:3]
        assert (proven.sha256, proven.plain_size, proven.run_id) == (CONTENT, 100, run)
    # ...and still bind what they bound: another object, version or key is not proven.
    for value in (OLD_2S, OLD_1S):
        assert checker.check(value, _candidate(), "p/a/c.bin") is None
        assert checker.check(value, _candidate(etag="e2"), "p/a/b.bin") is None
        assert _checker(os.urandom(32)).check(value, _candidate(), "p/a/b.bin") is None
        assert all(checker.check(v, _candidate(), "p/a/b.bin") is None for v in _flipped(value))


def test_without_aes_gcm_siv_the_old_form_is_written_and_a_new_one_is_not_believed() -> None:
    value = _written(aead=False)
    assert value.startswith("2s.")
    proven = _checker().check(value, _candidate(), "p/a/b.bin")
    assert proven is not None and (proven.sha256, proven.run_id) == (CONTENT, 41)
    blind = _checker()
    blind._aead = None
    assert blind.check(_written(), _candidate(), "p/a/b.bin") is None  # sent again


def test_the_new_form_binds_every_field_and_reveals_neither_hash_nor_run() -> None:
    value = _written()
    checker = _checker()
    assert checker.check(value, _candidate(), "p/a/b.bin") is not None
    # Another destination key, source size, source ETag, stored size: not proven.
    assert checker.check(value, _candidate(), "p/a/c.bin") is None
    assert checker.check(value, _candidate(size=101), "p/a/b.bin") is None
    assert checker.check(value, _candidate(etag="e2"), "p/a/b.bin") is None
    assert checker.check(value, _candidate(etag=None), "p/a/b.bin") is None
    assert checker.check(value, _candidate(dst_size=301), "p/a/b.bin") is None
    # Another proof key, another codec: not proven.
    assert _checker(os.urandom(32)).check(value, _candidate(), "p/a/b.bin") is None
    assert _checker(codec="").check(value, _candidate(), "p/a/b.bin") is None
    # Any changed byte (nonce, sealed values, tag), a cut or a longer value: not proven.
    assert all(checker.check(v, _candidate(), "p/a/b.bin") is None for v in _flipped(value))
    assert checker.check(value[:-4], _candidate(), "p/a/b.bin") is None
    assert checker.check(value + "AAAA", _candidate(), "p/a/b.bin") is None
    assert checker.check("3s.", _candidate(), "p/a/b.bin") is None
    # The hash and the run are not in the clear, and two proofs of one object differ.
    raw = base64.urlsafe_b64decode(value[3:] + "==")
    assert bytes.fromhex(CONTENT) not in raw and (41).to_bytes(8, "big") not in raw
    assert _written() != value
