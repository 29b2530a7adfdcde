"""A real Redis Cluster for tests: three masters on loopback ports, from Debian's ``redis-server``.

Started once per test session (a cluster takes a second or two to form) in a temporary
directory and torn down after. Tests share it and keep apart by a key prefix of their own, as
they do on the single Redis. Without ``redis-server`` / ``redis-cli`` the tests that ask for it
skip, and fail under CI (as ``tests/conftest.py`` treats a missing Postgres or Redis);
``TOLLWAY_TEST_REDIS_SERVER`` names another server binary.

The URL it yields uses Tollway's ``redis+cluster://`` scheme (see ``billing/counters/redis.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.services import UNDER_CI

MASTERS = 3
_START_S = 30.0  # generous: two cores shared by a whole team


def free_ports(count: int) -> list[int]:
    """Ports free now for the node and its cluster bus (port + 10000) alike."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def redis_cli(port: int, *args: str, timeout: float = 10.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout


class RedisCluster:
    """Three ``redis-server`` processes joined into one cluster (no replicas)."""

    def __init__(self, directory: Path, server: str = "redis-server", node_timeout_ms: int = 5000) -> None:
        self.directory = directory
        self.server = server
        self.node_timeout_ms = node_timeout_ms  # how long a silent node goes before the cluster fails it
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.slots: list[tuple[int, int, int]] = []  # (first, last, port) as the cluster assigned them

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def plain_urls(self) -> list[str]:
        """Each node on its own, for a test that inspects one node with a plain client."""
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def start(self) -> RedisCluster:
        self.ports = free_ports(MASTERS)
        for port in self.ports:
            node = self.directory / str(port)
            node.mkdir()
            self.processes.append(
                subprocess.Popen(
                    [
                        self.server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node / "nodes.conf"),
                        "--cluster-node-timeout",
                        str(self.node_timeout_ms),
                        "--dir",
                        str(node),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--logfile",
                        str(node / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self._wait(lambda port: redis_cli(port, "ping").strip() == "PONG", "the nodes did not answer")
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=_START_S,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        # Every node must see the whole cluster before a client may route by it.
        self._wait(lambda port: "cluster_state:ok" in redis_cli(port, "cluster", "info"), "the cluster never formed")
        for line in redis_cli(self.ports[0], "cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for assigned in fields[8:]:
                first, _dash, last = assigned.partition("-")
                self.slots.append((int(first), int(last or first), port))
        return self

    def port_of(self, key: str) -> int:
        """The port of the master that holds ``key``."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        return next(port for first, last, port in self.slots if first <= slot <= last)

    def _wait(self, ready: Callable[[int], bool], what: str) -> None:
        deadline = time.monotonic() + _START_S
        for port in self.ports:
            while not ready(port):
                if any(process.poll() is not None for process in self.processes) or time.monotonic() > deadline:
                    raise RuntimeError(f"{what} (port {port})")
                time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def missing_redis(message: str) -> None:
    if UNDER_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    server = os.environ.get("TOLLWAY_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if server is None or shutil.which("redis-cli") is None:
        missing_redis("redis-server / redis-cli not found: cannot start a Redis Cluster")
    assert server is not None
    with tempfile.TemporaryDirectory(prefix="tollway-cluster-") as directory:
        cluster = RedisCluster(Path(directory), server)
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            cluster.stop()
            missing_redis(f"could not start a Redis Cluster: {error}")
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on every node (one key at a time: a cluster refuses a
    DEL whose keys span slots)."""
    from redis.asyncio.cluster import RedisCluster as Client

    client = Client.from_url(url.replace("+cluster://", "://", 1))
    try:
        async for key in client.scan_iter(match=prefix + "*", count=500):  # redis-py walks every primary
            await client.delete(key)
    finally:
        await client.aclose()
