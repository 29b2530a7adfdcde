"""proxy functions: projects, environments, variables, functions, invocations

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name=op.f(f"fk_{table}_account_id_accounts"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIGINT_ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("projects"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_projects_account_id_name")),
    )
    op.create_index(op.f("ix_projects_account_id"), "projects", ["account_id"], unique=False)
    op.create_table(
        "environments",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIGINT_ID, nullable=False),
        sa.Column("project_id", BIGINT_ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("environments"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_environments_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_environments_project_id_name")),
    )
    op.create_index(op.f("ix_environments_account_id"), "environments", ["account_id"], unique=False)
    op.create_index(op.f("ix_environments_project_id"), "environments", ["project_id"], unique=False)
    op.create_table(
        "variables",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", BIGINT_ID, nullable=False),
        sa.Column("environment_id", BIGINT_ID, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value_ciphertext", sa.Text(), nullable=False),
        sa.Column("is_secret", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("variables"),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_variables_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variables")),
        sa.UniqueConstraint("environment_id", "key", name=op.f("uq_variables_environment_id_key")),
    )
    op.create_index(op.f("ix_variables_account_id"), "variables", ["account_id"], unique=False)
    op.create_index(op.f("ix_variables_environment_id"), "variables", ["environment_id"], unique=False)
    op.create_table(
        "proxy_functions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", BIGINT_ID, nullable=False),
        sa.Column("project_id", BIGINT_ID, nullable=False),
        sa.Column("environment_id", BIGINT_ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=50), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("target_url", sa.String(length=2000), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("secret_mappings", sa.JSON(), nullable=False),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("pass_through_body", sa.Boolean(), nullable=False),
        sa.Column("body_template", sa.JSON(), nullable=True),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("forward_path", sa.Boolean(), nullable=False),
        sa.Column("forward_query", sa.Boolean(), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("token_ciphertext", sa.Text(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("proxy_functions"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_proxy_functions_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_proxy_functions_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_functions")),
        sa.UniqueConstraint("environment_id", "slug", name=op.f("uq_proxy_functions_environment_id_slug")),
    )
    op.create_index(op.f("ix_proxy_functions_project_id"), "proxy_functions", ["project_id"], unique=False)
    op.create_index(op.f("ix_proxy_functions_environment_id"), "proxy_functions", ["environment_id"], unique=False)
    op.create_index("ix_proxy_functions_account_created", "proxy_functions", ["account_id", "created_at"])
    op.create_table(
        "function_invocations",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", BIGINT_ID, nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("environment_id", sa.BigInteger(), nullable=False),
        sa.Column("function_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(length=32), nullable=False),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("credits_micro", sa.BigInteger(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("function_invocations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_function_invocations")),
        sa.UniqueConstraint("request_id", name=op.f("uq_function_invocations_request_id")),
    )
    op.create_index("ix_function_invocations_account_time", "function_invocations", ["account_id", "requested_at"])
    op.create_index("ix_function_invocations_function_time", "function_invocations", ["function_id", "requested_at"])


def downgrade() -> None:
    op.drop_table("function_invocations")
    op.drop_table("proxy_functions")
    op.drop_table("variables")
    op.drop_table("environments")
    op.drop_table("projects")
