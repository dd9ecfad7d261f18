"""The deployment files in deploy/ and the Dockerfile, checked without Docker or Kubernetes.

Every file parses; every setting they name is one the service knows, with a value it accepts; ports,
probe paths, spool paths and stop timeouts agree with the service's defaults and with each other; the
Grafana dashboard queries only metrics (and labels) a real registry exports.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from auditgen.config import SPECS
from auditgen.metrics import PREFIX, Metrics
from auditgen.web import AuditAPI

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "auditgen.service"
ENV_FILE = DEPLOY / "systemd" / "auditgen.env"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "auditgen.json"
DOCKERFILE = ROOT / "Dockerfile"

SPEC_BY_ENV = {spec.env: spec for spec in SPECS}
DEFAULT = {spec.env: spec.default for spec in SPECS}
APP_PORT, METRICS_PORT = int(DEFAULT["APP_PORT"] or 0), int(DEFAULT["PROMETHEUS_PORT"] or 0)
SHUTDOWN_TIMEOUT = float(DEFAULT["AUDITGEN_SHUTDOWN_TIMEOUT"] or 0)
# Variables of other programs that look like ours: the RabbitMQ image's first user.
NOT_AUDITGEN = {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"}
SETTING_LIKE = re.compile(r"\b(?:RABBITMQ|AUDITGEN|APP|PROMETHEUS|EVENT)_[A-Z0-9_]+\b")
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def unit() -> configparser.ConfigParser:
    """The systemd unit as INI; repeated keys (SystemCallFilter=) keep the last value."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def unit_environment() -> dict[str, str]:
    pairs = re.findall(r"^Environment=(\w+)=(.*)$", UNIT.read_text(), flags=re.MULTILINE)
    return dict(pairs)


def env_file_values() -> dict[str, str]:
    """Set and commented-out (default-showing) lines of the example environment file."""
    values = {k: v for k, v in dotenv_values(ENV_FILE).items() if v is not None}
    commented = re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=(\S*)$", ENV_FILE.read_text(), flags=re.MULTILINE)
    return {**dict(commented), **values}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def compose_auditgen_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["auditgen"]["environment"].items()}


def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of deploy/kubernetes by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    containers = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    spec: dict[str, Any] = containers[0]
    return spec


def kubernetes_env() -> dict[str, str]:
    objects = manifests()
    return {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}


def dockerfile_env() -> dict[str, str]:
    """ENV pairs of the Dockerfile (one ENV instruction, continued over lines)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


def seconds(duration: Any) -> float:
    """A number of seconds, or a systemd/compose duration such as 30s or 1m."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m)?", str(duration))
    assert match, f"unexpected duration {duration!r}"
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_every_deployment_file_parses() -> None:
    """YAML, JSON, the systemd unit (INI-like) and the environment file all parse, and the expected files
    are all there."""
    files = deploy_files()
    expected = {UNIT, ENV_FILE, COMPOSE, DEPLOY / "prometheus.yml", DASHBOARD}
    expected |= {KUBERNETES / f"{n}.yaml" for n in ("deployment", "service", "configmap", "secret")}
    assert expected <= set(files)
    for path in files:
        if path.suffix in (".yml", ".yaml"):
            assert all(doc is not None for doc in yaml.safe_load_all(path.read_text())), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path == UNIT:
            assert {"Unit", "Service", "Install"} <= set(unit().sections())
        elif path == ENV_FILE:
            assert dotenv_values(path)
        else:
            pytest.fail(f"no check for {path}: add one")


def test_every_setting_named_is_one_the_service_knows() -> None:
    """A name that looks like a setting in any deployment file or the Dockerfile is in config.SPECS (or is
    the RabbitMQ image's own), so a typo cannot silently do nothing."""
    for path in [*deploy_files(), DOCKERFILE]:
        for name in set(SETTING_LIKE.findall(path.read_text())):
            assert name in SPEC_BY_ENV or name in NOT_AUDITGEN, f"{path.name} names unknown setting {name}"


@pytest.mark.parametrize(
    "source",
    [env_file_values, unit_environment, compose_auditgen_env, kubernetes_env, dockerfile_env],
)
def test_setting_values_in_deployment_files_are_accepted(source: Any) -> None:
    """Every value given to a setting is one the service accepts (the spool directory, checked for
    writability at start, must be an absolute path)."""
    values = {k: v for k, v in source().items() if k in SPEC_BY_ENV}
    assert values
    for name, value in values.items():
        if name == "AUDITGEN_SPOOL_DIR":
            assert value.startswith("/"), value
        else:
            SPEC_BY_ENV[name].parse(value)


