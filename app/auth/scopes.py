"""The three scopes, in order: each includes everything the ones before it allow."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    PREDICT = "predict"  # inference and every read
    TRAIN = "train"  # + teach, cancel
    ADMIN = "admin"  # + promote, rollback, delete, keys

    @property
    def rank(self) -> int:
        return RANKS[self]

    def covers(self, needed: Scope) -> bool:
        return self.rank >= needed.rank


RANKS = {scope: rank for rank, scope in enumerate(Scope)}
"""Each scope's place in the order, counted once: every authenticated request compares two."""
