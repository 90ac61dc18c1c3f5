"""Database: engine, sessions and the ORM tables."""