def test_systemd_unit_runs_twistd_with_restart_a_user_state_and_hardening() -> None:
    """twistd in the foreground without a pidfile, restarted on failure, a dynamic user, its spool in the
    StateDirectory (and the working directory), settings from an EnvironmentFile, the usual hardening,
    and room to stop gracefully."""
    service = unit()["Service"]
    command = service["ExecStart"].split()
    assert command[0].startswith("/") and command[0].endswith("/twistd")
    assert {"--nodaemon", "--pidfile="} <= set(command) and command[-1] == "auditgen"
    assert service["Restart"] == "on-failure"
    assert service.get("DynamicUser") == "yes" or service.get("User")
    assert service["EnvironmentFile"].lstrip("-") == "/etc/auditgen/auditgen.env"
    spool = f"/var/lib/{service['StateDirectory']}"
    assert unit_environment()["AUDITGEN_SPOOL_DIR"] == spool == service["WorkingDirectory"]
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }
    assert {k: service.get(k) for k in hardening} == hardening
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_compose_runs_rabbitmq_auditgen_and_prometheus_on_the_default_ports() -> None:
    """RabbitMQ with its management UI, auditgen built from the Dockerfile on its default ports with the
    spool on a volume, Prometheus scraping auditgen's metrics port by service name."""
    services = compose()["services"]
    assert "management" in services["rabbitmq"]["image"]
    auditgen = services["auditgen"]
    assert (ROOT / "deploy" / auditgen["build"]["context"] / auditgen["build"]["dockerfile"]).resolve() == (
        DOCKERFILE
    )
    assert auditgen["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    env = compose_auditgen_env()
    assert env["RABBITMQ_HOST"] == "rabbitmq"
    assert (int(env["APP_PORT"]), int(env["PROMETHEUS_PORT"])) == (APP_PORT, METRICS_PORT)
    assert {int(p.split(":")[-1]) for p in auditgen["ports"]} == {APP_PORT, METRICS_PORT}
    mounts = {v.split(":")[1] for v in auditgen["volumes"]}
    assert env["AUDITGEN_SPOOL_DIR"] in mounts
    assert seconds(auditgen["stop_grace_period"]) > SHUTDOWN_TIMEOUT

    prometheus = services["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert f"./prometheus.yml:{config_path}:ro" in prometheus["volumes"]
    jobs = {job["job_name"]: job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert jobs["auditgen"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["auditgen"]["static_configs"][0]["targets"] == [f"auditgen:{METRICS_PORT}"]


def test_compose_grafana_loads_the_dashboard_from_where_it_is_mounted() -> None:
    """The dashboard file is mounted in the folder the provisioning provider reads."""
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "auditgen.yml")["providers"][0]
    assert Path(mounts["./grafana/auditgen.json"]).parent == Path(provider["options"]["path"])
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile_exposes_the_default_ports_and_checks_healthz_and_makes_the_spool_dir() -> None:
    """EXPOSE and the ENV ports are the defaults, the HEALTHCHECK asks /healthz on APP_PORT, and the
    image has the spool directory the deployments mount, owned by its user."""
    text = DOCKERFILE.read_text()
    exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {APP_PORT, METRICS_PORT}
    env = dockerfile_env()
    assert (int(env["APP_PORT"]), int(env["PROMETHEUS_PORT"])) == (APP_PORT, METRICS_PORT)
    healthcheck = text[text.index("HEALTHCHECK") :].split("CMD", 1)[1].splitlines()[0]
    assert "/healthz" in healthcheck and "APP_PORT" in healthcheck and f"'{APP_PORT}'" in healthcheck
    spool = compose_auditgen_env()["AUDITGEN_SPOOL_DIR"]
    assert re.search(rf"install -d -o auditgen .*{re.escape(spool)}\n", text)


def test_kubernetes_probes_ports_and_scrape_annotations_agree() -> None:
    """Readiness on /healthz and liveness on /livez, both routes of the API port; container, Service and
    annotation ports are the defaults; the settings come from the ConfigMap and the Secret."""
    objects = manifests()
    spec = container()
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"http": APP_PORT, "metrics": METRICS_PORT}
    routes = {rule.rule for rule in AuditAPI.app.url_map.iter_rules()}
    for probe, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        assert spec[probe]["httpGet"] == {"path": path, "port": "http"}
        assert path in routes
    service_ports = {p["port"]: p["targetPort"] for p in objects["Service"]["spec"]["ports"]}
    assert service_ports == {APP_PORT: "http", METRICS_PORT: "metrics"}
    pod = objects["Deployment"]["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT
    assert annotations["prometheus.io/path"] == "/metrics"
    assert objects["Service"]["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    sources = {next(iter(ref.values()))["name"] for ref in spec["envFrom"]}
    assert sources == {objects["ConfigMap"]["metadata"]["name"], objects["Secret"]["metadata"]["name"]}
    data = objects["ConfigMap"]["data"]
    assert (int(data["APP_PORT"]), int(data["PROMETHEUS_PORT"])) == (APP_PORT, METRICS_PORT)
    assert "RABBITMQ_PASS" not in data and "RABBITMQ_PASS" in objects["Secret"]["stringData"]
    assert pod["spec"]["enableServiceLinks"] is False  # else RABBITMQ_PORT=tcp://... for a rabbitmq Service
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(data["AUDITGEN_SHUTDOWN_TIMEOUT"])


def test_kubernetes_spool_is_the_mounted_claim() -> None:
    """AUDITGEN_SPOOL_DIR is where the spool volume is mounted, the volume is the claim in the
    manifests, and kustomization.yaml lists every manifest."""
    objects = manifests()
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    spool_dir = objects["ConfigMap"]["data"]["AUDITGEN_SPOOL_DIR"]
    (name,) = [n for n, path in mounts.items() if path == spool_dir]
    claim = volumes[name]["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]
    assert (
        spool_dir == compose_auditgen_env()["AUDITGEN_SPOOL_DIR"] == unit_environment()["AUDITGEN_SPOOL_DIR"]
    )
    listed = set(objects["Kustomization"]["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def exported_series() -> dict[str, set[str]]:
    """Sample names (with _total, _bucket, ... suffixes) of a real /metrics rendering, and their labels."""
    m = Metrics()
    m.count_event("user_login", "web-01", "SUCCESS")
    m.published_success.inc()
    m.published_failure.inc()
    m.dropped.labels("outbox_full").inc()
    m.confirm_latency.observe(0.01)
    m.returned.inc()
    m.reconnects.inc()
    m.spool_replayed.inc()
    m.spool_damaged.inc()
    m.metric_overflow.inc()
    m.scenarios.labels("brute_force", "api").inc()
    m.scenario_verdicts.labels("brute_force", "detected").inc()
    m.time_to_detect.labels("brute_force").observe(1.0)
    m.alerts_received.labels("amqp", "matched").inc()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return queries


def test_dashboard_queries_name_real_metrics_and_labels() -> None:
    """Every metric a dashboard query names is in a real rendering of Metrics(), and every label it
    groups by is one those series carry (or one Prometheus adds)."""
    series = exported_series()
    queries = dashboard_queries()
    assert queries
    for query in queries:
        names = re.findall(rf"\b{PREFIX}_\w+", query)
        assert names, f"query names no auditgen metric: {query}"
        for name in names:
            assert name in series, f"{name} is not exported (query: {query})"
        labels = set().union(*(series[n] for n in names)) | SCRAPE_LABELS
        for group in re.findall(r"\bby \(([^)]*)\)", query):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels, f"{label} is not a label of {names}"


def test_dashboard_covers_the_issue_and_uses_its_datasource_variable() -> None:
    """Events/s by type, confirmed vs failed, confirm latency, outbox depth and connection state are on
    the dashboard; every panel and query uses the ${datasource} variable, so it imports anywhere."""
    text = " ".join(dashboard_queries())
    for needed in (
        "sum by (event_type) (rate(audit_events_generator_events_total",
        "audit_events_generator_published_success_total",
        "audit_events_generator_published_failure_total",
        "audit_events_generator_confirm_latency_seconds_bucket",
        "audit_events_generator_outbox_events",
        "audit_events_generator_rabbitmq_connection_status",
    ):
        assert needed in text
    board = json.loads(DASHBOARD.read_text())
    assert board["templating"]["list"][0]["name"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
