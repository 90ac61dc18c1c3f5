"""The revisions. A package only so that setuptools ships it; Alembic skips this file."""
