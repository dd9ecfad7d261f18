"""The OpenAPI document: it describes exactly the routes there are, and the live service keeps to it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import pytest_twisted
import treq
from twisted.internet.error import ConnectError
from twisted.internet.threads import deferToThread

from auditgen.events import Catalog
from auditgen.scenarios import ScenarioRunner
from auditgen.verdicts.routes import VerdictRoutes
from auditgen.web import AuditAPI, openapi_document
from tests.support.net import free_port
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT
from tests.support.twistd import TWISTD, exited
from tests.support.waiting import reactor, wait_for
from tests.support.web import Harness

BIN = Path(sys.executable).parent
SCHEMATHESIS = str(BIN / "st")
METHODS = {"get", "put", "post", "delete", "patch"}


RUNNER = ScenarioRunner(Catalog.builtin(), random.Random(1))


def documented(scenarios: ScenarioRunner | None) -> set[tuple[str, str]]:
    paths = openapi_document(scenarios)["paths"]
    return {(path, method.upper()) for path, item in paths.items() for method in item if method in METHODS}


def _rules() -> list[tuple[str, set[str]]]:
    """Every (path, methods) of the API's Klein app, with the apps it mounts (verdict_routes) expanded."""
    mounts = {"/alerts": VerdictRoutes.alerts_app, "/campaigns": VerdictRoutes.campaigns_app}
    rules: list[tuple[str, set[str]]] = []
    for rule in AuditAPI.app.url_map.iter_rules():
        if rule.endpoint.startswith("verdict_routes"):
            if rule.rule in mounts:
                for sub in mounts[rule.rule].url_map.iter_rules():
                    rules.append((rule.rule + sub.rule.rstrip("/"), set(sub.methods or ())))
            continue
        rules.append((rule.rule, set(rule.methods or ())))
    return rules


def routed(scenario_names: list[str] | None) -> set[tuple[str, str]]:
    """Every (path, method) the Klein app routes, with werkzeug's <name> written as OpenAPI's {name};
    with scenario names, /scenarios/<name> as one path per scenario."""
    found: set[tuple[str, str]] = set()
    for rule, methods in _rules():
        path = rule.replace("<", "{").replace(">", "}")
        for method in methods:
            if method in ("HEAD", "OPTIONS"):
                continue
            if path == "/console/{path:__rest__}":  # the console's branch: its static files and two endpoints
                found.update({("/console/state", method), ("/console/tail", method)})
            elif path == "/scenarios/{name}" and scenario_names is not None:
                found.update((f"/scenarios/{name}", method) for name in scenario_names)
            else:
                found.add((path, method))
    return found


def test_the_document_describes_every_route_and_no_other() -> None:
    """A route added without its description (or a description left after its route went) fails here;
    the served document has one path per scenario, the shipped file the generic one."""
    assert documented(None) == routed(None)
    assert documented(RUNNER) == routed([s["name"] for s in RUNNER.describe()])


def test_each_scenario_path_takes_exactly_its_parameters() -> None:
    """Every parameter's schema accepts its default and the scenario runs with it; unknown ones are
    refused by the schema (additionalProperties false) as by the runner; `delivery` is taken beside them."""
    paths = openapi_document(RUNNER)["paths"]
    for scenario in RUNNER.describe():
        operation = paths[f"/scenarios/{scenario['name']}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == {p["name"] for p in scenario["parameters"]} | {"delivery"}
        assert schema["additionalProperties"] is False
        defaults = {p["name"]: p["default"] for p in scenario["parameters"] if p["default"] is not None}
        jsonschema.validate(defaults, schema)
        RUNNER.run(scenario["name"], defaults)


def test_the_document_is_served_at_openapi_json() -> None:
    """GET /openapi.json answers the shipped document as JSON, OpenAPI 3.1."""
    h = Harness()
    response = h.request("GET", "/openapi.json")
    code, body, headers = h.answer(response)
    assert code == 200
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert body == openapi_document(None)
    assert body["openapi"].startswith("3.1")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    tmp_path: Path, queue_name: str
) -> None:
    """schemathesis, every check, against the live service: valid and invalid requests to every operation
    get no 5xx, and every answer (status, content type, headers, body) matches the document."""
    app_port, metrics_port = free_port(), free_port()
    service = subprocess.Popen(
        [
            TWISTD, "-n", "--pidfile=", "auditgen", f"--app-port={app_port}",
            f"--prometheus-port={metrics_port}", "--interval=0", f"--rabbitmq-host={BROKER_HOST}",
            f"--rabbitmq-port={BROKER_PORT}", f"--rabbitmq-queue={queue_name}",
            # schemathesis sends many ?count=10000 calls at once; the 503 of a full outbox is load
            # shedding, documented, but counted as a server error: give it room.
            "--outbox-max=1000000",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def healthy() -> bool:
            assert service.poll() is None, "twistd exited"
            try:
                response = await treq.get(f"http://127.0.0.1:{app_port}/healthz", persistent=False)
                await response.content()
                return bool(response.code == 200)
            except (ConnectionError, ConnectError):
                return False

        await wait_for(healthy, timeout=30, what="/healthz to answer 200")
        # ?strict=true refuses (400) schema-valid events that only look wrong (an event type no template
        # makes), as documented, which schemathesis's positive-data check would count as a failure: it
        # runs with strict=false here; tests/test_web.py pins strict mode.
        (tmp_path / "schemathesis.toml").write_text('[parameters]\n"query.strict" = "false"\n')
        command = [
            SCHEMATHESIS, "run", f"http://127.0.0.1:{app_port}/openapi.json", "--checks", "all",
            "--max-examples", "50", "--generation-database", "none", "--no-color",
            "--exclude-path", "/console/tail",  # an event stream never ends: its own tests read it
        ]  # fmt: skip
        env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
        result = await deferToThread(
            subprocess.run, command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    finally:
        service.send_signal(signal.SIGTERM)
        await exited(reactor, service, 30)
