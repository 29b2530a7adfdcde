"""One worker against two (``tollway serve --workers 2``) on this machine's cores, Postgres +
Redis, canned upstream, loopback only: the throughput ratio (the issue's target is >= 1.8x).

Run by hand: ``python bench/workers.py [--duration 15] [--repeats 3]``. wrk (32 connections)
and the canned upstream run unpinned next to the gateway, so on a 2-core machine they take
CPU from the second worker: the ratio is a lower bound there, and on a shared machine only
indicative. Prints each run, the median ratio, and where the cores went during each measured
run (the workers, the upstream, Redis, Postgres and wrk, in cores busy and CPU µs a request),
so a ratio bounded by the harness shows as such.

``--worker-cores 0.6`` gives each worker a CPU budget of its own instead (a CFS quota of 0.6 of a
core in a cgroup per worker, root and cgroup v1 or v2 needed), so that on two cores the harness
runs in what the workers leave: the ratio then says whether a second worker adds a worker's
throughput, which the machine's core count alone cannot show.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

from run import BODY, HERE
from stack import Stack


class Run(NamedTuple):
    rps: float
    requests: int
    seconds: float
    cpu_s: dict[str, float]  # CPU seconds by role over the run


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _roles(stack: Stack) -> dict[int, str]:
    """Every process that serves or answers the benchmark's requests, by role."""
    roles = {pid: f"worker {index}" for index, pid in enumerate(stack.serving_pids(), 1)}
    roles[stack.processes[0].pid] = "canned upstream"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("redis-server"):
            roles[int(proc.name)] = "redis"
        elif name.startswith("postgres"):
            roles[int(proc.name)] = "postgres"
    return roles


def _cpu_by_role(roles: dict[int, str]) -> Counter[str]:
    ticks: Counter[str] = Counter()
    for pid, role in roles.items():
        try:
            ticks[role] += _ticks(pid)
        except OSError:  # a Postgres backend that ended
            continue
    return ticks


def wrk_run(url: str, key: str, duration: int, stack: Stack | None = None) -> Run:
    roles = _roles(stack) if stack is not None else {}
    before, children = _cpu_by_role(roles), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "-s", str(HERE / "post.lua"), url],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_KEY": key, "BENCH_BODY": BODY},
    ).stdout
    seconds = time.monotonic() - start
    after, done = _cpu_by_role(roles), resource.getrusage(resource.RUSAGE_CHILDREN)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {role: (after[role] - before[role]) / tick for role in after}
    cpu["wrk"] = (done.ru_utime + done.ru_stime) - (children.ru_utime + children.ru_stime)
    cpu["gateway workers"] = sum(spent for role, spent in cpu.items() if role.startswith("worker "))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Run(rps, requests, seconds, cpu)


def _cpu_controller() -> tuple[Path, str]:
    """Where this machine's CPU controller is mounted, and its version ("v1" or "v2")."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, "v1"
    v2 = Path("/sys/fs/cgroup")
    if "cpu" in (v2 / "cgroup.controllers").read_text().split():
        return v2, "v2"
    raise SystemExit("--worker-cores needs a cgroup CPU controller (v1 or v2)")


@contextmanager
def cpu_budgets(pids: list[int], cores: float) -> Iterator[None]:
    """Each of ``pids`` in a cgroup of its own capped at ``cores`` of a core (CFS quota)."""
    root, version = _cpu_controller()
    period_us = 100_000
    groups: list[Path] = []
    try:
        for pid in pids:
            group = root / f"tollway-bench-{os.getpid()}-{pid}"
            group.mkdir()
            groups.append(group)
            if version == "v1":
                (group / "cpu.cfs_period_us").write_text(str(period_us))
                (group / "cpu.cfs_quota_us").write_text(str(int(cores * period_us)))
            else:
                (group / "cpu.max").write_text(f"{int(cores * period_us)} {period_us}")
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for group in groups:
            for pid in (group / "cgroup.procs").read_text().split():
                (root / "cgroup.procs").write_text(pid)
            group.rmdir()


def _all_roles(run: Run) -> float:
    return sum(spent for role, spent in run.cpu_s.items() if not role.startswith("worker "))


def wrk_rps(url: str, key: str, duration: int) -> float:
    return wrk_run(url, key, duration).rps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--worker-cores", type=float, help="cap each worker at this share of a core")
    args = parser.parse_args()
    results: dict[int, list[Run]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            with Stack(workers=workers, redis_url=args.redis_url) as stack:
                url = f"{stack.url}/v1/chat/completions"
                budgets = cpu_budgets(stack.serving_pids(), args.worker_cores) if args.worker_cores else nullcontext()
                with budgets:
                    wrk_rps(url, stack.key, 3)  # warm caches and pools in every worker
                    results[workers].append(wrk_run(url, stack.key, args.duration, stack))
                reconcile = stack.reconcile()
                if not reconcile.get("ok"):
                    raise SystemExit(f"reconcile not clean after {workers} worker(s): {reconcile}")
    ratios = [two.rps / one.rps for one, two in zip(results[1], results[2], strict=True)]
    budget = f", each worker capped at {args.worker_cores} of a core" if args.worker_cores else ""
    print(f"\nchat, wrk c=32 {args.duration}s, {os.cpu_count()} cores{budget}, {args.repeats} repeats\n")
    # Each worker's cores busy: a worker left without connections (the kernel gives a new
    # connection to whichever worker accepts first) shows as a ratio near 1, not as a slow worker.
    print("| run | 1 worker RPS | 2 workers RPS | ratio | 2 workers' cores busy |")
    print("| --- | --- | --- | --- | --- |")
    for index, (one, two, ratio) in enumerate(zip(results[1], results[2], ratios, strict=True), 1):
        split = " + ".join(f"{two.cpu_s.get(f'worker {n}', 0.0) / two.seconds:.2f}" for n in (1, 2))
        print(f"| {index} | {one.rps:,.0f} | {two.rps:,.0f} | {ratio:.2f} | {split} |")
    print(f"\nmedian ratio: {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    roles = ["gateway workers", "canned upstream", "redis", "postgres", "wrk"]
    print("\nwhere the cores went, median of the runs: cores busy (CPU µs a request)\n")
    print("| workers | " + " | ".join(roles) + " | all |")
    print("| --- |" + " --- |" * (len(roles) + 1))
    for workers, runs in results.items():
        cells = []
        for role in [*roles, "all"]:
            spent = [_all_roles(run) if role == "all" else run.cpu_s.get(role, 0.0) for run in runs]
            per_request = [cpu / run.requests * 1e6 for cpu, run in zip(spent, runs, strict=True)]
            busy = [cpu / run.seconds for cpu, run in zip(spent, runs, strict=True)]
            cells.append(f"{statistics.median(busy):.2f} ({statistics.median(per_request):,.0f})")
        print(f"| {workers} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
