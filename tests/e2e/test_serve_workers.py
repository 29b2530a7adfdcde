"""``tollway serve`` with two workers, the real processes: a burst of keep-alive connections is
spread over both workers (on one shared socket the first worker to wake could take them all and
leave the other idle), and a worker killed mid-service is replaced on its own socket without a
connection that was meant for it being lost."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from gateway.preflight import SPREADS_CONNECTIONS
from tests.e2e.test_serve_first_run import serve, stop
from tests.fakes.servers import free_port

pytestmark = pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux only")

CONNECTIONS = 32
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: tollway\r\n\r\n"


def _workers(parent: int) -> list[int]:
    """The serving processes under ``parent`` (not multiprocessing's resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _answered(sock: socket.socket) -> bytes:
    sock.sendall(HEALTH)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection without an answer"
        head += chunk
    return head.split(b"\r\n", 1)[0]


def _server_side_inodes(port: int, client_ports: set[int]) -> dict[int, int]:
    """Socket inode of the server's end of each connection from ``client_ports`` (/proc/net/tcp)."""
    inodes: dict[int, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == port and remote_port in client_ports:
            inodes[int(fields[9])] = remote_port
    return inodes


def _connections_by_worker(workers: list[int], port: int, clients: list[socket.socket]) -> dict[int, int]:
    inodes = _server_side_inodes(port, {sock.getsockname()[1] for sock in clients})
    counts = dict.fromkeys(workers, 0)
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                counts[pid] += 1
    return counts


def test_two_workers_share_a_burst_of_connections_and_survive_one_killed(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "tollway.toml"
    config.write_text(
        f'database_url = "{postgres_url}"\nredis_url = "{redis_url}"\nredis_prefix = "twtest:{port}:"\n'
        "workers = 2\nbootstrap = false\n"
    )
    process, lines = serve(tmp_path, port, "--config", str(config))
    try:
        workers = _workers(process.pid)
        assert len(workers) == 2, "".join(lines)

        # A burst: every connection opened before any asks, as a load balancer's pool opens.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(CONNECTIONS)]
        try:
            assert {_answered(sock) for sock in clients} == {b"HTTP/1.1 200 OK"}
            counts = _connections_by_worker(workers, port, clients)
        finally:
            for sock in clients:
                sock.close()
        assert sum(counts.values()) == CONNECTIONS, counts
        # Spread by the kernel's hash of each connection's addresses: fewer than 4 of 32 on one
        # worker has a probability of about 3 in a million.
        assert min(counts.values()) >= 4, counts

        # One worker killed: connections the kernel gives its socket wait for the replacement
        # (the supervisor holds the socket) instead of being refused or never answered.
        os.kill(workers[0], signal.SIGKILL)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(CONNECTIONS)]
        try:
            assert {_answered(sock) for sock in clients} == {b"HTTP/1.1 200 OK"}
        finally:
            for sock in clients:
                sock.close()
        deadline = time.monotonic() + 60
        while len(replaced := _workers(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers[0] not in replaced and workers[1] in replaced and len(replaced) == 2
    finally:
        stop(process)
