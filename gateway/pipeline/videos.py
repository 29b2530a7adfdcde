"""``/v1/videos``: asynchronous video jobs (OpenAI's Videos API shape).

Creating a job goes through the whole chain and reserves seconds × the per-second price of
its size; once the upstream accepts the job the requested seconds are charged (the upstream
bills them from then on) and the job is remembered with the provider that runs it. Reading a
job asks that provider; a job the upstream reports as ``failed`` is refunded, exactly once
(the refund is a ledger entry unique per job). Only the creating account can see a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Response
from litestar.datastructures import UploadFile
from sqlalchemy import select

from billing.accounts import grant_credits
from billing.estimates import units_worst_case
from billing.grants import sync_after_change
from billing.models import LedgerKind, VideoJob
from billing.money import format_credits
from gateway.catalog import CatalogModel
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline.common import form_text, required_form_text, serves_multipart
from gateway.pipeline.metered import Admission, Admitted, MeteredCall, tollway_meta
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts, authenticate
from keys.service import KeyIdentity
from providers.base import ProviderHandle, UploadedFile, UpstreamReply, Usage
from providers.errors import UpstreamBadResponse

ROUTE = "/v1/videos"
DEFAULT_SECONDS = 4
MAX_SECONDS = 120
_encoder = msgspec.json.Encoder()


class VideoNotFound(GatewayError):
    status_code = 404
    type = "not_found_error"
    code = "video_not_found"


class VideoCreateView(msgspec.Struct, kw_only=True):
    model: str
    seconds: int = DEFAULT_SECONDS
    size: str | None = None
    models: list[str] | None = None
    provider: ProviderPreferences | None = None
    user: str | None = None


def _seconds(value: Any) -> int:
    try:
        seconds = int(str(value)) if value not in (None, "") else DEFAULT_SECONDS
    except ValueError as error:
        raise InvalidRequest("seconds must be a whole number of seconds", param="seconds") from error
    if not 1 <= seconds <= MAX_SECONDS:
        raise InvalidRequest(f"seconds must be between 1 and {MAX_SECONDS}", param="seconds")
    return seconds


def _variant(served: CatalogModel, size: str | None) -> str:
    assert served.price is not None
    return size if size and size in served.price.per_unit_variants else ""


def _decode(reply: UpstreamReply, provider: str) -> dict[str, Any]:
    try:
        job = msgspec.json.decode(reply.content)
    except msgspec.DecodeError as error:
        raise UpstreamBadResponse(f"upstream {provider} sent invalid JSON", provider=provider) from error
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise UpstreamBadResponse(f"upstream {provider} sent no job id", provider=provider)
    return job


def _create_view(form: Mapping[str, Any]) -> VideoCreateView:
    model = required_form_text(form, "model")
    required_form_text(form, "prompt")
    return VideoCreateView(
        model=model, seconds=_seconds(form.get("seconds")), size=form_text(form, "size"), user=form_text(form, "user")
    )


async def create_video(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    form: Mapping[str, Any],
    fields: list[tuple[str, str]],
    request_id: str,
) -> Response[bytes]:
    # Read before anything is held: a failing or cancelled read must not strand a reservation.
    files = [
        UploadedFile(
            field=name,
            filename=value.filename or name,
            content=await value.read(),
            content_type=value.content_type or "application/octet-stream",
        )
        for name, value in form.items()
        if isinstance(value, UploadFile)
    ]
    async with Admission(state, headers, facts, request_id) as door:
        view = _create_view(form)
        plan = door.plan(view, route=ROUTE, categories=frozenset({"video"}), serves=serves_multipart)
        admitted = await door.reserve(plan, units_worst_case(plan, view.seconds, view.size or ""))
    forwarded = [(k, v) for k, v in fields if k not in {"model", "user"}]

    async def call(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
        reply: UpstreamReply = await adapter.multipart.post_multipart(
            "/videos", served.upstream_model, [("model", served.upstream_model), *forwarded], files
        )
        return _decode(reply, served.provider)

    async with MeteredCall(state, admitted) as metered:
        job = await metered.dispatch(call)
        served = metered.served
        usage = Usage(units=view.seconds, unit_variant=_variant(served, view.size))
        # Charged once the upstream accepted the job: it bills the seconds from then on.
        bill = await metered.settle(usage)
    await _remember(state, admitted, served, job, view.seconds, bill.cost_micro)
    job["_tollway"] = tollway_meta(state, admitted.ctx, served, usage, bill.cost_micro)
    return Response(
        content=_encoder.encode(job),
        media_type="application/json",
        headers={
            "X-Request-Id": request_id,
            "X-Tollway-Credits-Used": format_credits(bill.cost_micro),
            **admitted.reservation.rate_headers,
        },
    )


async def _remember(
    state: GatewayState, admitted: Admitted, served: CatalogModel, job: dict[str, Any], seconds: int, cost: int
) -> None:
    async with state.sessionmaker() as session:
        session.add(
            VideoJob(
                id=job["id"],
                account_id=admitted.ctx.identity.account_id,
                key_id=admitted.ctx.identity.key_id,
                request_id=admitted.ctx.request_id,
                model=served.slug,
                provider=served.provider,
                upstream_model=served.upstream_model,
                seconds=seconds,
                cost_micro=cost,
                status=str(job.get("status") or "queued"),
            )
        )
        await session.commit()


async def _job_for(state: GatewayState, identity: KeyIdentity, video_id: str) -> VideoJob:
    async with state.sessionmaker() as session:
        job = await session.scalar(
            select(VideoJob).where(VideoJob.id == video_id, VideoJob.account_id == identity.account_id)
        )
    if job is None or job.provider not in state.adapters:
        raise VideoNotFound(f"no video {video_id!r} in this account", param="video_id")
    return job


async def _caller(state: GatewayState, headers: Mapping[str, str], facts: RequestFacts) -> KeyIdentity:
    return await authenticate(headers.get("authorization"), state.keys, state.now(), facts, state.tokens)


async def retrieve_video(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, video_id: str
) -> Response[bytes]:
    identity = await _caller(state, headers, facts)
    job = await _job_for(state, identity, video_id)
    reply: UpstreamReply = await state.adapters[job.provider].get.get(f"/videos/{video_id}", job.upstream_model)
    body = _decode(reply, job.provider)
    status = str(body.get("status") or job.status)
    refunded = await _record_status(state, job, status)
    body["model"] = job.model
    body["_tollway"] = {"credits_used": format_credits(0 if refunded else job.cost_micro), "refunded": refunded}
    return Response(content=_encoder.encode(body), media_type="application/json")


async def _record_status(state: GatewayState, job: VideoJob, status: str) -> bool:
    """Store the latest status; refund a failed job once. Returns whether it is refunded."""
    if status == job.status and (job.refunded or status != "failed"):
        return job.refunded
    async with state.sessionmaker() as session:
        row = await session.get(VideoJob, job.id, with_for_update=True)
        assert row is not None
        row.status = status
        if status == "failed" and not row.refunded and row.cost_micro:
            row.refunded = True
            # One transaction for the flag and the refund; the ledger's unique (account, kind,
            # request_id) makes a concurrent second refund of the same job impossible.
            await grant_credits(
                session,
                row.account_id,
                row.cost_micro,
                kind=LedgerKind.REFUND,
                reason=f"video {row.id} failed",
                idempotency_key=f"video:{row.id}",
            )
        await session.commit()
        refunded = row.refunded
    if refunded:
        # The mirror follows at once, voiding any refresh that read the balance before the refund.
        await sync_after_change(state.sessionmaker, state.counters, state.settings.redis_prefix, job.account_id)
    return refunded


async def video_content(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, video_id: str, variant: str
) -> Response[bytes]:
    identity = await _caller(state, headers, facts)
    job = await _job_for(state, identity, video_id)
    if variant not in {"video", "thumbnail", "spritesheet"}:
        raise InvalidRequest("variant must be video, thumbnail or spritesheet", param="variant")
    reply: UpstreamReply = await state.adapters[job.provider].get.get(
        f"/videos/{video_id}/content?variant={variant}", job.upstream_model
    )
    return Response(content=reply.content, media_type=reply.media_type)
