"""Campaign runs through today's scenario runner and outbox: the thin joint to replace when scenarios
gain paced delivery (the campaign needs only the Starter protocol of auditgen.verdicts.campaigns)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from auditgen.checks import CheckError
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.scenarios import Run, ScenarioRunner, UnknownScenario
from auditgen.validation import BadRequest
from auditgen.verdicts.campaigns import Busy, RunSpec
from auditgen.verdicts.verdicts import ScenarioRun


class OutboxStarter:
    """Prepares a run with the runner (all its events at once, stamped within a window ending now) and
    hands its events to the outbox as one, as POST /scenarios/{name} does; reports it once accepted."""

    def __init__(self, runner: ScenarioRunner, outbox: Outbox) -> None:
        self._runner = runner
        self._outbox = outbox

    def prepare(self, spec: RunSpec) -> ScenarioRun:
        try:
            scenario = self._runner.scenario(spec.scenario)
        except UnknownScenario as e:
            raise BadRequest(str(e.args[0])) from None
        if scenario.delivery == "paced" or spec.delivery == "paced":
            # Sent at once, a run made to be spread out would trip an arrival-time rule: say so instead.
            raise BadRequest(
                f"{spec.scenario}: paced delivery is not available in campaigns yet; run it with "
                "POST /scenarios/{name}"
            )
        if "delivery" in spec.parameters:
            raise BadRequest(f"{spec.scenario}: delivery goes beside the parameters, not among them")
        try:
            return self._runner.run(spec.scenario, spec.parameters)
        except CheckError as e:
            raise BadRequest(str(e)) from None

    def send(self, run: ScenarioRun) -> Deferred[Mapping[str, Deferred[Any] | None]]:
        assert isinstance(run, Run)
        if self._runner.full:
            raise Busy("ground-truth outbox full")
        try:
            stored = self._outbox.add_many(run.events, wait=True)
        except OutboxFull as e:
            raise Busy(str(e)) from None
        return stored.addCallback(self._accepted, run)

    def _accepted(self, entries: list[Entry], run: Run) -> Mapping[str, Deferred[Any] | None]:
        self._runner.report(run)
        return {entry.event_id: entry.confirmed for entry in entries}


def campaign_parameters(runner: ScenarioRunner) -> dict[str, dict[str, Any]]:
    """What a campaign entry may give as `parameters`, by scenario, for the OpenAPI document: the
    scenarios sent at once (not those made to be paced), their parameters without `delivery`."""
    shown: dict[str, dict[str, Any]] = {}
    for name, schema in runner.parameter_schemas().items():
        if runner.scenario(name).delivery == "paced":
            continue
        properties = {k: v for k, v in schema.get("properties", {}).items() if k != "delivery"}
        shown[name] = {**schema, "properties": properties}
    return shown
