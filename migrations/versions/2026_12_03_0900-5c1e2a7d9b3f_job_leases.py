"""job leases: owner, lease, attempts, the spec to run a job again, and the store id

Revision ID: 5c1e2a7d9b3f
Revises: 0947acfb5492
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5c1e2a7d9b3f"
down_revision: str | None = "0947acfb5492"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("retryable", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("spec", JSON, nullable=True))
        batch_op.add_column(sa.Column("input_path", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("input_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_owner"), ["owner"], unique=False)
    op.create_table(
        "lloyd_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_lloyd_meta")),
    )


def downgrade() -> None:
    op.drop_table("lloyd_meta")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_owner"))
        for column in (
            "input_sha256",
            "input_path",
            "spec",
            "cancel_requested",
            "retryable",
            "attempts",
            "lease_expires_at",
            "owner",
        ):
            batch_op.drop_column(column)
