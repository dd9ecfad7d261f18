"""The factory: events made from a catalog's templates, plain or as steps of a session."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from auditgen.events.catalog import Catalog
from auditgen.events.grounding import AUDIT_FIELDS, REPLACED, Fit, Grounding
from auditgen.events.stamps import ClockStamps, WallStamps, seconds
from auditgen.events.templates import Template, is_scalar, random_uuid
from auditgen.events.wire import KNOWN_FIELDS, SOURCE_API, SOURCE_GENERATED
from auditgen.world.model import World

# Pools a world stands in for: a template drawing its host or user from one of them gets the world's
# choice (a host, an account in the role the event needs); any other spec names its value as given, and
# so does one of these pools when the user's files redefine it (their own hosts or users).
WORLD_HOST_POOLS = frozenset({"hosts"})
WORLD_USER_POOLS = frozenset({"users", "admins", "sudoers", "non_sudoers", "people"})


def _standing_in(catalog: Catalog, names: frozenset[str]) -> frozenset[str]:
    """The pools of names that are still the built-in ones in this catalog."""
    builtin = Catalog.builtin().pools
    return frozenset(n for n in names if n in catalog.pools and catalog.pools[n] == builtin.get(n))


def seeded_rng(seed: str | None, stream: str) -> random.Random:
    """The random source of one stream of events (generator, API, sessions, scenarios).

    Without a seed, from the OS. With one, each stream gets its own generator derived from the seed and
    the stream's name, so API calls in between do not shift the generator's draws (in a world, what the
    shared ledger says still follows the calls: session numbers, new account names).
    """
    return random.Random() if seed is None else random.Random(f"{seed}/{stream}")


def _from_session(session: Mapping[str, Any], key: str | None, drawn: Any) -> Any:
    """The session's value of key (a copy, if it is an object or a list), else the value drawn for it."""
    if key is None or key not in session:
        return drawn
    value = session[key]
    return value if is_scalar(value) else copy.deepcopy(value)


class _Plan(NamedTuple):
    """How a template makes plain events in a world: whether the world picks host and user, the details
    still drawn from the template, and every detail the event has."""

    world_host: bool
    world_user: bool
    draw: tuple[tuple[str, Callable[[random.Random], Any]], ...]
    keys: frozenset[str]
    audit_clash: bool
    # Every detail in declared order, none set yet: the world's and the formats' values fill their places,
    # so the details need no reordering afterwards (this runs for every event).
    blank: dict[str, Any]


