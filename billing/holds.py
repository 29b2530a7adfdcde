"""The hold record: what a reservation took, written beside it so that it can be given back.

The atomic apply that takes a reservation also writes this record into the account's
``holds`` hash under the request id (:mod:`billing.layout`). Settling removes it in the same
step that gives the reservation back; a reservation whose process died is found by the expiry
sweep (:mod:`billing.expiry`) once ``expires_ms`` has passed, and released from this record
alone. A stream checkpoints what it has cost so far into ``so_far``, so that the sweep bills
that instead of nothing.

The wire form keeps the one-letter keys of the records already in a running deployment's
Redis (``{"a","e","s","t","k"}`` and ``"p"`` once checkpointed), field for field and in the
same order, so that processes of either version read each other's records.
"""

from __future__ import annotations

import msgspec

from billing.counters import Adjust
from billing.layout import COUNT, SPENT
from billing.ledger import Settlement
from billing.mirror import HELD


class HoldRecord(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename={
        "amount_micro": "a",
        "expires_ms": "e",
        "spend_key": "s",
        "tpm_key": "t",
        "tokens": "k",
        "so_far": "p",
    },
):
    amount_micro: int = 0
    #: Wall-clock time (ms since the epoch) after which the sweep may release the hold.
    expires_ms: int
    #: The key's spend counter the amount was added to ("" without a key limit).
    spend_key: str = ""
    #: The key's token window ``tokens`` were added to ("" without a token limit).
    tpm_key: str = ""
    tokens: int = 0
    #: What a stream had cost at its last checkpoint; absent (not null) until then.
    so_far: Settlement | msgspec.UnsetType = msgspec.UNSET


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HoldRecord)

#: What the sweep assumes of a record it cannot read: expired, and nothing to give back.
UNREADABLE = HoldRecord(expires_ms=0)


def encode_hold(record: HoldRecord) -> str:
    return _encoder.encode(record).decode()


def decode_hold(raw: str) -> HoldRecord:
    """Raises ``msgspec.DecodeError`` (``ValidationError`` included) for a record that is not one."""
    return _decoder.decode(raw)


def release_of(balance_key: str, hold: HoldRecord) -> list[Adjust]:
    """What taking the reservation added, to be taken back exactly once."""
    back = [Adjust(balance_key, HELD, -hold.amount_micro)]
    if hold.spend_key:
        back.append(Adjust(hold.spend_key, SPENT, -hold.amount_micro))
    if hold.tpm_key:
        back.append(Adjust(hold.tpm_key, COUNT, -hold.tokens))
    return back
