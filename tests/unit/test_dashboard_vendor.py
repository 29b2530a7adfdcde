"""The dashboard's vendored front-end files are exactly what the npm lock pins.

``gateway/dashboard/vendor/manifest.json`` (written by ``scripts/refresh-vendor``) names, for each
shipped file, its package, version, the tarball's integrity and the file's sha256. The lock and
the manifest must agree, and the file in ``static/vendor/`` must hash to the manifest; when
``npm ci`` has been run there, the file must also equal the one in node_modules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "gateway" / "dashboard"
VENDOR = DASHBOARD / "vendor"
STATIC = DASHBOARD / "static" / "vendor"


def _manifest() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads((VENDOR / "manifest.json").read_text())
    return loaded


def test_dashboard_vendor_manifest_matches_the_lock_and_package_json() -> None:
    lock = json.loads((VENDOR / "package-lock.json").read_text())["packages"]
    pinned = json.loads((VENDOR / "package.json").read_text())["dependencies"]
    manifest = _manifest()
    assert manifest, "nothing vendored?"
    for name, entry in manifest.items():
        locked = lock[f"node_modules/{entry['package']}"]
        assert entry["version"] == locked["version"] == pinned[entry["package"]], name
        assert entry["integrity"] == locked["integrity"], name
    assert {entry["package"] for entry in manifest.values()} == set(pinned)


def test_dashboard_vendor_shipped_files_match_the_manifest() -> None:
    for name, entry in _manifest().items():
        shipped = (STATIC / name).read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == entry["sha256"], f"{name}: run scripts/refresh-vendor"
        installed = VENDOR / "node_modules" / entry["package"] / entry["source"]
        if installed.exists():  # after `npm ci` in the vendor directory
            assert installed.read_bytes() == shipped, f"{name} differs from the locked package"


def test_dashboard_vendor_htmx_is_the_pinned_release() -> None:
    htmx = _manifest()["htmx.min.js"]
    text = (STATIC / "htmx.min.js").read_text()
    if f'version:"{htmx["version"]}"' not in text.replace(" ", ""):
        pytest.fail(f"static/vendor/htmx.min.js does not say version {htmx['version']}")
