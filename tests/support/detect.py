"""Detection rules written from the scenarios' descriptions, independent of auditgen/scenarios.py.

Each takes a list of events (as published) and returns what it detects: a set of key tuples and, for
each, the ids of the events that tripped it. Tests compare these with a run's expected detection.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from auditgen.events import Catalog

Event = Mapping[str, Any]
Found = dict[tuple[str, ...], set[str]]  # keys -> ids of the events that tripped the rule

PLATFORM_FILES = ("/etc/sudoers", "/root/.ssh/authorized_keys", "/etc/shadow", "/etc/passwd")
CLIENT_NETWORKS = [ipaddress.ip_network(c) for c in Catalog.builtin().pools["client_networks"]]


def when(event: Event) -> datetime:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


def _is(event: Event, event_type: str, result: str) -> bool:
    return bool(event["event_type"] == event_type and event["action_result"] == result)


def _grouped(events: Iterable[Event], *fields: str) -> dict[tuple[str, ...], list[Event]]:
    groups: dict[tuple[str, ...], list[Event]] = defaultdict(list)
    for e in sorted(events, key=when):
        groups[tuple(e[f] if f != "resource" else e.get("resource", "") for f in fields)].append(e)
    return groups


def _bursts(events: Sequence[Event], count: int, seconds: float) -> set[str]:
    """Ids of the events in any run of `count` consecutive events spanning at most `seconds`."""
    ids: set[str] = set()
    for i in range(len(events) - count + 1):
        run = events[i : i + count]
        if (when(run[-1]) - when(run[0])).total_seconds() <= seconds:
            ids |= {e["event_id"] for e in run}
    return ids


def brute_force(events: Sequence[Event], count: int = 3, seconds: float = 60.0) -> Found:
    """The platform's rule: `count` or more user_login FAILURE, same user_id and server_hostname, within
    `seconds` (defaults: 3 within 60 s)."""
    failures = (e for e in events if _is(e, "user_login", "FAILURE"))
    found = {
        k: _bursts(g, count, seconds) for k, g in _grouped(failures, "user_id", "server_hostname").items()
    }
    return {k: ids for k, ids in found.items() if ids}


def sensitive_file_tamper(events: Sequence[Event]) -> Found:
    """The platform's rule: file_modified MODIFIED whose top-level resource contains one of four paths."""
    found: Found = defaultdict(set)
    for e in events:
        if _is(e, "file_modified", "MODIFIED") and any(p in e.get("resource", "") for p in PLATFORM_FILES):
            found[(e["server_hostname"], e["resource"])].add(e["event_id"])
    return dict(found)


def privilege_escalation(events: Sequence[Event], seconds: float) -> Found:
    """A login, then a sudo to root, then a change of sudoers or root's keys, by one user on one host."""
    found: Found = {}
    for (user, host), group in _grouped(events, "user_id", "server_hostname").items():
        login = next((e for e in group if _is(e, "user_login", "SUCCESS")), None)
        if login is None:
            continue
        after = group[group.index(login) + 1 :]
        sudo = next((e for e in after if _is(e, "sudo_command", "SUCCESS")), None)
        if sudo is None:
            continue
        for change in after[after.index(sudo) + 1 :]:
            target = change.get("resource")
            in_time = (when(change) - when(login)).total_seconds() <= seconds
            if _is(change, "file_modified", "MODIFIED") and target in PLATFORM_FILES[:2] and in_time:
                found[(user, host, target)] = {login["event_id"], sudo["event_id"], change["event_id"]}
    return found


def service_flapping(events: Sequence[Event], cycles: int, seconds: float) -> Found:
    """`cycles` STOPPED service_status_change, each followed by STARTED, one service on one host."""
    changes = (e for e in events if e["event_type"] == "service_status_change")
    found: Found = {}
    for key, group in _grouped(changes, "server_hostname", "resource").items():
        results = [e["action_result"] for e in group]
        flips = sum(1 for a, b in itertools.pairwise(results) if (a, b) == ("STOPPED", "STARTED"))
        span = (when(group[-1]) - when(group[0])).total_seconds()
        if flips >= cycles and span <= seconds:
            found[key] = {e["event_id"] for e in group}
    return found


