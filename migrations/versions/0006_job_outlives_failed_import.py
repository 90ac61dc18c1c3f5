"""a failed import leaves only its job: jobs.task_id and jobs.model_id may be empty, jobs.model_name keeps the name.

A failed or cancelled import removes its model, task and dataset rows (app/jobs/failed_import.py), so
that the name can be imported again; the job stays, with its reason, detached from the rows it named.

Revision ID: 0006_job_outlives_failed_import
Revises: 0005_wider_architecture
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_outlives_failed_import"
down_revision = "0005_wider_architecture"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite rebuilds the table; Postgres alters the columns
        batch.alter_column("task_id", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("model_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("model_name", sa.String(length=100), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE task_id IS NULL OR model_id IS NULL")  # records of failed imports
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_name")
        batch.alter_column("model_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("task_id", existing_type=sa.Integer(), nullable=False)
