"""Stateful sessions in the generated stream: order, shared fields, account lives, failing sources, the
share, determinism, and the settings and wiring that turn them on."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from auditgen import app
from auditgen.config import ConfigError, load_settings
from auditgen.events import SOURCE_GENERATED, Catalog, EventFactory, builtin_data
from auditgen.generator import Generator
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.sessions import SessionMix
from auditgen.tap import Options
from tests.support.generator import taken

FIXED_NOW = datetime(2026, 11, 27, 17, 46, 4, 123456, tzinfo=UTC)
ACCOUNT_EVENTS = ("user_account_management",)


def ticking(step: timedelta = timedelta(seconds=1)) -> Callable[[], datetime]:
    """A clock that moves `step` forward on every reading, so spans between events are known."""
    times: Iterator[datetime] = (FIXED_NOW + n * step for n in range(10**9))
    return lambda: next(times)


def factory(seed: int = 1, now: Callable[[], datetime] | None = None) -> EventFactory:
    return EventFactory(Catalog.builtin(), random.Random(seed), now or (lambda: FIXED_NOW))


def stream(
    count: int,
    seed: int = 1,
    share: float = 0.3,
    sessions: int = 20,
    now: Callable[[], datetime] | None = None,
) -> list[dict[str, Any]]:
    mix = SessionMix(factory(seed, now), random.Random(f"sessions-{seed}"), share, sessions)
    return [mix() for _ in range(count)]


def span(session: list[dict[str, Any]]) -> float:
    """Seconds from a session's first event to its last, by their timestamps."""
    first, last = (datetime.fromisoformat(session[i]["timestamp"]) for i in (0, -1))
    return (last - first).total_seconds()


