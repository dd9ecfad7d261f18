"""Settings: precedence, parsing and the errors that stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditgen.config import SPECS, Broker, ConfigError, load_settings, read_dotenv


def test_defaults_match_the_legacy_service() -> None:
    """With nothing set, the service talks to localhost:5672 as guest and publishes to audit_events."""
    s = load_settings({}, {}, {})
    assert s.broker.node == Broker("localhost", 5672, "guest", "guest", "/", tls=False)
    assert (s.routing.queue, s.api.port, s.metrics.port, s.generator.interval) == (
        "audit_events",
        5000,
        8000,
        5.0,
    )
    assert s.outbox.max_events == 10_000


def test_option_beats_environment_beats_dotenv_beats_default() -> None:
    """Each source overrides the ones below it, setting by setting."""
    options = {"app-port": "7001"}
    environ = {"APP_PORT": "7002", "PROMETHEUS_PORT": "7003"}
    dotenv = {"APP_PORT": "7004", "PROMETHEUS_PORT": "7005", "RABBITMQ_QUEUE": "from_dotenv"}
    s = load_settings(options, environ, dotenv)
    assert s.api.port == 7001
    assert s.metrics.port == 7003
    assert s.routing.queue == "from_dotenv"
    assert s.broker.node.host == "localhost"


def test_strict_is_off_unless_set_true() -> None:
    """AUDITGEN_STRICT (--strict) defaults to false, as the legacy service refused nothing it could send."""
    assert load_settings({}, {}, {}).api.strict is False
    assert load_settings({}, {"AUDITGEN_STRICT": "true"}, {}).api.strict is True
    assert load_settings({"strict": "false"}, {"AUDITGEN_STRICT": "true"}, {}).api.strict is False
    with pytest.raises(ConfigError, match="AUDITGEN_STRICT"):
        load_settings({}, {"AUDITGEN_STRICT": "maybe"}, {})


def test_interval_is_a_float_and_zero_turns_generation_off() -> None:
    """EVENT_GENERATION_INTERVAL_SECONDS takes fractions, and 0 is allowed."""
    assert load_settings({}, {"EVENT_GENERATION_INTERVAL_SECONDS": "0.25"}, {}).generator.interval == 0.25
    assert load_settings({"interval": "0"}, {}, {}).generator.interval == 0.0


@pytest.mark.parametrize(
    ("options", "environ", "expected"),
    [
        ({}, {"RABBITMQ_PORT": "abc"}, "invalid RABBITMQ_PORT (environment): 'abc'"),
        ({}, {"RABBITMQ_PORT": "70000"}, "invalid RABBITMQ_PORT (environment): '70000'"),
        ({"interval": "-1"}, {}, "invalid --interval: '-1'"),
        ({"interval": "nan"}, {}, "invalid --interval: 'nan'"),
        ({}, {"EVENT_GENERATION_INTERVAL_SECONDS": "soon"}, "EVENT_GENERATION_INTERVAL_SECONDS"),
        ({}, {"APP_PORT": ""}, "invalid APP_PORT (environment): ''"),
        ({}, {"RABBITMQ_QUEUE": "  "}, "invalid RABBITMQ_QUEUE (environment)"),
        ({}, {"RABBITMQ_URL": "http://host/"}, "amqp:// or amqps://"),
        ({}, {"RABBITMQ_URL": "amqp://"}, "names no host"),
        ({}, {"RABBITMQ_URL": "amqp://h:99999/"}, "malformed URL"),
        ({"outbox-max": "0"}, {}, "invalid --outbox-max: '0'"),
        ({}, {"AUDITGEN_SHAPE": "square"}, "expected one of constant, poisson, bursts, daily"),
        (
            {"burst-on-seconds": "0"},
            {},
            "invalid --burst-on-seconds: '0': expected a number of seconds greater",
        ),
        ({}, {"AUDITGEN_DAILY_PEAK_HOUR": "noon"}, "invalid AUDITGEN_DAILY_PEAK_HOUR (environment): 'noon'"),
        ({"daily-min-ratio": "2"}, {}, "expected a fraction of the peak rate, from 0 to 1"),
    ],
)
def test_bad_values_name_the_setting_and_the_value(
    options: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    """A bad value is refused with one line that says which setting, from where, and the value."""
    with pytest.raises(ConfigError) as info:
        load_settings(options, environ, {})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_traffic_shape_and_its_parameters_are_read() -> None:
    """AUDITGEN_SHAPE and the shape parameters: constant by default, and each read as a number."""
    s = load_settings({}, {}, {})
    assert (
        s.shape.shape,
        s.shape.burst_on_seconds,
        s.shape.burst_off_seconds,
        s.shape.daily_peak_hour,
        s.shape.daily_min_ratio,
    ) == (
        "constant",
        10.0,
        50.0,
        14.0,
        0.1,
    )
    environ = {
        "AUDITGEN_SHAPE": "bursts",
        "AUDITGEN_BURST_OFF_SECONDS": "0",
        "AUDITGEN_DAILY_PEAK_HOUR": "23.5",
    }
    s = load_settings({"shape": "daily", "burst-on-seconds": "2.5"}, environ, {})
    assert (s.shape.shape, s.shape.burst_on_seconds, s.shape.burst_off_seconds, s.shape.daily_peak_hour) == (
        "daily",
        2.5,
        0.0,
        23.5,
    )


def test_url_overrides_the_five_broker_settings() -> None:
    """RABBITMQ_URL replaces host, port, user, password and vhost, with percent-decoding."""
    s = load_settings(
        {},
        {"RABBITMQ_HOST": "ignored", "RABBITMQ_URL": "amqps://app%40x:p%2Fw@rabbit.example:5673/prod%2Fa"},
        {},
    )
    assert s.broker.node == Broker("rabbit.example", 5673, "app@x", "p/w", "prod/a", tls=True)


def test_url_defaults_port_by_scheme_and_vhost_to_root() -> None:
    """amqp:// defaults to 5672 and amqps:// to 5671; an empty path means vhost /."""
    assert load_settings({}, {"RABBITMQ_URL": "amqp://h"}, {}).broker.node.port == 5672
    tls = load_settings({}, {"RABBITMQ_URL": "amqps://h/"}, {}).broker.node
    assert (tls.port, tls.vhost) == (5671, "/")


