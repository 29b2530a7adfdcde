"""Proxy-function rows for tests, written straight to the database (no HTTP, no service rules).

Tests of the runtime, the code generators and analytics need a function with real encrypted
secrets before (or without) going through the management API; these helpers seal values with
the same key ring the gateway under test uses (``TEST_SECRET_KEY`` of gateway_fixtures).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from functions.crypto import KeyRing, token_context, variable_context
from functions.models import DEFAULT_ENVIRONMENTS, Environment, Project, ProxyFunction, Variable
from tests.fakes.gateway_fixtures import TEST_SECRET_KEY


def fixed_keyring() -> KeyRing:
    return KeyRing.from_texts({"test": TEST_SECRET_KEY})


async def add_project(
    session: AsyncSession, account_id: int, name: str = "Website"
) -> tuple[Project, list[Environment]]:
    project = Project(account_id=account_id, name=name)
    session.add(project)
    await session.flush()
    environments = [Environment(account_id=account_id, project_id=project.id, name=env) for env in DEFAULT_ENVIRONMENTS]
    session.add_all(environments)
    await session.flush()
    return project, environments


async def add_variable(
    session: AsyncSession, ring: KeyRing, environment: Environment, key: str, value: str, *, is_secret: bool = True
) -> Variable:
    variable = Variable(
        account_id=environment.account_id,
        environment_id=environment.id,
        key=key,
        value_ciphertext=ring.seal(value, context=variable_context(environment.account_id, environment.id, key)),
        is_secret=is_secret,
    )
    session.add(variable)
    await session.flush()
    return variable


async def add_function(
    session: AsyncSession, ring: KeyRing, environment: Environment, target_url: str, **fields: Any
) -> tuple[ProxyFunction, str]:
    """A function (every field overridable) and its token in clear."""
    function_id = str(uuid.uuid4())
    token = secrets.token_hex(32)
    values: dict[str, Any] = {
        "name": "Test function",
        "slug": "test-function-" + function_id[:8],
        "method": "POST",
        "headers": {},
        "secret_mappings": [],
        "allowed_origins": ["*"],
        "pass_through_body": True,
        "body_template": None,
        "rate_limit_per_minute": None,
        "template_id": "",
        "forward_path": False,
        "forward_query": False,
        "timeout_ms": 25_000,
        "enabled": True,
        "description": "",
    }
    values.update(fields)
    row = ProxyFunction(
        id=function_id,
        account_id=environment.account_id,
        project_id=environment.project_id,
        environment_id=environment.id,
        target_url=target_url,
        token_ciphertext=ring.seal(token, context=token_context(environment.account_id, function_id)),
        token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        **values,
    )
    session.add(row)
    await session.flush()
    return row, token
