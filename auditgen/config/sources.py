"""Loading: twistd options, the environment, a .env file and secret files merged into one `Settings`.

Precedence is option > environment > .env file > default. Every value is checked here, before any port
opens, so a typo stops start-up with one line that names the setting and the value instead of a
service that half works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from auditgen.config import settings as groups
from auditgen.config.specs import SPECS, Spec
from auditgen.shapes import ShapeSettings


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


_GROUPS: dict[str, type[Any]] = {
    "broker": groups.BrokerSettings,
    "tls": groups.TLSSettings,
    "routing": groups.RoutingSettings,
    "api": groups.ApiSettings,
    "metrics": groups.MetricsSettings,
    "generator": groups.GeneratorSettings,
    "shape": ShapeSettings,
    "sessions": groups.SessionSettings,
    "scenarios": groups.ScenarioSettings,
    "alerts": groups.AlertSettings,
    "templates": groups.TemplateSettings,
    "world": groups.WorldSettings,
    "outbox": groups.OutboxSettings,
    "logs": groups.LogSettings,
}
_NODE_KEYS = ("host", "port", "user", "vhost")  # and the password, which may come from a file


def read_dotenv(path: str | None) -> dict[str, str]:
    """The .env file's values; a missing default file is fine, a missing named file is an error."""
    if path is None:
        candidate = Path(".env")
        if not candidate.is_file():
            return {}
    else:
        candidate = Path(path)
        if not candidate.is_file():
            raise ConfigError(f"--env-file: {path!r} is not a readable file")
    return {k: v for k, v in dotenv_values(candidate).items() if v is not None}


def load_settings(
    options: Mapping[str, str | None],
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
) -> groups.Settings:
    """Merge the sources by precedence and check every value; raise ConfigError on the first bad one."""
    values: dict[str, dict[str, Any]] = {topic: {} for topic in _GROUPS}
    given: dict[str, str] = {}  # env -> where a value other than the default came from
    url_has_password = False
    for spec in SPECS:
        raw, source = options.get(spec.option), f"--{spec.option}"
        if raw is None and spec.env in environ:
            raw, source = environ[spec.env], f"{spec.env} (environment)"
        if raw is None and spec.env in dotenv:
            raw, source = dotenv[spec.env], f"{spec.env} (.env file)"
        if raw is not None:
            given[spec.env] = source
        else:
            raw, source = spec.default, f"{spec.env} (default)"
        if raw is None:
            values[spec.topic][spec.key] = None
            continue
        try:
            values[spec.topic][spec.key] = spec.parse(raw)
        except ValueError as e:
            raise ConfigError(f"invalid {source}: {_redact(spec, raw)!r}: {e}") from None
        if spec.env == "RABBITMQ_URL":
            url_has_password = any(urlsplit(u.strip()).password is not None for u in raw.split(","))
    broker, api = values["broker"], values["api"]
    password = _one_of(
        given, "RABBITMQ_PASS", broker.pop("password"), "RABBITMQ_PASS_FILE", broker.pop("password_file")
    )
    api["token"] = _one_of(
        given, "AUDITGEN_API_TOKEN", api["token"], "AUDITGEN_API_TOKEN_FILE", api.pop("token_file")
    )
    urls: tuple[groups.Broker, ...] | None = broker.pop("url")
    node = groups.Broker(**{k: broker.pop(k) for k in _NODE_KEYS}, password=password)
    if urls is not None and "RABBITMQ_PASS_FILE" in given:
        # The URLs name the brokers, the file holds the password: a URL with a password too is ambiguous.
        if url_has_password:
            raise ConfigError(
                f"{given['RABBITMQ_PASS_FILE']} and a password in RABBITMQ_URL are both set; use one"
            )
        urls = tuple(replace(url, password=password) for url in urls)
    nodes = urls or (node,)
    broker["nodes"] = nodes
    _check_tls(given, values["tls"], nodes)
    if values["scenarios"]["ground_truth_queue"] == values["routing"]["queue"]:
        raise ConfigError(
            f"invalid AUDITGEN_GROUND_TRUTH_QUEUE: {values['routing']['queue']!r}: expected a queue other "
            "than RABBITMQ_QUEUE; records there would reach the event consumers"
        )
    _check_alerts(given, values)
    if values["world"]["file"] is not None and not values["world"]["enabled"]:
        raise ConfigError(
            f"{given['AUDITGEN_WORLD_FILE']} is set but the world is off; set AUDITGEN_WORLD=true to draw "
            "events from the file"
        )
    secret_options = tuple(
        f"--{spec.option}"
        for spec in SPECS
        if spec.secret
        and given.get(spec.env, "").startswith("--")
        and (spec.env != "RABBITMQ_URL" or url_has_password)
    )
    made = groups.Settings(
        **{topic: group(**values[topic]) for topic, group in _GROUPS.items()}, secret_options=secret_options
    )
    _check_routing(made.routing)
    return made


