"""API keys as data: create (the secret shown once), list, revoke, look up, and the first admin key.

Only ``sha256(secret)`` is stored. A secret is 32 random bytes (256 bits), so the hash cannot
be reversed by guessing, and one SHA-256 per request costs microseconds — a slow password hash
(bcrypt, argon2) would protect low-entropy passwords, which these are not, at the price of
milliseconds on every prediction.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.auth.scopes import Scope
from app.db.session import write_locking
from app.db.tables import ApiKey, utcnow
from app.errors import Conflict, NotFound

SECRET_PREFIX = "retain_"
BOOTSTRAP_NAME = "first admin key"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    secret: str  # shown once, never stored


def create_key(session: Session, *, scope: Scope, name: str, secret: str | None = None) -> NewKey:
    """A new key (a random secret unless one is given, e.g. RETAIN_ADMIN_KEY); the caller commits."""
    secret = secret or SECRET_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, scope=str(scope), key_sha256=digest(secret), prefix=secret[:12])
    session.add(row)
    session.flush()
    return NewKey(row, secret)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def find_active(session: Session, secret: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_sha256 == digest(secret), ApiKey.revoked_at.is_(None)))


class VerifiedKeys:
    """Keys verified in the last ``ttl_seconds``, so a burst of predictions costs one lookup, not one
    query each. A revocation made through this process forgets the key at once (`forget`); another
    API replica stops accepting it within ``ttl_seconds`` (RETAIN_AUTH_CACHE_SECONDS, 0 = no cache)."""

    def __init__(self, ttl_seconds: float):
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[float, ApiKey]] = {}

    def cached(self, secret: str) -> ApiKey | None:
        """The key if it was verified within the TTL (no database, no thread hop), else None."""
        entry = self._verified.get(digest(secret))
        if entry is not None and time.monotonic() - entry[0] < self.ttl_seconds:
            return entry[1]
        return None

    def find_active(self, engine: Engine, secret: str) -> ApiKey | None:
        sha256, now = digest(secret), time.monotonic()
        with Session(engine, expire_on_commit=False) as session:
            key = find_active(session, secret)
            if key is not None:
                session.expunge(key)  # a detached snapshot: id, name, scope
        if key is None:
            self._verified.pop(sha256, None)
        elif self.ttl_seconds > 0:
            if len(self._verified) > 10_000:  # bounded: a flood of distinct valid keys cannot grow it forever
                self._verified.clear()
            self._verified[sha256] = (now, key)
        return key

    def forget(self, key_id: int) -> None:
        self._verified = {sha: entry for sha, entry in self._verified.items() if entry[1].id != key_id}


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Revoke a key; the last active admin key cannot be revoked (nobody could manage keys after it)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} does not exist")
    if row.revoked_at is not None:
        return row
    if row.scope == Scope.ADMIN and _active_count(session, Scope.ADMIN) <= 1:
        raise Conflict(f"API key {key_id} is the last active admin key; create another admin key before revoking it")
    row.revoked_at = utcnow()
    session.commit()
    return row


def _active_count(session: Session, scope: Scope | None = None) -> int:
    query = select(func.count(ApiKey.id)).where(ApiKey.revoked_at.is_(None))
    if scope is not None:
        query = query.where(ApiKey.scope == str(scope))
    return session.scalar(query)


def bootstrap_admin_key(engine: Engine, *, admin_key: str | None, key_file: Path) -> ApiKey | None:
    """Make sure someone can manage the service; returns the key row it created, if any.

    With ``admin_key`` (RETAIN_ADMIN_KEY, e.g. from compose) that key is registered as an admin key
    when it is not yet. Otherwise, when no active key exists at all (a first start), a random admin
    key is created, printed once and written to ``key_file`` with mode 0600 so the CLI on this
    machine finds it.
    """
    with Session(write_locking(engine), expire_on_commit=False) as session:
        if admin_key is not None:
            if find_active(session, admin_key) is not None:
                return None
            created = create_key(session, scope=Scope.ADMIN, name="RETAIN_ADMIN_KEY", secret=admin_key)
            session.commit()
            return created.row
        if _active_count(session) > 0:
            return None
        created = create_key(session, scope=Scope.ADMIN, name=BOOTSTRAP_NAME)
        session.commit()
    where = write_key_file(key_file, created.secret)
    print(
        f"retain: created the first admin API key (shown once): {created.secret}\n"
        f"retain: {where}; the CLI on this machine reads it there, others pass it as RETAIN_API_KEY or "
        f"`Authorization: Bearer <key>`",
        file=sys.stderr,
        flush=True,
    )
    return created.row


def write_key_file(path: Path, secret: str) -> str:
    """Write ``secret`` to ``path`` readable by its owner only (0600); says where it went, or why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secret + "\n")
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    except OSError as error:
        return f"could not write it to {path} ({error}): keep it from this message"
    return f"written to {path} (mode 0600)"
