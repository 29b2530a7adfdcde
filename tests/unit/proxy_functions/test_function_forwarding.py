"""The pure parts of the runtime (no network): origin rules, the extra path, the URL, the body."""

from __future__ import annotations

import copy
from typing import Any

from functions.config import Injection, ResolvedFunction
from functions.egress import EgressPolicy
from functions.forwarding import Plan, build_body, build_url, clean_extra_path
from functions.models import HttpMethod, InjectAs
from functions.origins import OriginRules, request_origin

POLICY = EgressPolicy()


def function(target: str = "https://api.example.com/v1/x?a=1", **fields: Any) -> ResolvedFunction:
    values: dict[str, Any] = {
        "id": "00000000-0000-4000-8000-000000000001",
        "account_id": 1,
        "project_id": 1,
        "environment_id": 1,
        "name": "f",
        "slug": "f",
        "enabled": True,
        "target_url": target,
        "method": HttpMethod.POST,
        "headers": {},
        "injections": (),
        "allowed_origins": ("*",),
        "pass_through_body": True,
        "body_template": None,
        "rate_limit_per_minute": None,
        "forward_path": False,
        "forward_query": False,
        "timeout_s": 5.0,
        "token_sha256": b"",
    }
    values.update(fields)
    return ResolvedFunction(**values)


def inject(kind: InjectAs, key: str, value: str) -> Injection:
    return Injection(inject_as=kind, key=key, value=value, variable_key="V")


def test_origin_rules_match_exact_patterns_and_ports() -> None:
    rules = OriginRules(("https://App.Example.com/", "*.shop.test", "https://*.secure.test:8443", "bad origin"), "GET")
    assert rules.allows("https://app.example.com:443")
    assert not rules.allows("http://app.example.com")
    assert rules.allows("http://a.b.shop.test") and rules.allows("https://x.shop.test")
    assert not rules.allows("https://shop.test") and not rules.allows("https://x.shop.test:444")
    assert rules.allows("https://a.secure.test:8443") and not rules.allows("http://a.secure.test:8443")
    assert not rules.allows(None) and not rules.allows("null") and not rules.allows("")
    assert request_origin("https://[::1]:443") == ("https", "[::1]", "")
    assert request_origin("ftp://x") is None
    everyone = OriginRules(("*",), "POST")
    assert everyone.allows(None)
    assert (b"access-control-allow-origin", b"*") in everyone.headers("https://x.test")


def test_extra_path_refusals() -> None:
    assert clean_extra_path(b"customers/cus_1/items/") == b"customers/cus_1/items/"
    assert clean_extra_path(b"a%20b/c:d@e") == b"a%20b/c:d@e"
    for refused in (b"..", b"a/../b", b"%2e%2E", b"a/%2e/b", b"a%2fb", b"a%5Cb", b"a//b", b"a b", b"a\\b", b"%00"):
        assert clean_extra_path(refused) is None, refused


def test_build_url_sets_query_secrets_over_target_and_caller() -> None:
    fn = function(
        "https://api.example.com/v1/?key=default&keep=1",
        forward_path=True,
        forward_query=True,
        injections=(inject(InjectAs.QUERY, "key", "s3cret value"),),
    )
    plan = Plan.of(fn, POLICY)
    url = build_url(plan, b"items/42", b'key=mine&q=a%20b&raw=\xff "x"')
    assert url.raw_path == b"/v1/items/42?keep=1&q=a%20b&raw=%FF%20%22x%22&key=s3cret+value"
    assert url.host == "api.example.com"
    untouched = Plan.of(function(), POLICY)
    assert build_url(untouched, b"ignored", b"ignored=1") == untouched.url


def test_build_body_modes() -> None:
    template = {"a": {"b": 1}, "c": "x"}
    secrets = (inject(InjectAs.BODY, "a.token", "T"), inject(InjectAs.BODY, "c.d", "D"))
    fn = function(body_template=template, injections=secrets)
    before = copy.deepcopy(template)
    body = build_body(Plan.of(fn, POLICY), "POST", b'{"client": 1}', "application/json")
    assert body.content == b'{"a":{"b":1,"token":"T"},"c":{"d":"D"}}'
    assert template == before  # the cached template is never changed
    assert build_body(Plan.of(fn, POLICY), "GET", b"x", None).content is None
    passing = function(injections=secrets[:1])
    merged = build_body(Plan.of(passing, POLICY), "PUT", b'{"a": 5}', "application/json; charset=utf-8")
    assert merged.content == b'{"a":{"token":"T"}}'
    form = build_body(Plan.of(passing, POLICY), "POST", b"a=1&b=2", "application/x-www-form-urlencoded")
    assert (form.content, form.content_type) == (b"a=1&b=2", "application/x-www-form-urlencoded")
    empty = build_body(Plan.of(function(body_template={}), POLICY), "POST", b'{"x": 1}', "application/json")
    assert empty.content is None
    listed = build_body(Plan.of(function(body_template=[1]), POLICY), "DELETE", b"", None)
    assert (listed.content, listed.content_type) == (b"[1]", "application/json")


def test_plan_headers_mapping_wins_and_transport_defaults() -> None:
    fn = function(
        headers={"AUTHORIZATION": "static", "Accept-Encoding": "gzip"},
        injections=(inject(InjectAs.HEADER, "authorization", "Bearer s"),),
    )
    plan = Plan.of(fn, POLICY)
    assert dict(plan.headers) == {"authorization": "Bearer s", "Accept-Encoding": "gzip", "User-Agent": "Tollway"}
    assert Plan.of(function("http://api.example.com/"), POLICY).refusal == "the target must use https"
