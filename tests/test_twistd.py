"""The installed twistd plugin: discoverable, documented, refuses bad settings, runs and stops cleanly.

These run the `twistd` next to this Python, so they test the installed package (`pip install .`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.error import ConnectError
from twisted.internet.threads import deferToThread

from auditgen.config import SPECS
from tests.support.net import free_port
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT, blocking_connection, drain_queue
from tests.support.twistd import TWISTD, exited
from tests.support.waiting import reactor, wait_for


def run_twistd(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TWISTD, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plugin_is_listed_and_every_option_documented(tmp_path: Path) -> None:
    """`twistd --help` lists auditgen and `twistd -n auditgen --help` documents every setting."""
    listing = run_twistd("--help", cwd=tmp_path)
    assert "auditgen" in listing.stdout
    usage = run_twistd("-n", "auditgen", "--help", cwd=tmp_path)
    assert usage.returncode == 0
    for spec in SPECS:
        assert f"--{spec.option}" in usage.stdout
        assert spec.env in usage.stdout


def test_importing_the_plugin_imports_neither_reactor_nor_service(tmp_path: Path) -> None:
    """The plugin file only names auditgen.tap, so plugin discovery never installs a reactor."""
    code = (
        "import sys; import twisted.plugins.auditgen_plugin as p; "
        "assert p.auditgen.tapname == 'auditgen'; "
        "heavy = ('twisted.internet.reactor', 'auditgen.tap', 'pika', 'klein'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path: Path) -> None:
    """RABBITMQ_PORT=abc exits non-zero before listening, naming the variable and the value."""
    app_port = free_port()
    result = run_twistd(
        "-n", "--pidfile=", "auditgen", f"--app-port={app_port}", cwd=tmp_path, env={"RABBITMQ_PORT": "abc"}
    )
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "RABBITMQ_PORT" in line]
    assert any("'abc'" in line for line in lines), result.stdout + result.stderr


def test_bad_templates_file_stops_start_up_naming_file_template_and_field(tmp_path: Path) -> None:
    """A templates file with a bad value exits non-zero before listening, with one line naming the file,
    the template, the field and what was expected."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "templates:\n  - {name: brute, event_type: e, severity: W, action_result: F, weight: 1,\n"
        "     details: {ip_address: {ip: 10.0.0.1/8}}}\n"
    )
    app_port = free_port()
    result = run_twistd(
        "-n", "--pidfile=", "auditgen", f"--app-port={app_port}", "--templates=rules.yaml", cwd=tmp_path
    )
    assert result.returncode != 0
    expected = "templates: rules.yaml: template 'brute': details.ip_address: '10.0.0.1/8' is not a CIDR"
    assert any(expected in line for line in (result.stdout + result.stderr).splitlines()), result.stderr


async def _get_json(url: str) -> tuple[int, Any]:
    response = await treq.get(url, persistent=False)
    return response.code, json.loads(await response.text())


