"""A private RabbitMQ node for tests that stop, restart or block their broker.

The shared broker on 127.0.0.1:5672 must never be disturbed, so a fault test starts its own node: its
own name, AMQP and distribution ports, data directory, logs, config file and Erlang cookie (in HOME),
all in one temporary directory. Starting a node takes ~6 s and much CPU, so share one per module.

Everything here is usable outside pytest (bench/): the waits run on the Twisted reactor, and
every `rabbitmqctl` call runs in a thread so the reactor keeps serving while it takes its ~0.4 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pika
from twisted.internet.threads import deferToThread

from tests.support.net import HOST, free_port
from tests.support.waiting import poll

RABBITMQ_BIN = Path(os.environ.get("AUDITGEN_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
SERVER = RABBITMQ_BIN / "rabbitmq-server"
CTL = RABBITMQ_BIN / "rabbitmqctl"


def available() -> bool:
    """Whether this machine can start a private node (the RabbitMQ scripts are installed)."""
    return SERVER.exists() and CTL.exists()


def amqp_answers(port: int, timeout: float = 2.0) -> bool:
    """Whether something on the port speaks AMQP 0-9-1: it answers our protocol header with a frame."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            first = s.recv(1)
    except OSError:
        return False
    return first == b"\x01"  # a method frame: Connection.Start


class BrokerError(RuntimeError):
    """A rabbitmqctl command failed or the node did not come up."""


class PrivateBroker:
    """One RabbitMQ node of our own on free loopback ports, in a temporary directory."""

    def __init__(
        self,
        reactor: Any,
        base_dir: Path | None = None,
        name: str | None = None,
        cookie: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        """`cookie`: the Erlang cookie, the same for every node of a cluster (else Erlang makes one).
        `extra_config`: more rabbitmq.conf lines, such as a TLS listener and its ssl_options."""
        self._reactor = reactor
        self._cookie = cookie
        self._extra_config = list(extra_config)
        self.node = f"{name or 'auditgen-test-' + uuid.uuid4().hex[:8]}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="rabbit-", dir=base_dir))
        self.port = free_port()
        self.dist_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._own_dir = base_dir is None
        self._env = {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # /etc/rabbitmq/rabbitmq.conf pins the listener to 5672, the shared broker's: use our own file.
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }

    def __repr__(self) -> str:
        return f"<PrivateBroker {self.node} amqp://127.0.0.1:{self.port} in {self.dir}>"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        (self.dir / "enabled_plugins").write_text("[].\n")
        config = [f"listeners.tcp.local = {HOST}:{self.port}", *self._extra_config]
        (self.dir / "rabbitmq.conf").write_text("".join(f"{line}\n" for line in config))
        if self._cookie is not None:
            cookie = self.dir / ".erlang.cookie"
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)
        with open(self.dir / "server.log", "ab") as out:
            # Its own session, so a Ctrl-C meant for the test run does not stop it behind our back.
            self.process = subprocess.Popen(
                [str(SERVER)],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await self.wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the node answers AMQP on its port (after start or start_app)."""

        def check() -> Any:
            if self.process is None or self.process.poll() is not None:
                raise BrokerError(f"{self.node} exited; see {self.dir / 'server.log'}:\n{self.server_log()}")
            return deferToThread(amqp_answers, self.port)

        await poll(self._reactor, check, timeout, f"{self.node} to accept AMQP on port {self.port}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (rabbitmqctl stop, then kill if it lingers) and remove its directory."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(BrokerError, subprocess.TimeoutExpired):
                await self.ctl("stop", timeout=timeout)
            try:
                await poll(self._reactor, lambda: process.poll() is not None, timeout, f"{self.node} to exit")
            except TimeoutError:
                self.kill()
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """Last resort, synchronous (also for atexit and signal handlers): SIGKILL the VM and the script."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.dir / "pid").read_text().strip()))
        if self.process is not None:
            pids.append(self.process.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    # -- faults -------------------------------------------------------------------------------

    async def stop_app(self) -> None:
        """Stop the RabbitMQ application (connections closed, port closed); the VM keeps running."""
        await self.ctl("stop_app")

    async def start_app(self, timeout: float = 30.0) -> None:
        """Start the application again and wait until it accepts AMQP."""
        await self.ctl("start_app", timeout=timeout)
        await self.wait_ready(timeout)

    async def memory_alarm(self, on: bool) -> None:
        """Raise (watermark 0) or clear (watermark 0.4) the memory alarm: publishers are blocked while on."""
        await self.ctl("set_vm_memory_high_watermark", "0" if on else "0.4")
        if on:
            # The alarm is raised by the node's memory monitor; wait until the node reports it.
            await poll(self._reactor, self._alarm_raised, 10, f"the memory alarm on {self.node}")

    async def _alarm_raised(self) -> bool:
        out = await self.ctl("eval", "rabbit_alarm:get_alarms().")
        return "memory" in out

    async def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run rabbitmqctl against this node in a thread; its output, or BrokerError."""
        command = [str(CTL), "-n", self.node, *args]
        result: subprocess.CompletedProcess[str] = await deferToThread(
            subprocess.run,
            command,
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    # -- clients (blocking: call them in a thread) ----------------------------------------------

    def connection(self) -> pika.BlockingConnection:
        """A plain pika client to this node, for set-up and checks; blocking, so use it in a thread."""
        return pika.BlockingConnection(
            pika.ConnectionParameters(host=HOST, port=self.port, connection_attempts=3, retry_delay=1)
        )

    def consume_all(self, queue: str) -> list[bytes]:
        """Every message body now in the queue, removed from it; for a queue nobody publishes to anymore."""
        conn = self.connection()
        try:
            channel = conn.channel()
            expected = channel.queue_declare(queue, passive=True).method.message_count
            bodies: list[bytes] = []
            channel.basic_qos(prefetch_count=2000)
            if expected:
                for method, _properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
                    if method is None:
                        break  # nothing for 5 s: the count was off; the caller's check sees what is missing
                    bodies.append(body)
                    if len(bodies) >= expected:
                        break
                channel.cancel()
            while True:  # anything that arrived after the count was taken
                method, _properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                bodies.append(body)
            return bodies
        finally:
            conn.close()

    def delete_queue(self, queue: str) -> None:
        """Delete a queue (blocking)."""
        conn = self.connection()
        try:
            conn.channel().queue_delete(queue)
        finally:
            conn.close()

    def server_log(self, lines: int = 30) -> str:
        """The tail of the node's console output, for failure messages."""
        try:
            text = (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
