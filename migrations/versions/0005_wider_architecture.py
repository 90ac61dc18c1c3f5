"""wider models.architecture: an import's source (``timm:<name>``, a plugin's name) may be up to 200 characters.

Revision ID: 0005_wider_architecture
Revises: 0004_feedback_loop
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_wider_architecture"
down_revision = "0004_feedback_loop"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:  # SQLite rebuilds the table; Postgres alters the column
        batch.alter_column("architecture", existing_type=sa.String(length=32), type_=sa.String(length=200))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column("architecture", existing_type=sa.String(length=200), type_=sa.String(length=32))
