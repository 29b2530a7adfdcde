"""Dashboard identity through the real HTTP app: sign-in, cookies, CSRF, rotation, revocation, roles."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import httpx
import jwt
import pytest

from keys.sessions import REFRESH_GRACE_S
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

OWNER = ("owner@acme.test", "correct horse battery staple")
PASSWORD = "another long passphrase 42"


class Browser:
    """Keeps cookies the way a browser would for one site (httpx's jar drops Secure cookies over http)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.cookies: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            parsed = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                self.attributes[name] = {k: morsel[k] for k in ("path", "httponly", "secure", "samesite", "max-age")}
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    @property
    def csrf(self) -> str:
        return self.cookies.get("tw_csrf", "")

    def request(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        response = httpx.request(method, self.gateway.url + path, headers=headers, timeout=10, **kwargs)
        self._remember(response)
        return response

    def login(self, email: str, password: str, **extra: Any) -> httpx.Response:
        return self.request("POST", "/api/auth/login/", json={"email": email, "password": password, **extra})


def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, gateway.url + "/api/admin" + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs
    )


def add_owner(gateway: Gateway) -> None:
    response = admin(
        gateway, "POST", f"/accounts/{gateway.account_id}/members/", json={"email": OWNER[0], "password": OWNER[1]}
    )
    assert response.status_code == 201, response.text
    assert response.json()["role"] == "owner"


def join(inviter: Browser, email: str, role: str, password: str = PASSWORD) -> tuple[Browser, int]:
    """Invite ``email`` as ``role``; the invited person accepts with their own password and signs in."""
    invited = inviter.request("POST", "/api/invitations/", json={"email": email, "role": role})
    assert invited.status_code == 201, invited.text
    person = Browser(inviter.gateway)
    accepted = person.request(
        "POST", "/api/invitations/accept/", json={"token": invited.json()["token"], "password": password}
    )
    assert accepted.status_code == 201, accepted.text
    assert person.login(email, password).status_code == 200
    return person, int(accepted.json()["member"]["id"])


def signed_in_owner(gateway: Gateway) -> Browser:
    add_owner(gateway)
    browser = Browser(gateway)
    assert browser.login(*OWNER).status_code == 200
    return browser


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_login_sets_hardened_cookies_and_the_session_reaches_the_api(gateway: Gateway) -> None:
    add_owner(gateway)
    browser = Browser(gateway)
    response = browser.login(OWNER[0].upper(), OWNER[1])  # emails are case-insensitive
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == "owner" and body["account_id"] == gateway.account_id
    assert body["csrf_token"] == browser.csrf
    for name in ("tw_session", "tw_refresh"):
        attributes = browser.attributes[name]
        assert attributes["httponly"] and attributes["secure"] and attributes["samesite"].lower() == "strict"
    # Path / : the server-rendered dashboard reads them (gateway/api/session_cookies.py).
    assert browser.attributes["tw_session"]["path"] == browser.attributes["tw_refresh"]["path"] == "/"
    assert not browser.attributes["tw_csrf"]["httponly"]  # the page's script must read it
    claims = json.loads(base64.urlsafe_b64decode(browser.cookies["tw_session"].split(".")[1] + "=="))
    assert claims["acc"] == gateway.account_id and claims["exp"] - claims["iat"] == 900

    assert browser.request("GET", "/api/keys/").status_code == 200
    me = browser.request("GET", "/api/auth/me/").json()
    assert me["user"]["email"] == OWNER[0] and me["role"] == "owner"


def test_wrong_credentials_look_the_same_and_are_throttled(gateway: Gateway) -> None:
    add_owner(gateway)
    browser = Browser(gateway)
    wrong_password = browser.login(OWNER[0], "not the password at all")
    unknown_user = browser.login("nobody@acme.test", OWNER[1])
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json()["error"] == unknown_user.json()["error"]
    assert error_code(wrong_password) == "invalid_credentials"
    for _ in range(9):
        browser.login(OWNER[0], "still wrong")
    blocked = browser.login(*OWNER)  # the 11th attempt in the window, even with the right password
    assert blocked.status_code == 429 and error_code(blocked) == "too_many_attempts"


def test_login_demands_json_so_a_cross_site_form_cannot_sign_someone_in(gateway: Gateway) -> None:
    add_owner(gateway)
    response = httpx.post(gateway.url + "/api/auth/login/", data={"email": OWNER[0], "password": OWNER[1]}, timeout=10)
    assert response.status_code == 400 and "set-cookie" not in response.headers


def test_cookie_writes_need_the_csrf_token_of_their_own_session(gateway: Gateway) -> None:
    browser = signed_in_owner(gateway)
    missing = browser.request("POST", "/api/keys/", csrf=False, json={"name": "k"})
    assert missing.status_code == 403 and error_code(missing) == "csrf_failed"
    forged = browser.request("POST", "/api/keys/", csrf=False, json={"name": "k"}, headers={"X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    other = Browser(gateway)
    other.login(*OWNER)
    wrong_session = browser.request(
        "POST", "/api/keys/", csrf=False, json={"name": "k"}, headers={"X-CSRF-Token": other.csrf}
    )
    assert wrong_session.status_code == 403
    created = browser.request("POST", "/api/keys/", json={"name": "from the dashboard"})
    assert created.status_code == 201 and created.json()["key"].startswith("prx-")
    audit = browser.request("GET", "/api/audit/").json()["events"]
    owner_id = browser.request("GET", "/api/auth/me/").json()["user"]["id"]
    assert audit[0]["action"] == "key.create" and audit[0]["actor"] == f"user:{owner_id}"


def test_tampered_or_foreign_tokens_are_refused(gateway: Gateway) -> None:
    browser = signed_in_owner(gateway)
    claims = jwt.decode(browser.cookies["tw_session"], options={"verify_signature": False})
    for forged in (
        jwt.encode(claims, "a guessed secret that is long enough to pass", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]  # the unsigned forgery, on purpose
        browser.cookies["tw_session"][:-2] + "xx",
    ):
        response = httpx.get(gateway.url + "/api/keys/", headers={"Cookie": f"tw_session={forged}"}, timeout=10)
        assert response.status_code == 401 and error_code(response) == "session_expired"


class Clock:
    """The gateway's clock, moved by hand. It starts a minute behind the real time and is only
    moved forward by less than that: PyJWT checks ``iat`` and ``exp`` against the real time."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC) - timedelta(seconds=60)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@pytest.fixture
def clocked(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, Clock]]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    clock = Clock()
    state: Any = server.app.state.gateway  # the app the server runs
    state.now = clock
    try:
        yield gateway, clock
    finally:
        server.stop()


def test_refresh_rotates_and_a_replayed_refresh_token_ends_the_session(clocked: tuple[Gateway, Clock]) -> None:
    gateway, clock = clocked
    browser = signed_in_owner(gateway)
    first_refresh = browser.cookies["tw_refresh"]
    rotated = browser.request("POST", "/api/auth/refresh/")
    assert rotated.status_code == 200
    assert browser.cookies["tw_refresh"] != first_refresh
    assert browser.request("GET", "/api/keys/").status_code == 200

    # A thief replays the refresh token the browser already used, after the two-tab grace:
    # the whole session ends.
    clock.advance(REFRESH_GRACE_S + 1)
    thief = Browser(gateway)
    thief.cookies = {"tw_refresh": first_refresh, "tw_csrf": browser.csrf}
    replay = thief.request("POST", "/api/auth/refresh/")
    assert replay.status_code == 401 and error_code(replay) == "session_expired"
    ended = browser.request("GET", "/api/keys/")
    assert ended.status_code == 401 and error_code(ended) == "session_expired"
    assert browser.request("POST", "/api/auth/refresh/").status_code == 401


def test_refresh_two_tabs_at_once_keep_the_session_within_the_grace(clocked: tuple[Gateway, Clock]) -> None:
    gateway, clock = clocked
    first_tab = signed_in_owner(gateway)
    second_tab = Browser(gateway)  # the same browser: it sent the same cookies at the same moment
    second_tab.cookies = dict(first_tab.cookies)
    assert first_tab.request("POST", "/api/auth/refresh/").status_code == 200
    clock.advance(REFRESH_GRACE_S - 1)
    late = second_tab.request("POST", "/api/auth/refresh/")
    assert late.status_code == 200, late.text
    # Both tabs now hold the same refresh token, so whichever response the cookie jar kept works.
    assert second_tab.cookies["tw_refresh"] == first_tab.cookies["tw_refresh"]
    assert first_tab.request("GET", "/api/keys/").status_code == 200
    assert second_tab.request("GET", "/api/keys/").status_code == 200
    assert second_tab.request("POST", "/api/auth/refresh/").status_code == 200
    assert first_tab.request("GET", "/api/keys/").status_code == 200


def test_logout_revokes_on_the_server_not_just_in_the_browser(gateway: Gateway) -> None:
    browser = signed_in_owner(gateway)
    stolen_access = browser.cookies["tw_session"]
    assert browser.request("POST", "/api/auth/logout/").status_code == 204
    assert "tw_session" not in browser.cookies and "tw_refresh" not in browser.cookies
    replay = httpx.get(gateway.url + "/api/keys/", headers={"Cookie": f"tw_session={stolen_access}"}, timeout=10)
    assert replay.status_code == 401


def test_password_change_ends_other_sessions_and_checks_policy(gateway: Gateway) -> None:
    laptop = signed_in_owner(gateway)
    phone = Browser(gateway)
    phone.login(*OWNER)
    weak = laptop.request("POST", "/api/auth/password/", json={"current_password": OWNER[1], "new_password": "short"})
    assert weak.status_code == 400 and weak.json()["error"]["param"] == "password"
    wrong = laptop.request("POST", "/api/auth/password/", json={"current_password": "nope", "new_password": PASSWORD})
    assert wrong.status_code == 401
    changed = laptop.request(
        "POST", "/api/auth/password/", json={"current_password": OWNER[1], "new_password": PASSWORD}
    )
    assert changed.status_code == 204
    assert laptop.request("GET", "/api/keys/").status_code == 200
    assert phone.request("GET", "/api/keys/").status_code == 401
    assert Browser(gateway).login(*OWNER).status_code == 401
    assert Browser(gateway).login(OWNER[0], PASSWORD).status_code == 200


def test_roles_gate_every_action_on_the_server(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    people = {}
    for role in ("admin", "member", "viewer"):
        people[role], _member_id = join(owner, f"{role}@acme.test", role)
    key_id = gateway_key_id(owner)

    def status(browser: Browser, method: str, path: str, **kwargs: Any) -> int:
        return browser.request(method, path, **kwargs).status_code

    for role, browser in people.items():
        assert status(browser, "GET", "/api/keys/") == 200, role
        assert status(browser, "GET", "/api/members/") == 200, role
    assert status(people["viewer"], "POST", "/api/keys/", json={"name": "x"}) == 403
    assert status(people["member"], "POST", "/api/keys/", json={"name": "x"}) == 403
    assert status(people["admin"], "POST", "/api/keys/", json={"name": "x"}) == 201
    refused = people["viewer"].request("POST", "/api/keys/ephemeral/", json={"key_id": key_id})
    assert refused.status_code == 403 and error_code(refused) == "insufficient_role"
    assert status(people["member"], "POST", "/api/keys/ephemeral/", json={"key_id": key_id}) == 201
    assert status(people["member"], "PATCH", f"/api/keys/{key_id}/", json={"rpm_limit": 5}) == 403
    assert status(people["member"], "DELETE", f"/api/keys/{key_id}/") == 403
    assert status(people["member"], "GET", "/api/audit/") == 403
    assert status(people["viewer"], "GET", "/api/audit/") == 403
    assert status(people["admin"], "GET", "/api/audit/") == 200
    assert status(people["member"], "POST", "/api/members/", json={"email": "x@acme.test"}) == 403
    assert status(people["member"], "POST", "/api/invitations/", json={"email": "x@acme.test"}) == 403
    assert status(people["member"], "GET", "/api/invitations/") == 403


def gateway_key_id(browser: Browser) -> int:
    return int(browser.request("GET", "/api/keys/").json()["keys"][0]["id"])


def test_owner_rules_last_owner_and_removal_ends_sessions(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    members = {m["email"]: m for m in owner.request("GET", "/api/members/").json()["members"]}
    owner_member = members[OWNER[0]]["id"]
    demote = owner.request("PATCH", f"/api/members/{owner_member}/", json={"role": "admin"})
    assert demote.status_code == 409
    assert owner.request("DELETE", f"/api/members/{owner_member}/").status_code == 409

    admin_browser, admin_member_id = join(owner, "admin@acme.test", "admin")
    admin_added = {"id": admin_member_id}
    # An admin can neither create owners nor touch the owner.
    grant_owner = admin_browser.request("POST", "/api/members/", json={"email": "x@acme.test", "role": "owner"})
    assert grant_owner.status_code == 403
    assert admin_browser.request("DELETE", f"/api/members/{owner_member}/").status_code == 403
    assert (
        admin_browser.request("PATCH", f"/api/members/{admin_added['id']}/", json={"role": "owner"}).status_code == 403
    )
    duplicate = owner.request("POST", "/api/members/", json={"email": "admin@acme.test", "role": "viewer"})
    assert duplicate.status_code == 409
    bad_role = owner.request("POST", "/api/members/", json={"email": "y@acme.test", "role": "god"})
    assert bad_role.status_code == 400 and bad_role.json()["error"]["param"] == "role"
    bad_email = owner.request("POST", "/api/members/", json={"email": "not-an-email"})
    assert bad_email.status_code == 400 and bad_email.json()["error"]["param"] == "email"

    # Promote the admin to owner; now the first owner may step down.
    assert owner.request("PATCH", f"/api/members/{admin_added['id']}/", json={"role": "owner"}).status_code == 200
    assert owner.request("PATCH", f"/api/members/{owner_member}/", json={"role": "viewer"}).status_code == 200
    assert owner.request("GET", "/api/audit/").status_code == 403  # its role changed at once
    # The new owner removes the old one: that browser's session dies with the membership.
    assert admin_browser.request("DELETE", f"/api/members/{owner_member}/").status_code == 204
    assert owner.request("GET", "/api/keys/").status_code == 401
    actions = [e["action"] for e in admin_browser.request("GET", "/api/audit/").json()["events"]]
    assert actions[:4] == ["member.remove", "member.update", "member.update", "member.add"]


def test_suspended_account_locks_the_dashboard_too(gateway: Gateway) -> None:
    browser = signed_in_owner(gateway)
    admin(gateway, "PATCH", f"/accounts/{gateway.account_id}/", json={"status": "suspended"})
    refused = browser.request("GET", "/api/keys/")
    assert refused.status_code == 403 and error_code(refused) == "account_suspended"
    assert Browser(gateway).login(*OWNER).status_code == 403


def test_browser_tokens_and_no_credentials(gateway: Gateway) -> None:
    anonymous = httpx.get(gateway.url + "/api/members/", timeout=10)
    assert anonymous.status_code == 401 and error_code(anonymous) == "missing_api_key"
    by_key = httpx.get(gateway.url + "/api/members/", headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10)
    assert by_key.status_code == 200 and by_key.json() == {"members": []}


def test_access_token_expires_and_refresh_brings_it_back(gateway: Gateway) -> None:
    # PyJWT judges the token's exp by the real time, so the sign-in happens in the past: the
    # gateway's clock starts a session lifetime (and a minute) ago, then catches up with now.
    lifetime_s = gateway.settings.session_ttl_s + 60
    gateway.clock.set_now(datetime.now(UTC) - timedelta(seconds=lifetime_s))
    browser = signed_in_owner(gateway)
    gateway.clock.advance(lifetime_s)
    expired = browser.request("GET", "/api/keys/")
    assert expired.status_code == 401 and "refresh" in expired.json()["error"]["message"]
    assert browser.request("POST", "/api/auth/refresh/").status_code == 200
    assert browser.request("GET", "/api/keys/").status_code == 200