def by_session(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Session events grouped by details.session_id, in stream order."""
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        session_id = event["details"].get("session_id")
        if session_id is not None:
            sessions[session_id].append(event)
    return sessions


EVENTS = stream(20_000)
SESSIONS = by_session(EVENTS)


def test_a_session_is_logins_then_work_then_one_logout_last() -> None:
    """Every session starts with a login; logins come before any other event; work needs a successful
    login first; a logout is the last event and comes once; failed-only sessions have no logout. Only
    the sessions still in their slots when the stream stops (at most `sessions`) lack their logout."""
    ended = failed_only = in_progress = 0
    for events in SESSIONS.values():
        kinds = [e["event_type"] for e in events]
        logins = 0
        while logins < len(kinds) and kinds[logins] == "user_login":
            logins += 1
        assert logins >= 1, kinds
        assert "user_login" not in kinds[logins:], kinds
        rest = kinds[logins:]
        succeeded = events[logins - 1]["action_result"] == "SUCCESS"
        assert all(e["action_result"] == "FAILURE" for e in events[: logins - 1]), kinds
        if rest:
            assert succeeded, kinds
        if "user_logout" in rest:
            assert rest.count("user_logout") == 1 and rest[-1] == "user_logout", kinds
            ended += 1
        elif not succeeded:
            failed_only += 1
        else:
            in_progress += 1
    assert ended > 500 and failed_only > 50
    assert in_progress <= 20


def test_events_of_a_session_share_id_host_user_source_and_protocol() -> None:
    """One session: one uuid4 session_id, one host, one user, one source address in every event's
    details.ip_address, one protocol on its logins and logout, one terminal; all marked generated."""
    assert len(SESSIONS) > 1000
    for session_id, events in SESSIONS.items():
        assert uuid.UUID(session_id).version == 4
        assert len({(e["server_hostname"], e["user_id"], e["details"]["ip_address"]) for e in events}) == 1
        connection = [e for e in events if e["event_type"] in ("user_login", "user_logout")]
        assert len({e["details"]["protocol"] for e in connection}) == 1
        assert len({e["details"]["tty"] for e in events if "tty" in e["details"]}) <= 1
        assert {e["source_service"] for e in events} == {SOURCE_GENERATED}


def test_a_restart_stops_then_starts_the_same_service() -> None:
    """A service stopped in a session is started again as its next event, the same service."""
    restarts = 0
    for events in SESSIONS.values():
        for stopped, started in itertools.pairwise(events):
            if stopped["event_type"] == "service_status_change" and stopped["action_result"] == "STOPPED":
                assert started["action_result"] == "STARTED"
                assert started["details"]["resource"] == stopped["details"]["resource"]
                restarts += 1
    assert restarts > 50


def test_logout_duration_is_the_span_of_its_session() -> None:
    """session_duration_seconds is the time from the session's login to its logout, by their timestamps."""
    events = stream(3000, now=ticking())
    checked = 0
    for session in by_session(events).values():
        if session[-1]["event_type"] == "user_logout":
            assert session[-1]["details"]["session_duration_seconds"] == span(session)
            checked += 1
    assert checked > 50


def test_an_account_is_used_only_between_its_creation_and_its_deletion() -> None:
    """In session events, an account on a host is created (by another user), then logs in and works,
    then is deleted; never used before it is created or after it is deleted, never created twice while
    alive; once deleted, the same name may be created again on that host."""
    alive: set[tuple[str, str]] = set()
    ever: set[tuple[str, str]] = set()
    created = used = deleted = recreated = 0
    for event in EVENTS:
        if "session_id" not in event["details"]:
            continue
        host = event["server_hostname"]
        if event["event_type"] == "user_account_management":
            account = (host, event["details"]["resource"])
            assert event["user_id"] != account[1]
            if event["action_result"] == "CREATED":
                assert account not in alive
                recreated += account in ever
                alive.add(account)
                ever.add(account)
                created += 1
            else:
                assert event["action_result"] == "DELETED" and account in alive
                alive.remove(account)
                deleted += 1
        elif (host, event["user_id"]) in ever:
            assert (host, event["user_id"]) in alive, event
            used += 1
    assert created > 20 and deleted > 20 and used > 2 * created and recreated > 5


def test_a_failing_source_is_more_likely_to_fail_again() -> None:
    """Most failed-login sessions come from a source that failed before; sessions that start with a
    successful login almost never do (by chance, among tens of thousands of addresses)."""
    failed_before: set[str] = set()
    starts: dict[str, list[bool]] = {"FAILURE": [], "SUCCESS": []}
    for event in EVENTS:
        details = event["details"]
        if "session_id" not in details or event["event_type"] != "user_login":
            continue
        source = details["ip_address"]
        if SESSIONS[details["session_id"]][0] is event:
            starts[event["action_result"]].append(source in failed_before)
        if event["action_result"] == "FAILURE":
            failed_before.add(source)
    failing, fine = starts["FAILURE"], starts["SUCCESS"]
    assert len(failing) > 300 and len(fine) > 300
    assert sum(failing) / len(failing) > 0.6
    assert sum(fine) / len(fine) < 0.05


@pytest.mark.parametrize("share", [0.05, 0.3, 0.9, 1.0])
def test_the_share_of_session_events_is_respected(share: float) -> None:
    """Over many events, the share of session events is the configured one, within a small tolerance;
    the rest are plain template events without a session_id."""
    events = stream(20_000, seed=3, share=share)
    in_sessions = sum("session_id" in e["details"] for e in events)
    assert abs(in_sessions / len(events) - share) < 0.015


def test_the_same_seeds_make_the_same_sequence() -> None:
    """Same seeds, same events (ids and session ids included); other seeds, other events."""
    assert stream(2000, seed=5) == stream(2000, seed=5)
    other = stream(2000, seed=6)
    assert {e["event_id"] for e in other}.isdisjoint(e["event_id"] for e in stream(2000, seed=5))


def test_share_zero_is_exactly_the_plain_factory() -> None:
    """With share 0 the mix returns what factory.generate() would, event for event."""
    plain = factory(seed=9)
    assert stream(500, seed=9, share=0.0) == [plain.generate() for _ in range(500)]


def generated_by_clock(rate: float, count: int) -> list[dict[str, Any]]:
    """The first `count` events a Generator at `rate` makes through a seeded SessionMix, with the
    factory's clock the generator's Clock."""
    clock = Clock()
    metrics = Metrics()
    outbox = Outbox(100_000, metrics, clock)
    make = EventFactory(
        Catalog.builtin(), random.Random(4), lambda: datetime.fromtimestamp(clock.seconds(), UTC)
    )
    generator = Generator(clock, rate, SessionMix(make, random.Random(5), 0.5, 10), outbox, metrics)
    generator.startService()
    while len(outbox) < count:
        clock.advance(0.01)
    generator.stopService()
    return taken(outbox, count)


def without_clock(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        del event["timestamp"]
        event["details"].pop("session_duration_seconds", None)
    return events


def test_sessions_flow_through_the_generator_the_same_at_any_rate() -> None:
    """Driven by the Generator on a Clock, sessions reach the outbox; their logouts' durations follow the
    clock (whole seconds between login and logout); apart from that clock-made time the sequence is the
    same at 2 and at 5,000 events per second."""
    slow = generated_by_clock(2.0, 400)
    sessions = by_session(slow)
    ended = [s for s in sessions.values() if s[-1]["event_type"] == "user_logout"]
    assert len(ended) > 10
    for session in ended:
        assert session[-1]["details"]["session_duration_seconds"] == round(span(session)) > 0
    assert without_clock(slow) == without_clock(generated_by_clock(5000.0, 400))


def test_session_settings_default_and_refuse_bad_values() -> None:
    """AUDITGEN_SESSION_SHARE defaults to 0.3 and takes 0 to 1; AUDITGEN_SESSIONS defaults to 20 and
    takes 1 to 100000; anything else stops start-up naming the setting and the value."""
    s = load_settings({}, {}, {})
    assert (s.sessions.share, s.sessions.count) == (0.3, 20)
    s = load_settings({"session-share": "0", "sessions": "1"}, {"AUDITGEN_SESSION_SHARE": "0.5"}, {})
    assert (s.sessions.share, s.sessions.count) == (0.0, 1)
    assert load_settings({}, {"AUDITGEN_SESSION_SHARE": "1"}, {}).sessions.share == 1.0
    for options, message in [
        ({"session-share": "1.5"}, "invalid --session-share: '1.5': expected a share of events from 0 to 1"),
        ({"session-share": "-0.1"}, "invalid --session-share: '-0.1'"),
        ({"session-share": "nan"}, "invalid --session-share: 'nan'"),
        ({"session-share": "most"}, "invalid --session-share: 'most'"),
        ({"sessions": "0"}, "invalid --sessions: '0'"),
        ({"sessions": "100001"}, "invalid --sessions: '100001': expected a whole number from 1 to 100000"),
    ]:
        with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
            load_settings(options, {}, {})


@pytest.mark.parametrize(("args", "mixed"), [([], True), (["--session-share=0"], False)])
def test_the_service_mixes_in_sessions_only_above_share_zero(args: list[str], mixed: bool) -> None:
    """The service's generator makes events through a SessionMix by default; with share 0 it calls
    the plain factory, exactly as before sessions existed."""
    options = Options()
    options.parseOptions(args)
    root = app.build(options.settings, options.catalog, MemoryReactorClock())
    [generator] = [service for service in root if isinstance(service, Generator)]
    assert isinstance(generator._make, SessionMix) is mixed
    if not mixed:
        assert generator._make.__self__.__class__ is EventFactory


def test_template_session_specs_read_the_session_the_event_belongs_to() -> None:
    """A user template's {"session": key} spec, on a step inside a session, copies that session's value
    (the login's source address and session_id); outside a session it draws its default."""
    catalog = Catalog.from_sources(
        [
            (None, builtin_data()),
            (
                "user.yaml",
                {
                    "templates": [
                        {
                            "name": "sudo_command_success",
                            "event_type": "sudo_command",
                            "severity": "INFO",
                            "action_result": "SUCCESS",
                            "weight": 15,
                            "details": {
                                "from": {"session": "source_ip", "default": "no-session"},
                                "sid": {"session": "session_id", "default": "no-session"},
                            },
                        }
                    ]
                },
            ),
        ]
    )
    mix = SessionMix(EventFactory(catalog, random.Random(3)), random.Random("s"), 1.0, 5)
    sudo = [e for e in (mix() for _ in range(3000)) if e["event_type"] == "sudo_command"]
    in_sessions = [e for e in sudo if "session_id" in e["details"]]
    assert in_sessions
    for event in in_sessions:
        assert event["details"]["from"] == event["details"]["ip_address"]
        assert event["details"]["sid"] == event["details"]["session_id"]
    plain = EventFactory(catalog, random.Random(4)).complete({"event_type": "sudo_command"})
    assert plain["details"]["from"] == plain["details"]["sid"] == "no-session"