def start_foreground(cwd: Path, queue: str, *args: str) -> subprocess.Popen[str]:
    """`twistd -n auditgen` on the test broker and queue, its log (stdout and stderr) in a pipe."""
    return subprocess.Popen(
        [
            TWISTD, "-n", "--pidfile=", "auditgen", *args,
            f"--rabbitmq-host={BROKER_HOST}", f"--rabbitmq-port={BROKER_PORT}", f"--rabbitmq-queue={queue}",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


async def _healthy(process: subprocess.Popen[str], app_port: int) -> bool:
    """Whether the service answers /healthz with 200; fails the test if twistd exited."""
    assert process.poll() is None, "twistd exited"
    try:
        return (await _get_json(f"http://127.0.0.1:{app_port}/healthz"))[0] == 200
    except (ConnectionError, ConnectError):
        return False


async def _metric(port: int, name: str) -> float:
    """One unlabelled sample from the service's metrics port (0 if absent)."""
    text = await (await treq.get(f"http://127.0.0.1:{port}/metrics", persistent=False)).text()
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_twistd_runs_the_service_and_sigterm_stops_it(tmp_path: Path, queue_name: str) -> None:
    """In the foreground: /healthz turns 200, a triggered, a bulk and generated events (rate mode) reach the
    queue, the achieved rate is reported, and SIGTERM exits 0."""
    app_port, metrics_port = free_port(), free_port()
    process = start_foreground(
        tmp_path, queue_name, f"--app-port={app_port}", f"--prometheus-port={metrics_port}", "--rate=200",
        "--confirm-wait=10",
    )  # fmt: skip
    try:
        await wait_for(lambda: _healthy(process, app_port), timeout=30, what="/healthz to answer 200")
        response = await treq.post(
            f"http://127.0.0.1:{app_port}/generate_event",
            json={"event_type": "user_login", "user_id": "twistd-test"},
            persistent=False,
        )
        answer = json.loads(await response.text())
        assert (response.code, answer["status"]) == (202, "success")
        response = await treq.post(
            f"http://127.0.0.1:{app_port}/generate_event?count=300",
            json={"event_type": "file_modified"},
            persistent=False,
        )
        bulk = json.loads(await response.text())
        assert (response.code, bulk["status"], bulk["count"]) == (202, "success", 300)

        async def rate_reported() -> bool:
            return await _metric(metrics_port, "audit_events_generator_generator_rate") > 150

        await wait_for(rate_reported, timeout=15, what="the generator to report about 200 events/s")

        async def generated_some() -> bool:
            confirmed = await _metric(metrics_port, "audit_events_generator_published_success_total")
            return confirmed >= 1 + 300 + 50

        await wait_for(generated_some, timeout=30, what="50 generated events confirmed")
        process.send_signal(signal.SIGTERM)
        await exited(reactor, process, 20)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    assert "connected to RabbitMQ" in output
    assert "guest" not in output.replace("amqp://guest@", "")
    messages = await deferToThread(drain_queue, queue_name)
    events = [json.loads(body) for _, body in messages]
    received = {e["event_id"] for e in events}
    assert answer["event_id"] in received
    assert set(bulk["event_ids"]) <= received
    assert sum(e["source_service"] == "audit-event-generator" for e in events) >= 50


@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest_twisted.ensureDeferred
async def test_twistd_daemonizes_with_pidfile_and_logfile(tmp_path: Path, log_format: str) -> None:
    """Plain `twistd auditgen` detaches, writes its pidfile and log, and SIGTERM ends it; with
    AUDITGEN_LOG_FORMAT=json the log file holds only JSON lines, twistd's own start and stop included."""
    app_port, metrics_port = free_port(), free_port()
    pidfile, logfile = tmp_path / "auditgen.pid", tmp_path / "auditgen.log"
    result = run_twistd(
        f"--pidfile={pidfile}", f"--logfile={logfile}", "auditgen",
        f"--app-port={app_port}", f"--prometheus-port={metrics_port}", "--interval=0",
        cwd=tmp_path,
        env={"AUDITGEN_LOG_FORMAT": log_format},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    await wait_for(pidfile.exists, timeout=20, what="the pidfile")
    pid = int(pidfile.read_text())
    connected = "connected to RabbitMQ" if log_format == "text" else '"event": "rabbitmq.connected"'
    try:
        await wait_for(lambda: connected in logfile.read_text(), timeout=20, what="the connect line")
    finally:
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_for(gone, timeout=20, what="the daemon to exit")
    assert not pidfile.exists()
    assert "Main loop terminated" in logfile.read_text()
    if log_format == "json":
        records = [json.loads(line) for line in logfile.read_text().splitlines()]
        events = [r["event"] for r in records]
        assert events.count("rabbitmq.connected") == 1
        assert events[0].startswith("twistd {version}")
        assert events[-1] == "Server Shut Down."


TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^]]+\] ")


async def _run_until_connected_then_stop(process: subprocess.Popen[str], app_port: int) -> None:
    """Wait for /healthz 200 (the connected line is out by then), then stop the service with SIGTERM."""
    try:
        await wait_for(lambda: _healthy(process, app_port), timeout=30, what="/healthz to answer 200")
        process.send_signal(signal.SIGTERM)
        await exited(reactor, process, 20)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest_twisted.ensureDeferred
async def test_foreground_log_lines_in_each_format(tmp_path: Path, queue_name: str, log_format: str) -> None:
    """`twistd -n auditgen --log-format=F` to stdout: json gives only JSON objects with time, level,
    namespace, event and message, text gives twistd's classic lines (the default, unchanged); either
    way the connected, ready and stopped lines appear once (ready with both bound addresses and the
    rate), and Twisted's lines per port opened or closed are gone."""
    app_port, metrics_port = free_port(), free_port()
    format_option = [] if log_format == "text" else [f"--log-format={log_format}"]
    process = start_foreground(
        tmp_path, queue_name, *format_option, f"--app-port={app_port}", f"--prometheus-port={metrics_port}",
        "--rate=50",
    )  # fmt: skip
    await _run_until_connected_then_stop(process, app_port)
    lines = process.communicate()[0].splitlines()
    assert process.returncode == 0, lines
    noise = ("starting on", "Starting factory", "Stopping factory", "Port ")
    assert not [line for line in lines if any(word in line for word in noise)], lines
    if log_format == "text":
        assert lines and all(TEXT_LINE.match(line) for line in lines), lines
        assert sum("connected to RabbitMQ" in line for line in lines) == 1
        [ready] = [line for line in lines if "ready: API on" in line]
        assert f":{app_port}, metrics on http://" in ready and f":{metrics_port}/metrics" in ready
        assert "50 events/s" in ready and "no spool" in ready
        assert sum(" stopped: " in line for line in lines) == 1
        return
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "namespace", "event", "message"} <= set(r) for r in records), records
    assert all(r["time"].endswith("Z") for r in records)
    connected = [r for r in records if r["event"] == "rabbitmq.connected"]
    assert len(connected) == 1, records
    assert connected[0]["queue"] == queue_name
    assert connected[0]["namespace"] == "auditgen.publisher.Publisher"
    assert "debug" not in {r["level"] for r in records}
    [ready] = [r for r in records if r["event"] == "service.ready"]
    assert ready["api"].endswith(f":{app_port}") and ready["metrics"].endswith(f":{metrics_port}")
    assert (ready["queue"], ready["rate"], ready["spool"]) == (queue_name, 50.0, None)
    [stopped] = [r for r in records if r["event"] == "service.stopped"]
    assert stopped["confirmed"] >= 1 and stopped["left"] == 0


