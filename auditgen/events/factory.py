"""The factory: events made from a catalog's templates, plain or as steps of a session."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from auditgen.events.catalog import Catalog
from auditgen.events.templates import Template, is_scalar
from auditgen.events.wire import KNOWN_FIELDS, SOURCE_API, SOURCE_GENERATED


def seeded_rng(seed: str | None, stream: str) -> random.Random:
    """The random source of one stream of events (generator, API, sessions, scenarios).

    Without a seed, from the OS. With one, each stream gets its own generator derived from the seed and
    the stream's name, so a run's generated events do not depend on how many API calls came in between.
    """
    return random.Random() if seed is None else random.Random(f"{seed}/{stream}")


def _from_session(session: Mapping[str, Any], key: str | None, drawn: Any) -> Any:
    """The session's value of key (a copy, if it is an object or a list), else the value drawn for it."""
    if key is None or key not in session:
        return drawn
    value = session[key]
    return value if is_scalar(value) else copy.deepcopy(value)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EventFactory:
    """Makes events from a catalog; a seeded rng and a fixed now make its output reproducible."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._catalog = catalog
        self._rng = rng if rng is not None else random.Random()
        self._now = now if now is not None else _utc_now

    def generate(self) -> dict[str, Any]:
        """A full random event, in no session: template chosen by weight; source_service SOURCE_GENERATED.

        Session steps are complete()d with their session (auditgen/sessions.py), so this, which runs for
        every plain event, never looks for one.
        """
        rng = self._rng
        t = self._catalog.pick(rng)
        host, user = t.host(rng), t.user(rng)
        details = self._details(t, host, user, t.severity, t.action_result, None, None)
        event = self._event(SOURCE_GENERATED, host, t.event_type, t.severity, user, t.action_result, details)
        if "resource" in details:
            event["resource"] = details["resource"]
        return event

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
            if session is not None:
                host = _from_session(session, t.host_from, host)
        user = fields.get("user_id")
        if user is None:
            user = t.user(rng)
            if session is not None:
                user = _from_session(session, t.user_from, user)
        severity = fields.get("severity")
        if severity is None:
            severity = t.severity
        result = given_result if given_result is not None else t.action_result
        details = self._details(t, host, user, severity, result, fields.get("details"), session)

        event = self._event(source, host, event_type, severity, user, result, details)
        if "resource" in details:
            event["resource"] = details["resource"]  # the caller's own, if any, replaces it below
        for key, value in fields.items():
            if key not in KNOWN_FIELDS:
                event[key] = value
        return event

    def _details(
        self,
        t: Template,
        host: Any,
        user: Any,
        severity: Any,
        result: Any,
        given: Mapping[str, Any] | None,
        session: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        rng = self._rng
        values = {key: gen(rng) for key, gen in t.plain}
        if session is not None:
            for key, session_key in t.from_session:
                values[key] = _from_session(session, session_key, values[key])
        if not t.formats and not given:
            return values  # the common case: already in declared order
        if given:
            values.update(given)
        if t.formats:
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
        details = {key: values[key] for key in t.order}
        if given:
            details.update(given)  # the caller's own keys, after the template's
        return details

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
        rng = self._rng
        now = self._now()
        # A naive datetime is taken as UTC; an aware one is converted.
        now = now.replace(tzinfo=None) if now.tzinfo is None else now.astimezone(UTC).replace(tzinfo=None)
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": now.isoformat(timespec="microseconds") + "Z",
            "source_service": source,
            "server_hostname": host,
            "event_type": event_type,
            "severity": severity,
            "user_id": user,
            "action_result": result,
            "details": details,
        }
