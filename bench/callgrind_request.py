"""Instructions per request of the whole gateway process, counted by callgrind: a figure that a
shared, noisy machine does not move (wall-clock RPS does).

    .venv/bin/python bench/callgrind_request.py                  # chat and stream, 200 each
    .venv/bin/python bench/callgrind_request.py --floor          # the bare Litestar floor too
    .venv/bin/python bench/callgrind_request.py --concurrency 8  # settlements share writer batches

A real ``tollway serve`` (Postgres + Redis, bench/stack.py) runs under ``valgrind
--tool=callgrind`` with instrumentation off while it starts; the canned upstream, Redis,
Postgres and the client run outside valgrind and are not counted. Per kind: warm-up requests,
instrumentation on, counters zeroed, ``--requests`` requests on keep-alive connections, a
pause for the write-behind writer to drain what they buffered, then a dump. The figure is the
dump's total instructions (every thread) over the requests. The idle work (timers, the
writer's poll) is measured alone the same way, as a rate a second; the "net" figure takes that
rate times the span of the requests and the pause out, since a run slowed by a busy machine
counts more of it per request (the raw figure moved by ~0.1 M a request between runs).

Under valgrind a request takes tens of milliseconds, near the writer's 100 ms batch
window: at ``--concurrency 1`` every settlement pays for a writer round (claim, commit, ack) of
its own, which on a real core happens once per several requests. So the c=1 figure
over-counts the writer's share; ``--concurrency 8`` shows it shared.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from run import BODY, HERE, STREAM_BODY, free_port, wait_up
from stack import Stack

REDIS_URL = "redis://127.0.0.1:6379/5"
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


class Callgrind:
    """One process under callgrind, driven by ``callgrind_control``."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.out = out_dir / f"cg.{name}"
        self.prefix = (
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
            f"--log-file={self.out}.log",
        )
        self.pid = 0
        self._dumps = 0

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True)

    def count(self) -> int:
        """Instructions since the last zeroing (dumps, then zeroes)."""
        self.control("--dump")
        self._dumps += 1
        dump = Path(f"{self.out}.{self._dumps}")
        deadline = time.monotonic() + 60
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        match = _TOTALS.search(dump.read_bytes())
        if match is None:
            raise SystemExit(f"no totals in {dump}")
        return int(match.group(1))


def _send(url: str, key: str, body: str, count: int, concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    failures: list[str] = []

    def client(share: int) -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(share):
                response = http.post(url, content=body, headers=headers)
                if response.status_code not in (200, 201):  # the floor's Litestar route answers 201
                    failures.append(f"{response.status_code}: {response.content[:200]!r}")

    threads = [threading.Thread(target=client, args=(count // concurrency,)) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, the first: {failures[0]}")


def measure(grind: Callgrind, url: str, key: str, args: argparse.Namespace) -> dict[str, float]:
    """Instructions per request of each kind, and the idle rate (instructions a second) that the
    clock-driven work costs with no request at all (timers, the writer's poll)."""
    figures: dict[str, float] = {}
    spans: dict[str, float] = {}
    grind.control("--instr=on")
    kinds = {"chat": BODY, "stream": STREAM_BODY}
    for kind in args.kinds.split(","):
        body = kinds[kind]
        _send(url, key, body, args.warmup, args.concurrency)  # connections, caches, first compiles
        time.sleep(args.pause)
        grind.count()  # zero
        started = time.monotonic()
        _send(url, key, body, args.requests, args.concurrency)
        time.sleep(args.pause)  # the writer drains what these requests buffered
        spans[kind] = time.monotonic() - started
        figures[kind] = grind.count() / args.requests
    time.sleep(args.pause)
    grind.count()
    started = time.monotonic()
    time.sleep(args.pause)
    idle_per_s = grind.count() / (time.monotonic() - started)
    # The clock-driven work runs per second, not per request: under valgrind, on a loaded machine
    # a slower run counts more of it per request. "net" takes the idle rate times the span out.
    for kind, span in spans.items():
        figures[f"{kind} net"] = figures[kind] - idle_per_s * span / args.requests
    figures["idle per s"] = idle_per_s
    return figures


def gateway(args: argparse.Namespace, out_dir: Path) -> dict[str, float]:
    grind = Callgrind(out_dir, "gateway")
    with Stack(redis_url=REDIS_URL, serve_prefix=grind.prefix, startup_s=600) as stack:
        grind.pid = stack.gateway.pid
        return measure(grind, f"{stack.url}/v1/chat/completions", stack.key, args)


def floor(args: argparse.Namespace, out_dir: Path) -> dict[str, float]:
    grind = Callgrind(out_dir, "floor")
    upstream_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "canned_upstream.py"), str(upstream_port)])
    server = subprocess.Popen(
        [*grind.prefix, sys.executable, str(HERE / "floor_app.py"), str(port), str(upstream_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(f"http://127.0.0.1:{upstream_port}/")
        wait_up(f"http://127.0.0.1:{port}/", 600)
        grind.pid = server.pid
        return measure(grind, f"http://127.0.0.1:{port}/v1/chat/completions", "none", args)
    finally:
        for process in (server, upstream):
            process.terminate()
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--kinds", default="chat,stream")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds for the writer to drain, under valgrind")
    parser.add_argument("--floor", action="store_true", help="also the bare Litestar + httpx floor")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="tollway-callgrind-"))
    results = {"gateway": gateway(args, out_dir)}
    if args.floor:
        results["floor"] = floor(args, out_dir)
    print(f"instructions per request, {args.requests} requests, concurrency {args.concurrency} ({out_dir})")
    for name, figures in results.items():
        idle = figures.pop("idle per s")
        line = ", ".join(f"{kind} {value / 1e6:.3f} M" for kind, value in figures.items())
        line += f" (idle: {idle / 1e6:.1f} M a second)"
        print(f"{name:8s} {line}")


if __name__ == "__main__":
    main()
