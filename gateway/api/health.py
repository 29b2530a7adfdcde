"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from sqlalchemy import text

from gateway.state import GatewayState


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    state: GatewayState = request.app.state.gateway
    checks: dict[str, str] = {}
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    try:
        await state.counters.ping()
        checks["counters"] = "ok"
    except Exception:
        checks["counters"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return Response({"status": "ready" if ready else "not_ready", **checks}, status_code=200 if ready else 503)
