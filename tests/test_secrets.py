"""No secret leaks: the installed `twistd -n auditgen`, given its password and token through files and the
environment, is driven through successes and failures, and every output it has is searched for them.

Searched: the log, every HTTP answer (bodies and headers: 202, 400, 401, 404, /healthz, /metrics on both
ports) and the process title (/proc/<pid>/cmdline). Not the environment (/proc/<pid>/environ), which
holds an environment variable by definition. The broker account is one made for this test on the shared
broker (guest's password is also its name), removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.error import ConnectError

from tests.support.broker import CTL
from tests.support.net import free_port
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT
from tests.support.twistd import TWISTD, exited
from tests.support.waiting import reactor, wait_for

pytestmark = pytest.mark.integration


# The system's rabbitmqctl (a wrapper that runs as the broker's user, with its Erlang cookie) reaches the
# shared node; the scripts PrivateBroker uses need the caller's own cookie.
SHARED_CTL = shutil.which("rabbitmqctl") or str(CTL)


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SHARED_CTL, *args], capture_output=True, text=True, timeout=60)


@dataclass
class Account:
    user: str
    password: str


@pytest.fixture
def account() -> Iterator[Account]:
    """A user with a password that appears nowhere else, on the shared broker's / vhost."""
    if not Path(SHARED_CTL).exists() or _ctl("list_users").returncode != 0:
        pytest.skip("cannot manage users on the shared broker with rabbitmqctl")
    acct = Account(f"auditgen-secrets-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}")
    assert _ctl("add_user", acct.user, acct.password).returncode == 0
    try:
        assert _ctl("set_permissions", "-p", "/", acct.user, ".*", ".*", ".*").returncode == 0
        yield acct
    finally:
        _ctl("delete_user", acct.user)


class Run:
    """One `twistd -n auditgen` with the given environment; what it said and showed is kept in `seen`."""

    def __init__(self, tmp_path: Path, queue: str, env: dict[str, str], *args: str) -> None:
        self.app_port, self.metrics_port = free_port(), free_port()
        self.log_path = tmp_path / f"run-{uuid.uuid4().hex[:6]}.log"
        self.seen: list[str] = []
        command = [
            TWISTD, "-n", "--pidfile=", "auditgen",
            f"--app-port={self.app_port}", f"--prometheus-port={self.metrics_port}", "--interval=0.5",
            f"--rabbitmq-host={BROKER_HOST}", f"--rabbitmq-port={BROKER_PORT}", f"--rabbitmq-queue={queue}",
            "--connect-timeout=2", *args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=tmp_path, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )

    async def call(self, method: str, path: str, port: int | None = None, **kwargs: Any) -> int:
        """One request; its status line, headers and body go into `seen`."""
        url = f"http://127.0.0.1:{port or self.app_port}{path}"
        response = await treq.request(method, url, persistent=False, **kwargs)
        body = await response.text()
        headers = [f"{k.decode()}: {v.decode()}" for k, vs in response.headers.getAllRawHeaders() for v in vs]
        self.seen.append(f"{method} {path} -> {response.code}\n" + "\n".join(headers) + "\n" + body)
        return int(response.code)

    async def wait_health(self, code: int) -> None:
        async def answered() -> bool:
            assert self.process.poll() is None, f"twistd exited:\n{self.log_path.read_text()}"
            try:
                return await self.call("GET", "/healthz") == code
            except (ConnectionError, ConnectError):
                return False

        await wait_for(answered, timeout=30, what=f"/healthz to answer {code}")

    async def stop(self) -> str:
        """SIGTERM, wait for the exit; the process title is read before, the whole log after."""
        self.seen.append(Path(f"/proc/{self.process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        self.process.send_signal(signal.SIGTERM)
        await exited(reactor, self.process, 20)
        log = self.log_path.read_text()
        self.seen.append(log)
        return log

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest_twisted.async_yield_fixture
async def runs() -> AsyncIterator[list[Run]]:
    """Every run a test starts is killed if the test did not stop it."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def _leaks(run: Run, *secrets: str) -> list[str]:
    return [f"{secret!r} in:\n{text[:2000]}" for text in run.seen for secret in secrets if secret in text]


async def _exercise(run: Run, token: str) -> None:
    """A 401 without and with a wrong token, a 400, a 404, a 202, /healthz and /metrics on both ports."""
    event = {"event_type": "user_login"}
    assert await run.call("POST", "/generate_event", json=event) == 401
    wrong = {"Authorization": f"Bearer {token}-wrong"}
    assert await run.call("POST", "/generate_event", json=event, headers=wrong) == 401
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert await run.call("POST", "/generate_event", data=b"{not json", headers=good) == 400
    assert await run.call("POST", "/no/such/path", json=event, headers=good) == 404
    assert await run.call("POST", "/generate_event", json=event, headers=good) == 202
    assert await run.call("GET", "/metrics") == 200
    assert await run.call("GET", "/metrics", port=run.metrics_port) == 200


@pytest_twisted.ensureDeferred
async def test_no_secret_in_logs_answers_metrics_or_process_title(
    tmp_path: Path, queue_name: str, account: Account, runs: list[Run]
) -> None:
    """The password from a file and the token from the environment; then a wrong password from a file and
    the token from a file (the broker refuses the login, which is logged): neither secret shows anywhere."""
    token = f"tok-{uuid.uuid4().hex}"
    password_file = tmp_path / "rabbitmq-pass"
    password_file.write_text(account.password + "\n")
    env = {
        "RABBITMQ_USER": account.user,
        "RABBITMQ_PASS_FILE": str(password_file),
        "AUDITGEN_API_TOKEN": token,
    }
    run = Run(tmp_path, queue_name, env)
    runs.append(run)
    await run.wait_health(200)
    await _exercise(run, token)
    log = await run.stop()
    assert "connected to RabbitMQ" in log
    assert _leaks(run, account.user), "the search must find what is there (the user name, not a secret)"
    assert not _leaks(run, account.password, token)

    wrong_password, token_file = f"wrong-{uuid.uuid4().hex}", tmp_path / "api-token"
    password_file.write_text(wrong_password + "\n")
    token_file.write_text(token + "\n")
    env = {
        "RABBITMQ_USER": account.user,
        "RABBITMQ_PASS_FILE": str(password_file),
        "AUDITGEN_API_TOKEN_FILE": str(token_file),
    }
    run = Run(tmp_path, queue_name, env)
    runs.append(run)
    await run.wait_health(503)
    await wait_for(lambda: "ACCESS_REFUSED" in run.log_path.read_text(), timeout=20, what="the refused login")
    await _exercise(run, token)
    await run.stop()
    assert not _leaks(run, wrong_password, token)


@pytest_twisted.ensureDeferred
async def test_a_secret_on_the_command_line_is_warned_about(
    tmp_path: Path, queue_name: str, runs: list[Run]
) -> None:
    """--api-token=... would be in the process list for every user to read: the service rewrites its
    process title without the value, and the log says so (without the value)."""
    token = f"tok-{uuid.uuid4().hex}"
    run = Run(tmp_path, queue_name, {}, f"--api-token={token}")
    runs.append(run)
    await run.wait_health(200)
    title = Path(f"/proc/{run.process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert token not in title
    assert "--api-token=***" in title
    log = await run.stop()
    assert "--api-token was given on the command line" in log
    assert token not in log
