"""Stateful sessions mixed into the generated stream: logins, the work done there, logouts.

Plain template events are independent draws; an audit pipeline's correlation rules need more: a user who
logs in to a host from an address, works there and logs out; accounts created before they are used and
deleted after; a source that failed to log in failing again. `SessionMix` is the generator's `make`: each
call returns one event, a session step with probability `share`, otherwise a plain template event.

Up to `sessions` stories run at once, one per slot. A session step picks a slot at random: an empty slot
starts a new story, a busy one gives its story's next step. So the steps of one story are spread over the
stream, on average `sessions / share` events apart, and everything is decided per event, never per
second: the same seed gives the same sequence at any rate. Only timestamps, and the logout's
`session_duration_seconds` (the span between the session's login and logout timestamps), follow the clock.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from auditgen.events import SOURCE_GENERATED, EventFactory
from auditgen.events.templates import random_uuid
from auditgen.world.model import Host

# A failed-login story starts from a recently failing source this often (when there is one), so that
# failures cluster by address as brute force and stale credentials do; fresh sources keep coming too.
REUSE_FAILING_SOURCE = 0.8
RECENT_FAILING_SOURCES = 16
FAILURES_THEN_SUCCESS = 0.3
# Login and logout carry the session's protocol; other events have no such field.
_CONNECTION_EVENTS = frozenset({"user_login", "user_logout"})


@dataclass(frozen=True)
class Session:
    """What every event of one session shares: details.session_id, host, user and source address; in a
    world, also how it connected and what auditd numbered it (terminal as pts/N or ttyN)."""

    session_id: str
    user: str
    host: str
    source_ip: str
    protocol: Any = None
    terminal: Any = None
    ses: Any = None
    auid: Any = None
    pid: Any = None


@dataclass(frozen=True)
class _Step:
    """One event of a story. `begins` opens a session (a login): user, host and source_ip fix who logs in
    where from (None: the template draws it); `ends` closes it (a logout). `carry` names details copied
    from the story's previous event (the service a restart starts again, a repeated failure's reason)."""

    event_type: str
    action_result: str
    details: Mapping[str, Any] = field(default_factory=dict)
    begins: bool = False
    ends: bool = False
    user: str | None = None
    host: str | None = None
    source_ip: str | None = None
    carry: tuple[str, ...] = ()


_LOGOUT = _Step("user_logout", "SUCCESS", ends=True)
# Interactive work needs a terminal: those sessions log in over ssh, not sftp.
_SHELL = {"protocol": "ssh"}

# Work an admin does in an interactive session, by weight; a restart is two events.
_ADMIN_WORK: tuple[tuple[tuple[_Step, ...], float], ...] = (
    ((_Step("sudo_command", "SUCCESS"),), 6),
    ((_Step("file_modified", "MODIFIED"),), 3),
    (
        (
            _Step("service_status_change", "STOPPED"),
            _Step("service_status_change", "STARTED", carry=("resource",)),
        ),
        2,
    ),
    ((_Step("permission_change", "MODIFIED"),), 1),
    ((_Step("package_install", "SUCCESS"),), 1),
    ((_Step("firewall_rule_change", "MODIFIED"),), 1),
    ((_Step("cron_job_modified", "MODIFIED"),), 1),
)
# The same work in a world; "restart" is a sudo command and its effect (see SessionMix._world_work).
_WORLD_ADMIN_WORK = (
    "sudo_command",
    "file_modified",
    "restart",
    "permission_change",
    "package_install",
    "firewall_rule_change",
    "cron_job_modified",
)
_WORLD_ADMIN_WEIGHTS = (6, 3, 2, 1, 1, 1, 1)
_RESULTS = {
    "sudo_command": "SUCCESS",
    "file_modified": "MODIFIED",
    "permission_change": "MODIFIED",
    "package_install": "SUCCESS",
    "firewall_rule_change": "MODIFIED",
    "cron_job_modified": "MODIFIED",
}
# What an ordinary user (a new account, someone who got in after failing) does with their own account.
_USER_WORK: tuple[tuple[tuple[_Step, ...], float], ...] = (
    ((_Step("password_change", "SUCCESS"),), 2),
    ((_Step("ssh_key_added", "SUCCESS"),), 1),
)


@dataclass
class _Story:
    """One slot's plan (steps still to come) and the session it is in."""

    steps: deque[_Step]
    account: tuple[str, str] | None = None  # (host, account) this story creates and deletes
    session: Session | None = None
    started: str = ""  # the login's timestamp
    protocol: Any = None
    tty: Any = None  # the session's terminal, once an event drew one
    last: Mapping[str, Any] = field(default_factory=dict)  # the previous event's details