def test_a_bad_setting_prints_one_line_and_a_hint_to_stderr_not_the_help(tmp_path: Path) -> None:
    """RABBITMQ_PORT=abc: nothing on stdout (not the help), and on stderr the error line naming the
    variable and the value, then a hint to --help; a non-zero exit."""
    result = run_twistd("-n", "--pidfile=", "auditgen", cwd=tmp_path, env={"RABBITMQ_PORT": "abc"})
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "RABBITMQ_PORT" in lines[0] and "'abc'" in lines[0]
    assert "--help" in lines[1]


def test_an_unknown_option_is_one_line_too(tmp_path: Path) -> None:
    """A mistyped option is a usage error like a bad value: one line and the hint, no help."""
    result = run_twistd("-n", "--pidfile=", "auditgen", "--rabit-host=x", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "rabit-host" in result.stderr and len(result.stderr.splitlines()) == 2, result.stderr


def test_version_prints_auditgens_version(tmp_path: Path) -> None:
    """`twistd -n auditgen --version` prints the package's version (not Twisted's) and exits 0."""
    import auditgen

    result = run_twistd("-n", "auditgen", "--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"auditgen {auditgen.__version__}\n")


def test_help_groups_the_options_by_topic(tmp_path: Path) -> None:
    """--help has a heading per topic, in the table's order, and each option under its own topic."""
    from auditgen.config import TOPICS

    usage = run_twistd("-n", "auditgen", "--help", cwd=tmp_path).stdout
    starts = [usage.index(f"\n{title}:\n") for title in TOPICS.values()]
    assert starts == sorted(starts)
    ends = [*starts[1:], len(usage)]
    section = dict(zip(TOPICS, (usage[a:b] for a, b in zip(starts, ends, strict=True)), strict=True))
    for spec in SPECS:
        assert f"--{spec.option}=" in section[spec.topic], (spec.option, spec.topic)


def test_help_into_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    """`twistd -n auditgen --help | head -3`: the reader leaves early; twistd exits without a
    traceback (here the pipe is closed before anything is written, which is the worst case)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [TWISTD, "-n", "auditgen", "--help"],
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert result.returncode == 0


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["APP_PORT", "PROMETHEUS_PORT"])
@pytest_twisted.ensureDeferred
async def test_a_port_in_use_exits_at_once_with_one_line_and_publishes_nothing(
    tmp_path: Path, queue_name: str, setting: str
) -> None:
    """With one of its ports held by another process, `twistd -n auditgen` exits non-zero before it
    starts anything: one line names the port, the setting and the holder (this test's process), there
    is no traceback, and the queue gets nothing although the generator was asked for 100 events/s."""
    conn = blocking_connection()
    try:
        conn.channel().queue_declare(queue_name, durable=True)
    finally:
        conn.close()
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"APP_PORT": free_port(), "PROMETHEUS_PORT": free_port(), setting: taken}
        process = start_foreground(
            tmp_path, queue_name, f"--app-port={ports['APP_PORT']}",
            f"--prometheus-port={ports['PROMETHEUS_PORT']}", "--rate=100",
        )  # fmt: skip
        try:
            await wait_for(lambda: process.poll() is not None, timeout=30, what="twistd to exit")
        finally:
            if process.poll() is None:
                process.kill()
            output = process.communicate()[0]
    assert process.returncode != 0
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if setting in line]
    assert len(lines) == 1, output
    assert f":{taken}" in lines[0] and f"pid {os.getpid()}" in lines[0], lines[0]
    assert "connected to RabbitMQ" not in output
    assert await deferToThread(drain_queue, queue_name) == []
