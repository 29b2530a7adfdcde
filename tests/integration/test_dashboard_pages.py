"""The dashboard's pages over real HTTP, without a browser, on both backends: sign-in and the
session cookies, CSRF on every write, the role checks the server makes whatever a page shows,
session refresh, the first-run setup link, and the form errors that come from the services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from litestar.routes import HTTPRoute

from billing.models import UsageRecord
from gateway.app import create_app
from gateway.settings import Settings
from keys.setup import create_setup_link
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Gateway, _with_session

PASSWORD = "correct horse battery staple"
PUBLIC_FORMS = {"/login", "/setup", "/invite"}  # before a session: the form token, not CSRF


class Visitor:
    """A browser's cookie jar for one site (httpx's own drops Secure cookies over plain http)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.cookies: dict[str, str] = {}
        self.last_cookies: dict[str, SimpleCookie] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = httpx.request(method, self.gateway.url + path, headers=headers, timeout=15, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            parsed = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                self.last_cookies[name] = parsed
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf and "tw_csrf" in self.cookies:
            form.setdefault("_csrf", self.cookies["tw_csrf"])
        return self.request("POST", path, data=form, **kwargs)

    def form_token(self, path: str) -> str:
        page = self.get(path)
        found = re.search(r'name="_form" value="([^"]+)"', page.text)
        assert found, page.text[:500]
        return found.group(1)

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        token = self.form_token("/login")
        return self.post("/login", {"email": email, "password": password, "_form": token, "next": "/keys"})


def add_member(gateway: Gateway, email: str, role: str) -> Visitor:
    """A user with a password and a role in the account (the operator's API), signed in."""
    added = httpx.post(
        gateway.url + f"/api/admin/accounts/{gateway.account_id}/members/",
        json={"email": email, "password": PASSWORD, "role": role},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert added.status_code == 201, added.text
    visitor = Visitor(gateway)
    signed_in = visitor.sign_in(email)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/keys", signed_in.text
    return visitor


def dashboard_post_routes() -> list[str]:
    """Every POST route of the dashboard, with 1 for each numeric path id and a UUID for a string one."""
    app = create_app(Settings())
    paths = set()
    for route in app.routes:
        if (
            isinstance(route, HTTPRoute)
            and not route.path.startswith(("/api", "/v1", "/static", "/webhooks"))  # providers sign those
            and any("POST" in handler.http_methods for handler in route.route_handlers)
        ):
            path = re.sub(r"\{[a-z_]+:int\}", "1", route.path)
            paths.add(re.sub(r"\{[a-z_]+:str\}", "00000000-0000-4000-8000-000000000001", path))
    return sorted(paths)


def test_dashboard_pages_send_visitors_without_a_session_to_sign_in(gateway: Gateway) -> None:
    visitor = Visitor(gateway)
    for path in ("/", "/keys", "/usage", "/credits", "/models", "/team"):
        answer = visitor.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login"), path
    assert visitor.get("/usage?model=x").headers["location"] == "/login?next=/usage%3Fmodel%3Dx"
    htmx = visitor.get("/keys", headers={"HX-Request": "true"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"].startswith("/login")
    # /v1 and /api keep answering in JSON as before.
    assert visitor.get("/api/keys/").json()["error"]["code"] == "missing_api_key"


def test_dashboard_sign_in_sets_the_session_cookies_and_every_page_renders(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    for name in ("tw_session", "tw_refresh", "tw_csrf"):
        morsel = owner.last_cookies[name][name]
        assert morsel["path"] == "/" and morsel["samesite"].lower() == "strict" and morsel["secure"]
        assert bool(morsel["httponly"]) is (name != "tw_csrf")
    for path in ("/keys", "/keys/new", "/keys/1/settings", "/keys/1/token", "/keys/1/delete", "/usage", "/credits"):
        page = owner.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    for path in ("/credits/webhook-secret", "/models?q=gpt", "/team", "/usage?key_id=&by=key&since=2026-01-01"):
        assert owner.get(path).status_code == 200, path
    # The same session reaches /api, and the API's sign-out ends it for the pages too.
    assert owner.request("GET", "/api/keys/").status_code == 200
    out = owner.post("/logout")
    assert out.status_code == 303 and "tw_session" not in owner.cookies
    assert owner.get("/keys").status_code == 303


def test_dashboard_sign_in_form_refuses_a_post_without_its_form_token(gateway: Gateway) -> None:
    add_member(gateway, "owner@acme.test", "owner")
    stranger = Visitor(gateway)  # a cross-site form: no tw_form cookie, no token
    answer = stranger.post("/login", {"email": "owner@acme.test", "password": PASSWORD}, csrf=False)
    assert answer.status_code == 403 and "tw_session" not in stranger.cookies
    wrong = Visitor(gateway)
    token = wrong.form_token("/login")
    assert (
        wrong.post("/login", {"email": "owner@acme.test", "password": "wrong password!", "_form": token}).status_code
        == 401
    )


def test_dashboard_every_write_needs_the_session_csrf_token(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    routes = dashboard_post_routes()
    assert "/keys" in routes and "/team/invite" in routes and "/logout" in routes
    assert "/functions/00000000-0000-4000-8000-000000000001/delete" in routes and "/variables/1/reveal" in routes
    for path in routes:
        if path in PUBLIC_FORMS:
            continue
        answer = owner.post(path, {"name": "x", "role": "viewer", "email": "x@acme.test"}, csrf=False)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
        wrong = owner.post(path, {"_csrf": "0" * 64, "name": "x"}, csrf=False)
        assert wrong.status_code == 403, path
    assert owner.get("/keys").status_code == 200  # still signed in: nothing was changed


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", set()),
        ("member", {"mint"}),
        ("admin", {"mint", "create", "settings", "invite", "secret"}),
        ("owner", {"mint", "create", "settings", "invite", "secret", "threshold"}),
    ],
)
def test_dashboard_the_server_refuses_what_a_role_may_not_do(gateway: Gateway, role: str, allowed: set[str]) -> None:
    visitor = add_member(gateway, f"{role}@acme.test", role)
    attempts = {
        "mint": ("/keys/1/token", {"ttl": "60"}, 201),
        "create": ("/keys", {"name": f"by {role}", "spending_period": "monthly", "is_active": "on"}, 201),
        "settings": ("/keys/1/settings", {"name": "test key", "is_active": "on"}, 303),
        "invite": ("/team/invite", {"email": f"new-{role}@acme.test", "role": "viewer"}, 201),
        "secret": ("/credits/webhook-secret/rotate", {}, 200),
        "threshold": ("/credits/threshold", {"low_credits_threshold": "250"}, 303),
    }
    for name, (path, form, ok) in attempts.items():
        answer = visitor.post(path, form)
        expected = ok if name in allowed else 403
        assert answer.status_code == expected, (role, name, answer.status_code, answer.text[:300])
    gated_pages = {"/keys/new": "create", "/keys/1/settings": "settings", "/credits/webhook-secret": "secret"}
    for path, name in gated_pages.items():
        assert visitor.get(path).status_code == (200 if name in allowed else 403), (role, path)
    keys_page = visitor.get("/keys").text
    assert ("Create key" in keys_page) is ("create" in allowed)
    assert ("Test token" in keys_page) is ("mint" in allowed)
    assert ('action="/team/invite"' in visitor.get("/team").text) is ("invite" in allowed)
    # The JSON API says the same with the same session.
    api = visitor.request(
        "POST", "/api/keys/", json={"name": "via api"}, headers={"x-csrf-token": visitor.cookies["tw_csrf"]}
    )
    assert api.status_code == (201 if "create" in allowed else 403)


def test_dashboard_refreshes_an_expired_access_token_from_the_refresh_cookie(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    old_refresh = owner.cookies["tw_refresh"]
    # The access cookie lives as long as its token (Max-Age): past it the browser stops sending it.
    assert owner.last_cookies["tw_session"]["tw_session"]["max-age"] == str(gateway.settings.session_ttl_s)
    del owner.cookies["tw_session"]
    page = owner.get("/keys")
    assert page.status_code == 200
    assert "tw_session" in owner.cookies and owner.cookies["tw_refresh"] != old_refresh  # rotated on the page load
    assert owner.get("/credits").status_code == 200


def test_dashboard_setup_link_makes_the_first_owner_once(gateway: Gateway) -> None:
    async def make(session: Any) -> str:
        return await create_setup_link(session, gateway.account_id, gateway.clock.now(), actor="bootstrap")

    token: str = gateway.run(_with_session(gateway.settings, make))
    visitor = Visitor(gateway)
    assert visitor.get("/setup?token=twinv_unknown").status_code == 404
    form_token = visitor.form_token(f"/setup?token={token}")
    form = {"token": token, "email": "Founder@acme.test", "_form": form_token}
    short = visitor.post("/setup", {**form, "password": "short", "password_again": "short"})
    assert short.status_code == 400 and 'id="e-password"' in short.text
    done = visitor.post("/setup", {**form, "password": PASSWORD, "password_again": PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/keys"
    assert "owner" in visitor.get("/keys").text
    team = visitor.get("/team").text
    assert "founder@acme.test" in team
    again = Visitor(gateway)
    form_token = again.form_token("/login")
    reused = again.post(
        "/setup",
        {
            "token": token,
            "email": "other@acme.test",
            "password": PASSWORD,
            "password_again": PASSWORD,
            "_form": form_token,
        },
    )
    assert reused.status_code == 404


def test_dashboard_key_forms_show_the_services_messages_next_to_the_fields(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    bad_ip = owner.post("/keys", {"name": "k", "allowed_ips": "10.0.0.0/8\nnot-an-ip"}, headers={"HX-Request": "true"})
    assert bad_ip.status_code == 422
    assert 'id="e-allowed_ips"' in bad_ip.text and 'aria-invalid="true"' in bad_ip.text
    assert "not-an-ip" in bad_ip.text  # the form keeps what was typed
    bad_limit = owner.post("/keys/1/settings", {"name": "test key", "rpm_limit": "lots"})
    assert bad_limit.status_code == 422 and 'id="e-rpm_limit"' in bad_limit.text
    hours = owner.post("/keys/1/settings", {"name": "test key", "active_hours": "25:00-26:00"})
    assert hours.status_code == 422 and 'id="e-active_hours"' in hours.text
    past = owner.post("/keys/1/settings", {"name": "test key", "expires_at": "2001-01-01T10:00"})
    assert past.status_code == 422 and 'id="e-expires_at"' in past.text and "in the past" in past.text
    later = owner.post("/keys/1/settings", {"name": "test key", "is_active": "on", "expires_at": "2099-05-01T10:30"})
    assert later.status_code == 303
    assert 'value="2099-05-01T10:30"' in owner.get("/keys/1/settings").text
    created = owner.post("/keys", {"name": "fresh", "allowed_models": "a/b, c/d", "is_active": "on"})
    assert created.status_code == 201
    key = re.search(r'value="(prx-[0-9a-f]+)"', created.text)
    assert key, created.text[:500]
    listed = owner.request("GET", "/api/keys/").json()["keys"]
    assert [k["allowed_models"] for k in listed if k["name"] == "fresh"] == [["a/b", "c/d"]]


def test_dashboard_usage_charts_a_year_of_data(gateway: Gateway) -> None:
    """A year of records: the charts get one bar per day from one grouped query each."""
    owner = add_member(gateway, "owner@acme.test", "owner")
    today = gateway.clock.now().date()

    async def seed(session: Any) -> None:
        for day in range(365, -1, -1):
            for n in range(3):
                session.add(
                    UsageRecord(
                        request_id=f"year-{day}-{n}",
                        account_id=gateway.account_id,
                        key_id=1,
                        model=("fake/a", "fake/b", "fake/c")[n],
                        credits_micro=1_000_000 * (n + 1),
                        created_at=datetime.combine(today - timedelta(days=day), time(12, n), tzinfo=UTC),
                    )
                )
        await session.commit()

    gateway.run(_with_session(gateway.settings, seed))
    since = (today - timedelta(days=365)).isoformat()
    page = owner.get(f"/usage?since={since}")
    assert page.status_code == 200
    assert page.text.count('class="series-0"><title>') == 2 * 366  # both charts, every day
    assert "Older requests" in page.text  # the table pages on the server
    by_key = owner.get(f"/usage?since={since}&by=key&model=fake/b")
    assert by_key.status_code == 200 and "Credits per day by key" in by_key.text


def test_dashboard_team_keeps_the_last_owner_and_invites_with_a_role(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    members = owner.request("GET", "/api/members/").json()["members"]
    own_id = next(m["id"] for m in members if m["email"] == "owner@acme.test")
    assert owner.post(f"/team/members/{own_id}/remove").status_code == 409
    assert owner.post(f"/team/members/{own_id}/role", {"role": "admin"}).status_code == 409
    invited = owner.post("/team/invite", {"email": "new@acme.test", "role": "member"})
    link = re.search(r'value="(http://[^"]+/invite\?token=(twinv_[^"]+))"', invited.text)
    assert invited.status_code == 201 and link
    newcomer = Visitor(gateway)
    form_token = newcomer.form_token(f"/invite?token={link.group(2)}")
    joined = newcomer.post("/invite", {"token": link.group(2), "password": PASSWORD, "_form": form_token})
    assert joined.status_code == 303
    assert '<span class="badge" title="your role">member</span>' in newcomer.get("/keys").text


def test_dashboard_threshold_is_set_through_the_same_rule_as_the_api(gateway: Gateway) -> None:
    owner = add_member(gateway, "owner@acme.test", "owner")
    assert owner.post("/credits/threshold", {"low_credits_threshold": "-5"}).status_code == 422
    assert owner.post("/credits/threshold", {"low_credits_threshold": "250.5"}).status_code == 303
    assert owner.request("GET", "/api/credits/").json()["low_credits_threshold"] == "250.5"
    by_key = httpx.put(
        gateway.url + "/api/credits/threshold/",
        json={"low_credits_threshold": "1"},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert by_key.status_code == 403  # a key acts as an admin: billing is the owners'
    by_owner = owner.request(
        "PUT",
        "/api/credits/threshold/",
        json={"low_credits_threshold": "75"},
        headers={"x-csrf-token": owner.cookies["tw_csrf"]},
    )
    assert by_owner.status_code == 200 and by_owner.json() == {"low_credits_threshold": "75"}
