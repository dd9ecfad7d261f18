"""Routing settings: key templates, the declared topology, and the list of cluster nodes."""

from __future__ import annotations

import pytest

from auditgen.amqp.topology import Topology
from auditgen.config import ConfigError, load_settings
from auditgen.routing import RoutingKey

EVENT = {
    "event_type": "user_login",
    "action_result": "FAILURE",
    "severity": "WARNING",
    "server_hostname": "web-01",
    "user_id": "alice",
    "source_service": "audit-event-generator",
    "details": {"x": 1},
}


def test_a_template_renders_the_event_fields() -> None:
    """Each placeholder takes the event's field; literal braces are written doubled."""
    key = RoutingKey("audit.{event_type}.{action_result}.{{x}}")
    assert key.fixed is None
    assert key.render(EVENT) == "audit.user_login.FAILURE.{x}"
    every = RoutingKey("{severity}/{server_hostname}/{user_id}/{source_service}")
    assert every.render(EVENT) == "WARNING/web-01/alice/audit-event-generator"


def test_a_template_without_placeholders_is_a_constant() -> None:
    """No placeholder: `fixed` is the key (no per-event work); a queue name is taken literally."""
    assert RoutingKey("audit.events").fixed == "audit.events"
    literal = RoutingKey.literal("odd{queue}")
    assert literal.fixed == "odd{queue}"
    assert literal.render(EVENT) == "odd{queue}"


def test_a_missing_field_renders_empty() -> None:
    """An event without a field (none of ours lacks one) still gets a key instead of an error."""
    assert RoutingKey("a.{user_id}.b").render({"event_type": "x"}) == "a..b"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "audit.{details}",
            "unknown placeholder {details}; expected placeholders among {event_type}, {action_result}",
        ),
        ("audit.{event_typ}", "unknown placeholder {event_typ}"),
        ("audit.{}", "unknown placeholder {}"),
        ("audit.{0}", "unknown placeholder {0}"),
        ("audit.{event_type!r}", "unknown placeholder {event_type!r}"),
        ("audit.{event_type:>10}", "unknown placeholder {event_type:>10}"),
        ("audit.{event_type", "malformed template"),
        ("audit.}", "malformed template"),
        ("x" * 256, "at most 255 bytes"),
    ],
)
def test_bad_templates_stop_start_up_naming_the_setting(template: str, expected: str) -> None:
    """RABBITMQ_ROUTING_KEY is checked when settings load: the error names it, the value and the fields."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"RABBITMQ_ROUTING_KEY": template}, {})
    message = str(info.value)
    assert message.startswith("invalid RABBITMQ_ROUTING_KEY (environment): ")
    assert expected in message


def test_defaults_publish_to_the_default_exchange_with_the_queue_as_key() -> None:
    """Unset, routing is as before: default exchange, routing key = queue, classic queue, declared."""
    s = load_settings({}, {"RABBITMQ_QUEUE": "q{1}"}, {})
    assert s.routing.routing.fixed == "q{1}"
    assert s.routing.event_routing is None  # events take the sending run's queue, even from an older spool
    assert s.routing.topology == Topology(queue="q{1}")
    assert s.routing.topology.queue_arguments is None


def test_binding_key_defaults_by_exchange_type() -> None:
    """'#' for topic (every event), the routing key for direct, '' for fanout and headers; given, as is."""

    def binding(**env: str) -> str:
        return load_settings({}, {"RABBITMQ_EXCHANGE": "audit", **env}, {}).routing.topology.binding_key

    assert binding() == "#"
    assert binding(RABBITMQ_EXCHANGE_TYPE="direct", RABBITMQ_ROUTING_KEY="k") == "k"
    assert binding(RABBITMQ_EXCHANGE_TYPE="fanout") == ""
    assert binding(RABBITMQ_EXCHANGE_TYPE="headers") == ""
    assert binding(RABBITMQ_BINDING_KEY="audit.*.FAILURE") == "audit.*.FAILURE"


def test_a_direct_exchange_with_a_templated_key_needs_a_binding_key() -> None:
    """A direct exchange binds one key, so a templated routing key without a binding key is refused."""
    env = {"RABBITMQ_EXCHANGE": "audit", "RABBITMQ_EXCHANGE_TYPE": "direct"}
    with pytest.raises(ConfigError, match="RABBITMQ_BINDING_KEY must be set"):
        load_settings({}, {**env, "RABBITMQ_ROUTING_KEY": "audit.{event_type}"}, {})
    s = load_settings(
        {"rabbitmq-binding-key": "audit.user_login"}, {**env, "RABBITMQ_ROUTING_KEY": "a.{user_id}"}, {}
    )
    assert s.routing.topology.binding_key == "audit.user_login"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RABBITMQ_EXCHANGE_TYPE": "fan"},
            "RABBITMQ_EXCHANGE_TYPE (environment): 'fan': expected one of direct",
        ),
        (
            {"RABBITMQ_QUEUE_TYPE": "stream"},
            "RABBITMQ_QUEUE_TYPE (environment): 'stream': expected one of classic, quorum",
        ),
        ({"RABBITMQ_DECLARE": "maybe"}, "RABBITMQ_DECLARE (environment): 'maybe': expected true or false"),
        ({"RABBITMQ_EXCHANGE": "  "}, "invalid RABBITMQ_EXCHANGE (environment)"),
        ({"RABBITMQ_EXCHANGE": "e" * 256}, "at most 255 bytes"),
    ],
)
def test_bad_routing_settings_are_refused(env: dict[str, str], expected: str) -> None:
    """Each routing setting is checked, with the setting, the value and what was expected."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, env, {})
    assert expected in str(info.value)


