"""What a gateway process does not load until it needs it (RSS: issue 14).

Run in a fresh interpreter: the test process itself has imported everything by now.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each is megabytes of RSS that the ordinary request path never uses: tiktoken and its encodings
# (counts are rare: billing/tokens.py), Alembic and Mako (a server worker never migrates),
# maxminddb (only with a country database), httpx's command line (click, rich, pygments), the
# Stripe library (only when Stripe sells credits), OpenTelemetry's tracing SDK and exporter (only
# with otel_traces_endpoint; redis-py loads the SDK's metrics part by itself when it is installed).
DEFERRED = [
    "tiktoken",
    "alembic",
    "mako",
    "maxminddb",
    "rich",
    "pygments",
    "stripe",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
]

PROGRAM = """
import json, sys
from gateway.app import create_app
from gateway.settings import Settings
create_app(Settings(database_url="sqlite+aiosqlite:///unused.db"), env={})
import httpx
print(json.dumps({"loaded": [m for m in sys.argv[1:] if m in sys.modules], "httpx_main": hasattr(httpx, "main")}))
"""


def test_lazy_imports_app_factory_loads_none_of_the_deferred_modules(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, *DEFERRED],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["loaded"] == []
    assert result["httpx_main"]  # httpx still imports, with its no-CLI ``main`` stand-in
