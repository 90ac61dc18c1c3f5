"""Which version a request serves, known without SQL on each request, in every API replica.

Resolving ``(model name, version number or None)`` used to cost two queries per prediction.
Versions never change once stored, so ``(model, number)`` lookups are cached for good; only the
serving alias moves (promotion, rollback, roll forward). Every such move goes through
``registry.service.set_serving_version``, which inserts one ``alias_changes`` row, so the largest
``alias_changes.id`` is a version stamp of all serving aliases. Deletes (app/registry/deletion.py):
a version delete adds an alias change that records it, so the largest id moves; a model delete
removes the model's row, so the stamp also holds the number of models. A move drops the cached
versions by number too. (Not the number of alias changes: that table grows with every promotion,
and counting it is a scan that grows with it, every interval, on the event loop on SQLite.)
A replica trusts its cached aliases for ``serving_check_interval`` seconds, then reads the stamp
(an index lookup and a count of the models) and drops its aliases when it moved. The replica
that made a change knows at once
(``committed_alias_changes``), so its own next request serves the new alias.

Why a polled stamp and not Postgres LISTEN/NOTIFY: it works the same on SQLite (the embedded
default), needs no connection held open per replica nor a reconnect/missed-notification story,
and costs at most one indexed query per interval while requests arrive (none while idle). On a
server database the check runs on a background thread while requests go on with the aliases
they have (stale while revalidate), so no request waits on the network for it, unless the aliases
were last checked more than two intervals ago (an idle replica: its first request would otherwise be
answered with aliases of any age, and is sent through ``resolve`` instead); on SQLite it runs
inline, on the event loop: reading a local file's index is cheap, while waking another thread at
every interval cost every request a GIL handoff, which showed in the median latency of a single
client (docs/benchmarks/measurements.md). Either way a rollback reaches every replica within two
intervals plus one query (tests/test_replicas.py checks it across the processes of `retain serve --workers N`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, PoolProxiedConnection
from sqlalchemy.orm import Session

from app.db.tables import AliasChange, Model, ModelVersion
from app.errors import NotFound
from app.registry.service import committed_alias_changes, get_model_by_name, resolve_version

STALE_WHILE_REVALIDATE = 2
"""A cached alias checked less than this many intervals ago is answered while the check runs; an older one (a
replica that saw no request for a while) is checked first, so a change reaches every replica within this many."""
STAMP_QUERY = f"SELECT (SELECT max(id) FROM {AliasChange.__tablename__}), (SELECT count(*) FROM {Model.__tablename__})"


@dataclass(frozen=True)
class ServedModel:
    """What serving needs of a model row, detached from any session."""

    name: str
    input_shape: tuple[int, ...]
    serving: ModelVersion | None  # None: no version promoted yet


class ServingDirectory:
    """Cached model -> serving version and (model, number) -> version lookups (thread-safe)."""

    def __init__(self, engine: Engine, check_interval: float):
        self.engine = engine
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._stamp: tuple[int | None, int] | None = None
        self._checked_at = float("-inf")
        self._local_changes = committed_alias_changes()
        self._refresher: ThreadPoolExecutor | None = None  # made on first use, again after close
        self._refreshing = False
        self._stamp_connection: PoolProxiedConnection | None = None
        self.check_inline = engine.dialect.name == "sqlite"

    def cached(self, name: str, number: int | None) -> tuple[ServedModel, ModelVersion] | None:
        """The answer without touching the database, or None when that needs a query (call `resolve`).
        Past the check interval the stamp is checked (inline on SQLite; else in the background, the
        cached answer still given); after a change made by this process, None."""
        if committed_alias_changes() != self._local_changes:
            return None
        if self._stale() and not self._refreshing:
            if (
                not self.check_inline
                and time.monotonic() - self._checked_at > STALE_WHILE_REVALIDATE * self.check_interval
            ):
                return None  # not checked for a while (an idle replica): the check goes before the answer
            if self.check_inline:
                self._refresh()
            else:
                self._refreshing = True
                if self._refresher is None:
                    self._refresher = ThreadPoolExecutor(1, thread_name_prefix="retain-serving-stamp")
                self._refresher.submit(self._refresh)
        return self._lookup(name, number)

    def _lookup(self, name: str, number: int | None) -> tuple[ServedModel, ModelVersion] | None:
        model = self._models.get(name)
        if model is None:
            return None
        version = model.serving if number is None else self._versions.get((name, number))
        return (model, version) if version is not None else None

    def resolve(self, name: str, number: int | None) -> tuple[ServedModel, ModelVersion]:
        """The model and the version a request for ``number`` (None: the serving one) uses; NotFound otherwise."""
        self._check_stamp()
        known = self._lookup(name, number)
        if known is not None:
            return known
        with Session(self.engine, expire_on_commit=False) as session:
            row = get_model_by_name(session, name)
            serving = session.get(ModelVersion, row.serving_version_id) if row.serving_version_id else None
            model = ServedModel(name=row.name, input_shape=tuple(row.input_shape or ()), serving=serving)
            version = resolve_version(session, row, number) if number is not None else serving
        with self._lock:
            self._models[name] = model
            if version is not None:
                self._versions[(name, version.number)] = version
        if version is None:
            raise NotFound(
                f"model {name!r} has no serving version yet (its first task is still training, "
                "or no update was promoted)"
            )
        return model, version

    def close(self) -> None:
        """Stop the stamp thread and close its connection (the app's shutdown); usable again after."""
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.shutdown(wait=True)
        with self._lock:
            if self._stamp_connection is not None:
                self._stamp_connection.close()
                self._stamp_connection = None

    def _refresh(self) -> None:
        try:
            self._check_stamp()
        except Exception:
            self._checked_at = float("-inf")
        finally:
            self._refreshing = False

    def _read_stamp(self) -> tuple[int | None, int]:
        """The largest alias change id and the number of models, on a DBAPI connection kept for it: through SQLAlchemy's
        connection checkout and statement machinery the check cost several times the query."""
        connection = self._stamp_connection
        if connection is None:
            connection = self._stamp_connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(STAMP_QUERY)
            last_change, models = cursor.fetchone() or (None, 0)  # one row, always
            cursor.close()
            connection.rollback()  # no read transaction left open (SQLite would keep its snapshot)
            return last_change, models
        except Exception:
            connection.invalidate()
            self._stamp_connection = None
            raise

    def _stale(self) -> bool:
        return (
            time.monotonic() - self._checked_at > self.check_interval
            or committed_alias_changes() != self._local_changes
        )

    def _check_stamp(self) -> None:
        if not self._stale():
            return
        with self._lock:
            if not self._stale():
                return  # another thread just checked
            now, local_changes = time.monotonic(), committed_alias_changes()
            stamp = self._read_stamp()
            if stamp != self._stamp:
                self._models.clear()  # aliases moved, or a model or version was deleted
                self._versions.clear()
                self._stamp = stamp
            self._checked_at, self._local_changes = now, local_changes
