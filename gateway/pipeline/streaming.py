"""The streamed answers' response: Litestar's ``Stream`` without a task per response.

Litestar sends a stream from a child task while the handler's task waits on ``receive()`` for a
disconnect, in an anyio task group (a group, a task, a listener coroutine and a cancellation per
stream; ~4 % of a streamed request's CPU under py-spy). Here the body is sent from the request's
own task and the disconnect is watched as :func:`gateway.pipeline.metered.cancel_on_disconnect`
watches it, by stepping ``receive()`` from the callbacks of what it waits on. A disconnect still
cancels the sending, so the pipeline's generator stops reading the upstream and settles what was
served (shielded); an error of the generator reaches the server as itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse

from gateway.pipeline.metered import DisconnectScope

if TYPE_CHECKING:
    from litestar.types import Receive, Send


class WatchedStreamingResponse(ASGIStreamingResponse):
    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        async with DisconnectScope(receive):
            await self._stream(send)


class WatchedStream(Stream):
    """A ``Stream`` whose body is sent by :class:`WatchedStreamingResponse`."""

    __slots__ = ()

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        # Litestar's own construction (headers, cookies, media type, background) with only the
        # sending replaced: the class adds no state, so its instances share the layout.
        response.__class__ = WatchedStreamingResponse
        return response
