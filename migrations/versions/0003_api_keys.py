"""api_keys: bearer API keys with a scope (predict | train | admin), stored as SHA-256 of the secret.

Revision ID: 0003_api_keys
Revises: 0002_model_family
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_api_keys"
down_revision = "0002_model_family"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('predict', 'train', 'admin')", name=op.f("ck_api_keys_api_key_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_api_keys_key_sha256")),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