class SessionMix:
    """The generated stream with a `share` of session steps: call it for the next event.

    Kinds of story, by weight: an admin's interactive session (6), failed logins (3), an account's life
    (1). All randomness comes from `rng` and the factory's own, in event order, so a seeded pair repeats.
    """

    def __init__(
        self,
        factory: EventFactory,
        rng: random.Random,
        share: float,
        sessions: int,
    ) -> None:
        """share from 0 to 1 and sessions of at least 1, as config checks them."""
        self._factory = factory
        self._rng = rng
        self._share = share
        self._slots: list[_Story | None] = [None] * sessions
        self._failing: deque[str] = deque(maxlen=RECENT_FAILING_SOURCES)
        self._accounts: set[tuple[str, str]] = set()  # (host, account) between creation and deletion
        self._kinds = ((self._admin_story, 6), (self._failed_logins_story, 3), (self._account_story, 1))
        self._grounding = factory.grounding
        if self._grounding is not None:
            self._kinds = ((self._world_admin, 6), (self._world_failed_logins, 3), (self._world_account, 1))

    def __call__(self) -> dict[str, Any]:
        """The next event: a session step with probability share, else a plain template event."""
        rng = self._rng
        if rng.random() >= self._share:
            return self._factory.generate()
        slot = rng.randrange(len(self._slots))
        story = self._slots[slot] or self._new_story()
        event = self._emit(story, story.steps.popleft())
        if story.steps:
            self._slots[slot] = story
        else:
            self._slots[slot] = None
            if story.account is not None:
                self._accounts.discard(story.account)
                if self._grounding is not None:
                    self._grounding.delete(*story.account)
        return event

    # -- stories ----------------------------------------------------------------------------------------

    def _new_story(self) -> _Story:
        kinds = self._kinds
        make = self._rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        return make()

    def _admin_story(self) -> _Story:
        """A sudoer logs in, does 1 to 4 pieces of admin work, logs out."""
        admin = self._sample("sudo_command", "SUCCESS")["user_id"]
        steps = [_Step("user_login", "SUCCESS", _SHELL, begins=True, user=admin)]
        steps += self._work(_ADMIN_WORK, self._rng.randint(1, 4))
        steps.append(_LOGOUT)
        return _Story(deque(steps))

    def _failed_logins_story(self) -> _Story:
        """1 to 4 failed logins from one source (often one that failed recently), sometimes then a
        success, some work on the user's own account and a logout."""
        rng = self._rng
        source = rng.choice(self._failing) if self._failing and rng.random() < REUSE_FAILING_SOURCE else None
        succeeds = rng.random() < FAILURES_THEN_SUCCESS
        reason = {"reason": "invalid_password"} if succeeds else {}
        steps = [_Step("user_login", "FAILURE", reason, begins=True, source_ip=source)]
        steps += [_Step("user_login", "FAILURE", carry=("reason",))] * rng.randint(0, 3)
        if succeeds:
            steps.append(_Step("user_login", "SUCCESS"))
            steps += self._work(_USER_WORK, rng.randint(0, 2))
            steps.append(_LOGOUT)
        return _Story(deque(steps))

    def _account_story(self) -> _Story:
        """An admin creates an account on a host; later the new account logs in there, sets itself up and
        logs out; later still the admin deletes it. An account is never used outside its life."""
        created = self._sample("user_account_management", "CREATED")
        admin, host = created["user_id"], created["server_hostname"]
        account = created["details"].get("resource")
        if not isinstance(account, str) or (host, account) in self._accounts:
            return self._admin_story()  # the same account on the same host is alive in another story
        self._accounts.add((host, account))
        steps = [
            _Step("user_login", "SUCCESS", _SHELL, begins=True, user=admin, host=host),
            _Step("user_account_management", "CREATED", created["details"]),
            _LOGOUT,
            _Step("user_login", "SUCCESS", _SHELL, begins=True, user=account, host=host),
            *self._work(_USER_WORK, self._rng.randint(1, 3)),
            _LOGOUT,
            _Step("user_login", "SUCCESS", _SHELL, begins=True, user=admin, host=host),
            _Step("user_account_management", "DELETED", {"resource": account}),
            _LOGOUT,
        ]
        return _Story(deque(steps), account=(host, account))

    # -- stories drawn from a world -------------------------------------------------------------------

    def _world_admin(self) -> _Story:
        """An admin logs in to a host where they may sudo, does 1 to 4 pieces of work there, logs out. A
        restart is the sudo command followed by its effect: the service stops, then starts."""
        grounding, rng = self._grounding, self._rng
        assert grounding is not None
        host, admin = grounding.pick(rng, "admin")
        steps = [_Step("user_login", "SUCCESS", _SHELL, begins=True, user=admin.name, host=host.name)]
        for _ in range(rng.randint(1, 4)):
            steps += self._world_work(host)
        steps.append(_LOGOUT)
        return _Story(deque(steps))

    def _world_work(self, host: Host) -> list[_Step]:
        rng = self._rng
        work = rng.choices(_WORLD_ADMIN_WORK, _WORLD_ADMIN_WEIGHTS)[0]
        if work == "restart":
            service = rng.choice(host.profile.services)
            return [
                _Step("sudo_command", "SUCCESS", {"command": f"systemctl restart {service}"}),
                _Step("service_status_change", "STOPPED", {"resource": service}),
                _Step("service_status_change", "STARTED", {"resource": service}),
            ]
        return [_Step(work, _RESULTS[work])]

    def _world_failed_logins(self) -> _Story:
        """An attacker trying a name the host does not have (1 to 4 times, often from an address that
        failed recently), or a person failing to log in to a host they have an account on, sometimes
        then getting in, doing some work on their own account and logging out."""
        grounding, rng = self._grounding, self._rng
        assert grounding is not None
        if rng.random() < 0.5:
            host = rng.choice(grounding.world.hosts)
            name, source = grounding.attacker(host, rng)
            if self._failing and rng.random() < REUSE_FAILING_SOURCE:
                source = rng.choice(self._failing)
            invalid = {"reason": "unknown_user", "protocol": "ssh"}
            steps = [
                _Step("user_login", "FAILURE", invalid, True, user=name, host=host.name, source_ip=source)
            ]
            steps += [_Step("user_login", "FAILURE", carry=("reason",))] * rng.randint(0, 3)
            return _Story(deque(steps))
        host, person = grounding.pick(rng, "login")
        reason = "invalid_password" if host.password_ssh else "invalid_public_key"
        source = grounding.source(person.name, rng)
        first = _Step(
            "user_login",
            "FAILURE",
            {"reason": reason, "protocol": "ssh"},
            begins=True,
            user=person.name,
            host=host.name,
            source_ip=source,
        )
        steps = [first, *[_Step("user_login", "FAILURE", carry=("reason",))] * rng.randint(0, 2)]
        if rng.random() < FAILURES_THEN_SUCCESS:
            steps.append(_Step("user_login", "SUCCESS"))
            steps += self._work(_USER_WORK, rng.randint(0, 2))
            steps.append(_LOGOUT)
        return _Story(deque(steps))

    def _world_account(self) -> _Story:
        """An admin creates an account (sudo useradd, then the account is created), the new account logs
        in and sets itself up, and the admin deletes it (sudo userdel, then the deletion)."""
        grounding, rng = self._grounding, self._rng
        assert grounding is not None
        host, admin = grounding.pick(rng, "admin")
        name = grounding.new_account_name(host, rng)
        if name is None:
            return self._world_admin()
        grounding.create(host, name)  # reserved from now: no other story or event creates it
        login = _Step("user_login", "SUCCESS", _SHELL, begins=True, user=admin.name, host=host.name)
        steps = [
            login,
            _Step("sudo_command", "SUCCESS", {"command": f"useradd -m {name}"}),
            _Step("user_account_management", "CREATED", {"resource": name}),
            _LOGOUT,
            _Step("user_login", "SUCCESS", _SHELL, begins=True, user=name, host=host.name),
            *self._work(_USER_WORK, rng.randint(1, 3)),
            _LOGOUT,
            login,
            _Step("sudo_command", "SUCCESS", {"command": f"userdel -r {name}"}),
            _Step("user_account_management", "DELETED", {"resource": name}),
            _LOGOUT,
        ]
        return _Story(deque(steps), account=(host.name, name))

    def _work(self, menu: Sequence[tuple[tuple[_Step, ...], float]], count: int) -> list[_Step]:
        picks = self._rng.choices([steps for steps, _ in menu], [w for _, w in menu], k=count)
        return [step for steps in picks for step in steps]

    def _sample(self, event_type: str, action_result: str) -> dict[str, Any]:
        """An event drawn only for its values (a plausible user for this kind of work, a new account's
        name); never sent. Drawing through the templates keeps the roles the catalog gives its users."""
        return self._factory.complete({"event_type": event_type, "action_result": action_result})

    # -- events -----------------------------------------------------------------------------------------

    def _emit(self, story: _Story, step: _Step) -> dict[str, Any]:
        """The step as an event of its story's session: a login opens the session, a logout closes it."""
        fields: dict[str, Any] = {"event_type": step.event_type, "action_result": step.action_result}
        details: dict[str, Any] = {key: story.last[key] for key in step.carry if key in story.last}
        if step.begins:
            details["session_id"] = random_uuid(self._rng)
            if step.source_ip is not None:
                details["ip_address"] = step.source_ip
            if step.user is not None:
                fields["user_id"] = step.user
            if step.host is not None:
                fields["server_hostname"] = step.host
        else:
            session = story.session
            assert session is not None, "a story's steps start with a login"
            fields["user_id"], fields["server_hostname"] = session.user, session.host
            details["session_id"], details["ip_address"] = session.session_id, session.source_ip
            if step.event_type in _CONNECTION_EVENTS and story.protocol is not None:
                details["protocol"] = story.protocol
        details.update(step.details)
        fields["details"] = details
        # Template specs such as {"session": "source_ip", ...} read the session (a login opens it: none yet).
        context = (
            None if story.session is None else {k: v for k, v in vars(story.session).items() if v is not None}
        )
        event = self._factory.complete(fields, source=SOURCE_GENERATED, session=context)
        made = event["details"]
        if step.begins:
            source_ip = str(made.get("ip_address", ""))
            story.session = Session(made["session_id"], event["user_id"], event["server_hostname"], source_ip)
            story.started, story.protocol, story.tty = event["timestamp"], made.get("protocol"), None
        if step.event_type == "user_login" and step.action_result == "SUCCESS" and "ses" in made:
            # auditd's session starts at the successful login (failures before it have none).
            assert story.session is not None
            terminal = str(made.get("terminal"))
            story.session = replace(
                story.session,
                protocol=made.get("protocol"),
                terminal=terminal[len("/dev/") :] if terminal.startswith("/dev/") else terminal,
                ses=made["ses"],
                auid=made.get("auid"),
                pid=made.get("pid"),
            )
        if "tty" in made:
            made["tty"] = story.tty = story.tty or made["tty"]
        if step.ends:
            made["session_duration_seconds"] = _seconds_between(story.started, event["timestamp"])
            story.session = None
        # In a world, only attackers' addresses are reused: a person fails from their own.
        attacker = self._grounding is None or made.get("reason") == "unknown_user"
        if step.event_type == "user_login" and step.action_result == "FAILURE" and attacker:
            self._remember_failing(made.get("ip_address"))
        story.last = made
        return event

    def _remember_failing(self, source: Any) -> None:
        if not isinstance(source, str):
            return
        if source in self._failing:
            self._failing.remove(source)
        self._failing.append(source)


def _seconds_between(start: str, end: str) -> int:
    """Whole seconds between two event timestamps (ISO-8601 with Z)."""
    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return max(0, round(span.total_seconds()))
