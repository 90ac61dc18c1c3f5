"""Alembic environment: which database to migrate, and the ORM metadata autogenerate compares with.

The URL comes from the caller (app.db.migrate passes it in ``config.attributes``), else from
``sqlalchemy.url`` in alembic.ini, else from the service settings (DATABASE_URL), so
`alembic upgrade head` run by hand migrates the database the service would use.
render_as_batch lets the same migrations alter tables on SQLite (by copying them).
"""

from pathlib import Path

from alembic import context
from sqlalchemy import create_engine

from app.db.tables import Base
from app.settings import Settings, sqlalchemy_url

config = context.config
url = sqlalchemy_url(
    config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") or Settings().database_url
)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
