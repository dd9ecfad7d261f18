"""A campaign as JUnit XML, which CI systems show: one test case per run, a failure for a run that missed
an alert or raised a false alarm, skipped for a run without a verdict yet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

FAILURES = {
    "missed": "expected an alert; none came within the detection timeout",
    "false_alarm": "expected no alert; got one",
}


def junit_xml(campaign: Mapping[str, Any]) -> bytes:
    """The XML of a campaign as Campaign.describe() shows it."""
    runs = campaign["runs"]
    failures = sum(run["verdict"] in FAILURES for run in runs)
    skipped = sum(run["verdict"] == "pending" for run in runs)
    suites = ElementTree.Element(
        "testsuites", name="auditgen campaign", tests=str(len(runs)), failures=str(failures)
    )
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        name=f"campaign {campaign['campaign_id']}",
        tests=str(len(runs)),
        failures=str(failures),
        skipped=str(skipped),
        errors="0",
        timestamp=campaign["created"] or "",
    )
    for run in runs:
        seconds = run["time_to_detect_seconds"]
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"auditgen.{run['scenario']}",
            name=f"{run['scenario']} {run['scenario_id']} (expect {run['expect']})",
            time=f"{seconds:.3f}" if seconds is not None else "0",
        )
        verdict = run["verdict"]
        if verdict in FAILURES:
            failure = ElementTree.SubElement(case, "failure", message=verdict, type=verdict)
            failure.text = FAILURES[verdict]
        elif verdict == "pending":
            ElementTree.SubElement(case, "skipped", message="no verdict yet")
        out = ElementTree.SubElement(case, "system-out")
        out.text = f"verdict: {verdict}"
    ElementTree.indent(suites)
    xml: bytes = ElementTree.tostring(suites, encoding="utf-8", xml_declaration=True)
    return xml
