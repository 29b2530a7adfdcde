"""Bounded path and query parameters for every route, the HTTP half of :mod:`billing.bounds`.

Litestar parses ``{key_id:int}`` into a Python int of any size, and a query ``int`` likewise;
``msgspec.Meta`` in the annotation is not applied to parameters, only Litestar's
``Parameter(ge=, le=)`` is. An unbounded id reaches SQLAlchemy, and SQLite ("Python int too
large") or Postgres ("out of int64 range") fails with a 500. So every int and str parameter of
an ``/api`` or ``/v1`` route is declared with one of these (a test walks the route table to
keep it so); a value out of range is a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from billing.bounds import INT64_MAX, NO_CONTROL

__all__ = ["Limit", "PathId", "QueryId", "QueryText", "Slug"]

PathId = Annotated[int, Parameter(ge=1, le=INT64_MAX)]
QueryId = Annotated[int | None, Parameter(ge=1, le=INT64_MAX)]
# Page sizes: clamped or checked by the handler, bounded here so the clamp never sees a bignum.
Limit = Annotated[int, Parameter(ge=-INT64_MAX, le=INT64_MAX)]
# A filter or id compared against a VARCHAR: one short line (Postgres refuses NUL in text).
QueryText = Annotated[str | None, Parameter(max_length=256, pattern=NO_CONTROL)]
Slug = Annotated[str, Parameter(max_length=256, pattern=NO_CONTROL)]
