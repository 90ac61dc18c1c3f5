"""The Alembic migrations, shipped as a package so an installed (non-editable) retain can
create and upgrade its database: app.db.migrate finds them with importlib.resources.
"""
