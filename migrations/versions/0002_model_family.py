"""models.strategy -> models.family: the column holds the model family (ewc | ccll), not a strategy.

A task's ``strategy`` (ewc | finetune | ccll: how one update trains) keeps its name; the model's
family says which strategies can update it.

Revision ID: 0002_model_family
Revises: 0001
"""

from alembic import op

revision = "0002_model_family"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column("strategy", new_column_name="family")


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column("family", new_column_name="strategy")
