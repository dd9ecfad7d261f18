"""A paced scenario run across a SIGTERM and a restart of the installed service, on the shared broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from tests.support.load import JSON_HEADERS
from tests.support.shared_broker import BROKER_PORT, drain_queue, fresh_queue
from tests.support.twistd import Service
from tests.support.waiting import reactor, wait_for


@pytest.fixture
def truth_queue() -> Iterator[str]:
    with fresh_queue("auditgen-test-truth") as name:
        yield name


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_paced_run_interrupted_by_sigterm_finishes_after_the_restart_with_nothing_lost(
    tmp_path: Path, queue_name: str, truth_queue: str
) -> None:
    """SIGTERM right after a paced run started: the service exits 0 with the rest of the schedule stored
    beside its spool; restarted on the same spool, it sends the rest, and the ground-truth record names
    every event and says the run was interrupted. Every event arrives, none twice."""
    service = Service(
        reactor,
        rabbitmq_port=BROKER_PORT,
        queue=queue_name,
        workdir=tmp_path,
        spool_dir=tmp_path / "spool",
        interval=0,
        extra_args=[f"--ground-truth-queue={truth_queue}"],
    )
    try:
        await service.start()
        body = {"attempts": 4, "gap_seconds": 2, "delivery": "paced"}
        response = await treq.post(
            f"{service.url}/scenarios/failed_logins_spread_out",
            json.dumps(body).encode(),
            headers=JSON_HEADERS,
            persistent=False,
        )
        answer = await response.json()
        assert (response.code, answer["status"]) == (202, "scheduled"), answer
        assert await service.terminate() == 0, service.log_tail()
        stored = json.loads((tmp_path / "spool" / "scenario-runs.json").read_text())
        [run] = stored["runs"]
        assert run["scenario_id"] == answer["scenario_id"] and run["accepted"] < 4
        await service.start()
        records: list[dict[str, Any]] = []

        async def recorded() -> bool:
            records.extend(json.loads(b) for _, b in await deferToThread(drain_queue, truth_queue))
            return bool(records)

        await wait_for(recorded, timeout=60, what="the ground-truth record after the restart")
        status = await (
            await treq.get(f"{service.url}/scenarios/runs/{answer['scenario_id']}", persistent=False)
        ).json()
        assert status["state"] == "done" and status["interrupted_seconds"] > 0
        assert await service.terminate() == 0, service.log_tail()
    finally:
        service.cleanup()
    events = [json.loads(b) for _, b in await deferToThread(drain_queue, queue_name)]
    ids = [e["event_id"] for e in events]
    assert sorted(set(ids)) == sorted(answer["event_ids"]), "every event arrived"
    assert len(ids) == len(set(ids)), "none twice"
    [record] = records
    assert record["scenario_id"] == answer["scenario_id"]
    assert record["event_ids"] == answer["event_ids"]
    assert record["expected"]["outcome"] == "quiet"
    assert record["expected"]["interrupted_seconds"] > 0
    assert not (tmp_path / "spool" / "scenario-runs.json").exists() or json.loads(
        (tmp_path / "spool" / "scenario-runs.json").read_text()
    ) == {"version": 1, "runs": []}
