"""The Alembic migrations (migrations/): the only way the schema is created, so they must build
exactly the ORM's schema, and go down and up again cleanly, on SQLite and Postgres."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.db.migrate import downgrade, upgrade
from app.db.tables import Base

TABLES = {
    "models",
    "datasets",
    "tasks",
    "jobs",
    "model_versions",
    "accuracy",
    "alias_changes",
    "api_keys",
    "feedback_policies",
    "logged_samples",
    "trigger_decisions",
}


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_head_is_the_orm_schema(database_url):
    assert tables_of(database_url) == TABLES
    assert differences(database_url) == []


def test_downgrade_to_base_and_upgrade_again(database_url):
    from app.db.session import engine_for

    engine_for(database_url).dispose()  # no pooled connection may hold the tables
    downgrade(database_url, "base")
    assert tables_of(database_url) == set()
    upgrade(database_url, "head")
    assert tables_of(database_url) == TABLES
    assert differences(database_url) == []
