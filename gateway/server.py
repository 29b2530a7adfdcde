"""Running the ASGI server.

uvicorn with uvloop and httptools measured fastest on this machine (PERFORMANCE.md). One
worker gets the app object; several workers each build their app from the environment, so
the CLI's options are handed to them as ``TOLLWAY_*`` variables.
"""

from __future__ import annotations

import os

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings

GRACEFUL_SHUTDOWN_S = 30  # open streams get this long to finish on SIGTERM


def run_server(settings: Settings, *, config_path: str | None = None) -> None:
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "lifespan": "on",
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    if config_path:
        os.environ["TOLLWAY_CONFIG"] = config_path
    os.environ["TOLLWAY_HOST"] = settings.host
    os.environ["TOLLWAY_PORT"] = str(settings.port)
    os.environ["TOLLWAY_WORKERS"] = str(settings.workers)
    # The parent migrated and bootstrapped already; workers must not repeat it.
    os.environ["TOLLWAY_AUTO_MIGRATE"] = "false"
    os.environ["TOLLWAY_BOOTSTRAP"] = "false"
    uvicorn.run(
        "gateway.app:app_from_environment",
        factory=True,
        workers=settings.workers,
        **common,  # type: ignore[arg-type]
    )
