"""The 15 proxy-function templates of envmanager.md §6, shipped as package data.

A template pre-fills every field of a new function (name, target URL, method, static headers,
body mode) and one *hint* per secret it needs: where the secret goes (``inject_as``), under
which ``key``, with which ``template`` (``Bearer ${value}``), and the variable name it usually
has (``variable_name_hint``, shown to the user; never used to pick a variable on its own, as in
envmanager). ``functions/templates.json`` holds them in their sort order; it is read once, on
first use, and decoded into frozen Structs, so a malformed file fails loudly at that point
instead of serving half a template.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import msgspec

from functions.models import HttpMethod, InjectAs

__all__ = ["FunctionTemplate", "SecretHint", "get_template", "list_templates"]


class SecretHint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    inject_as: InjectAs
    key: str
    template: str = ""
    variable_name_hint: str = ""


class FunctionTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    slug: str
    name: str
    category: str
    description: str
    icon: str
    sort_order: int
    target_url: str
    method: HttpMethod
    headers: dict[str, str]
    secret_hints: tuple[SecretHint, ...]
    pass_through_body: bool = True
    body_template: Any | None = None


_decoder = msgspec.json.Decoder(tuple[FunctionTemplate, ...])


@functools.cache
def _templates() -> tuple[tuple[FunctionTemplate, ...], dict[str, FunctionTemplate]]:
    raw = resources.files("functions").joinpath("templates.json").read_bytes()
    ordered = tuple(sorted(_decoder.decode(raw), key=lambda template: template.sort_order))
    return ordered, {template.slug: template for template in ordered}


def list_templates() -> tuple[FunctionTemplate, ...]:
    """Every template, in sort order."""
    return _templates()[0]


def get_template(slug: str) -> FunctionTemplate | None:
    return _templates()[1].get(slug)
