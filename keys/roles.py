"""Who may do what: the role table, enforced by the server on every management call.

It follows docs/roles.md (owners and admins manage; members use; viewers look), mapped onto
Tollway's resources:

    capability                          owner  admin  member  viewer
    view keys, credits, usage, members    ✓      ✓      ✓       ✓
    mint bt- browser tokens               ✓      ✓      ✓       –
    create / edit / delete keys           ✓      ✓      –       –
    revoke a key's browser tokens         ✓      ✓      –       –
    view the audit trail                  ✓      ✓      –       –
    view projects, environments, variables (masked), proxy functions;
      copy a function's URL and token, test it, download its code
                                          ✓      ✓      ✓       ✓
    create / edit / delete projects, environments, variables and
      functions; enable, disable, regenerate tokens   ✓   ✓   –   –
    reveal a secret variable's value (audited)        ✓   ✓   –   –
    invite / change / remove members      ✓      ✓      –       –    (only owners touch owners)
    billing                               ✓      –      –       –

A ``prx-`` key calling the management API acts with the admin role for its account: keys are
machine credentials that already hold the account's full API access. A key with any
restriction acts as a member (view, mint browser tokens for itself only), so a narrowed key
cannot create or mint itself something wider.
"""

from __future__ import annotations

import enum

from keys.errors import RoleForbidden
from keys.models import Role


class Permission(enum.StrEnum):
    VIEW = "view"
    MINT_TOKENS = "mint_tokens"
    MANAGE_KEYS = "manage_keys"
    VIEW_AUDIT = "view_audit"
    MANAGE_MEMBERS = "manage_members"
    MANAGE_PROJECTS = "manage_projects"
    REVEAL_SECRETS = "reveal_secrets"
    BILLING = "billing"


_MANAGERS = frozenset({Role.OWNER, Role.ADMIN})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.ADMIN: frozenset(Permission) - {Permission.BILLING},
    Role.MEMBER: frozenset({Permission.VIEW, Permission.MINT_TOKENS}),
    Role.VIEWER: frozenset({Permission.VIEW}),
}

KEY_ROLE = Role.ADMIN
RESTRICTED_KEY_ROLE = Role.MEMBER


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def require(role: Role, permission: Permission) -> None:
    if not allows(role, permission):
        raise RoleForbidden(f"your role ({role.value}) does not allow this ({permission.value.replace('_', ' ')})")


def may_assign(actor: Role, current: Role | None, new: Role | None) -> bool:
    """Whether ``actor`` may move a membership from ``current`` to ``new`` (None = absent)."""
    if actor not in _MANAGERS:
        return False
    if actor is Role.OWNER:
        return True
    return Role.OWNER not in (current, new)
