"""Calling ``/fn`` in tests: functions made straight in the database, a recording ledger, and a
gateway fixture that also hands over its server (to install the recorder or another runtime).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from functions.config import ResolvedFunction
from functions.invocations import ErrorType, InvocationRefused
from tests.fakes.function_rows import add_function, add_project, add_variable, fixed_keyring
from tests.fakes.gateway_fixtures import Backend, Gateway, _with_session, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer
from tests.fakes.third_party import ThirdParty, running_third_party


@dataclass
class Fn:
    """A function of the gateway's account: where to call it, its token, its secrets in clear."""

    id: str
    token: str
    url: str
    secrets: dict[str, str]
    environment_id: int
    gateway: Gateway

    def raw_call(self, method: str, tail: str) -> tuple[int, bytes]:
        """``/fn/{id}{tail}`` sent byte for byte (an HTTP client would resolve ``..`` itself)."""
        url = httpx.URL(self.url)
        request = (
            f"{method} {url.raw_path.decode()}{tail} HTTP/1.1\r\nHost: {url.netloc.decode()}\r\n"
            f"x-proxy-token: {self.token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection((url.host, url.port or 80), timeout=30) as sock:
            sock.sendall(request.encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def call(self, method: str = "POST", tail: str = "", *, token: str | None = "", **kwargs: Any) -> httpx.Response:
        """Call ``/fn/{id}{tail}``; the function's token unless ``token`` says otherwise (None: none)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers.setdefault("x-proxy-token", token or self.token)
        return httpx.request(method, self.url + tail, headers=headers, timeout=30, **kwargs)


def make_function(
    gateway: Gateway,
    target_url: str,
    *,
    secrets_by_key: dict[str, str] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Fn:
    """A function whose ``mappings`` name variables by key (``{"variable": "API_KEY", "inject_as":
    "header", "key": "Authorization", "template": "Bearer ${value}"}``); a variable key not in
    ``secrets_by_key`` becomes a variable id nobody has (an unresolvable mapping)."""
    values = dict(secrets_by_key or {})

    async def work(session: AsyncSession) -> Fn:
        ring = fixed_keyring()
        _project, environments = await add_project(session, gateway.account_id, f"P {secrets.token_hex(4)}")
        environment = environments[0]
        variables = {key: await add_variable(session, ring, environment, key, value) for key, value in values.items()}
        stored = []
        for mapping in mappings or []:
            variable = variables.get(mapping["variable"])
            stored.append(
                {
                    "variable_id": variable.id if variable is not None else 2**40,
                    "inject_as": mapping["inject_as"],
                    "key": mapping["key"],
                    "template": mapping.get("template", ""),
                }
            )
        row, token = await add_function(session, ring, environment, target_url, secret_mappings=stored, **fields)
        await session.commit()
        return Fn(row.id, token, f"{gateway.url}/fn/{row.id}", values, environment.id, gateway)

    result: Fn = gateway.run(_with_session(gateway.settings, work))
    return result


@dataclass
class Recorded:
    what: str  # admit, finish, refused
    request_id: str
    status: int = 0
    error_type: ErrorType = ErrorType.NONE
    origin: str = ""


@dataclass
class Ticket:
    request_id: str


@dataclass
class RecordingLedger:
    """An :class:`~functions.invocations.InvocationLedger` that writes down every call."""

    calls: list[Recorded] = field(default_factory=list)
    refuse: bool = False

    async def admit(self, function: ResolvedFunction, request_id: str) -> Ticket:
        if self.refuse:
            raise InvocationRefused("Insufficient credits")
        self.calls.append(Recorded("admit", request_id))
        return Ticket(request_id)

    async def finish(
        self,
        ticket: Any,
        function: ResolvedFunction,
        *,
        status: int,
        latency_ms: int,
        error_type: ErrorType,
        origin: str,
    ) -> None:
        assert latency_ms >= 0
        self.calls.append(Recorded("finish", ticket.request_id, status, error_type, origin))

    async def refused(
        self, function: ResolvedFunction, *, request_id: str, status: int, error_type: ErrorType, origin: str
    ) -> None:
        self.calls.append(Recorded("refused", request_id, status, error_type, origin))

    def of(self, request_id: str) -> list[Recorded]:
        return [call for call in self.calls if call.request_id == request_id]


@dataclass
class Served:
    gateway: Gateway
    server: ThreadedServer
    third_party: ThirdParty

    @property
    def state(self) -> Any:
        return self.server.app.state.gateway

    def record_calls(self) -> RecordingLedger:
        ledger = RecordingLedger()
        self.state.function_calls = ledger
        return ledger

    def function(self, path: str = "/json", **kwargs: Any) -> Fn:
        return make_function(self.gateway, self.third_party.url + path, **kwargs)


@pytest.fixture
def third_party() -> Iterator[ThirdParty]:
    yield from running_third_party()


@pytest.fixture
def served(backend: Backend, fake_openai: FakeOpenAI, third_party: ThirdParty) -> Iterator[Served]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    try:
        yield Served(gateway, server, third_party)
    finally:
        server.stop()
