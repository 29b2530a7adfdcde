"""Listening sockets for several workers: one per worker in a SO_REUSEPORT group (Linux), the
port still refused to anything else already on it, and the supervisor starting each worker,
its replacement and any worker added or removed by signal on that worker's own socket."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.supervisors.multiprocess import SIGNALS

import gateway.server as server
from gateway.preflight import SPREADS_CONNECTIONS, StartupError, bind_sockets
from gateway.server import _Supervisor, server_config
from gateway.settings import Settings
from tests.fakes.servers import free_port

linux_only = pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux only")


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _reuses_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def test_one_worker_listens_on_one_ordinary_socket(closing: list[socket.socket]) -> None:
    sockets = bind_sockets(Settings(port=free_port()))
    closing.extend(sockets)
    assert len(sockets) == 1 and not _reuses_port(sockets[0])


@linux_only
def test_each_worker_gets_a_socket_of_the_group(closing: list[socket.socket]) -> None:
    port = free_port()
    sockets = bind_sockets(Settings(port=port, workers=3))
    closing.extend(sockets)
    assert len(sockets) == 3
    assert all(_reuses_port(sock) and sock.getsockname() == ("127.0.0.1", port) for sock in sockets)
    assert len({sock.fileno() for sock in sockets}) == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_something_listens_on_is_refused(workers: int, closing: list[socket.socket]) -> None:
    taken = socket.socket()
    closing.append(taken)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with pytest.raises(StartupError, match="already in use"):
        bind_sockets(Settings(port=taken.getsockname()[1], workers=workers))


@linux_only
@pytest.mark.parametrize("workers", [1, 2])
def test_another_servers_group_is_never_joined(workers: int, closing: list[socket.socket]) -> None:
    """A second tollway on the port of one running with workers would otherwise be let into its
    group (same user, SO_REUSEPORT) and take a share of its connections."""
    port = free_port()
    closing.extend(bind_sockets(Settings(port=port, workers=2)))
    with pytest.raises(StartupError, match="already in use"):
        bind_sockets(Settings(port=port, workers=workers))


class _FakeProcess:
    """Stands in for uvicorn's worker process: records the sockets it was given."""

    started: list[_FakeProcess] = []

    def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
        self.sockets = sockets
        self.alive = True
        self.pid = len(_FakeProcess.started) + 1000
        self.exitcode: int | None = None

    def start(self) -> None:
        _FakeProcess.started.append(self)

    def is_alive(self, timeout: float = 5) -> bool:
        return self.alive

    def wait_until_ready(self, timeout: float, should_exit: Any = None) -> bool:
        return True

    def kill(self) -> None:
        self.alive = False

    def terminate(self) -> None:
        self.alive = False

    def join(self) -> None:
        if self.exitcode is None:
            self.exitcode = -9


@pytest.fixture
def fake_processes(monkeypatch: pytest.MonkeyPatch) -> list[_FakeProcess]:
    started: list[_FakeProcess] = []
    monkeypatch.setattr(_FakeProcess, "started", started)
    monkeypatch.setattr(server, "Process", _FakeProcess)
    return started


def _supervisor(sockets: list[socket.socket], workers: int, opened: list[socket.socket]) -> _Supervisor:
    def open_slot() -> socket.socket:
        extra = socket.socket()
        opened.append(extra)
        return extra

    config = server_config(Settings(workers=workers), "gateway.app:app_from_environment", workers=workers)
    return _Supervisor(config, sockets, lambda: None, open_slot=open_slot)


@pytest.fixture(autouse=True)
def _signals_given_back() -> Iterator[None]:
    """uvicorn's supervisor takes over SIGINT, SIGTERM and the rest when it is made."""
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_each_worker_and_its_replacements_serve_their_own_socket(
    fake_processes: list[_FakeProcess], closing: list[socket.socket]
) -> None:
    slots = [socket.socket() for _ in range(2)]
    closing.extend(slots)
    supervisor = _supervisor(slots, 2, closing)
    supervisor.init_processes()
    assert [p.sockets for p in fake_processes] == [[slots[0]], [slots[1]]]

    fake_processes[0].alive = False  # the first worker dies: its replacement takes its socket
    supervisor.keep_subprocess_alive()
    assert fake_processes[2].sockets == [slots[0]]
    assert supervisor.processes[0] is fake_processes[2]  # type: ignore[comparison-overlap]

    supervisor.restart_all()  # SIGHUP: every worker replaced on the same socket
    assert [p.sockets for p in fake_processes[3:]] == [[slots[0]], [slots[1]]]

    supervisor.handle_ttin()  # one more worker: a socket of its own (opened by open_slot)
    added = fake_processes[-1]
    assert added.sockets[0] not in slots and added.sockets[0] in closing

    supervisor.handle_ttou()  # and removed: its socket is closed, so the kernel stops using it
    assert not added.alive and added.sockets[0].fileno() == -1
    assert all(sock.fileno() != -1 for sock in slots)


def test_a_worker_without_a_socket_is_not_added(
    fake_processes: list[_FakeProcess], closing: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    slots = [socket.socket() for _ in range(2)]
    closing.extend(slots)
    config = server_config(Settings(workers=2), "gateway.app:app_from_environment", workers=2)

    def no_socket() -> socket.socket:
        raise OSError(24, "Too many open files")

    supervisor = _Supervisor(config, slots, lambda: None, open_slot=no_socket)
    supervisor.init_processes()
    supervisor.handle_ttin()
    assert len(supervisor.processes) == 2 and supervisor.processes_num == 2
    assert "no socket for another worker" in caplog.text


def test_one_shared_socket_is_served_by_every_worker_and_never_closed(
    fake_processes: list[_FakeProcess], closing: list[socket.socket]
) -> None:
    shared = socket.socket()
    closing.append(shared)
    supervisor = _supervisor([shared], 2, closing)
    supervisor.init_processes()
    supervisor.handle_ttin()
    supervisor.handle_ttou()
    assert [p.sockets for p in fake_processes] == [[shared]] * 3
    assert shared.fileno() != -1


def test_a_worker_that_failed_to_start_stops_the_server(fake_processes: list[_FakeProcess]) -> None:
    slots = [socket.socket() for _ in range(2)]
    try:
        supervisor = _supervisor(slots, 2, [])
        supervisor.init_processes()
        fake_processes[1].alive = False
        fake_processes[1].exitcode = 3  # uvicorn's STARTUP_FAILURE
        supervisor.keep_subprocess_alive()
        assert supervisor.should_exit.is_set() and len(fake_processes) == 2
    finally:
        for sock in slots:
            sock.close()
