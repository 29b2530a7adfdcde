"""Password hashing and policy, and the role table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import passwords
from keys.errors import IdentityInvalid, RoleForbidden
from keys.members import normalise_email
from keys.models import Role
from keys.passwords import check_password_policy, hash_password, needs_rehash, verify_password
from keys.roles import Permission, allows, may_assign, require

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_cost() -> Iterator[None]:
    """The production work factor for one test (tests/conftest.py lowers it for the suite)."""
    lowered = passwords._LOG2_N
    passwords.set_test_work_factor(passwords.PRODUCTION_LOG2_N)
    try:
        yield
    finally:
        passwords.set_test_work_factor(lowered)


def test_password_production_cost_stays_strong_outside_the_tests() -> None:
    """A process that never ran the test suite's conftest (as ``tollway serve``) hashes at the
    production cost, and that cost stays memory-hard (64 MiB); no product module lowers it."""
    assert passwords.PRODUCTION_LOG2_N >= 16
    program = (
        "from keys.passwords import hash_password, needs_rehash\n"
        "stored = hash_password('correct horse battery staple')\n"
        "print(stored, needs_rehash(stored), needs_rehash('scrypt$10$8$1$c2FsdA$aGFzaA'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out[0].startswith(f"scrypt${passwords.PRODUCTION_LOG2_N}$8$1$")
    assert out[1:] == ["False", "True"]
    callers = [
        str(path.relative_to(REPO))
        for package in ("gateway", "keys", "billing", "functions", "providers")
        for path in (REPO / package).rglob("*.py")
        if "set_test_work_factor(" in path.read_text(encoding="utf-8")
    ]
    assert callers == ["keys/passwords.py"]  # its own definition; only tests/ call it


def test_password_test_work_factor_is_bounded() -> None:
    for wrong in (0, passwords.PRODUCTION_LOG2_N + 1):
        with pytest.raises(ValueError):
            passwords.set_test_work_factor(wrong)


@pytest.mark.usefixtures("production_cost")
def test_password_hash_round_trip_and_salting() -> None:
    first = hash_password("correct horse battery staple")
    second = hash_password("correct horse battery staple")
    assert first != second  # salted
    assert first.startswith("scrypt$16$8$1$") and not needs_rehash(first)
    assert verify_password("correct horse battery staple", first)
    assert not verify_password("correct horse battery stapler", first)


@pytest.mark.parametrize("stored", ["", "plain", "bcrypt$whatever", "scrypt$16$8$1$!!$!!", "scrypt$x$8$1$a$b"])
def test_foreign_or_broken_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything at all", stored)


@pytest.mark.usefixtures("production_cost")
def test_weaker_parameters_are_upgraded_on_login() -> None:
    assert needs_rehash("scrypt$14$8$1$c2FsdA$aGFzaA")


@pytest.mark.parametrize("password", ["short", "a" * 20, "abababababababab", "x" * 1025])
def test_password_policy_refuses(password: str) -> None:
    with pytest.raises(IdentityInvalid) as caught:
        check_password_policy(password)
    assert caught.value.param == "password"


def test_password_policy_accepts_a_passphrase() -> None:
    check_password_policy("correct horse battery staple")


@pytest.mark.parametrize(("raw", "clean"), [(" Ops@Acme.Test ", "ops@acme.test"), ("a.b+c@x.io", "a.b+c@x.io")])
def test_emails_are_normalised(raw: str, clean: str) -> None:
    assert normalise_email(raw) == clean


@pytest.mark.parametrize("raw", ["", "no-at-sign", "two@@x.io", "spa ce@x.io", "a@nodot", "x" * 65 + "@x.io"])
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(IdentityInvalid):
        normalise_email(raw)


def test_role_table() -> None:
    assert all(allows(Role.OWNER, p) for p in Permission)
    assert not allows(Role.ADMIN, Permission.BILLING) and allows(Role.ADMIN, Permission.MANAGE_MEMBERS)
    assert allows(Role.MEMBER, Permission.MINT_TOKENS) and not allows(Role.MEMBER, Permission.MANAGE_KEYS)
    assert not allows(Role.MEMBER, Permission.VIEW_AUDIT)
    assert [p for p in Permission if allows(Role.VIEWER, p)] == [Permission.VIEW]
    with pytest.raises(RoleForbidden, match="viewer"):
        require(Role.VIEWER, Permission.MANAGE_KEYS)


@pytest.mark.parametrize(
    ("actor", "current", "new", "allowed"),
    [
        (Role.OWNER, Role.OWNER, Role.ADMIN, True),
        (Role.OWNER, None, Role.OWNER, True),
        (Role.ADMIN, None, Role.MEMBER, True),
        (Role.ADMIN, Role.MEMBER, Role.ADMIN, True),
        (Role.ADMIN, None, Role.OWNER, False),
        (Role.ADMIN, Role.OWNER, None, False),
        (Role.ADMIN, Role.ADMIN, Role.OWNER, False),
        (Role.MEMBER, None, Role.VIEWER, False),
        (Role.VIEWER, Role.VIEWER, None, False),
    ],
)
def test_who_may_assign_roles(actor: Role, current: Role | None, new: Role | None, allowed: bool) -> None:
    assert may_assign(actor, current, new) is allowed
