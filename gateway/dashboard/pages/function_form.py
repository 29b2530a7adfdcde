"""The create / edit form of a proxy function: what it shows (from a template, a stored function,
or what was just submitted) and how its fields become the body ``/api`` takes.

Repeated rows (static headers, secret mappings) arrive as parallel lists of fields; a row whose
name (or variable and key) is blank is ignored, so the page can offer blank rows without
scripts. The body template is JSON typed by hand: a mistake is "Invalid JSON" next to the field,
before anything reaches the service, whose own messages are shown the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar.datastructures import FormMultiDict

from functions.models import ProxyFunction
from functions.templates import FunctionTemplate
from gateway.dashboard.pages._common import text, texts

__all__ = [
    "DEFAULT_RATE",
    "INJECT_AS",
    "METHODS",
    "form_fields",
    "submitted_values",
    "values_of_function",
    "values_of_template",
]

METHODS = ("GET", "POST", "PUT", "DELETE")
INJECT_AS = ("header", "body", "query")
DEFAULT_RATE = 60
_SPLIT = re.compile(r"[\s,]+")


def _pretty(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def values_of_template(template: FunctionTemplate | None, default_timeout_ms: int) -> dict[str, Any]:
    """A new function's form: the template's fields and one mapping row per secret hint."""
    t = template
    return {
        "template": t.slug if t else "",
        "name": t.name if t else "",
        "description": t.description if t else "",
        "target_url": t.target_url if t else "",
        "method": t.method.value if t else "POST",
        "headers": list(t.headers.items()) if t else [],
        "mappings": [
            {
                "variable_id": None,
                "inject_as": hint.inject_as.value,
                "key": hint.key,
                "template": hint.template,
                "hint": hint.variable_name_hint,
            }
            for hint in (t.secret_hints if t else ())
        ],
        "origins": "*",
        "pass_through_body": t.pass_through_body if t else True,
        "body_template": _pretty(t.body_template) if t else "",
        "rate_limited": False,
        "rate_limit": DEFAULT_RATE,
        "forward_path": False,
        "forward_query": False,
        "timeout_ms": default_timeout_ms,
    }


def values_of_function(row: ProxyFunction) -> dict[str, Any]:
    return {
        "template": row.template_id,
        "name": row.name,
        "description": row.description,
        "target_url": row.target_url,
        "method": row.method,
        "headers": list(row.headers.items()),
        "mappings": [
            {
                "variable_id": int(m["variable_id"]),
                "inject_as": str(m["inject_as"]),
                "key": str(m["key"]),
                "template": str(m.get("template") or ""),
                "hint": "",
            }
            for m in row.secret_mappings
        ],
        "origins": "\n".join(row.allowed_origins),
        "pass_through_body": row.pass_through_body,
        "body_template": _pretty(row.body_template),
        "rate_limited": row.rate_limit_per_minute is not None,
        "rate_limit": row.rate_limit_per_minute or DEFAULT_RATE,
        "forward_path": row.forward_path,
        "forward_query": row.forward_query,
        "timeout_ms": row.timeout_ms,
    }


def _rows(form: FormMultiDict, *names: str) -> list[list[str]]:
    columns = [texts(form, name) for name in names]
    length = max((len(column) for column in columns), default=0)
    return [[column[i] if i < len(column) else "" for column in columns] for i in range(length)]


def submitted_values(form: FormMultiDict) -> dict[str, Any]:
    """The form as it was sent, to show again beside its errors."""
    mappings = [
        {
            "variable_id": int(variable) if variable.isdigit() and len(variable) < 19 else None,
            "inject_as": inject_as,
            "key": key,
            "template": template,
            "hint": hint,
        }
        for variable, inject_as, key, template, hint in _rows(
            form, "map_variable", "map_inject_as", "map_key", "map_template", "map_hint"
        )
        if variable or key
    ]
    return {
        "template": text(form, "template"),
        "name": text(form, "name"),
        "description": text(form, "description"),
        "target_url": text(form, "target_url"),
        "method": text(form, "method") or "POST",
        "headers": [(name, value) for name, value in _rows(form, "header_name", "header_value") if name],
        "mappings": mappings,
        "origins": text(form, "allowed_origins"),
        "pass_through_body": form.get("pass_through_body") == "on",
        "body_template": form.get("body_template") if isinstance(form.get("body_template"), str) else "",
        "rate_limited": form.get("rate_limited") == "on",
        "rate_limit": text(form, "rate_limit_per_minute") or DEFAULT_RATE,
        "forward_path": form.get("forward_path") == "on",
        "forward_query": form.get("forward_query") == "on",
        "timeout_ms": text(form, "timeout_ms"),
    }


def _number(raw: Any, field: str, errors: dict[str, str]) -> int | None:
    value = str(raw).strip()
    if not value.isdigit() or len(value) > 9:
        errors[field] = "must be a whole number"
        return None
    return int(value)


def form_fields(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The submitted form as the JSON body of ``/api`` (every field, so an edit sets them all),
    and the errors found before the service (the body template's JSON, numbers)."""
    errors: dict[str, str] = {}
    body_template: Any = None
    if not values["pass_through_body"] and str(values["body_template"]).strip():
        try:
            body_template = json.loads(values["body_template"])
        except ValueError:
            errors["body_template"] = "Invalid JSON"
    rate = _number(values["rate_limit"], "rate_limit_per_minute", errors) if values["rate_limited"] else None
    timeout = _number(values["timeout_ms"], "timeout_ms", errors)
    headers: dict[str, str] = {}
    for name, value in values["headers"]:
        if name in headers:
            errors["headers"] = f"the header {name} is listed twice"
        headers[name] = value
    fields: dict[str, Any] = {
        "name": values["name"],
        "description": values["description"],
        "target_url": values["target_url"],
        "method": values["method"],
        "headers": headers,
        "secret_mappings": [
            {
                "variable_id": mapping["variable_id"],
                "inject_as": mapping["inject_as"],
                "key": mapping["key"],
                "template": mapping["template"],
            }
            for mapping in values["mappings"]
        ],
        "allowed_origins": [item for item in _SPLIT.split(values["origins"]) if item],
        "pass_through_body": values["pass_through_body"],
        "body_template": body_template,
        "rate_limit_per_minute": rate,
        "forward_path": values["forward_path"],
        "forward_query": values["forward_query"],
    }
    if timeout is not None:
        fields["timeout_ms"] = timeout
    return fields, errors
