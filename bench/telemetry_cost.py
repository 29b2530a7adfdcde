"""What the operator's view costs the request path, per request, measured in one run.

    .venv/bin/python bench/telemetry_cost.py            # wall time, floor measured alongside
    for just in floor hook; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$just \
        .venv/bin/python bench/telemetry_cost.py --only finished --just $just --calls 100000; done
    # (hook Ir - floor Ir) / 100000 = instructions the hook adds per request

Each case times N calls of the hook the pipeline makes (gateway/metrics.py) against N calls of
a function that takes the same arguments and does nothing (the floor, same run), and prints
the difference per call: noise on a shared machine moves both alike.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any

from billing.ledger import Settlement
from gateway.metrics import Telemetry
from gateway.request_id import _incoming
from keys.service import KeyIdentity
from providers.base import Usage


def _per_call_us(work: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1e6


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--only", default="")
    # For callgrind: run only N calls of one case's hook (or its floor) and nothing else; the
    # difference of two runs' instruction counts over N is the hook's cost, free of noise.
    parser.add_argument("--just", choices=["hook", "floor"], default=None)
    args = parser.parse_args()
    logging.getLogger("tollway.access").setLevel(logging.INFO)
    telemetry = Telemetry(metrics=True, access=False, known_model=lambda slug: True)
    identity = KeyIdentity(1, 1, "active", True, None, "k", prefix="prx-abcd")
    settlement = Settlement(
        request_id="req_0123456789abcdef01234567",
        account_id=1,
        key_id=1,
        model="openai/gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini",
        usage=Usage(input_tokens=21, output_tokens=5),
        cost_micro=6150,
        latency_ms=3,
        status_code=200,
    )
    error = PermissionError()
    setattr(error, "status_code", 401)  # noqa: B010
    setattr(error, "code", "invalid_api_key")  # noqa: B010
    scope = {
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"OpenAI/Python 1.54.0"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer prx-0000"),
            (b"accept", b"application/json"),
            (b"content-length", b"120"),
        ]
    }
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "finished": (
            lambda: telemetry.finished(settlement, identity, 0.002, stream_opened=False),
            lambda: _nothing(settlement, identity, 0.002, stream_opened=False),
        ),
        "refused": (
            lambda: telemetry.refused(error, identity, "openai/gpt-4o-mini", 0.0),
            lambda: _nothing(error, identity, "openai/gpt-4o-mini", 0.0),
        ),
        "incoming-headers": (lambda: _incoming(scope), lambda: _nothing(scope)),
    }
    if args.just is not None:
        hook, floor = cases[args.only or "finished"]
        hook()
        work = hook if args.just == "hook" else floor
        for _ in range(args.calls):
            work()
        return
    for name, (hook, floor) in cases.items():
        if args.only and name != args.only:
            continue
        hook()  # label children made once, outside the timing
        floors, hooks = [], []
        for _ in range(5):
            floors.append(_per_call_us(floor, args.calls))
            hooks.append(_per_call_us(hook, args.calls))
        added = sorted(h - f for h, f in zip(hooks, floors, strict=True))
        print(f"{name:18s} added per call: min {added[0]:.2f} µs, median {added[2]:.2f} µs, max {added[-1]:.2f} µs")
    if not args.only or args.only == "finished":
        telemetry.access = True
        logging.getLogger("tollway.access").setLevel(logging.WARNING)  # access_log on, level off
        quiet = _per_call_us(lambda: telemetry.finished(settlement, identity, 0.002, stream_opened=False), args.calls)
        print(f"finished, access_log on but INFO off: {quiet:.2f} µs per call (floor not subtracted)")


if __name__ == "__main__":
    main()
