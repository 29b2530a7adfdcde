"""``tollway serve``: the one command that may bind a port and create the database.

The order is the operator's guarantee (gateway/preflight.py): bind, reach the database and
Redis, migrate, bootstrap, serve, and only then the banner.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gateway.cli_common import settings_of
from gateway.preflight import StartupError, bind_sockets

__all__ = ["cmd_serve"]


def cmd_serve(args: argparse.Namespace) -> None:
    """Bind, reach the database and Redis, migrate and bootstrap, then serve; the banner comes
    once the server answers. Each failure before that is one line and exit code 3."""
    from gateway.bootstrap import announce, announce_failure, prepare
    from gateway.cli_projects import check_keys_before_serving
    from gateway.config_check import startup_warnings
    from gateway.server import run_server

    settings = settings_of(args, host=args.host, port=args.port, workers=args.workers)
    for warning in startup_warnings(settings, os.environ):
        print(f"tollway: warning: {warning}", file=sys.stderr, flush=True)
    sockets = bind_sockets(settings)
    try:
        # The key check runs after migrating and before the banner: a refusal is the last word.
        made = asyncio.run(prepare(settings, verify=check_keys_before_serving))
        started = run_server(
            settings,
            sockets,
            on_started=lambda: announce(settings, made, as_json=args.json),
            config_path=args.config,
        )
    finally:
        for sock in sockets:
            sock.close()
    if not started:
        announce_failure(settings, made)
        raise StartupError("the server did not start (the reason is logged above)")
