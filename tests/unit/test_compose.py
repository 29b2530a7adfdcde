"""docker/compose.yaml is a working deployment (issue 14), checked without a Docker engine.

The file is validated against the Compose Specification's JSON schema (tests/schemas/, vendored),
then for what the schema cannot know: nginx proxies to services that exist, every named volume is
declared, the mounted config parses with Tollway's own ``load_settings`` (with the environment the
compose file gives it), Redis persists and never evicts, ``trusted_proxies`` names the bundled
load balancer and nothing beyond the compose network, and secrets come from the environment.
When the ``docker compose`` plugin is installed, ``docker compose config`` has the last word.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.settings import SECRET_FIELDS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
# What docker/.env would hold: random-looking values of the right shape for each secret.
ENV = {
    "POSTGRES_PASSWORD": "pg-password-for-the-compose-test",
    "TOLLWAY_ADMIN_TOKEN": "a" * 48,
    "TOLLWAY_SESSION_SECRET": "s" * 48,
    "TOLLWAY_FUNCTION_SECRET_KEYS": '{"k1": "dGVzdC1rZXktcmluZy1mb3ItdG9sbHdheS10ZXN0cyE="}',
}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def gateways() -> dict[str, dict[str, Any]]:
    """The long-running services built from our Dockerfile (the one-shot migrate excluded)."""
    return {
        name: service
        for name, service in services().items()
        if service.get("build", {}).get("dockerfile") == "docker/Dockerfile" and service.get("command") is None
    }


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``, for the values we use."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(one, value)


def nginx() -> str:
    text = (DOCKER / "nginx.conf").read_text(encoding="utf-8")
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # without comments


def test_compose_file_matches_the_compose_specification_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_check_catches_a_broken_file() -> None:
    # The check above is only worth something if the schema refuses what compose refuses.
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = {"services": {"redis": {"image": "redis", "restart": "sometimes", "ports": [{"bogus": 1}]}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_compose_runs_two_gateway_replicas_behind_the_load_balancer() -> None:
    replicas = gateways()
    assert len(replicas) >= 2
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx(), re.MULTILINE)
    assert {host for host, _port in upstreams} == set(replicas)  # every replica, and only services that exist
    for host, port in upstreams:
        assert port == str(load_settings(DOCKER / "tollway.toml", env={}).port), host
    assert re.search(r"proxy_pass\s+http://tollway;", nginx()) and re.search(r"upstream\s+tollway\s*\{", nginx())
    assert services()["lb"]["ports"] == ["8080:8080"]
    assert all("ports" not in service for service in replicas.values())  # reachable only through nginx


def test_compose_nginx_overwrites_a_client_sent_x_forwarded_for() -> None:
    text = nginx()
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr;", text)
    assert "$proxy_add_x_forwarded_for" not in text  # appending would keep what the client wrote
    assert re.search(r"proxy_buffering\s+off;", text)  # streams reach the client chunk by chunk


def test_compose_named_volumes_are_declared_and_hold_the_data() -> None:
    declared = set(compose().get("volumes") or {})
    used: dict[str, tuple[str, str]] = {}
    for name, service in services().items():
        for mount in service.get("volumes", []):
            source, target = (mount["source"], mount["target"]) if isinstance(mount, dict) else mount.split(":")[:2]
            if not source.startswith((".", "/")):
                used[source] = (name, target)
            else:
                assert (DOCKER / source).resolve().is_file(), f"{name} mounts a missing file {source}"
    assert set(used) <= declared, f"undeclared volumes: {set(used) - declared}"
    assert used["pgdata"] == ("postgres", "/var/lib/postgresql/data")
    assert used["redisdata"] == ("redis", "/data")  # where the append-only file lives


def test_compose_redis_persists_every_write_and_never_evicts() -> None:
    command = services()["redis"]["command"]
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags.get("--appendfsync", "everysec") in ("everysec", "always")


def _gateway_env(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolate(str(value), ENV) for name, value in service["environment"].items()}


def _settings_of(service: dict[str, Any]) -> Settings:
    """What the replica loads: the mounted file at TOLLWAY_CONFIG, then its environment."""
    env = _gateway_env(service)
    mount = next(m for m in service["volumes"] if isinstance(m, dict) and m["target"] == env["TOLLWAY_CONFIG"])
    assert mount["type"] == "bind" and mount["read_only"] is True
    return load_settings(DOCKER / mount["source"], env=env)


def test_compose_mounted_config_loads_with_tollways_own_settings() -> None:
    for name, service in gateways().items():
        settings = _settings_of(service)
        assert (
            settings.database_url.startswith("postgresql+asyncpg://tollway:")
            and "@postgres:5432/" in settings.database_url
        )
        assert settings.redis_url == "redis://redis:6379/0", name
        assert (settings.host, settings.auto_migrate) == ("0.0.0.0", False)  # the migrate service migrates
        assert settings.function_secret_keys and settings.admin_token and settings.session_secret
    migrate = services()["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    for service in gateways().values():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_trusted_proxies_are_the_load_balancer_inside_the_compose_network() -> None:
    subnets = [
        ipaddress.ip_network(entry["subnet"])
        for network in compose()["networks"].values()
        for entry in network["ipam"]["config"]
    ]
    lb = ipaddress.ip_address(services()["lb"]["networks"]["tollway"]["ipv4_address"])
    assert any(lb in subnet for subnet in subnets)
    for service in gateways().values():
        trusted = [ipaddress.ip_network(entry, strict=False) for entry in _settings_of(service).trusted_proxies]
        assert any(lb in network for network in trusted)  # X-Forwarded-For from nginx is believed
        # ... and from nothing outside the compose network (a client could otherwise name its own IP).
        assert all(any(network.subnet_of(subnet) for subnet in subnets) for network in trusted)  # type: ignore[arg-type]


def test_compose_secrets_come_from_the_environment_only() -> None:
    raw = tomllib.loads((DOCKER / "tollway.toml").read_text(encoding="utf-8"))

    def secret_keys(table: dict[str, Any]) -> set[str]:
        found = {key for key in table if key in SECRET_FIELDS}
        for value in table.values():
            if isinstance(value, dict):
                found |= secret_keys(value)
        return found

    assert secret_keys(raw) == set()  # the mounted file holds no secret
    for service in [*gateways().values(), services()["postgres"]]:
        for name, value in service["environment"].items():
            if re.search(r"TOKEN|SECRET|PASSWORD|_KEY|DATABASE_URL", name):
                assert "${" in str(value), f"{name} is written into compose.yaml instead of the environment"
    values = json.dumps(compose())  # every string of the file, its comments left out
    required = {m["name"] for m in _VARIABLE.finditer(values) if m["op"] == ":?"}
    example = (DOCKER / "env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE))
    assert required and required <= documented  # every required secret is in the template
    assert re.search(r"^/?docker/\.env$", (ROOT / ".gitignore").read_text(), re.MULTILINE)


def test_compose_healthchecks_use_what_the_images_have() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    installs = " ".join(re.findall(r"^RUN .*$", dockerfile, re.MULTILINE))
    assert "curl" not in installs and "wget" not in installs  # python:slim has neither
    for name, service in gateways().items():
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"] and "/readyz" in test[-1], name
    assert services()["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services()["redis"]["healthcheck"]["test"][1] == "redis-cli"
    assert services()["lb"]["healthcheck"]["test"][1] == "wget"  # busybox in nginx:alpine


def test_dockerfile_copies_every_package_the_wheel_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\./\1$", (DOCKER / "Dockerfile").read_text(), re.MULTILINE))
    assert set(packages) <= copied, f"the image would lack {set(packages) - copied}"


def _docker_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
def test_compose_config_accepted_by_docker_compose() -> None:
    if not _docker_compose():
        pytest.skip("the docker compose plugin is not installed (the schema test stands in)")
    result = subprocess.run(
        ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **ENV},
    )
    assert result.returncode == 0, result.stderr
