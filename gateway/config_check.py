"""``tollway config check``: what can be known about a configuration without serving it.

It loads the settings as ``tollway serve`` does (file, then ``TOLLWAY_*``), then builds what the
app's lifespan builds from them without opening a socket or a database: the model catalogue
(every deployment must resolve to a price, or the model could never be called) and one adapter
per provider (an unknown kind fails here, as it would at startup). The effective configuration
is rendered with every secret masked (``gateway.settings.SECRET_FIELDS``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.catalog import build_adapters, build_catalog
from gateway.settings import Settings, SettingsError
from providers.registry import KINDS


class CheckReport(msgspec.Struct):
    errors: list[str] = []
    warnings: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.errors


def check_settings(settings: Settings, env: Mapping[str, str]) -> CheckReport:
    """The problems ``settings`` would meet at startup or on its first request."""
    report = CheckReport()
    try:
        report.errors.extend(unpriced_models(settings))
    except (SettingsError, ValueError) as error:
        report.errors.append(f"the model catalogue does not build: {error}")
    try:
        adapters = build_adapters(settings, env)
    except SettingsError as error:
        report.errors.append(str(error))
    else:
        asyncio.run(_close(adapters.values()))
    report.warnings.extend(unset_key_variables(settings, env))
    report.warnings.extend(demo_beside_real_providers(settings))
    report.warnings.extend(payment_secrets(settings, env))
    return report


def startup_warnings(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """What ``tollway serve`` warns of but serves anyway: ``config check`` refuses unpriced models,
    a running gateway only hides them."""
    try:
        unpriced = unpriced_models(settings)
    except (SettingsError, ValueError):
        unpriced = []  # the lifespan builds the catalogue too, and fails with the reason
    return [
        *unpriced,
        *unset_key_variables(settings, env),
        *demo_beside_real_providers(settings),
        *payment_secrets(settings, env),
    ]


def unpriced_models(settings: Settings) -> list[str]:
    """One line per configured deployment without a price: such a model is hidden from
    ``/v1/models`` and refused, since its calls could not be charged."""
    problems: list[str] = []
    catalog = build_catalog(settings)
    for slug, model in catalog.items():
        for deployment in model.deployments:
            if deployment.price is None:
                problems.append(
                    f"models.{slug!r}: no price for {deployment.provider}/{deployment.upstream_model}, so it is "
                    "hidden and cannot be called (set input_per_mtok/output_per_mtok or per_unit_usd)"
                )
    return problems


def unset_key_variables(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Providers whose key comes from an environment variable that is not set."""
    problems: list[str] = []
    for name, provider in settings.providers.items():
        kind = KINDS.get(provider.kind)
        variable = provider.api_key_env or (kind.api_key_env if kind is not None else "")
        if not provider.api_key and variable and not env.get(variable):
            problems.append(f"providers.{name}: ${variable} is not set; its calls will be refused")
    return problems


def payment_secrets(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """A payment provider Tollway talks to without the secret it needs: its webhooks are all
    refused (400, nothing granted), or the Buy button answers 503."""
    problems: list[str] = []
    payments = settings.payments
    for name in payments.configured():
        table = payments.stripe if name == "stripe" else payments.lemonsqueezy
        api_key, webhook_secret = table.resolved(env)
        if not webhook_secret:
            where = f"${table.webhook_secret_env}" if table.webhook_secret_env else "webhook_secret"
            problems.append(
                f"payments.{name}: {where} is not set; every {name} webhook will be refused and no purchase granted"
            )
        if name == payments.checkout_provider and not api_key:
            where = f"${table.api_key_env}" if table.api_key_env else "api_key"
            problems.append(f"payments.{name}: {where} is not set; Buy credits will answer 503")
    if payments.checkout_provider and not any(
        package.provider_price_ids.get(payments.checkout_provider) for package in settings.credit_packages
    ):
        problems.append(
            f"payments.checkout_provider is {payments.checkout_provider} but no credit package has a "
            f"provider_price_ids.{payments.checkout_provider}: nothing can be bought"
        )
    return problems


def demo_beside_real_providers(settings: Settings) -> list[str]:
    if not (settings.demo_provider and settings.providers):
        return []
    return [
        f"demo_provider is on next to real providers ({', '.join(sorted(settings.providers))}): every key "
        "can call the free demo/* models; set demo_provider = false (TOLLWAY_DEMO_PROVIDER=false)"
    ]


async def _close(adapters: Any) -> None:
    for adapter in adapters:
        await adapter.aclose()


# --- TOML rendering ---------------------------------------------------------------------------
# A small writer for the shapes settings have (scalars, lists of scalars, tables, arrays of
# tables), so the printed configuration can be pasted back into a file; None has no TOML
# spelling and means "unset", so it is left out.

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    nested = {k: v for k, v in table.items() if (isinstance(v, dict) and v) or _is_table_array(v)}
    for name, value in table.items():
        if name not in nested and value is not None:
            lines.append(f"{_key(name)} = {_value(value)}")
    for name, value in nested.items():
        inner = [*path, _key(name)]
        if isinstance(value, dict):
            scalars = any(not isinstance(v, dict) or not v for v in value.values())
            if scalars:
                lines.extend(["", f"[{'.'.join(inner)}]"])
            _table(value, inner, lines)
        else:
            for item in value:
                lines.extend(["", f"[[{'.'.join(inner)}]]"])
                _table(item, inner, lines)


def to_toml(table: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _table(table, [], lines)
    return "\n".join(lines) + "\n"
