"""Records: rows of another domain that ride the settlement streams into the database.

A settlement stream (:mod:`billing.writer`) carries two kinds of entry:

==============  =====================================================================
a settlement    a :class:`~billing.ledger.Settlement`, encoded as it always was: its usage
                record and, when it cost anything, its debit
a record        a :class:`Record`: a row another package writes behind the request (a proxy
                function's invocation), with the settlement of its cost when it has one
==============  =====================================================================

A record is written in the same batch transaction as the settlements around it, idempotent on
its request id like they are, and it is parked (:mod:`billing.parking`) when it cannot be
stored, like they are. Billing knows nothing of the record's table: the package that owns it
registers a :class:`RecordKind` with the writer, which decodes the record's ``body`` and
inserts it (``ON CONFLICT DO NOTHING`` on the request id). A record of a kind no one
registered is refused (:class:`RecordRefused`) and parked, never dropped: ``tollway billing
replay-parked`` writes it once its kind is known.

A record names its kind in its first field, ``kind``; a settlement has no such field, so
:func:`decode_entry` tells the two apart by their first bytes (what msgspec writes first), and
entries already buffered by an older process decode as the settlements they are, at the cost
they always had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import Settlement, write_settlements

__all__ = [
    "Entry",
    "Record",
    "RecordKind",
    "RecordRefused",
    "decode_entry",
    "encode_entry",
    "write_entries",
]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A row of another domain, buffered in the account's settlement stream.

    ``body`` is the kind's own JSON (only its kind decodes it). ``settlement``: the usage record
    and debit of what the row cost, written in the same transaction; ``None`` when nothing was
    at stake (a free proxy-function call)."""

    kind: str
    request_id: str
    account_id: int
    body: msgspec.Raw
    settlement: Settlement | None = None

    @property
    def cost_micro(self) -> int:
        return self.settlement.cost_micro if self.settlement is not None else 0


#: What a settlement stream carries.
Entry = Settlement | Record


class RecordRefused(Exception):
    """A record that cannot be stored as it is (an unknown kind, a body its kind cannot read):
    retrying cannot help, so it is parked like data the database refuses."""


class RecordKind(Protocol):
    """How one kind of record reaches its table (registered with the writer by its owner)."""

    @property
    def name(self) -> str:
        """The ``kind`` its records carry."""
        ...

    async def write(self, connection: AsyncConnection, records: Sequence[Record]) -> int:
        """Insert ``records`` in the caller's transaction, each once per request id (a replayed
        batch inserts nothing again); returns how many were new. Raises :class:`RecordRefused`
        for a body it cannot read."""
        ...


class _KindView(msgspec.Struct):
    """The one field that tells a record from a settlement (a settlement has no ``kind``)."""

    kind: str = ""


_encoder = msgspec.json.Encoder()
_RECORD_START = b'{"kind":'  # msgspec encodes a Struct's fields in order: a record's kind first
_kind_decoder = msgspec.json.Decoder(_KindView)
_settlement_decoder = msgspec.json.Decoder(Settlement)
_record_decoder = msgspec.json.Decoder(Record)


def encode_entry(entry: Entry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    """A buffered entry; raises ``msgspec.DecodeError`` (``ValidationError`` included) for bytes
    that are neither a settlement nor a record."""
    if data.startswith(_RECORD_START):
        return _record_decoder.decode(data)
    try:
        return _settlement_decoder.decode(data)
    except msgspec.ValidationError:
        # Not in the order msgspec writes (corrected by hand for replay-parked --data-file)?
        if _kind_decoder.decode(data).kind:
            return _record_decoder.decode(data)
        raise


async def write_entries(connection: AsyncConnection, entries: Sequence[Entry], kinds: Mapping[str, RecordKind]) -> int:
    """Write a batch of entries in the caller's transaction: every settlement (records' included)
    through :func:`billing.ledger.write_settlements`, then each kind's records; returns how many
    rows were new. Raises :class:`RecordRefused` for a record of a kind not in ``kinds``."""
    settlements: list[Settlement] = []
    records: dict[str, list[Record]] = {}
    for entry in entries:
        if isinstance(entry, Settlement):
            settlements.append(entry)
            continue
        if entry.kind not in kinds:
            raise RecordRefused(f"no writer knows records of kind {entry.kind!r}")
        records.setdefault(entry.kind, []).append(entry)
        if entry.settlement is not None:
            settlements.append(entry.settlement)
    written = await write_settlements(connection, settlements) if settlements else 0
    for kind, batch in records.items():
        written += await kinds[kind].write(connection, batch)
    return written
