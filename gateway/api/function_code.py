"""``GET /api/functions/{function_id}/code/{platform}/``: Download Code, thin over :mod:`functions.codegen`.

Every role of the account may download (envmanager.md §5, ``Permission.VIEW``); another
account's function is a 404 like a missing one. The answer is JSON (file name, path, the
deployment instructions, the environment variables to set and the file's content), or with
``?download=1`` the file itself as an attachment. The file holds no secret and no token (the
deployed code reads them from the platform's environment), so handing it to a viewer reveals
nothing a viewer could not already copy.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, get
from litestar.params import FromPath, FromQuery, Parameter

from billing.bounds import NO_CONTROL
from functions.codegen import EnvVar, GeneratedCode, function_code
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.state import GatewayState
from gateway.validation import Slug
from keys.roles import Permission

# A function id in the path: any short line (an unknown one is a 404, never a 400).
FunctionId = Annotated[str, Parameter(max_length=64, pattern=NO_CONTROL)]
# ?download=1 answers the file itself.
Download = Annotated[int, Parameter(ge=0, le=1)]
_MEDIA_TYPES = {".ts": "text/typescript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8"}


class FunctionCode(msgspec.Struct):
    platform: str  # vercel, netlify, cloudflare or lambda
    filename: str
    path: str  # where the file goes in the project, e.g. api/proxy-brevo.ts
    instructions: str
    content: str
    env: list[EnvVar]  # the environment variables the deployed code reads


def _attachment(code: GeneratedCode) -> Response[bytes]:
    media_type = next((kind for ext, kind in _MEDIA_TYPES.items() if code.filename.endswith(ext)), "text/plain")
    return Response(
        content=code.content.encode("utf-8"),
        media_type=media_type,
        # The name is [a-z0-9-] plus the extension (functions.codegen.file_slug): safe to quote as is.
        headers={"Content-Disposition": f'attachment; filename="{code.filename}"', "X-Content-Type-Options": "nosniff"},
    )


class FunctionCodeController(Controller):
    path = "/api/functions"
    tags = ["functions"]
    security = MEMBER_AUTH

    @get(
        "/{function_id:str}/code/{platform:str}/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_function_code",
        responses=errors(400, 401, 403, 404, 503),
        description="Self-hosting code for vercel, netlify, cloudflare or lambda; ?download=1 for the file.",
    )
    async def get_function_code(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        function_id: FromPath[FunctionId],
        platform: FromPath[Slug],
        download: FromQuery[Download] = 0,
    ) -> FunctionCode | Response[bytes]:
        keyring = gateway.functions.keyring if gateway.functions is not None else None
        async with gateway.sessionmaker() as session:
            code = await function_code(
                session,
                caller.account_id,
                function_id,
                platform,
                keyring,
                max_body_bytes=gateway.settings.function_max_body_bytes,
            )
        if download:
            return _attachment(code)
        return FunctionCode(
            platform=code.platform,
            filename=code.filename,
            path=code.path,
            instructions=code.instructions,
            content=code.content,
            env=code.env,
        )
