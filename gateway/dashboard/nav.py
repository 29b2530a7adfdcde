"""The dashboard's navigation: one list of entries, in order, each shown to roles that may see it.

This is the extension point for pages built elsewhere (the proxy-function pages): a module that
adds pages appends its :class:`NavItem` to :data:`NAV` (and its controllers to
``gateway.dashboard.PAGES``); nothing here names pages that do not exist yet, so no entry leads to
a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass

from keys.roles import Permission

__all__ = ["BILLING_PATH", "NAV", "NavItem"]

# The Billing page: linked from the low-credit banner and the low_credits webhook (billing_url).
BILLING_PATH = "/billing"


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # what a page passes as ``active`` to mark its entry current
    label: str
    href: str
    permission: Permission = Permission.VIEW  # shown only to roles that have it


NAV: list[NavItem] = [
    NavItem("keys", "Keys", "/keys"),
    NavItem("usage", "Usage", "/usage"),
    NavItem("credits", "Credits", "/credits"),
    NavItem("billing", "Billing", BILLING_PATH),
    NavItem("models", "Models", "/models"),
    NavItem("projects", "Proxy functions", "/projects"),
    NavItem("team", "Team", "/team"),
    NavItem("audit", "Audit log", "/audit", Permission.VIEW_AUDIT),
]
