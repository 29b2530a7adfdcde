"""The ``/v1`` routes besides chat: thin controllers over the route modules of :mod:`gateway.pipeline`, plus
``GET /v1/models`` and ``GET /v1/generation``, which read the catalogue and usage records."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream
from sqlalchemy import select

from billing.models import UsageRecord
from gateway.api.openapi import errors
from gateway.api.openapi_v1 import (
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    SpeechRequest,
    TranscriptionForm,
    VideoForm,
    documented_body,
)
from gateway.api.views import model_view, usage_view
from gateway.catalog import CatalogModel
from gateway.errors import GatewayError
from gateway.pipeline import audio, completions, embeddings, images, videos
from gateway.pipeline.metered import cancel_on_disconnect
from gateway.request_id import request_id_of
from gateway.state import GatewayState
from gateway.validation import Slug
from keys.chain import authenticate
from keys.service import KeyIdentity

_encoder = msgspec.json.Encoder()
_AUDIO_UPLOAD_LIMIT = audio.MAX_AUDIO_BYTES + 1024 * 1024  # the file plus its form fields


# A metered call can fail at any stage: the body, the key, the credits, the limits, the upstream.
_METERED = errors(400, 401, 402, 403, 404, 413, 429, 499, 502, 503, 504)


class NotFound(GatewayError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


def _begin(request: Request[Any, Any, Any]) -> tuple[GatewayState, str]:
    """The state, and the id the request-id middleware gave this request (its usage record's)."""
    return request.app.state.gateway, request_id_of(request.scope)


@post(
    "/v1/embeddings",
    status_code=200,
    operation_id="create_embeddings",
    operation_class=documented_body(EmbeddingRequest),
    responses=_METERED,
)
async def create_embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, request_id = _begin(request)
    return await cancel_on_disconnect(
        request.receive,
        embeddings.embeddings(state, request.headers, state.request_facts(request), await request.body(), request_id),
    )


@post(
    "/v1/completions",
    status_code=200,
    operation_id="create_completion",
    operation_class=documented_body(CompletionRequest),
    responses=_METERED,
)
async def create_completion(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state, request_id = _begin(request)
    return await cancel_on_disconnect(
        request.receive,
        completions.completions(state, request.headers, state.request_facts(request), await request.body(), request_id),
    )


@post(
    "/v1/images/generations",
    status_code=200,
    operation_id="create_images",
    operation_class=documented_body(ImageRequest),
    responses=_METERED,
)
async def create_images(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, request_id = _begin(request)
    return await cancel_on_disconnect(
        request.receive,
        images.images(state, request.headers, state.request_facts(request), await request.body(), request_id),
    )


@post(
    "/v1/audio/speech",
    status_code=200,
    operation_id="create_speech",
    operation_class=documented_body(SpeechRequest),
    responses=_METERED,
)
async def create_speech(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, request_id = _begin(request)
    return await cancel_on_disconnect(
        request.receive,
        audio.speech(state, request.headers, state.request_facts(request), await request.body(), request_id),
    )


@post(
    "/v1/audio/transcriptions",
    status_code=200,
    request_max_body_size=_AUDIO_UPLOAD_LIMIT,
    operation_id="create_transcription",
    operation_class=documented_body(TranscriptionForm, "multipart/form-data"),
    responses=_METERED,
)
async def create_transcription(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, request_id = _begin(request)
    form = await request.form()
    fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return await cancel_on_disconnect(
        request.receive,
        audio.transcriptions(state, request.headers, state.request_facts(request), form, fields, request_id),
    )


def _visible(identity: KeyIdentity, model: CatalogModel) -> bool:
    if model.price is None:
        return False
    if identity.allowed_models and model.slug not in identity.allowed_models:
        return False
    return not identity.allowed_categories or model.category in identity.allowed_categories


async def _identity(request: Request[Any, Any, Any]) -> tuple[GatewayState, KeyIdentity]:
    state, _request_id = _begin(request)
    identity = await authenticate(
        request.headers.get("authorization"), state.keys, state.now(), state.request_facts(request), state.tokens
    )
    return state, identity


@get("/v1/models", operation_id="list_models", responses=errors(401, 403))
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Only the models the caller's key may use (steps 1–7 of the chain apply here too)."""
    state, identity = await _identity(request)
    data = [model_view(m) for m in state.catalog.values() if _visible(identity, m)]
    return Response(_encoder.encode({"object": "list", "data": data}), media_type="application/json")


@get("/v1/models/{slug:path}", operation_id="retrieve_model", responses=errors(400, 401, 403, 404))
async def retrieve_model(request: Request[Any, Any, Any], slug: FromPath[Slug]) -> Response[bytes]:
    state, identity = await _identity(request)
    model = state.catalog.get(slug.lstrip("/"))
    if model is None or not _visible(identity, model):
        raise NotFound(f"no model {slug.lstrip('/')!r} for this key", param="model")
    return Response(_encoder.encode(model_view(model)), media_type="application/json")


@get("/v1/generation", operation_id="get_generation", responses=errors(400, 401, 403, 404))
async def get_generation(request: Request[Any, Any, Any], id: FromQuery[Slug]) -> Response[bytes]:
    """What one request cost and how it went, by its request id (within the caller's account)."""
    state, identity = await _identity(request)
    await state.meter.settled(identity.account_id)  # a request that just finished is readable
    async with state.sessionmaker() as session:
        record = await session.scalar(
            select(UsageRecord).where(UsageRecord.request_id == id, UsageRecord.account_id == identity.account_id)
        )
    if record is None:
        raise NotFound(f"no generation {id!r} in this account", param="id")
    # The same view as /api/usage/, named by the request id the caller knows.
    data = {**usage_view(record), "id": record.request_id}
    return Response(_encoder.encode({"data": data}), media_type="application/json")


@post(
    "/v1/videos",
    status_code=200,
    request_max_body_size=_AUDIO_UPLOAD_LIMIT,
    operation_id="create_video",
    operation_class=documented_body(VideoForm, "multipart/form-data"),
    responses=_METERED,
)
async def create_video(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, request_id = _begin(request)
    form = await request.form()
    fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return await cancel_on_disconnect(
        request.receive,
        videos.create_video(state, request.headers, state.request_facts(request), form, fields, request_id),
    )


@get("/v1/videos/{video_id:str}", operation_id="retrieve_video", responses=errors(400, 401, 403, 404, 502, 503))
async def retrieve_video(request: Request[Any, Any, Any], video_id: FromPath[Slug]) -> Response[bytes]:
    state, _request_id = _begin(request)
    return await videos.retrieve_video(state, request.headers, state.request_facts(request), video_id)


@get(
    "/v1/videos/{video_id:str}/content",
    operation_id="download_video_content",
    responses=errors(400, 401, 403, 404, 502, 503),
)
async def video_content(
    request: Request[Any, Any, Any], video_id: FromPath[Slug], variant: FromQuery[Slug] = "video"
) -> Response[bytes]:
    state, _request_id = _begin(request)
    return await videos.video_content(state, request.headers, state.request_facts(request), video_id, variant)
