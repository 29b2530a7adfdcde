"""hardening billing: parked settlements, usage anomalies, per-account idempotency keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "parked_settlements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("cost_micro", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_settlements")),
        sa.UniqueConstraint("request_id", name=op.f("uq_parked_settlements_request_id")),
    )
    with op.batch_alter_table("parked_settlements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_parked_settlements_account_id"), ["account_id"], unique=False)
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anomaly", sa.String(length=200), server_default="", nullable=False))
    # Idempotency keys were global: the same key on a second account returned the first
    # account's grant. They are now the account's own (debits stay unique: one per request id).
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_constraint("uq_credit_ledger_kind_request_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_credit_ledger_account_id_kind_request_id"), ["account_id", "kind", "request_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_credit_ledger_account_id_kind_request_id"), type_="unique")
        batch_op.create_unique_constraint("uq_credit_ledger_kind_request_id", ["kind", "request_id"])
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("anomaly")
    with op.batch_alter_table("parked_settlements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parked_settlements_account_id"))
    op.drop_table("parked_settlements")
