"""Bring a database to a migration revision with Alembic: the only way the schema is created.

Used by `retain serve`, the test fixtures and deployments (`alembic upgrade head` does the same
from the repository root). The migrations and their Alembic configuration are found in the
installed `migrations` package (importlib.resources), not beside a checkout, so a
non-editable install (the wheel, the image) migrates too. The URL is passed explicitly so
callers never depend on the process environment.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def alembic_config(database_url: str | None = None) -> Config:
    """The packaged migrations/alembic.ini; without a URL, env.py falls back to DATABASE_URL."""
    # A regular install unpacks the package, so the resource is a file on disk; Alembic needs
    # one (it executes env.py and the revision files by path).
    config = Config(str(Path(str(resources.files("migrations") / "alembic.ini"))))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def migration_heads() -> set[str]:
    """The head revision(s) of the installed migrations: where a migrated database stands (/readyz)."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
