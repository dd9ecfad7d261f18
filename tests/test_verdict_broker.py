"""The whole loop over the real broker: auditgen publishes a campaign's events, a stand-in for the
platform's analysis service raises alerts on its queue, the alerts consumer records them, and
auditgen-campaign (a process of its own, over HTTP) scores the campaign and exits non-zero for the miss.
The stand-in's failed-login rule counts 3 within 1 s here (the platform's: within 60 s), so that a paced
near miss, failures 1.5 s or more apart, takes seconds rather than minutes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.verdicts.campaigns import Campaigns
from auditgen.verdicts.consumer import AlertConsumer
from auditgen.verdicts.routes import VerdictRoutes
from auditgen.verdicts.starter import OutboxStarter
from auditgen.verdicts.verdicts import Tracker
from tests.support.analysis import AnalysisService, close, open_channel
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT, drain_queue, fresh_queue
from tests.support.waiting import reactor, wait_for
from tests.support.web import FakeHealth

CLI = str(Path(sys.executable).parent / "auditgen-campaign")
# Until scenarios as data bring real near misses (issue 13), a run of a scenario the analysis service has
# no rule for stands in for one: the campaign marks it `expect: quiet`.
NEAR_MISS = {"name": "off_hours_admin", "expect": "quiet"}
RULE_WINDOW = 1.0  # seconds: the stand-in's failed-login window
# Paced by its file: 3 failures for a user of its own, each 1.5 to 2.25 s after the one before (sent at once,
# they would trip the rule: a false alarm).
PACED_NEAR_MISS = {
    "name": "failed_logins_spread_out",
    "parameters": {"attempts": 3, "gap_seconds": 1.5, "user": "spread-out-tester"},
}
CAMPAIGN = {
    "detection_timeout_seconds": 3,
    "scenarios": [
        {"name": "brute_force", "parameters": {"attempts": 5, "window_seconds": 30}},
        {"name": "sensitive_file_tamper", "parameters": {"path": "/etc/shadow"}},
        NEAR_MISS,
        {"name": "service_flapping"},  # no rule there: missed
        PACED_NEAR_MISS,
    ],
}


@pytest.fixture
def alerts_queue() -> Iterator[str]:
    with fresh_queue("auditgen-test-alerts") as name:
        yield name


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_campaign_is_scored_from_the_pipelines_alerts(
    queue_name: str, alerts_queue: str, tmp_path: Path
) -> None:
    """brute_force and sensitive_file_tamper are detected (time to detect within the timeout), the near
    miss and the paced near miss stay quiet (the paced one judged only after its last failure), and
    service_flapping is missed; the CLI writes JSON and JUnit and exits 1; every alert was acknowledged."""
    from auditgen.web import AuditAPI

    metrics = Metrics()
    outbox = Outbox(1000, metrics, reactor)
    publisher = Publisher(
        reactor, Broker(BROKER_HOST, BROKER_PORT, "guest", "guest", "/"), queue_name, outbox, metrics,
        backoff=Backoff(base=0.05, cap=0.2),
    )  # fmt: skip
    runner = ScenarioRunner(Catalog.builtin(), random.Random(3), clock=reactor, outbox=outbox)
    tracker = Tracker(reactor, metrics=metrics, timeout=60.0)
    campaigns = Campaigns(reactor, tracker, OutboxStarter(runner, outbox))
    api = AuditAPI(
        EventFactory(Catalog.builtin()), outbox, FakeHealth(), metrics.registry, reactor, scenarios=runner,
        verdicts=VerdictRoutes(tracker, campaigns, reactor),
    )  # fmt: skip
    analysis = AnalysisService(reactor, BROKER_HOST, BROKER_PORT, queue_name, alerts_queue, RULE_WINDOW)
    consumer = AlertConsumer(tracker, queue=alerts_queue, metrics=metrics)
    await analysis.start()
    conn, channel = await open_channel(reactor, BROKER_HOST, BROKER_PORT)
    consuming = ensureDeferred(consumer.consume(channel))
    publisher.startService()
    port = reactor.listenTCP(0, api.site(reactor), interface="127.0.0.1")
    try:
        await wait_for(lambda: consumer.consuming and publisher.connected, what="consumer and publisher")
        (tmp_path / "campaign.yaml").write_text(json.dumps(CAMPAIGN))  # JSON is YAML
        url = f"http://127.0.0.1:{port.getHost().port}"
        command = [
            CLI, "--url", url, "--file", str(tmp_path / "campaign.yaml"), "--poll", "0.2", "--wait", "60",
            "--json", str(tmp_path / "out.json"), "--junit", str(tmp_path / "out.xml"),
        ]  # fmt: skip
        result: Any = await deferToThread(subprocess.run, command, capture_output=True, text=True, timeout=90)
        assert result.returncode == 1, result.stdout + result.stderr
        campaign = json.loads((tmp_path / "out.json").read_text())
        verdicts = [(r["scenario"], r["verdict"]) for r in campaign["runs"]]
        assert verdicts == [
            ("brute_force", "detected"),
            ("sensitive_file_tamper", "detected"),
            ("off_hours_admin", "quiet"),
            ("service_flapping", "missed"),
            ("failed_logins_spread_out", "quiet"),
        ]
        for run in campaign["runs"][:2]:
            assert 0 <= run["time_to_detect_seconds"] < 3
        paced = campaign["runs"][4]
        assert (paced["delivery"], paced["events"], paced["events_confirmed"]) == ("paced", 3, 3)
        assert "MISSED: service_flapping" in result.stdout
        assert ElementTree.parse(tmp_path / "out.xml").getroot().get("failures") == "1"
        assert campaign["unexpected_alerts"]["count"] == 0
        # brute_force: an alert for its 3rd, 4th and 5th failure; sensitive_file_tamper: one.
        assert len(analysis.published) == 4
        await wait_for(lambda: consumer.received == 4, what="every alert consumed")
    finally:
        await port.stopListening()
        consumer.stop()
        await consuming
        await close(conn)
        await analysis.stop()
        await publisher.stopService()
    assert await deferToThread(drain_queue, alerts_queue) == []  # every alert was acknowledged
    assert metrics.registry.get_sample_value("audit_events_generator_alerts_consumer_connected") == 0
