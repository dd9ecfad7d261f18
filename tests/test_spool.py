"""The durable outbox: on disk before it is accepted, gone after the ack, replayed in order, crash-safe."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from auditgen.events import Catalog, EventFactory, encode
from auditgen.metrics import Metrics
from auditgen.outbox import Entry, Outbox, OutboxFull, OutboxService
from auditgen.routing import RoutingKey
from auditgen.spool import FILENAME, Spool
from tests.support.waiting import reactor

FACTORY = EventFactory(Catalog.builtin())


def rows_on_disk(directory: Path) -> list[str]:
    """The event_ids in the spool file, read as another process would."""
    conn = sqlite3.connect(f"file:{directory / FILENAME}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY seq")]
    finally:
        conn.close()


RIGS: list[Rig] = []


@pytest_twisted.async_yield_fixture(autouse=True)
async def stop_rigs() -> Any:
    """Stop every spool a test opened, even a failed test, so no writer thread outlives it."""
    yield
    while RIGS:
        rig = RIGS.pop()
        if rig.service.running:
            await rig.service.stopService()


class Rig:
    """An outbox with a spool in a directory, started like the service starts it."""

    def __init__(
        self,
        directory: Path,
        capacity: int = 1000,
        max_bytes: int = 1 << 30,
        routing: RoutingKey | None = None,
    ) -> None:
        RIGS.append(self)
        self.metrics = Metrics()
        self.spool = Spool(directory, reactor)
        self.outbox = Outbox(
            capacity, self.metrics, reactor, spool=self.spool, spool_max_bytes=max_bytes, routing=routing
        )
        self.service = OutboxService(self.outbox, self.spool, self.metrics)

    async def start(self) -> None:
        self.service.startService()
        assert self.service._opened is not None
        await self.service._opened

    async def add(self, n: int) -> list[Entry]:
        return list(await defer.gatherResults([self.outbox.add(FACTORY.generate()) for _ in range(n)]))

    def take_all(self) -> list[Entry]:
        """Play the publisher: everything waiting, in the order it would be sent (now in flight)."""
        taken = []
        while (entry := self.outbox.take()) is not None:
            taken.append(entry)
        return taken

    def ack_all(self) -> list[Entry]:
        """Play the broker: everything waiting is published and confirmed."""
        acked = self.take_all()
        for entry in acked:
            self.outbox.settle(entry)
        return acked


@pytest_twisted.ensureDeferred
async def test_an_event_is_on_disk_when_accepted_and_gone_after_the_ack(tmp_path: Path) -> None:
    """add() fires only once the row is committed; settle() deletes it; close() commits the deletes."""
    rig = Rig(tmp_path)
    await rig.start()
    entries = await rig.add(20)
    assert rows_on_disk(tmp_path) == [e.event_id for e in entries]
    assert rig.metrics.registry.get_sample_value("audit_events_generator_spool_bytes") == sum(
        len(e.body) for e in entries
    )
    rig.ack_all()
    await rig.service.stopService()
    assert rows_on_disk(tmp_path) == []
    assert rig.metrics.registry.get_sample_value("audit_events_generator_spool_bytes") == 0


@pytest_twisted.ensureDeferred
async def test_leftovers_are_published_first_in_order(tmp_path: Path) -> None:
    """Events not confirmed by one run come back on the next, ahead of new ones and in their order."""
    first = Rig(tmp_path)
    await first.start()
    old = await first.add(30)
    acked = first.outbox.take()
    assert acked is not None
    first.outbox.settle(acked)
    await first.service.stopService()

    second = Rig(tmp_path)
    pending = second.outbox.add(FACTORY.generate())  # accepted while the spool is still being read
    await second.start()
    new_entry = [await pending]
    assert second.metrics.registry.get_sample_value("audit_events_generator_spool_replayed_total") == 29
    order = [e.event_id for e in second.ack_all()]
    assert order == [e.event_id for e in old[1:]] + [new_entry[0].event_id]
    await second.service.stopService()
    assert rows_on_disk(tmp_path) == []


@pytest_twisted.ensureDeferred
async def test_spool_byte_limit_refuses_events_until_acks_free_room(tmp_path: Path) -> None:
    """AUDITGEN_SPOOL_MAX_BYTES bounds the disk: past it, add() raises OutboxFull; an ack makes room."""
    probe = len(encode(FACTORY.generate()))
    rig = Rig(tmp_path, max_bytes=probe * 3)
    await rig.start()
    accepted = 0
    with pytest.raises(OutboxFull, match="spool full"):
        for _ in range(100):
            await rig.add(1)
            accepted += 1
    assert 1 <= accepted < 100
    assert rig.outbox.full
    rig.ack_all()
    assert not rig.outbox.full
    await rig.add(1)
    await rig.service.stopService()


def _crash_copy(src: Path, dst: Path) -> None:
    """The files as a SIGKILL would leave them: database and WAL, with no checkpoint or close."""
    dst.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{src / FILENAME}{suffix}", f"{dst / FILENAME}{suffix}")


@pytest_twisted.ensureDeferred
async def test_a_torn_write_at_the_tail_does_not_stop_start_up(tmp_path: Path) -> None:
    """A crash in the middle of writing a batch leaves a torn WAL tail: start-up recovers every event that
    was committed (acknowledged) before it, in order, and drops only the torn, never-acknowledged batch."""
    live = tmp_path / "live"
    rig = Rig(live)
    await rig.start()
    committed = await rig.add(30)
    wal = Path(f"{live / FILENAME}-wal")
    committed_size = wal.stat().st_size
    await rig.add(20)  # the batch the crash tears
    crashed = tmp_path / "crashed"
    _crash_copy(live, crashed)
    await rig.service.stopService()
    torn = Path(f"{crashed / FILENAME}-wal")
    data = torn.read_bytes()
    assert len(data) > committed_size + 1000
    torn.write_bytes(data[: committed_size + 1000] + b"\x00garbage\xff" * 50)

    after = Rig(crashed)
    await after.start()
    assert [e.event_id for e in after.take_all()] == [e.event_id for e in committed]
    await after.add(1)


@pytest_twisted.ensureDeferred
async def test_a_damaged_file_is_moved_aside_and_start_up_goes_on(tmp_path: Path) -> None:
    """A spool SQLite cannot read is set aside with a log line and a metric; the service keeps working."""
    rig = Rig(tmp_path)
    await rig.start()
    await rig.add(5)
    await rig.service.stopService()
    path = tmp_path / FILENAME
    data = bytearray(path.read_bytes())
    data[0:100] = b"\xff" * 100  # the header: not a database any more
    path.write_bytes(bytes(data))

    after = Rig(tmp_path)
    await after.start()
    assert after.metrics.registry.get_sample_value("audit_events_generator_spool_damaged_total") == 1
    assert list(tmp_path.glob(f"{FILENAME}.damaged-*"))
    entries = await after.add(3)
    after.ack_all()
    await after.service.stopService()
    assert rows_on_disk(tmp_path) == []
    assert len(entries) == 3


def test_memory_outbox_needs_no_spool() -> None:
    """Without a spool, add() fires at once and nothing touches the disk."""
    metrics = Metrics()
    outbox = Outbox(10, metrics, reactor)
    fired: list[Any] = []
    outbox.add(FACTORY.generate()).addCallback(fired.append)
    assert len(fired) == 1 and fired[0].seq is None


def test_put_without_a_spool_accepts_at_once_and_returns_nothing_to_wait_on() -> None:
    """The generator's put(): without a spool the event waits for the publisher as soon as put() returns,
    counted as generated, with no Deferred made for it."""
    metrics = Metrics()
    outbox = Outbox(10, metrics, reactor)
    event = FACTORY.generate()
    assert outbox.put(event) is None
    entry = outbox.take()
    assert entry is not None and entry.event_id == event["event_id"] and entry.seq is None
    assert (
        metrics.events.labels(
            event["event_type"], event["server_hostname"], event["action_result"]
        )._value.get()
        == 1
    )


@pytest_twisted.ensureDeferred
async def test_put_with_a_spool_fires_once_the_row_is_on_disk(tmp_path: Path) -> None:
    """With a spool, put() gives the storing's Deferred: the event counts once its row is committed."""
    rig = Rig(tmp_path)
    await rig.start()
    stored = rig.outbox.put(FACTORY.generate())
    assert stored is not None
    entry = await stored
    assert entry.seq is not None and len(rows_on_disk(tmp_path)) == 1


