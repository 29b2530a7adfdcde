"""Joining an account by invitation, and the cross-tenant takeover it closes.

Users are shared by every account. When an account could create a user with a password of its
choosing, an admin of account X could plant ``alice@victim.example`` with their own password,
remove her, and sign in to account Y as her once Y added that email."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_fixtures import Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.test_dashboard_sessions import PASSWORD, Browser, admin, join, signed_in_owner

ALICE = "alice@victim.example"
ATTACKER_PASSWORD = "the attacker chose this one 99"
ALICE_PASSWORD = "alice's very own passphrase 7"


def second_account(gateway: Gateway) -> tuple[int, Browser]:
    """Account Y, with its own owner signed in."""
    account = admin(gateway, "POST", "/accounts/", json={"name": "victim co"}).json()
    owner = ("owner@victim.example", "owner of the victim account 1")
    added = admin(
        gateway, "POST", f"/accounts/{account['id']}/members/", json={"email": owner[0], "password": owner[1]}
    )
    assert added.status_code == 201, added.text
    browser = Browser(gateway)
    assert browser.login(*owner).status_code == 200
    return int(account["id"]), browser


def test_invitations_close_the_cross_tenant_takeover(gateway: Gateway) -> None:
    attacker = signed_in_owner(gateway)  # an owner (or admin) of account X
    victim_account, victim_owner = second_account(gateway)

    # The old attack: create alice with a password of the attacker's choosing. Refused outright.
    planted = attacker.request(
        "POST", "/api/members/", json={"email": ALICE, "role": "viewer", "password": ATTACKER_PASSWORD}
    )
    assert planted.status_code == 400 and planted.json()["error"]["param"] == "password"
    # What an inviter can still do is redeem their own invitation (they hold the link), which
    # creates alice with the attacker's password, in account X only; then remove her again.
    _alice_in_x, member_id = join(attacker, ALICE, "viewer", password=ATTACKER_PASSWORD)
    assert attacker.request("DELETE", f"/api/members/{member_id}/").status_code == 204

    # Account Y's owner adds alice as admin: that is an invitation only alice's link redeems.
    invited = victim_owner.request("POST", "/api/members/", json={"email": ALICE, "role": "admin"})
    assert invited.status_code == 201, invited.text
    assert [m["email"] for m in victim_owner.request("GET", "/api/members/").json()["members"]] == [
        "owner@victim.example"
    ]
    # The attacker, who knows the password, still cannot get into Y.
    refused = Browser(gateway).login(ALICE, ATTACKER_PASSWORD, account_id=victim_account)
    assert refused.status_code == 401
    # And the link, if it fell into the wrong hands, sets no password: alice exists already,
    # so only she (signed in, or with her current password) can redeem it.
    hijack = Browser(gateway).request(
        "POST", "/api/invitations/accept/", json={"token": invited.json()["token"], "password": "a new password 12345"}
    )
    assert hijack.status_code == 401
    assert Browser(gateway).login(ALICE, "a new password 12345").status_code == 401


def test_invitation_answer_does_not_reveal_whether_the_email_exists(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    _victim_account, victim_owner = second_account(gateway)  # owner@victim.example exists
    known = owner.request("POST", "/api/invitations/", json={"email": "owner@victim.example"})
    unknown = owner.request("POST", "/api/invitations/", json={"email": "nobody@nowhere.example"})
    assert known.status_code == unknown.status_code == 201
    assert known.json().keys() == unknown.json().keys()
    assert {k: v for k, v in known.json().items() if k not in ("id", "email", "token", "created_at", "expires_at")} == {
        k: v for k, v in unknown.json().items() if k not in ("id", "email", "token", "created_at", "expires_at")
    }
    # The list never shows a token again.
    listed = owner.request("GET", "/api/invitations/").json()["invitations"]
    assert sorted(i["email"] for i in listed) == ["nobody@nowhere.example", "owner@victim.example"]
    assert all("token" not in i for i in listed)
    assert victim_owner.request("GET", "/api/invitations/").json() == {"invitations": []}


def test_invitation_is_one_time_revocable_and_role_checked(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    newcomer, _member_id = join(owner, "new@acme.test", "member")
    first = owner.request("POST", "/api/invitations/", json={"email": "late@acme.test"}).json()
    second = owner.request("POST", "/api/invitations/", json={"email": "revoked@acme.test"}).json()
    accept = {"token": first["token"], "password": PASSWORD}
    assert Browser(gateway).request("POST", "/api/invitations/accept/", json=accept).status_code == 201
    again = Browser(gateway).request("POST", "/api/invitations/accept/", json=accept)
    assert again.status_code == 404 and again.json()["error"]["code"] == "invitation_invalid"
    assert owner.request("DELETE", f"/api/invitations/{second['id']}/").status_code == 204
    revoked = Browser(gateway).request(
        "POST", "/api/invitations/accept/", json={"token": second["token"], "password": PASSWORD}
    )
    assert revoked.status_code == 404
    weak = owner.request("POST", "/api/invitations/", json={"email": "weak@acme.test"}).json()
    short = Browser(gateway).request("POST", "/api/invitations/accept/", json={"token": weak["token"], "password": "x"})
    assert short.status_code == 400 and short.json()["error"]["param"] == "password"
    form = httpx.post(gateway.url + "/api/invitations/accept/", data={"token": weak["token"], "password": PASSWORD})
    assert form.status_code == 400  # JSON only: a cross-site form cannot accept for someone

    admin_browser, _admin_id = join(owner, "admin@acme.test", "admin")
    assert (
        admin_browser.request("POST", "/api/invitations/", json={"email": "o@acme.test", "role": "owner"}).status_code
        == 403
    )
    owner_invite = owner.request("POST", "/api/invitations/", json={"email": "o@acme.test", "role": "owner"}).json()
    assert admin_browser.request("DELETE", f"/api/invitations/{owner_invite['id']}/").status_code == 403
    assert newcomer.request("GET", "/api/invitations/").status_code == 403
    actions = [e["action"] for e in owner.request("GET", "/api/audit/").json()["events"]]
    assert {"invitation.create", "invitation.revoke", "member.add"} <= set(actions)


def test_existing_user_accepts_as_themselves(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    victim_account, victim_owner = second_account(gateway)
    # owner@victim.example already has a sign-in (for Y); X invites that same person.
    invited = owner.request("POST", "/api/invitations/", json={"email": "owner@victim.example", "role": "viewer"})
    token = invited.json()["token"]
    stranger = Browser(gateway).request("POST", "/api/invitations/accept/", json={"token": token})
    assert stranger.status_code == 401 and stranger.json()["error"]["code"] == "sign_in_required"
    someone_else = owner.request("POST", "/api/invitations/accept/", json={"token": token})  # signed in as X's owner
    assert someone_else.status_code == 401
    accepted = victim_owner.request("POST", "/api/invitations/accept/", json={"token": token})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["account_id"] == gateway.account_id and accepted.json()["role"] == "viewer"
    # Their password did not change, and they now reach both accounts.
    for account_id in (gateway.account_id, victim_account):
        login = Browser(gateway).login("owner@victim.example", "owner of the victim account 1", account_id=account_id)
        assert login.status_code == 200, account_id


def test_existing_user_without_a_session_proves_it_with_their_own_password(gateway: Gateway) -> None:
    owner = signed_in_owner(gateway)
    second_account(gateway)
    token = owner.request("POST", "/api/invitations/", json={"email": "owner@victim.example"}).json()["token"]
    wrong = Browser(gateway).request("POST", "/api/invitations/accept/", json={"token": token, "password": PASSWORD})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
    right = Browser(gateway).request(
        "POST", "/api/invitations/accept/", json={"token": token, "password": "owner of the victim account 1"}
    )
    assert right.status_code == 201, right.text


def test_operator_member_add_never_overwrites_a_password(gateway: Gateway) -> None:
    second_account(gateway)
    overwrite = admin(
        gateway,
        "POST",
        f"/accounts/{gateway.account_id}/members/",
        json={"email": "owner@victim.example", "password": ATTACKER_PASSWORD},
    )
    assert overwrite.status_code == 400 and overwrite.json()["error"]["param"] == "password"
    attach = admin(gateway, "POST", f"/accounts/{gateway.account_id}/members/", json={"email": "owner@victim.example"})
    assert attach.status_code == 201
    assert Browser(gateway).login("owner@victim.example", ATTACKER_PASSWORD).status_code == 401


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def clocked(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, Clock]]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai), fake_openai)
    clock = Clock()
    state: Any = server.app.state.gateway
    state.now = clock
    try:
        yield gateway, clock
    finally:
        server.stop()


def test_invitation_expires_after_seven_days(clocked: tuple[Gateway, Clock]) -> None:
    gateway, clock = clocked
    owner_key = {"Authorization": f"Bearer {gateway.key}"}  # a prx- key: no session clock involved
    invited = httpx.post(gateway.url + "/api/invitations/", json={"email": "slow@acme.test"}, headers=owner_key)
    assert invited.status_code == 201, invited.text
    clock.moment += timedelta(days=7, seconds=1)
    late = httpx.post(
        gateway.url + "/api/invitations/accept/", json={"token": invited.json()["token"], "password": PASSWORD}
    )
    assert late.status_code == 404
    assert httpx.get(gateway.url + "/api/invitations/", headers=owner_key).json() == {"invitations": []}
