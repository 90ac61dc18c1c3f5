"""feedback loop: per-model feedback policies, the prediction log (logged_samples) and trigger decisions.

Revision ID: 0004_feedback_loop
Revises: 0003_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_feedback_loop"
down_revision = "0003_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_policies",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_feedback_policies_model_id_models")),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_feedback_policies")),
    )
    op.create_table(
        "logged_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("inputs", sa.LargeBinary(), nullable=False),
        sa.Column("predicted", sa.JSON(), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("label", sa.JSON(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_logged_samples_model_id_models")),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name=op.f("fk_logged_samples_model_version_id_model_versions")
        ),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_logged_samples_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logged_samples")),
        sa.UniqueConstraint("prediction_id", name=op.f("uq_logged_samples_prediction_id")),
    )
    op.create_index("ix_logged_samples_model_id_id", "logged_samples", ["model_id", "id"])
    op.create_index("ix_logged_samples_model_buffer", "logged_samples", ["model_id", "task_id", "labelled_at"])
    op.create_table(
        "trigger_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("fired", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_trigger_decisions_model_id_models")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_trigger_decisions_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_decisions")),
    )
    op.create_index("ix_trigger_decisions_model_id_id", "trigger_decisions", ["model_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_trigger_decisions_model_id_id", table_name="trigger_decisions")
    op.drop_table("trigger_decisions")
    op.drop_index("ix_logged_samples_model_buffer", table_name="logged_samples")
    op.drop_index("ix_logged_samples_model_id_id", table_name="logged_samples")
    op.drop_table("logged_samples")
    op.drop_table("feedback_policies")
