"""JSON views shared by several controllers (``/v1``, ``/api``, ``/api/admin``): one place, so
controllers never import each other (the import contract in pyproject.toml checks it)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from billing.models import UsageRecord
from billing.money import format_credits
from billing.pricing import ModelPrice
from gateway.catalog import CatalogModel


def _rate(value: Decimal) -> str:
    """Micro-credits per token are, numerically, credits per million tokens."""
    return format(value.normalize(), "f")


def _pricing(price: ModelPrice) -> dict[str, Any]:
    pricing: dict[str, Any] = {
        "unit": "credits",
        "input_per_mtok": _rate(price.input),
        "output_per_mtok": _rate(price.output),
        "cached_input_per_mtok": _rate(price.cached_input),
        "cache_write_per_mtok": _rate(price.cache_write),
    }
    if price.per_unit or price.per_unit_variants:
        pricing["per_unit"] = _rate(price.per_unit / 1_000_000)
        pricing["per_unit_variants"] = {k: _rate(v / 1_000_000) for k, v in price.per_unit_variants.items()}
    return pricing


# ``created`` of every model in /v1/models: the date the built-in price list was checked
# (billing/catalogue/prices.toml, 2026-11-01 UTC). A constant rather than the gateway's start,
# so every process and every restart answers the same (clients cache and sort by it); the
# gateway has no per-model date to give (a config model's upstream may be any server's).
CATALOGUE_CREATED = 1_793_491_200


def model_view(model: CatalogModel) -> dict[str, Any]:
    return {
        "id": model.slug,
        "object": "model",
        "created": CATALOGUE_CREATED,
        "owned_by": model.slug.split("/", 1)[0],
        "category": model.category,
        "context_length": model.context_length,
        "max_output_tokens": model.max_output_tokens,
        "pricing": _pricing(model.price) if model.price is not None else None,
        "providers": sorted({d.provider for d in model.deployments}),
    }


class UsageRead(msgspec.Struct):
    """One metered request, as /api/usage/ lists it (and /v1/generation names it by request id)."""

    id: int
    request_id: str
    key_id: int | None
    model: str
    provider: str
    upstream_model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    credits_used: str  # credits, as a decimal string
    latency_ms: int
    status_code: int
    error_code: str
    streamed: bool
    cancelled: bool
    end_user_id: str
    anomaly: str
    created_at: str


def usage_read(record: UsageRecord) -> UsageRead:
    return UsageRead(
        id=record.id,
        request_id=record.request_id,
        key_id=record.key_id,
        model=record.model,
        provider=record.provider,
        upstream_model=record.upstream_model,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cached_tokens=record.cached_tokens,
        credits_used=format_credits(record.credits_micro),
        latency_ms=record.latency_ms,
        status_code=record.status_code,
        error_code=record.error_code,
        streamed=record.streamed,
        cancelled=record.cancelled,
        end_user_id=record.end_user_id,
        anomaly=record.anomaly,
        created_at=record.created_at.isoformat(),
    )


def usage_view(record: UsageRecord) -> dict[str, Any]:
    """:func:`usage_read` as a dict, for the answers that add fields to it."""
    return msgspec.structs.asdict(usage_read(record))
