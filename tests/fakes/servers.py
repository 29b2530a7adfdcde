"""Run an ASGI app on a real 127.0.0.1 socket in a background thread, for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """uvicorn serving ``app`` on its own event loop; ``stop()`` shuts it down gracefully."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        # Without a given port, listen on a socket bound here and handed to uvicorn: choosing a
        # free port and binding it later leaves a gap in which another test process on the machine
        # (a parallel worker, another checkout's suite) can take it.
        self.socket: socket.socket | None = None
        if port is None:
            self.socket = socket.socket()
            self.socket.bind(("127.0.0.1", 0))
            port = int(self.socket.getsockname()[1])
        self.port = port
        self.app = app  # what the server runs, for tests that swap its clocks (app.state.gateway.now)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=5,
            proxy_headers=False,  # as gateway/server.py: only Tollway's trusted_proxies may rewrite the client
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket] if self.socket is not None else None))

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.socket is not None:
            self.socket.close()
