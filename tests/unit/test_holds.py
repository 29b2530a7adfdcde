"""The hold record's wire form: records already in a running deployment's Redis stay readable,
and what this version writes reads the same in the previous one."""

from __future__ import annotations

import msgspec
import pytest

from billing.counters import Adjust
from billing.holds import UNREADABLE, HoldRecord, decode_hold, encode_hold, release_of
from billing.ledger import Settlement
from providers.base import Usage

SO_FAR = Settlement(
    request_id="req_1",
    account_id=7,
    key_id=3,
    model="fake/gpt",
    provider="fake",
    upstream_model="gpt",
    usage=Usage(input_tokens=10, output_tokens=4),
    cost_micro=1_234,
    latency_ms=5,
    status_code=200,
    streamed=True,
)

HOLD = HoldRecord(amount_micro=5_000, expires_ms=1_700_000_000_000, spend_key="s:k", tpm_key="t:k", tokens=42)


def previous_version_record(**extra: object) -> str:
    """A record as the dict-based metering wrote it (``reserve``, then ``checkpoint`` adds ``p``)."""
    record: dict[str, object] = {"a": 5_000, "e": 1_700_000_000_000, "s": "s:k", "t": "t:k", "k": 42, **extra}
    return msgspec.json.encode(record).decode()


def test_hold_record_writes_the_one_letter_form_byte_for_byte() -> None:
    assert encode_hold(HOLD) == previous_version_record()
    checkpointed = msgspec.structs.replace(HOLD, so_far=SO_FAR)
    assert encode_hold(checkpointed) == previous_version_record(p=msgspec.to_builtins(SO_FAR))


def test_hold_record_reads_records_of_the_previous_version() -> None:
    assert decode_hold(previous_version_record()) == HOLD
    assert decode_hold(previous_version_record(p=msgspec.to_builtins(SO_FAR))).so_far == SO_FAR
    # Unknown keys (a later version's) are ignored; missing optional ones take their defaults.
    assert decode_hold('{"e": 5, "x": 1}') == HoldRecord(expires_ms=5)


@pytest.mark.parametrize("raw", ["{", "5", '{"a": 1}', '{"e": "soon"}', '{"e": 1, "p": {"cost_micro": 1}}'])
def test_hold_record_refuses_what_is_not_one(raw: str) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_hold(raw)
    assert UNREADABLE.expires_ms == 0 and UNREADABLE.amount_micro == 0  # what the sweep assumes instead


def test_hold_record_release_gives_back_exactly_what_was_taken() -> None:
    assert release_of("bal:k", HOLD) == [
        Adjust("bal:k", "held", -5_000),
        Adjust("s:k", "v", -5_000),
        Adjust("t:k", "n", -42),
    ]
    assert release_of("bal:k", HoldRecord(amount_micro=9, expires_ms=0)) == [Adjust("bal:k", "held", -9)]
