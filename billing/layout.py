"""Where an account's counters live in the counter store.

Every key of one account shares its hash tag (``{a42}``, see
:func:`billing.counters.account_key`), so one atomic script can touch all of them:

=========================  ====================================================================
``balance``                the balance mirror: ``bal``, ``held``, ``pend``, ``gen`` (:mod:`billing.mirror`)
``holds``                  one hold record per open reservation, by request id (:mod:`billing.holds`)
``settled``                the stream of settlements waiting for the database (:mod:`billing.writer`)
``spend:<key>:<period>``   what a key spent (and holds) in a spending period, field ``v``
``rpm:<key>:<minute>``     a key's requests in one minute window, field ``n``
``tpm:<key>:<minute>``     a key's tokens in one minute window, field ``n``
=========================  ====================================================================
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from billing.counters import account_key, settlement_stream
from billing.periods import period_id

#: The field of a spend counter (micro-credits) and of a rate window (requests or tokens).
SPENT = "v"
COUNT = "n"


class CounterKeys(msgspec.Struct, frozen=True):
    """The key names of every account under one deployment's prefix."""

    prefix: str

    def balance(self, account_id: int) -> str:
        return account_key(self.prefix, account_id, "balance")

    def holds(self, account_id: int) -> str:
        return account_key(self.prefix, account_id, "holds")

    def stream(self, account_id: int) -> str:
        return settlement_stream(self.prefix, account_id)

    def spend(self, account_id: int, key_id: int, period: str, now: datetime) -> str:
        return account_key(self.prefix, account_id, f"spend:{key_id}:{period_id(now, period)}")

    def window(self, account_id: int, name: str, key_id: int, minute: int) -> str:
        """A rate window (``name`` is ``rpm`` or ``tpm``) of one key for one minute."""
        return account_key(self.prefix, account_id, f"{name}:{key_id}:{minute}")
