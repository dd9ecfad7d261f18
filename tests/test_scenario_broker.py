"""A scenario run over the API reaches the real broker: its events on the event queue, its record on the
ground-truth queue, each through its own publisher in confirm mode."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.threads import deferToThread

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.groundtruth import RECORD_TYPE, GroundTruth
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.web import AuditAPI
from tests.support import detect
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT, drain_queue, fresh_queue
from tests.support.waiting import reactor, wait_for


@pytest.fixture
def truth_queue() -> Iterator[str]:
    """A second fresh queue on the shared broker, deleted after the test."""
    with fresh_queue("auditgen-test-truth") as name:
        yield name


def publisher(queue: str, outbox: Outbox, metrics: Metrics) -> Publisher:
    broker = Broker(BROKER_HOST, BROKER_PORT, "guest", "guest", "/")
    return Publisher(reactor, broker, queue, outbox, metrics, backoff=Backoff(base=0.05, cap=0.2))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_brute_force_events_and_its_ground_truth_arrive_on_their_queues(
    queue_name: str, truth_queue: str
) -> None:
    """POST /scenarios/brute_force answers success once confirmed; the events are on the event queue and
    trip the platform's rule, and the one record on the ground-truth queue names them."""
    metrics, truth_metrics = Metrics(), Metrics()
    outbox = Outbox(1000, metrics, reactor)
    truth_outbox = Outbox(1000, truth_metrics, reactor)
    events_publisher = publisher(queue_name, outbox, metrics)
    truth_publisher = publisher(truth_queue, truth_outbox, truth_metrics)
    ground_truth = GroundTruth(metrics, reactor, truth_outbox)
    runner = ScenarioRunner(Catalog.builtin(), random.Random(), ground_truth)
    api = AuditAPI(
        EventFactory(Catalog.builtin()),
        outbox,
        events_publisher,
        metrics.registry,
        reactor,
        confirm_wait=10.0,
        scenarios=runner,
    )
    stub = StubTreq(api.app.resource())
    for service in (events_publisher, truth_publisher, ground_truth):
        service.startService()
    try:
        answers: list[Any] = []
        stub.post("http://auditgen/scenarios/brute_force").addBoth(answers.append)

        def answered() -> bool:
            stub.flush()
            return bool(answers)

        await wait_for(answered, what="the answer")
        body = await answers[0].json()
        assert (answers[0].code, body["status"]) == (202, "success")
        await wait_for(lambda: len(truth_outbox) == 0, what="the ground-truth confirm")
    finally:
        ground_truth.stopService()
        await truth_publisher.stopService()
        await events_publisher.stopService()
    events = [json.loads(b) for _, b in await deferToThread(drain_queue, queue_name)]
    records = [(p, json.loads(b)) for p, b in await deferToThread(drain_queue, truth_queue)]
    assert [e["event_id"] for e in events] == body["event_ids"]
    assert list(detect.brute_force(events)) == [tuple(body["expected"]["keys"].values())]
    [(properties, record)] = records
    assert properties.message_id == record["scenario_id"] == body["scenario_id"]
    assert properties.type == RECORD_TYPE and properties.delivery_mode == 2
    assert record["event_ids"] == body["event_ids"]
    assert record["expected"] == body["expected"]