def test_password_never_appears_in_errors_or_repr() -> None:
    """The password is a secret: not in a config error about the URL, not in the settings' repr."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"RABBITMQ_URL": "amqp://u:s3cret@h:notaport/"}, {})
    assert "s3cret" not in str(info.value)
    s = load_settings({}, {"RABBITMQ_PASS": "s3cret"}, {})
    assert s.broker.node.password == "s3cret"
    assert "s3cret" not in repr(s)
    assert "s3cret" not in s.broker.node.describe()


def test_dotenv_file_is_read_and_a_missing_named_file_is_an_error(tmp_path: Path) -> None:
    """--env-file names a file that must exist; its values feed the settings."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("RABBITMQ_QUEUE=from_file\n# comment\nAPP_PORT=5999\n")
    values = read_dotenv(str(env_file))
    assert load_settings({}, {}, values).routing.queue == "from_file"
    with pytest.raises(ConfigError, match="not a readable file"):
        read_dotenv(str(tmp_path / "missing.env"))


def test_default_dotenv_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --env-file, ./.env is read when it exists and ignored when it does not."""
    monkeypatch.chdir(tmp_path)
    assert read_dotenv(None) == {}
    (tmp_path / ".env").write_text("RABBITMQ_USER=ops\n")
    assert read_dotenv(None) == {"RABBITMQ_USER": "ops"}


def test_every_setting_has_a_distinct_env_var_and_option() -> None:
    """The settings table is the single source of names for options, variables and docs."""
    assert len({s.env for s in SPECS}) == len(SPECS)
    assert len({s.option for s in SPECS}) == len(SPECS)


def test_spool_dir_must_be_a_writable_directory(tmp_path: Path) -> None:
    """A spool path that is a file, or under a file, is refused before start; a new one is not created."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"AUDITGEN_SPOOL_DIR .*not a directory"):
        load_settings({}, {"AUDITGEN_SPOOL_DIR": str(a_file)}, {})
    with pytest.raises(ConfigError, match="cannot be created"):
        load_settings({"spool-dir": str(a_file / "spool")}, {}, {})
    fresh = tmp_path / "new" / "spool"
    assert load_settings({"spool-dir": str(fresh)}, {}, {}).outbox.spool_dir == str(fresh)
    assert not fresh.exists(), "parsing settings must not create anything"