class EventFactory:
    """Makes events from a catalog; a seeded rng and a fixed now make its output reproducible.

    With a world, every event is fitted to it (auditgen.events.grounding): hosts, accounts, software and
    addresses agree across events, and details carry auditd's fields. Without one, values are drawn from
    the template pools alone, each independently of the others.
    """

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
        world: World | None = None,
        grounding: Grounding | None = None,
    ) -> None:
        """grounding: a fit to the world shared with another factory (one ledger for both: a scenario
        mix's runs and the generator's events); without one, the factory fits to `world` with its own."""
        self._catalog = catalog
        self._rng = rng if rng is not None else random.Random()
        self._stamp: Callable[[], str] = WallStamps() if now is None else ClockStamps(now)
        if grounding is None and world is not None:
            grounding = Grounding(world, catalog.pools, time.time if now is None else lambda: seconds(now()))
        self.grounding = grounding
        """The stream's fit to its world (its ledger of accounts and session numbers), if it has one."""
        self._host_pools = _standing_in(catalog, WORLD_HOST_POOLS)
        self._user_pools = _standing_in(catalog, WORLD_USER_POOLS)
        self._plans: dict[Template, _Plan] = {}

    def generate(self) -> dict[str, Any]:
        """A full random event, in no session: template chosen by weight; source_service SOURCE_GENERATED.

        Session steps are complete()d with their session (auditgen/sessions.py), so this, which runs for
        every plain event, never looks for one.
        """
        rng = self._rng
        if self.grounding is not None:
            return self._generate_in_world(self.grounding)
        t = self._catalog.pick(rng)
        host, user = t.host(rng), t.user(rng)
        details = self._formatted(t, self._values(t, None), host, user, t.severity, t.action_result, None)
        event = self._event(SOURCE_GENERATED, host, t.event_type, t.severity, user, t.action_result, details)
        if "resource" in details:
            event["resource"] = details["resource"]
        return event

    def _generate_in_world(self, grounding: Grounding) -> dict[str, Any]:
        """generate() in a world: the world chooses what the built-in pools would, and the template draws
        only the details the world does not set itself."""
        rng = self._rng
        while True:
            t = self._catalog.pick(rng)
            plan = self._plans.get(t) or self._plan(t)
            host = None if plan.world_host else t.host(rng)
            user = None if plan.world_user else t.user(rng)
            values = plan.blank.copy()
            for key, gen in plan.draw:
                values[key] = gen(rng)
            fit = grounding.fit(
                t.event_type, t.action_result, values, host, user, None, rng, True, None, plan.keys
            )
            if not fit.retry:  # else nothing to delete yet: another event instead
                break
        details = values  # already in declared order: set the world's values in their places
        details.update(fit.details)
        if t.formats:
            self._format(t, details, fit.host, fit.user, t.severity, t.action_result, None)
        if plan.audit_clash:  # the template has a detail of auditd's name: the template's wins
            for key, value in fit.audit.items():
                details.setdefault(key, value)
        else:
            details.update(fit.audit)
        event = self._event(
            SOURCE_GENERATED, fit.host, t.event_type, t.severity, fit.user, t.action_result, details
        )
        if "resource" in details:
            event["resource"] = details["resource"]
        return event

    def _plan(self, t: Template) -> _Plan:
        world_host = t.host_pool in self._host_pools
        # A host the template names may lie outside the world, which then sets nothing: draw it all.
        replaced = REPLACED.get(t.event_type, frozenset()) if world_host else frozenset()
        plan = _Plan(
            world_host,
            t.user_pool in self._user_pools,
            tuple((key, gen) for key, gen in t.plain if key not in replaced),
            frozenset(t.order),
            not AUDIT_FIELDS.isdisjoint(t.order),
            dict.fromkeys(t.order),
        )
        self._plans[t] = plan
        return plan

    def complete(
        self,
        fields: Mapping[str, Any],
        source: str = SOURCE_API,
        session: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A full event from a caller's fields (already type-checked by the HTTP layer: event_type is a
        non-empty str; server_hostname/user_id/action_result/severity are str if present; details a dict if
        present; SERVICE_FIELDS absent), with `source` as its source_service, in `session` if given.

        Fields the caller left out are filled from a template of that event_type (one with the caller's
        action_result if there is one, else any of the type's templates, by weight); with no template for
        that event_type: severity INFO, action_result SUCCESS, details {}. server_hostname and user_id are
        filled from the session or the pools when missing. The caller's details are merged over the
        template's (caller keys win, and format details are built from the caller's values, so they stay
        consistent). Extra top-level fields are kept as given; any SERVICE_FIELDS given are replaced by the
        service's own. A `resource` in details is also the top-level `resource`, unless the caller gave one.
        """
        rng = self._rng
        event_type: str = fields["event_type"]
        given_result = fields.get("action_result")
        t = self._catalog.pick_for(event_type, given_result, rng)

        host = fields.get("server_hostname")
        if host is None:
            host = t.host(rng)
            if session is not None and t.host_from is not None and t.host_from in session:
                host = _from_session(session, t.host_from, host)
            elif self.grounding is not None and t.host_pool in self._host_pools:
                host = None  # the world's choice
        user = fields.get("user_id")
        if user is None:
            user = t.user(rng)
            if session is not None and t.user_from is not None and t.user_from in session:
                user = _from_session(session, t.user_from, user)
            elif self.grounding is not None and t.user_pool in self._user_pools:
                user = None
        severity = fields.get("severity")
        if severity is None:
            severity = t.severity
        result = given_result if given_result is not None else t.action_result
        values = self._values(t, session)
        given = fields.get("details")
        fit = None
        if self.grounding is not None:
            seen = {**values, **given} if given else values  # the caller's details count as drawn
            fit = self._fit(t, result, seen, host, user, session, given)
            host, user = fit.host, fit.user
            given = {**fit.details, **given} if given else fit.details
        details = self._formatted(t, values, host, user, severity, result, given)
        if fit is not None:
            for key, value in fit.audit.items():
                details.setdefault(key, value)  # auditd's fields, after the template's and the caller's

        event = self._event(source, host, event_type, severity, user, result, details)
        if "resource" in details:
            event["resource"] = details["resource"]  # the caller's own, if any, replaces it below
        for key, value in fields.items():
            if key not in KNOWN_FIELDS:
                event[key] = value
        return event

    def _values(self, t: Template, session: Mapping[str, Any] | None) -> dict[str, Any]:
        """The template's drawn details (formats aside), with the session's values where it says so."""
        rng = self._rng
        values = {key: gen(rng) for key, gen in t.plain}
        if session is not None:
            for key, session_key in t.from_session:
                values[key] = _from_session(session, session_key, values[key])
        return values

    def _fit(
        self,
        t: Template,
        result: str,
        values: Mapping[str, Any],
        host: Any,
        user: Any,
        session: Mapping[str, Any] | None,
        given: Mapping[str, Any] | None,
    ) -> Fit:
        """A completed event fitted to the world (host or user None: the world's choice)."""
        assert self.grounding is not None
        host = host if isinstance(host, str) else None if host is None else str(host)
        user = user if isinstance(user, str) else None if user is None else str(user)
        return self.grounding.fit(t.event_type, result, values, host, user, session, self._rng, False, given)

    @staticmethod
    def _formatted(
        t: Template,
        values: dict[str, Any],
        host: Any,
        user: Any,
        severity: Any,
        result: Any,
        given: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if not t.formats and not given:
            return values  # the common case: already in declared order
        if given:
            values.update(given)
        if t.formats:
            EventFactory._format(t, values, host, user, severity, result, given)
        details = {key: values[key] for key in t.order}
        if given:
            details.update(given)  # the caller's own keys, after the template's
        return details

    @staticmethod
    def _format(
        t: Template,
        values: dict[str, Any],
        host: Any,
        user: Any,
        severity: Any,
        result: Any,
        given: Mapping[str, Any] | None,
    ) -> None:
        """Set the template's format details in values, from the event's fields and values (the
        caller's own, in given, are kept)."""
        top = {
            "server_hostname": host,
            "user_id": user,
            "event_type": t.event_type,
            "severity": severity,
            "action_result": result,
        }
        for key, fmt in t.formats:
            if not given or key not in given:
                values[key] = fmt(top, values)

    def _event(
        self,
        source: str,
        host: Any,
        event_type: str,
        severity: Any,
        user: Any,
        result: Any,
        details: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "event_id": random_uuid(self._rng),
            "timestamp": self._stamp(),
            "source_service": source,
            "server_hostname": host,
            "event_type": event_type,
            "severity": severity,
            "user_id": user,
            "action_result": result,
            "details": details,
        }