def test_quorum_and_no_declare_are_read() -> None:
    """RABBITMQ_QUEUE_TYPE=quorum declares x-queue-type=quorum; RABBITMQ_DECLARE=false declares nothing."""
    s = load_settings({"rabbitmq-queue-type": "Quorum"}, {"RABBITMQ_DECLARE": "false"}, {})
    assert s.routing.topology.queue_type == "quorum"
    assert s.routing.topology.queue_arguments == {"x-queue-type": "quorum"}
    assert s.routing.topology.declare is False


def test_a_url_list_gives_every_node_in_order() -> None:
    """RABBITMQ_URL takes comma-separated URLs (spaces allowed); `broker` is the first node."""
    s = load_settings({}, {"RABBITMQ_URL": "amqp://u:p@n1:5672/v, amqp://u:p@n2:5673/v,amqps://u:p@n3/v"}, {})
    assert [(b.host, b.port, b.tls) for b in s.broker.nodes] == [
        ("n1", 5672, False),
        ("n2", 5673, False),
        ("n3", 5671, True),
    ]
    assert s.broker.node is s.broker.nodes[0]
    assert {(b.user, b.password, b.vhost) for b in s.broker.nodes} == {("u", "p", "v")}
    assert load_settings({}, {}, {}).broker.nodes == (load_settings({}, {}, {}).broker.node,)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://n1,http://n2", "URL 2 of 2: expected a URL starting with amqp://"),
        ("amqp://n1,,amqp://n3", "URL 2 of 3: empty"),
        ("amqp://n1,", "URL 2 of 2: empty"),
        ("amqp://n1,amqp://n2:99999", "URL 2 of 2: malformed URL"),
        ("amqp://", "the URL names no host"),
    ],
)
def test_a_bad_url_in_the_list_is_named(url: str, expected: str) -> None:
    """Every URL of the list is checked; the error says which one is wrong."""
    with pytest.raises(ConfigError, match="invalid RABBITMQ_URL") as info:
        load_settings({}, {"RABBITMQ_URL": url}, {})
    assert expected in str(info.value)


def test_no_password_of_the_list_appears_in_an_error() -> None:
    """Every URL's password is hidden in the error, not only the first one's."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"RABBITMQ_URL": "amqp://u:first@n1,amqp://u:second@n2:bad/"}, {})
    message = str(info.value)
    assert "first" not in message and "second" not in message
    assert "amqp://u:***@n1,amqp://u:***@n2:bad/" in message


def test_a_routing_key_template_is_stored_with_each_event() -> None:
    """With RABBITMQ_ROUTING_KEY set, each event's key is computed when it is accepted (and spooled)."""
    s = load_settings({}, {"RABBITMQ_ROUTING_KEY": "audit.{event_type}"}, {})
    assert s.routing.event_routing is not None
    assert s.routing.event_routing.render({"event_type": "user_login"}) == "audit.user_login"
