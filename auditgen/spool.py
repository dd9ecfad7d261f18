"""The spool: the outbox's durable copy, one SQLite file written by one thread.

Why SQLite: it is in the standard library, its WAL journal survives a crash or a torn write at the tail
(a half-written frame fails its checksum and is ignored on the next open), and a single writer thread
(twisted.enterprise.adbapi with a pool of one) keeps disk I/O off the reactor. Writes are grouped: while
one transaction commits, new events and acks gather, and the next transaction takes them all, so the
number of fsyncs follows the disk's speed, not the event rate.

Each event is inserted before anyone is told it was accepted, and deleted when the broker confirms it.
On start the rows left by an earlier run are read back in insertion order and published first.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

FILENAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    created REAL NOT NULL,
    body BLOB NOT NULL,
    routing_key TEXT
)
"""
_COLUMNS = "seq, event_id, event_type, created, body, routing_key"


class SpoolError(Exception):
    """The spool could not store an event; it was not accepted."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A row left in the spool by an earlier run."""

    seq: int
    event_id: str
    event_type: str
    created: float
    body: bytes
    routing_key: str | None = None  # None: a row from a version before routing keys


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the spool found: the rows to publish first, and what could not be read."""

    rows: list[Stored]
    damaged_file: str | None = None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False)
    _prepare(conn)
    return conn


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL with synchronous=FULL: a commit is on disk when it returns, and readers never block the writer."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    _migrate(conn)
    conn.commit()


def _migrate(conn: sqlite3.Connection) -> None:
    """A file an older version left has no routing_key column: add it (empty; see Outbox.restore)."""
    if "routing_key" not in _columns(conn):
        conn.execute("ALTER TABLE events ADD COLUMN routing_key TEXT")


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(events)")}


def _stored(row: Sequence[Any]) -> Stored:
    seq, event_id, event_type, created, body, routing_key = row
    return Stored(seq, event_id, event_type, created, bytes(body), routing_key)


def _read_rows(conn: sqlite3.Connection) -> list[Stored]:
    return [_stored(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq")]


def _salvage(path: Path) -> list[Stored]:
    """Read every row that can still be read from a damaged file, in order.

    After an unreadable spot, skip ahead by growing steps of keys, and give up after a run of failures
    (a file whose header is gone fails every query).
    """
    rows: list[Stored] = []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        columns = _COLUMNS if "routing_key" in _columns(conn) else _COLUMNS.replace("routing_key", "NULL")
    except sqlite3.Error:
        columns = _COLUMNS
    query = f"SELECT {columns} FROM events WHERE seq > ? ORDER BY seq LIMIT 1"
    try:
        seq, failures = -1, 0
        while failures < 40:
            try:
                row = conn.execute(query, (seq,)).fetchone()
            except sqlite3.Error:
                failures += 1
                seq += 2**failures
                continue
            if row is None:
                break
            failures = 0
            seq = row[0]
            rows.append(_stored(row))
    finally:
        conn.close()
    return rows


def recover(directory: Path) -> Recovery:
    """Open (or create) the spool file and read what an earlier run left; runs in a thread.

    A file SQLite cannot read is moved aside with its journal, whatever rows can be read from it are
    kept, and a fresh file takes its place, so a damaged spool never stops start-up.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    try:
        conn = _connect(path)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return Recovery(_read_rows(conn))
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        pass
    rows = _salvage(path)
    aside = path.with_name(f"{FILENAME}.damaged-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(Path(f"{aside}{suffix}"))
    conn = _connect(path)
    try:
        conn.executemany(
            f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.seq, r.event_id, r.event_type, r.created, r.body, r.routing_key) for r in rows],
        )
        conn.commit()
    finally:
        conn.close()
    return Recovery(rows, damaged_file=str(aside))


class _Pending:
    """Rows waiting for the next transaction, and who waits for them."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, str, float, bytes, str | None]] = []
        self.waiters: list[Deferred[int]] = []
        self.deletes: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes)


class Spool:
    """Group-committed inserts and deletes on one writer thread."""

    log = Logger()

    def __init__(self, directory: str | Path, reactor: Any) -> None:
        self._reactor = reactor
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self._pool: Any = None
        self._pending = _Pending()
        self._busy = False
        self._idle: list[Deferred[None]] = []

    def open(self) -> Deferred[Recovery]:
        """Recover the file, then start the writer thread; fires with what an earlier run left."""
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            str(self.path),
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_prepare,
            cp_noisy=False,
            cp_reactor=self._reactor,
        )
        # On the pool's own (single) thread, so it runs before the first write opens its connection.
        recovered: Deferred[Recovery] = deferToThreadPool(
            self._reactor, self._pool.threadpool, recover, self.directory
        )
        self._kick()  # events accepted before open() are written after the recovery read
        return recovered

    def store(
        self, event_id: str, event_type: str, created: float, body: bytes, routing_key: str | None = None
    ) -> Deferred[int]:
        """Insert with the next transaction; fires with the row's key once it is committed."""
        d: Deferred[int] = Deferred()
        self._pending.inserts.append((event_id, event_type, created, body, routing_key))
        self._pending.waiters.append(d)
        self._kick()
        return d

    def remove(self, seq: int) -> None:
        """Delete with the next transaction (the broker has the event; losing this delete only means a
        duplicate after a crash, never a loss)."""
        self._pending.deletes.append(seq)
        self._kick()

    def close(self) -> Deferred[None]:
        """Commit what is pending, then stop the writer thread."""
        d: Deferred[None] = Deferred()
        if self._busy or self._pending:
            self._idle.append(d)
        else:
            d.callback(None)

        def stop(_: None) -> None:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

        return d.addCallback(stop)

    def _kick(self) -> None:
        if self._busy or not self._pending or self._pool is None:
            return
        batch, self._pending = self._pending, _Pending()
        self._busy = True
        d = self._pool.runInteraction(_write, batch.inserts, batch.deletes)
        d.addBoth(self._written, batch)

    def _written(self, result: list[int] | Failure, batch: _Pending) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self.log.failure(
                "the spool could not write {count} events",
                result,
                event="spool.write_failed",
                count=len(batch.inserts),
            )
            error = SpoolError(f"could not write the spool at {self.path}: {result.getErrorMessage()}")
            for waiter in batch.waiters:
                waiter.errback(error)
            # Deletes go again with the next batch; the broker already has those events.
            self._pending.deletes[:0] = batch.deletes
        else:
            for waiter, seq in zip(batch.waiters, result, strict=True):
                waiter.callback(seq)
        if self._pending.inserts or (self._pending and not isinstance(result, Failure)):
            self._kick()
        elif self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)


def _write(
    cursor: Any, inserts: Sequence[tuple[str, str, float, bytes, str | None]], deletes: Sequence[int]
) -> list[int]:
    """One transaction (adbapi commits it): the deletes, then the inserts, returning the new keys."""
    if deletes:
        cursor.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in deletes])
    keys = []
    for row in inserts:
        cursor.execute(
            "INSERT INTO events (event_id, event_type, created, body, routing_key) VALUES (?, ?, ?, ?, ?)",
            row,
        )
        keys.append(cursor.lastrowid)
    return keys
