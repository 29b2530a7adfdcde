"""Settlements run to their end: a request's cancellation is held off while one runs.

A request is cancelled when its client hangs up (the gateway's ``DisconnectScope``), and what it
held must still be settled: a cancelled request pays for what it was served. The gateway and the
proxy functions wrap each settlement in :func:`shielded`; a cancellation that arrives meanwhile is
delivered once the last shield ends, at the task's next ``await``, as anyio's shielded scopes did.

Why not anyio's ``CancelScope``: entering, leaving and shielding one per request (its per-task
state kept in a weak dictionary) was ~3 % of a chat request's CPU under py-spy. This is asyncio's
own task cancellation with a counter of shields, and it is edge-triggered as asyncio's is: one
``CancelledError``, so the code that handles it (a stream's settlement) can await freely after.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from contextvars import ContextVar

__all__ = ["Cancellation", "shielded"]

_IDLE, _DUE, _ISSUED, _CAUGHT, _CLOSED = range(5)
_current: ContextVar[Cancellation | None] = ContextVar("tollway_cancellation", default=None)


class Cancellation:
    """``async with`` a stretch of the current task that :meth:`cancel` cancels, once.

    The task is only ever cancelled from a loop callback, while it waits at an ``await`` inside the
    block (never from its own running code), so the ``CancelledError`` always lands inside the
    block; the block ends quietly when it was ours alone (:attr:`caught` tells), and goes on up when
    the task was also cancelled by someone else (a server stopping). A cancellation still due when
    the block ends (the work finished first, or a shield held it to the end) is dropped."""

    __slots__ = ("_loop", "_shields", "_state", "_task", "_token")

    def __init__(self) -> None:
        self._shields = 0
        self._state = _IDLE

    @property
    def caught(self) -> bool:
        """The block was ended by this cancellation."""
        return self._state == _CAUGHT

    async def __aenter__(self) -> Cancellation:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Cancellation needs a running task")
        self._task = task
        self._loop = task.get_loop()
        self._token = _current.set(self)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, _error: BaseException | None, _tb: object) -> bool:
        _current.reset(self._token)
        issued, self._state = self._state == _ISSUED, _CLOSED
        if not issued:
            return False
        # Ours was delivered: take its count back whatever became of it (inner code may have
        # swallowed it); the block ends quietly only if nobody else cancelled the task too.
        if self._task.uncancel() == 0 and kind is asyncio.CancelledError:
            self._state = _CAUGHT
            return True
        return False

    def cancel(self) -> None:
        """Cancel the block (the first call only), on the next loop turn or when the last shield ends."""
        if self._state == _IDLE:
            self._state = _DUE
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        if self._state == _DUE and not self._shields:  # else closed, or a shield's end calls again
            self._state = _ISSUED
            self._task.cancel()

    def _unshield(self) -> None:
        self._shields -= 1
        if not self._shields and self._state == _DUE:
            self._loop.call_soon(self._deliver)


class _Shield:
    __slots__ = ("_held",)

    def __enter__(self) -> None:
        self._held = held = _current.get()
        if held is not None:
            held._shields += 1

    def __exit__(self, *_exc: object) -> None:
        if self._held is not None:
            self._held._unshield()


def shielded() -> AbstractContextManager[None]:
    """``with shielded():`` the current :class:`Cancellation` does not cancel what runs inside (a
    settlement); it is delivered afterwards, at the next ``await`` outside every shield."""
    return _Shield()
