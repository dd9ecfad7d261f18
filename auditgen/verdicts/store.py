"""The verdict store: campaigns, tracked runs and unexpected alerts in SQLite next to the spool, so that
they survive a restart and a campaign running at a restart goes on afterwards.

Changes are marked and written together at most once per FLUSH_SECONDS, in one small transaction on the
reactor's thread (a few rows; WAL journal, synchronous=NORMAL). `flushed()` fires once what was marked is
on disk: the alerts consumer acknowledges an alert only then.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from auditgen.verdicts.campaigns import Campaign, Campaigns, RunSpec
from auditgen.verdicts.verdicts import PENDING, Handover, TrackedRun, Tracker

FILENAME = "verdicts.sqlite3"
FLUSH_SECONDS = 0.5

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (scenario_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS campaigns "
    "(campaign_id TEXT PRIMARY KEY, created REAL NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, body TEXT NOT NULL)",
)


def run_record(run: TrackedRun) -> dict[str, Any]:
    return dataclasses.asdict(run)


def run_from_record(record: dict[str, Any]) -> TrackedRun:
    record = dict(record)
    record["event_ids"] = tuple(record["event_ids"])
    record["first_alert_names"] = tuple(record["first_alert_names"])
    return TrackedRun(**record)


def campaign_record(campaign: Campaign) -> dict[str, Any]:
    return {
        "campaign_id": campaign.campaign_id,
        "created": campaign.created,
        "timeout": campaign.timeout,
        "specs": [spec.describe() for spec in campaign.specs],
        "scenario_ids": campaign.scenario_ids,
        "sent": [run is not None for run in campaign.runs],
        "finished": campaign.finished,
        "unexpected_before": campaign.unexpected_before,
        "unexpected_after": campaign.unexpected_after,
    }


class VerdictStore:
    """One SQLite file; what changed is written on the next flush."""

    log = Logger()

    def __init__(self, directory: str, clock: IReactorTime) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = str(Path(directory) / FILENAME)
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._runs: dict[str, TrackedRun] = {}
        self._campaigns: dict[str, Campaign] = {}
        self._tracker: Tracker | None = None
        self._call: IDelayedCall | None = None
        self._waiting: list[Deferred[None]] = []
        self._forgotten: set[str] = set()

    # -- Marking what changed -------------------------------------------------------------------------

    def run_changed(self, run: TrackedRun) -> None:
        self._runs[run.scenario_id] = run
        self._soon()

    def campaign_changed(self, campaign: Campaign) -> None:
        self._campaigns[campaign.campaign_id] = campaign
        for run in campaign.runs:
            if run is not None:
                self._runs[run.scenario_id] = run
        self._soon()

    def alerts_changed(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._soon()

    def attach(self, tracker: Tracker) -> None:
        """Store whatever the tracker changes."""

        def changed(run: TrackedRun | None) -> None:
            if run is None:
                self.alerts_changed(tracker)
            else:
                self.run_changed(run)

        tracker.on_change = changed
        tracker.on_forget = self.run_forgotten

    def run_forgotten(self, run: TrackedRun) -> None:
        """A decided run the tracker no longer keeps leaves the store too, unless a campaign shows it."""
        if run.campaign_id is None:
            self._runs.pop(run.scenario_id, None)
            self._forgotten.add(run.scenario_id)
            self._soon()

    def flushed(self) -> Deferred[None]:
        """Fires once every change marked so far is written."""
        if self._call is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def _soon(self) -> None:
        if self._call is None:
            self._call = self._clock.callLater(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write what changed, in one transaction."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        runs, campaigns, tracker, forgotten = self._runs, self._campaigns, self._tracker, self._forgotten
        self._runs, self._campaigns, self._tracker, self._forgotten = {}, {}, None, set()
        waiting, self._waiting = self._waiting, []
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO runs VALUES (?, ?)",
                [(sid, json.dumps(run_record(run))) for sid, run in runs.items()],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO campaigns VALUES (?, ?, ?)",
                [(cid, c.created, json.dumps(campaign_record(c))) for cid, c in campaigns.items()],
            )
            self._db.executemany("DELETE FROM runs WHERE scenario_id = ?", [(sid,) for sid in forgotten])
            if tracker is not None:
                unexpected = {"count": tracker.unexpected_count, "kept": list(tracker.unexpected)}
                self._db.execute(
                    "INSERT OR REPLACE INTO state VALUES ('unexpected', ?)", (json.dumps(unexpected),)
                )
        for waiter in waiting:
            waiter.callback(None)

    def close(self) -> None:
        self.flush()
        self._db.close()

    # -- Reading back ---------------------------------------------------------------------------------

    def restore(
        self,
        tracker: Tracker,
        campaigns: Campaigns,
        resumed: Callable[[str], Handover | None] = lambda scenario_id: None,
    ) -> None:
        """Put what an earlier run stored back: runs into the tracker (pending ones decided at their
        deadline; an unfinished one that `resumed` names goes on with its Handover: a paced run the
        scenario runner resumes), campaigns into `campaigns` (runs not yet sent are prepared again, with
        new ids)."""
        for (body,) in self._db.execute("SELECT body FROM runs ORDER BY rowid"):
            run = run_from_record(json.loads(body))
            pending = run.verdict == PENDING and run.finished is None
            tracker.restore(run, resumed(run.scenario_id) if pending else None)
        row = self._db.execute("SELECT body FROM state WHERE key = 'unexpected'").fetchone()
        if row is not None:
            unexpected = json.loads(row[0])
            tracker.unexpected_count = unexpected["count"]
            tracker.unexpected.extend(unexpected["kept"])
        for (body,) in self._db.execute("SELECT body FROM campaigns ORDER BY created"):
            record = json.loads(body)
            specs = [RunSpec(s["name"], s["parameters"], s["delivery"], s["expect"]) for s in record["specs"]]
            ids = record["scenario_ids"]
            runs = [tracker.run(sid) if sent else None for sid, sent in zip(ids, record["sent"], strict=True)]
            campaign = Campaign(
                campaign_id=record["campaign_id"],
                created=record["created"],
                timeout=record["timeout"],
                specs=specs,
                planned=[None] * len(specs),
                scenario_ids=list(ids),
                runs=runs,
                unexpected_before=record["unexpected_before"],
                finished=record["finished"],
                unexpected_after=record["unexpected_after"],
            )
            campaigns.resume(campaign)