@pytest_twisted.ensureDeferred
async def test_routing_keys_are_kept_in_the_spool(tmp_path: Path) -> None:
    """Each event's routing key is stored with it and comes back as stored after a restart, even if the
    routing key setting changed in between (the key was decided when the event was accepted)."""
    first = Rig(tmp_path, routing=RoutingKey("audit.{event_type}.{action_result}"))
    await first.start()
    old = await first.add(5)
    assert all(e.routing_key == f"audit.{e.event_type}.{json.loads(e.body)['action_result']}" for e in old)
    await first.service.stopService()

    second = Rig(tmp_path, routing=RoutingKey("other.{severity}"))
    await second.start()
    restored = second.take_all()
    assert [(e.event_id, e.routing_key) for e in restored] == [(e.event_id, e.routing_key) for e in old]


_OLD_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    created REAL NOT NULL,
    body BLOB NOT NULL
)
"""


@pytest_twisted.ensureDeferred
async def test_a_spool_file_of_an_older_version_is_migrated(tmp_path: Path) -> None:
    """A file without the routing_key column (left by an older version, in WAL mode as it wrote it) gets
    the column on open; its rows are published first, with keys computed from their events by the current
    setting, and new rows store their keys."""
    events = [FACTORY.generate() for _ in range(4)]
    conn = sqlite3.connect(tmp_path / FILENAME)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_OLD_SCHEMA)
    conn.executemany(
        "INSERT INTO events (event_id, event_type, created, body) VALUES (?, ?, ?, ?)",
        [(e["event_id"], e["event_type"], 1.0, encode(e)) for e in events],
    )
    conn.commit()
    conn.close()

    rig = Rig(tmp_path, routing=RoutingKey("audit.{event_type}.{user_id}"))
    await rig.start()
    assert not list(tmp_path.glob(f"{FILENAME}.damaged-*")), "migrated, not set aside as damaged"
    new = await rig.add(1)
    order = [(e.event_id, e.routing_key) for e in rig.take_all()]
    assert order == [(e["event_id"], f"audit.{e['event_type']}.{e['user_id']}") for e in events] + [
        (new[0].event_id, new[0].routing_key)
    ]
    assert new[0].routing_key is not None and new[0].routing_key.startswith("audit.")
    await rig.service.stopService()
    check = sqlite3.connect(f"file:{tmp_path / FILENAME}?mode=ro", uri=True)
    try:
        rows = check.execute("SELECT event_id, routing_key FROM events ORDER BY seq").fetchall()
    finally:
        check.close()
    assert rows[:4] == [(e["event_id"], None) for e in events]
    assert rows[4] == (new[0].event_id, new[0].routing_key)


def test_without_routing_the_outbox_leaves_the_key_to_the_publisher() -> None:
    """An outbox made without a routing key (tests, embeddings) gives entries no key: the publisher's
    default, the queue name, applies."""
    outbox = Outbox(10, Metrics(), reactor)
    fired: list[Entry] = []
    outbox.add(FACTORY.generate()).addCallback(fired.append)
    assert fired[0].routing_key is None
