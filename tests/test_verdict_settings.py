"""The verdict settings: defaults, parsing, and the combinations that cannot work."""

from __future__ import annotations

import pytest

from auditgen.config import ConfigError, load_settings


def test_defaults() -> None:
    """Without settings: no alerts consumer, the platform's event paths, no key mapping, 60 s."""
    s = load_settings({}, {}, {})
    assert (s.alerts_queue, s.alerts_exchange, s.alert_key_fields, s.detection_timeout) == (
        None,
        None,
        None,
        60.0,
    )
    assert s.alert_event_fields == ("correlation_id", "raw_event_data.event_id", "event_id", "event_ids")


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
    assert (s.alerts_exchange, s.alerts_binding_key) == ("alerts", "security.#")
    assert s.alert_event_fields == ("correlation_id", "labels.event")
    assert (s.alert_key_fields, s.detection_timeout) == ({"user_id": "triggered_by.actor_id"}, 2.5)


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


def test_this_build_refuses_an_alerts_queue_it_would_not_consume() -> None:
    """Until the consumer is wired to the shared connection, asking for it stops start-up with a reason."""
    from twisted.python import usage

    from auditgen.tap import Options

    with pytest.raises(usage.UsageError, match="send them to POST /alerts"):
        Options().parseOptions(["--alerts-queue", "audit_alerts"])
