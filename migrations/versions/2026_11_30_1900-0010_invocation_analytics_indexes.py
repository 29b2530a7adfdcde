"""invocation analytics: indexes for a project's and an environment's calls over time

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_function_invocations_project_time", "function_invocations", ["project_id", "requested_at"])
    op.create_index(
        "ix_function_invocations_environment_time", "function_invocations", ["environment_id", "requested_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_function_invocations_environment_time", table_name="function_invocations")
    op.drop_index("ix_function_invocations_project_time", table_name="function_invocations")
