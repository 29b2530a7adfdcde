"""Running the ASGI server.

uvicorn with uvloop and httptools measured fastest on this machine (docs/performance.md). One
worker gets the app object; several workers each build their app from the environment, so
the CLI's options are handed to them as ``TOLLWAY_*`` variables.

Two of uvicorn's defaults are wrong for a gateway that enforces per-key IP rules:

- ``proxy_headers`` is on and trusts ``X-Forwarded-For`` from 127.0.0.1, rewriting the client
  address before Tollway sees it: a local caller could then claim any address. The client
  address must come only from Tollway's own ``trusted_proxies`` logic, so it is off.
- the httptools protocol has no deadline for reading a request's headers: a client that sends
  one byte a second holds a connection (and its memory) for ever. :class:`DeadlineProtocol`
  adds one (``header_timeout_s``) and caps the bytes a request may send before its headers
  are complete. It does not bound how slowly a *body* arrives; a reverse proxy in front
  (nginx ``client_body_timeout``) covers that, as the README says.

The CLI binds the listening sockets itself before anything else (gateway/preflight.py) and hands
them over; ``on_started`` runs only once the server answers requests (with several workers: once
every worker has finished its startup), so the banner never announces a server that is not there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from gateway.app import serving_app
from gateway.preflight import STARTUP_FAILURE, bind_socket
from gateway.settings import Settings

_log = logging.getLogger("tollway.server")

KEEP_ALIVE_S = 5  # an idle connection between requests is closed after this long
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; more is refused (431), as nginx and Node do
DEFAULT_HEADER_TIMEOUT_S = 10.0
_HEADER_TIMEOUT_ATTRIBUTE = "tollway_header_timeout_s"


class DeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline and a size cap for each request's headers.

    The deadline starts when a connection opens or when the first byte of a new request
    arrives on an idle keep-alive connection, and ends when the headers are complete. Missing
    it closes the connection: the client gets no answer because it never asked a question.
    A connection only notes when its headers began; one sweep per server a second closes the
    late ones, so a request pays no timer of its own.
    """

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout_s: float = getattr(config, _HEADER_TIMEOUT_ATTRIBUTE, DEFAULT_HEADER_TIMEOUT_S)
        self._headers_since: float | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_begin()
        _HeaderSweep.ensure(self.server_state, self.loop)

    def data_received(self, data: bytes) -> None:
        if self._headers_since is None and (self.cycle is None or self.cycle.response_complete):
            self._headers_begin()  # a new request begins on an idle connection
        if self._headers_since is not None:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._headers_since = None
                self._refuse(b"431 Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._headers_since = None
        super().on_headers_complete()

    def _headers_begin(self) -> None:
        self._header_bytes = 0
        self._headers_since = self.loop.time()

    def headers_overdue(self, now: float) -> bool:
        return self._headers_since is not None and now - self._headers_since > self._header_timeout_s

    def _refuse(self, status: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()


class _HeaderSweep:
    """Once a second while a server has connections: close those whose headers are late."""

    INTERVAL_S = 1.0
    _ATTRIBUTE = "tollway_header_sweep"

    @classmethod
    def ensure(cls, server_state: Any, loop: asyncio.AbstractEventLoop) -> None:
        if getattr(server_state, cls._ATTRIBUTE, None) is None:
            setattr(server_state, cls._ATTRIBUTE, loop.call_later(cls.INTERVAL_S, cls._sweep, server_state, loop))

    @classmethod
    def _sweep(cls, server_state: Any, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in list(server_state.connections):
            if isinstance(connection, DeadlineProtocol) and connection.headers_overdue(now):
                connection._headers_since = None
                if not connection.transport.is_closing():
                    connection.transport.close()
        handle = loop.call_later(cls.INTERVAL_S, cls._sweep, server_state, loop) if server_state.connections else None
        setattr(server_state, cls._ATTRIBUTE, handle)


def server_config(settings: Settings, app: Any, **extra: Any) -> uvicorn.Config:
    """The one place uvicorn is configured (tests that run the real server use it too)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=DeadlineProtocol,
        log_level=settings.log_level.lower(),
        access_log=False,
        # Open requests and streams get this long to finish on SIGTERM; uvicorn hands it to
        # asyncio.wait_for, which takes a float although the annotation says int.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
        # Never let uvicorn rewrite the client address from X-Forwarded-For: only Tollway's
        # trusted_proxies decide whom to believe (gateway/pipeline/facts.py).
        proxy_headers=False,
        forwarded_allow_ips=[],
        server_header=False,
        **extra,
    )
    # Read by DeadlineProtocol in every worker (the config is pickled into spawned workers).
    setattr(config, _HEADER_TIMEOUT_ATTRIBUTE, settings.header_timeout_s)
    return config


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once its lifespan ran and it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, with two changes.

    ``on_started`` waits for every worker to be ready. A worker that dies before it is ready
    stops them all: its cause (a lifespan error) is the same for every worker, and restarting it
    in a loop would only hide it.

    Each worker serves its own slot's listening socket when there is one per worker
    (:func:`gateway.preflight.bind_sockets`). On one shared socket the worker that wakes first
    accepts every connection waiting (uvloop accepts until the queue is empty), so the
    keep-alive connections of a burst (a load balancer's pool, a client's) could all land on one
    worker and leave the other idle. The supervisor holds every slot's socket: connections for a
    worker being replaced wait in its queue until the replacement accepts them.
    """

    POLL_S = 0.05

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        on_started: Callable[[], None],
        open_slot: Callable[[], socket.socket] | None = None,
    ) -> None:
        super().__init__(config, sockets)
        self._on_started = on_started
        self.started = False
        self._own_sockets = len(sockets) > 1
        self._slots = list(sockets) if self._own_sockets else sockets * config.workers
        # A socket for a worker added by SIGTTIN (one of the group, or the shared one).
        self._open_slot = open_slot if self._own_sockets and open_slot else lambda: sockets[0]

    def _process(self, slot: int) -> Process:
        process = Process(self.config, [self._slots[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._process(slot) for slot in range(self.processes_num)]

    def run(self) -> None:
        self.init_processes()
        if self._wait_until_ready():
            self.started = True
            self._on_started()
            while not self.should_exit.wait(0.5):
                self.handle_signals()
                self.keep_subprocess_alive()
        self.terminate_all()
        self.join_all()

    def _wait_until_ready(self) -> bool:
        pending = list(self.processes)
        while pending:
            self.handle_signals()
            if self.should_exit.is_set():
                return False
            for process in list(pending):
                if process.exitcode is not None:
                    self.should_exit.set()
                    return False
                if process.is_ready(timeout=0.5):
                    pending.remove(process)
            time.sleep(self.POLL_S)
        return True

    # uvicorn's own keep_subprocess_alive, restart_all and SIGTTIN/SIGTTOU handlers, each worker
    # started on its slot's socket.

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving: every restart would fail the same way.
                _log.error("worker [%s] failed to start; stopping the server", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            _log.info("worker [%s] died; starting another", process.pid)
            self.processes[slot] = self._process(slot)

    def restart_all(self) -> None:
        """Replaces each worker, bringing its replacement into service before retiring the old one."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._process(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                _log.error("worker [%s] was not ready in time; keeping [%s], restart aborted", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def handle_ttin(self) -> None:
        try:
            slot = self._open_slot()
        except Exception as error:  # e.g. out of file descriptors: the running workers go on
            _log.error("no socket for another worker: %s", error)
            return
        self._slots.append(slot)
        self.processes_num += 1
        self.processes.append(self._process(len(self._slots) - 1))

    def handle_ttou(self) -> None:
        if self.processes_num <= 1:
            return
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        process.join()
        slot = self._slots.pop()
        if self._own_sockets:
            # No worker accepts from it any more: closed, the kernel stops giving it connections.
            slot.close()


def run_server(
    settings: Settings,
    sockets: list[socket.socket],
    *,
    on_started: Callable[[], None] = lambda: None,
    config_path: str | None = None,
) -> bool:
    """Serve on ``sockets`` (:func:`gateway.preflight.bind_sockets`) until stopped. False when
    the server never started (the cause is already logged by uvicorn)."""
    if settings.workers == 1:
        server = _AnnouncingServer(server_config(settings, serving_app(settings)), on_started)
        try:
            server.run(sockets=sockets)
        except SystemExit:  # uvicorn's way of saying the lifespan failed
            return False
        return server.started
    if config_path:
        os.environ["TOLLWAY_CONFIG"] = config_path
    os.environ["TOLLWAY_HOST"] = settings.host
    os.environ["TOLLWAY_PORT"] = str(settings.port)
    os.environ["TOLLWAY_WORKERS"] = str(settings.workers)
    # The parent migrated and bootstrapped already; workers must not repeat it.
    os.environ["TOLLWAY_AUTO_MIGRATE"] = "false"
    os.environ["TOLLWAY_BOOTSTRAP"] = "false"
    config = server_config(settings, "gateway.app:app_from_environment", factory=True, workers=settings.workers)
    supervisor = _Supervisor(config, sockets, on_started, open_slot=lambda: bind_socket(settings, reuse_port=True))
    supervisor.run()
    return supervisor.started