def _redact(spec: Spec, raw: str) -> str:
    if spec.env == "RABBITMQ_URL":
        return ",".join(_redact_url(item) for item in raw.split(","))
    return "***" if spec.secret else raw


def _redact_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
        if parts.password is not None:
            return raw.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        return "<unparseable URL>"
    return raw


def _one_of(given: Mapping[str, str], env: str, value: Any, file_env: str, file_value: Any) -> Any:
    """A secret given directly or in a file, never both (which one would win is a guess)."""
    if env in given and file_env in given:
        raise ConfigError(f"{given[env]} and {given[file_env]} are both set; use one")
    return file_value if file_env in given else value


def _check_routing(routing: groups.RoutingSettings) -> None:
    """A direct exchange binds one key: with a templated routing key it cannot be guessed."""
    r = routing
    if r.exchange and r.exchange_type == "direct" and r.binding_key is None and r.routing.fixed is None:
        raise ConfigError(
            f"RABBITMQ_BINDING_KEY must be set: a direct exchange ({r.exchange!r}) with the routing key "
            f"template {r.routing_key!r} gets events with many keys, and the queue is bound with one"
        )


def _check_tls(given: Mapping[str, str], tls: Mapping[str, Any], nodes: tuple[groups.Broker, ...]) -> None:
    """TLS files only with an amqps:// broker, a certificate only with its key, and both readable."""
    tls_envs = [spec.env for spec in SPECS if spec.topic == "tls"]
    if not any(node.tls for node in nodes) and (named := [given[e] for e in tls_envs if e in given]):
        raise ConfigError(
            f"{named[0]} is set but the broker is not amqps://; TLS needs an amqps:// RABBITMQ_URL"
        )
    cert, key = given.get("RABBITMQ_TLS_CERT_FILE"), given.get("RABBITMQ_TLS_KEY_FILE")
    if (cert is None) != (key is None):
        missing = "RABBITMQ_TLS_KEY_FILE" if cert else "RABBITMQ_TLS_CERT_FILE"
        raise ConfigError(f"{cert or key} is set without {missing}; give both")
    if cert is not None:
        from auditgen.amqp.tls import load_client_certificate

        try:
            load_client_certificate(tls["cert_file"], tls["key_file"])
        except ValueError as e:
            raise ConfigError(f"invalid {cert} / {key}: {e}") from None


def _check_alerts(given: Mapping[str, str], values: Mapping[str, Any]) -> None:
    """One source of alerts, and never a queue that holds events or ground truth."""
    alerts = values["alerts"]
    queue, exchange = alerts["queue"], alerts["exchange"]
    if queue is not None and exchange is not None:
        raise ConfigError(
            f"{given['AUDITGEN_ALERTS_QUEUE']} and {given['AUDITGEN_ALERTS_EXCHANGE']} are both set; use one"
        )
    if "AUDITGEN_ALERTS_BINDING_KEY" in given and exchange is None:
        raise ConfigError(f"{given['AUDITGEN_ALERTS_BINDING_KEY']} is set without AUDITGEN_ALERTS_EXCHANGE")
    if queue is not None and queue in (values["routing"]["queue"], values["scenarios"]["ground_truth_queue"]):
        raise ConfigError(
            f"invalid {given['AUDITGEN_ALERTS_QUEUE']}: {queue!r}: expected a queue other than "
            "RABBITMQ_QUEUE and AUDITGEN_GROUND_TRUTH_QUEUE; consuming it would take events "
            "from their consumers"
        )
