"""The service as a black box: a `twistd -n auditgen` subprocess on free ports, and its probes.

`Service` runs the installed twistd plugin (the twistd next to this Python) on free ports, with its log in
a file, and can probe /healthz, scrape /metrics, send SIGTERM or SIGKILL, wait for the exit, start it
again with the same spool, read its RSS and the event_ids left in its spool file. Everything here runs
on the Twisted reactor and is usable outside pytest (bench/).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from auditgen.metrics import OVERFLOW
from auditgen.spool import FILENAME
from tests.support.load import LOAD_HOSTNAME
from tests.support.net import HOST, free_port
from tests.support.waiting import poll

TWISTD = str(Path(sys.executable).parent / "twistd")
EVENTS_TOTAL = "audit_events_generator_events_total"


# What a probe of a service that is starting, stopping or gone raises.
NO_ANSWER = (
    ConnectError,
    ConnectingCancelledError,
    ResponseFailed,
    ResponseNeverReceived,
    TimeoutError,
    CancelledError,
)


async def exited(reactor: Any, process: subprocess.Popen[Any], timeout: float) -> int:
    """Wait until the process exits; its exit code (negative: killed by that signal)."""
    await poll(reactor, lambda: process.poll() is not None, timeout, f"process {process.pid} to exit")
    assert process.returncode is not None
    return process.returncode


class ServiceError(RuntimeError):
    """The service exited when it should not have, or did not become healthy."""


class Metrics:
    """One scrape of the service's /metrics, as samples."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of that name whose labels include the given ones."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def overflowed(self) -> float:
        """Events counted under the overflow label set (beyond --metrics-max-series): not attributable."""
        return self.total(EVENTS_TOTAL, server_hostname=OVERFLOW)

    def accepted(self) -> tuple[float, float]:
        """(triggered by our load, generated): events_total split by our load's server_hostname.

        Exact while events_total has fewer label sets than --metrics-max-series (the generator makes a
        few hundred); overflowed() says when it is not.
        """
        everything = self.total(EVENTS_TOTAL)
        ours = self.total(EVENTS_TOTAL, server_hostname=LOAD_HOSTNAME)
        return ours, everything - ours


class Service:
    """`twistd -n auditgen` as a subprocess on free ports; one Popen per run, all logging to one file."""

    def __init__(
        self,
        reactor: Any,
        *,
        rabbitmq_port: int,
        queue: str,
        workdir: Path,
        spool_dir: Path | None = None,
        interval: float = 0.004,
        connect_timeout: float = 2,
        shutdown_timeout: float = 10,
        extra_args: Iterable[str] = (),
    ) -> None:
        self._reactor = reactor
        self.rabbitmq_port = rabbitmq_port
        self.queue = queue
        self.workdir = workdir
        self.spool_dir = spool_dir
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.shutdown_timeout = shutdown_timeout
        self.extra_args = list(extra_args)
        self.app_port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.last_metrics: Metrics | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.app_port}"

    def command(self) -> list[str]:
        args = [
            TWISTD, "-n", "--pidfile=", "auditgen",
            f"--app-port={self.app_port}", f"--prometheus-port={self.metrics_port}",
            f"--rabbitmq-host={HOST}", f"--rabbitmq-port={self.rabbitmq_port}",
            f"--rabbitmq-queue={self.queue}", f"--interval={self.interval}",
            f"--connect-timeout={self.connect_timeout}", f"--shutdown-timeout={self.shutdown_timeout}",
        ]  # fmt: skip
        if self.spool_dir is not None:
            args.append(f"--spool-dir={self.spool_dir}")
        return args + self.extra_args

    # -- lifecycle ----------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start a run (the same ports and spool every time), without waiting for it."""
        if self.process is not None and self.process.poll() is None:
            raise ServiceError("the service is already running")
        self.runs += 1
        self.last_metrics = None
        with open(self.log_path, "ab") as log:
            log.write(f"===== run {self.runs}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C for the driver must not reach it behind our back
            )

    async def start(self, timeout: float = 60.0) -> float:
        """Start a run and wait until /healthz answers 200; the seconds that took."""
        began = self._reactor.seconds()
        self.spawn()
        await self.wait_health(200, timeout)
        return float(self._reactor.seconds() - began)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code of the current run (negative: killed by that signal)."""
        assert self.process is not None
        return await exited(self._reactor, self.process, timeout)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> int:
        """SIGKILL, and the exit code."""
        self.send(signal.SIGKILL)
        return await self.wait_exit(10)

    def cleanup(self) -> None:
        """Synchronous last resort (finally blocks, atexit, Ctrl-C): kill the run if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    # -- probes -------------------------------------------------------------------------------

    async def health(self) -> tuple[int, dict[str, Any]] | None:
        """(code, body) of /healthz, or None when nothing answers."""
        try:
            response = await treq.get(f"{self.url}/healthz", persistent=False, timeout=5)
            body = json.loads(await response.text())
        except NO_ANSWER:
            return None
        return response.code, body

    async def health_code(self) -> int | None:
        answer = await self.health()
        return None if answer is None else answer[0]

    async def wait_health(self, code: int, timeout: float) -> None:
        """Wait until /healthz answers with that code; fail at once if the run exits."""

        async def check() -> bool:
            if not self.running():
                raise ServiceError(f"the service exited ({self.exit_code()}):\n{self.log_tail()}")
            return (await self.health_code()) == code

        await poll(self._reactor, check, timeout, f"/healthz to answer {code}")

    async def outbox_depth(self) -> int | None:
        answer = await self.health()
        return None if answer is None else int(answer[1]["outbox_depth"])

    async def metrics(self) -> Metrics:
        """Scrape the metrics port; the scrape is also kept as last_metrics."""
        response = await treq.get(f"http://{HOST}:{self.metrics_port}/metrics", persistent=False, timeout=5)
        self.last_metrics = Metrics(await response.text())
        return self.last_metrics

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def rss_kib(self) -> int | None:
        """The run's resident set size, from /proc/<pid>/status."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def spool_ids(self) -> list[str]:
        """The event_ids left in the spool file, read-only; only while no run has it open."""
        if self.spool_dir is None:
            return []
        path = self.spool_dir / FILENAME
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute("SELECT event_id FROM events")]
        finally:
            conn.close()