def account_takeover(events: Sequence[Event], seconds: float) -> Found:
    """An account created, then logged in to from outside the client networks within `seconds`."""
    found: Found = {}
    for created in (e for e in events if _is(e, "user_account_management", "CREATED")):
        account = created["details"]["resource"]
        for login in (e for e in events if _is(e, "user_login", "SUCCESS") and e["user_id"] == account):
            ip = ipaddress.ip_address(login["details"]["ip_address"])
            delay = (when(login) - when(created)).total_seconds()
            if 0 <= delay <= seconds and not any(ip in net for net in CLIENT_NETWORKS):
                key = (account, login["server_hostname"], str(ip))
                found[key] = {created["event_id"], login["event_id"]}
    return found


def off_hours_admin(events: Sequence[Event]) -> Found:
    """sudo_command SUCCESS outside 08:00-18:00 UTC, by user and host."""
    found: Found = defaultdict(set)
    for e in events:
        if _is(e, "sudo_command", "SUCCESS") and not 8 <= when(e).hour < 18:
            found[(e["user_id"], e["server_hostname"])].add(e["event_id"])
    return dict(found)


def detect(name: str, events: Sequence[Event], params: dict[str, Any]) -> Found:
    """The rule for scenario `name`, tuned by the run's parameters where the rule has any."""
    if name == "brute_force":
        return brute_force(events, params["attempts"], params["window_seconds"])
    if name == "privilege_escalation":
        return privilege_escalation(events, params["window_seconds"])
    if name == "sensitive_file_tamper":
        return sensitive_file_tamper(events)
    if name == "service_flapping":
        return service_flapping(events, params["cycles"], params["window_seconds"])
    if name == "account_takeover":
        return account_takeover(events, params["delay_seconds"])
    assert name == "off_hours_admin"
    return off_hours_admin(events)


def assert_expected(
    run_expected: dict[str, Any], name: str, events: Sequence[Event], params: dict[str, Any]
) -> None:
    """The rule computed from the events finds exactly the expected keys, within the expected window."""
    found = detect(name, events, params)
    keys = tuple(run_expected["keys"].values())
    assert list(found) == [keys], f"{name}: the rule found {list(found)}, expected {keys}"
    assert found[keys] <= set(run_expected["event_ids"])
    stamps = sorted(e["timestamp"] for e in events)
    assert run_expected["window"] == {"start": stamps[0], "end": stamps[-1]}
    assert run_expected["rule"] == name


# -- The platform's analysis service, counting by arrival time (/work/shared/examples/README.md) -----------

PLATFORM_WINDOW_SECONDS = 60.0
PLATFORM_THRESHOLD = 3


def platform_alerts(arrivals: Sequence[tuple[float, Event]]) -> list[tuple[str, str]]:
    """(rule, event_id) for every alert the analysis service publishes, given each event with the time it
    consumed it: ANLY-SEC-001 for each failed login while 3 or more of one user_id and server_hostname
    arrived within 60 s (by arrival, not timestamp); ANLY-SEC-002 for each file_modified MODIFIED whose
    top-level resource contains one of the four files."""
    alerts: list[tuple[str, str]] = []
    windows: dict[tuple[str, str], list[float]] = defaultdict(list)
    for arrived, e in sorted(arrivals, key=lambda a: a[0]):
        if _is(e, "user_login", "FAILURE"):
            window = windows[(e["user_id"], e["server_hostname"])]
            window[:] = [t for t in window if arrived - t <= PLATFORM_WINDOW_SECONDS] + [arrived]
            if len(window) >= PLATFORM_THRESHOLD:
                alerts.append(("ANLY-SEC-001", e["event_id"]))
        elif _is(e, "file_modified", "MODIFIED") and any(p in e.get("resource", "") for p in PLATFORM_FILES):
            alerts.append(("ANLY-SEC-002", e["event_id"]))
    return alerts
