"""Scenarios: named sequences of events with what a detection rule should make of them.

The scenarios are data: YAML files (builtin/ here, and a user's, named in AUDITGEN_SCENARIOS) read by
files.py, planned into runs by engine.py, and delivered (instant or paced) by runs.py. See
docs/scenarios.md for the file format.
"""

from __future__ import annotations

from auditgen.scenarios.engine import Plan, Run, Scenario, StampedFactory, UnknownScenario, plan
from auditgen.scenarios.files import ScenarioFileError, builtin, load_scenarios
from auditgen.scenarios.runs import Reporter, ScenarioRunner

BUILTIN: tuple[Scenario, ...] = builtin()
"""Every scenario shipped in the package: the attacks, then the near misses."""
SCENARIOS: tuple[Scenario, ...] = tuple(s for s in BUILTIN if s.expect == "alert")
"""The built-in attacks, each expecting an alert (the generator's mix draws from these)."""
NEAR_MISSES: tuple[Scenario, ...] = tuple(s for s in BUILTIN if s.expect == "quiet")
"""The built-in near misses, on which a correct rule stays quiet."""

__all__ = [
    "BUILTIN",
    "NEAR_MISSES",
    "SCENARIOS",
    "Plan",
    "Reporter",
    "Run",
    "Scenario",
    "ScenarioFileError",
    "ScenarioRunner",
    "StampedFactory",
    "UnknownScenario",
    "load_scenarios",
    "plan",
]
