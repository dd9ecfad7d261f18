"""Many instances, one seed: each instance's streams are its own and repeat for the same name.

The seed joined with the instance's name (GeneratorSettings.stream_seed) feeds every random stream the service
builds (tap.makeService); these tests drive the same streams in memory, so that the scenario ids of a
generated scenario mix, and the events of the generator, can be compared between instances.
"""

from __future__ import annotations

from auditgen.config import load_settings
from auditgen.events import Catalog, EventFactory, seeded_rng
from auditgen.scenario_mix import ScenarioMix
from auditgen.scenarios import Run

CATALOG = Catalog.builtin()
NAMES = ("auditgen-0", "auditgen-1", "auditgen-2")


def mixed(instance: str, events: int = 600) -> tuple[list[str], list[str]]:
    """(event_ids, scenario ids) of the first events of this instance's generator with a scenario mix,
    built from its settings' stream seed as makeService builds them."""
    given = {"seed": "load-7", "instance": instance, "instances": "3"}
    seed = load_settings(given, {}, {}).generator.stream_seed
    runs: list[Run] = []
    inner = EventFactory(CATALOG, seeded_rng(seed, "generator")).generate
    mix = ScenarioMix(inner, CATALOG, seeded_rng(seed, "generated-scenarios"), 50, runs.append)
    event_ids = [str(mix()["event_id"]) for _ in range(events)]
    return event_ids, [run.scenario_id for run in runs]


def test_instances_never_share_an_event_id_or_a_scenario_id() -> None:
    """Three instances, one seed: no event_id and no scenario id of one is made by another, so a consumer
    de-duplicating by event_id keeps every event, and a scenario's verdict is never mixed with another's."""
    streams = [mixed(name) for name in NAMES]
    for ids, scenario_ids in streams:
        assert scenario_ids, "the mix started no scenario: nothing was compared"
        assert len(set(ids)) == len(ids)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(streams[a][0]) & set(streams[b][0])
            assert not set(streams[a][1]) & set(streams[b][1])


def test_an_instance_repeats_its_own_events_and_scenarios() -> None:
    """The same seed and name make the same event_ids and scenario ids again: a rerun of one instance (a
    restarted pod keeps its name) is reproducible on its own."""
    assert mixed("auditgen-1") == mixed("auditgen-1")
