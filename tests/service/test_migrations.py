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


def test_a_source_name_longer_than_32_characters_is_stored(database_url):
    """0005_wider_architecture: models.architecture holds an import's source such as timm:<long name>."""
    from sqlalchemy import text

    name = "timm:" + "vit_base_patch16_clip_quickgelu_224.openai_ft_in12k_in1k" * 2
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO models (name, architecture, family, input_shape, options, created_at) "
                    "VALUES ('long', :architecture, 'ewc', '[3, 224, 224]', '{}', CURRENT_TIMESTAMP)"
                ),
                {"architecture": name},
            )
            stored = connection.execute(text("SELECT architecture FROM models WHERE name = 'long'")).scalar()
    finally:
        engine.dispose()
    assert stored == name
