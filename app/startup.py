"""What must happen once before a service serves: the embedded database migrated, an admin key in place.

The app's lifespan calls `prepare_service` on a single-process start. `retain serve --workers N` calls
it once in the supervisor before uvicorn starts the replicas, and turns the lifespan's call off in
them (``prepare_on_start``), so N processes never race to migrate a SQLite file or to create the
first admin key.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.auth.keys import bootstrap_admin_key
from app.db.migrate import upgrade
from app.settings import Settings

log = logging.getLogger("retain")


def prepare_service(settings: Settings, engine: Engine) -> None:
    """Migrate the embedded SQLite database to head (server databases are migrated by the deployment:
    `alembic upgrade head`, compose's migrate) and open access (`open_access`)."""
    if settings.is_sqlite:
        # `uvicorn app.main:app` on a fresh checkout must serve: its own SQLite file is brought to the
        # migration head (a no-op when it already is).
        upgrade(settings.database_url)
    open_access(settings, engine)


def open_access(settings: Settings, engine: Engine) -> None:
    """Auth on: make sure an admin key exists (the first start creates one, see app/auth/keys.py).
    Auth off: say loudly that anyone who reaches the port may do anything."""
    if settings.auth == "off":
        print(
            "retain: WARNING: RETAIN_AUTH=off: no API key is checked; anyone who can reach this port can "
            "teach, promote, roll back and delete. Use it for a throwaway local run only.",
            file=sys.stderr,
            flush=True,
        )
        return
    try:
        bootstrap_admin_key(engine, admin_key=settings.admin_key, key_file=Path(settings.admin_key_file))
    except SQLAlchemyError as error:  # not migrated yet: /readyz says so; keys are bootstrapped on a later start
        log.warning("no admin key bootstrapped: the database is not ready (%s)", error.__class__.__name__)