def test_every_setting_has_a_topic_and_every_topic_settings() -> None:
    """The topics (groups of Settings, headings of --help and the reference) and the table agree."""
    from auditgen.config import TOPICS

    assert {spec.topic for spec in SPECS} == set(TOPICS)


def test_the_shape_group_is_the_generators_shape_settings() -> None:
    """The traffic shape is described once: settings.shape is the ShapeSettings the generator and PUT
    /generator use, with its defaults and checks."""
    from auditgen.shapes import ShapeSettings

    assert load_settings({}, {}, {}).shape == ShapeSettings()
    assert load_settings({"shape": "bursts"}, {}, {}).shape == ShapeSettings("bursts")


def test_instance_defaults_to_the_host_name_and_a_bad_name_is_refused() -> None:
    """Unset, the identity is the host name (a StatefulSet's pod name); a name that could not be a label
    value, a header or part of the seed (a slash, a space, empty) stops start-up with the setting named."""
    import socket

    assert load_settings({}, {}, {}).generator.identity == socket.gethostname()
    assert load_settings({"instance": "auditgen-2"}, {}, {}).generator.identity == "auditgen-2"
    assert load_settings({}, {"AUDITGEN_INSTANCE": "vm1@3"}, {}).generator.identity == "vm1@3"
    for bad in ("", "a/b", "two words", "-x", "x" * 254):
        with pytest.raises(ConfigError, match="AUDITGEN_INSTANCE"):
            load_settings({}, {"AUDITGEN_INSTANCE": bad}, {})
    for bad in ("0", "-1", "1.5", "10001"):
        with pytest.raises(ConfigError, match="AUDITGEN_INSTANCES"):
            load_settings({}, {"AUDITGEN_INSTANCES": bad}, {})


def test_named_instances_derive_their_streams_from_the_seed_and_their_name() -> None:
    """Two named instances with one seed get different stream seeds, the same name gets the same one, a
    lone unnamed instance keeps the seed as it was (its events must not change with the host name), and
    without a seed there is nothing to derive."""

    def stream(**given: str) -> str | None:
        return load_settings(given, {}, {}).generator.stream_seed

    assert stream(seed="s") == "s"
    assert stream(seed="s", instance="a") == stream(seed="s", instance="a", instances="3") == "s/a"
    assert stream(seed="s", instance="a") != stream(seed="s", instance="b")
    import socket

    assert stream(seed="s", instances="3") == f"s/{socket.gethostname()}"
    assert stream(instance="a") is None


def test_rate_scope_total_gives_each_instance_its_share() -> None:
    """AUDITGEN_RATE (or the interval's rate) is per instance by default; with AUDITGEN_RATE_SCOPE=total
    each of AUDITGEN_INSTANCES makes an equal share, so together they make the rate asked for."""

    def rate(**given: str) -> float:
        return load_settings(given, {}, {}).generator.events_per_second

    assert rate(rate="300", instances="3") == 300
    assert rate(rate="300", instances="3", **{"rate-scope": "total"}) == 100
    assert rate(interval="0.5", instances="4", **{"rate-scope": "total"}) == 0.5
    assert rate(rate="300", **{"rate-scope": "total"}) == 300
    assert rate(interval="0", instances="4", **{"rate-scope": "total"}) == 0
    with pytest.raises(ConfigError, match="AUDITGEN_RATE_SCOPE"):
        load_settings({}, {"AUDITGEN_RATE_SCOPE": "all"}, {})
