"""The verdict settings: defaults, parsing, and the combinations that cannot work."""

from __future__ import annotations

import pytest

from auditgen.config import ConfigError, load_settings


def test_defaults() -> None:
    """Without settings: no alerts consumer, the platform's event paths, no key mapping, 60 s."""
    s = load_settings({}, {}, {})
    assert (s.alerts.queue, s.alerts.exchange, s.alerts.key_fields, s.alerts.detection_timeout) == (
        None,
        None,
        None,
        60.0,
    )
    assert s.alerts.event_fields == ("correlation_id", "raw_event_data.event_id", "event_id", "event_ids")


def test_values_are_parsed() -> None:
    """Paths, key mappings and the timeout are read from the environment."""
    s = load_settings(
        {"alerts-exchange": "alerts", "alerts-binding-key": "security.#"},
        {
            "AUDITGEN_ALERT_EVENT_FIELDS": "correlation_id, labels.event",
            "AUDITGEN_ALERT_KEY_FIELDS": "user_id=triggered_by.actor_id",
            "AUDITGEN_DETECTION_TIMEOUT": "2.5",
        },
        {},
    )
    assert (s.alerts.exchange, s.alerts.binding_key) == ("alerts", "security.#")
    assert s.alerts.event_fields == ("correlation_id", "labels.event")
    assert (s.alerts.key_fields, s.alerts.detection_timeout) == ({"user_id": "triggered_by.actor_id"}, 2.5)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"alerts-queue": "a", "alerts-exchange": "x"}, "--alerts-queue and --alerts-exchange are both set"),
        ({"alerts-binding-key": "k"}, "--alerts-binding-key is set without AUDITGEN_ALERTS_EXCHANGE"),
        ({"alerts-queue": "audit_events"}, "expected a queue other than RABBITMQ_QUEUE"),
        ({"alerts-queue": "t", "ground-truth-queue": "t"}, "expected a queue other than RABBITMQ_QUEUE"),
        ({"detection-timeout": "0"}, "invalid --detection-timeout: '0'"),
        ({"detection-timeout": "7200"}, "invalid --detection-timeout: '7200'"),
        ({"alert-key-fields": "user_id"}, "invalid --alert-key-fields: 'user_id': expected comma-separated"),
        ({"alert-event-fields": "a,,b"}, "invalid --alert-event-fields"),
    ],
)
def test_bad_combinations_stop_start_up(options: dict[str, str], error: str) -> None:
    """Each mistake is a ConfigError naming the setting."""
    with pytest.raises(ConfigError) as raised:
        load_settings(options, {}, {})
    assert error in str(raised.value)


def test_an_alerts_queue_puts_a_consumer_on_its_own_link_in_the_service() -> None:
    """With AUDITGEN_ALERTS_QUEUE the service has an alerts link (its own connection to the same nodes)
    started after the publisher, and /healthz shows the consumer; without it, neither."""
    from twisted.internet.testing import MemoryReactorClock

    from auditgen import app
    from auditgen.events import Catalog
    from auditgen.verdicts.link import AlertsLink

    with_alerts = app.build(
        load_settings({"alerts-queue": "audit_alerts"}, {}, {}), Catalog.builtin(), MemoryReactorClock()
    )
    assert with_alerts.parts is not None and with_alerts.parts.alerts is not None
    links = [child for child in with_alerts if isinstance(child, AlertsLink)]
    assert links == [with_alerts.parts.alerts]
    assert list(with_alerts).index(links[0]) > list(with_alerts).index(with_alerts.parts.publisher)
    assert links[0].consumer.describe() == "queue 'audit_alerts'"
    without = app.build(load_settings({}, {}, {}), Catalog.builtin(), MemoryReactorClock())
    assert without.parts is not None and without.parts.alerts is None
    assert not [child for child in without if isinstance(child, AlertsLink)]
