"""auditgen-campaign: run a campaign against a running auditgen and exit 0 only if every verdict is as
expected. What a CI job runs against a detection pipeline.

    auditgen-campaign --url http://auditgen:5000 brute_force=3 sensitive_file_tamper=2 \\
        failed_logins_spread_out brute_force:paced --timeout 60 --junit results.xml --json results.json

It uses only the service's HTTP API (POST /campaigns, GET /campaigns/{id}, GET /campaigns/{id}/junit), with
the standard library, blocking: it is a process of its own, not part of the service.

Exit status: 0 every run as expected; 1 some run missed or raised a false alarm; 2 a usage, request or
connection error; 3 the campaign did not finish within --wait.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

OK, FAILED, ERROR, UNFINISHED = 0, 1, 2, 3
DELIVERIES = ("instant", "paced")
DEFAULT_URL = "http://localhost:5000"
REQUEST_TIMEOUT = 30.0  # seconds for one HTTP call


class Failure(Exception):
    """A request the service refused or could not be sent; the message says which and why."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="auditgen-campaign",
        description="Start a campaign of scenario runs on a running auditgen, follow it to its verdicts, "
        "print the scorecard; exit 0 only if every run's verdict is what it expected.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO[=COUNT][:DELIVERY]",
        help="a scenario to run COUNT times (default 1), in DELIVERY (instant or paced; default: the "
        "scenario's own); added to those of --file",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("AUDITGEN_URL", DEFAULT_URL),
        help="the service's API [AUDITGEN_URL, default %(default)s]",
    )
    parser.add_argument(
        "--token", default=os.environ.get("AUDITGEN_API_TOKEN"), help="its API token [AUDITGEN_API_TOKEN]"
    )
    parser.add_argument("--file", type=Path, help="a campaign in YAML or JSON: the body of POST /campaigns")
    parser.add_argument("--timeout", type=float, help="detection timeout in seconds (default: the service's)")
    parser.add_argument("--junit", type=Path, help="write the verdicts as JUnit XML to this file")
    parser.add_argument("--json", type=Path, help="write the campaign (runs, verdicts, scorecard) as JSON")
    parser.add_argument(
        "--poll", type=float, default=1.0, help="seconds between progress checks (default %(default)s)"
    )
    parser.add_argument(
        "--wait", type=float, default=3600.0, help="give up after this many seconds (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.scenarios and args.file is None:
        parser.error("name at least one scenario, or a --file")
    return args


def campaign_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /campaigns body from the file and the arguments; ValueError on a bad one."""
    body: dict[str, Any] = {}
    if args.file is not None:
        loaded = yaml.safe_load(args.file.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.file}: expected a mapping with scenarios (the body of POST /campaigns)")
        body = loaded
    entries: list[dict[str, Any]] = []
    for item in args.scenarios:
        given, colon, delivery = item.partition(":")
        name, _, count = given.partition("=")
        if not name or (count and not count.isdigit()) or (colon and delivery not in DELIVERIES):
            raise ValueError(
                f"{item!r}: expected SCENARIO, SCENARIO=COUNT, and optionally :instant or :paced after it"
            )
        entry: dict[str, Any] = {"name": name, "count": int(count or 1)}
        if colon:
            entry["delivery"] = delivery
        entries.append(entry)
    if entries:
        scenarios = body.get("scenarios", [])
        if isinstance(scenarios, dict):
            scenarios = [{"name": n, "count": c} for n, c in scenarios.items()]
        body["scenarios"] = [*scenarios, *entries]
    if args.timeout is not None:
        body["detection_timeout_seconds"] = args.timeout
    return body


class Client:
    """The service's API over urllib."""

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url.rstrip("/")
        self._token = token

    def call(self, method: str, path: str, body: Any = None) -> bytes:
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self._url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                answer: bytes = response.read()
                return answer
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise Failure(f"{method} {path}: {e.code} {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"{method} {self._url}{path}: {getattr(e, 'reason', e)}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self.call(method, path, body))


def progress_line(campaign: dict[str, Any]) -> str:
    """Runs sent (and how many of them are paced runs still handing their events over), verdicts in, and
    the time left to the last deadline (a paced run's: its schedule's end plus the timeout)."""
    total = campaign["summary"]["total"]
    decided = total["runs"] - total["pending"]
    left = campaign["time_left_seconds"]
    pacing = sum(
        1
        for run in campaign.get("runs", [])
        if run.get("sent")
        and run.get("delivery") == "paced"
        and run.get("events_confirmed", 0) < run.get("events", 0)
    )
    line = f"{campaign['runs_sent']}/{campaign['runs_planned']} runs sent"
    line += f" ({pacing} paced, under way)" if pacing else ""
    line += f", {decided}/{total['runs']} verdicts in"
    return line + (f", about {left:.0f} s left" if left is not None else "")


def follow(
    client: Client,
    campaign_id: str,
    poll: float,
    wait: float,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the campaign until it is finished or `wait` is over; show progress (rewriting one line on a
    terminal, a line per change otherwise)."""
    deadline = clock() + wait
    shown = ""
    tty = out.isatty()
    while True:
        campaign: dict[str, Any] = client.json("GET", f"/campaigns/{campaign_id}")
        line = progress_line(campaign)
        if tty:
            out.write(f"\r{line}\x1b[K")
        elif line != shown:
            out.write(line + "\n")
        out.flush()
        shown = line
        if campaign["state"] == "finished" or clock() >= deadline:
            if tty:
                out.write("\n")
            return campaign
        sleep(poll)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def scorecard(campaign: dict[str, Any]) -> str:
    """The campaign as a table: a row per scenario and the total; then every run not as expected."""
    header = (
        "scenario",
        "runs",
        "detected",
        "missed",
        "quiet",
        "false alarms",
        "pending",
        "rate",
        "ttd p50",
        "p95",
        "max",
    )
    rows = [header]
    groups = [*campaign["summary"]["scenarios"].items(), ("total", campaign["summary"]["total"])]
    for name, s in groups:
        ttd = s["time_to_detect_seconds"]
        rows.append(
            (
                name,
                str(s["runs"]),
                str(s["detected"]),
                str(s["missed"]),
                str(s["quiet"]),
                str(s["false_alarms"]),
                str(s["pending"]),
                _rate(s["detection_rate"]),
                _seconds(ttd["p50"]),
                _seconds(ttd["p95"]),
                _seconds(ttd["max"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    wrong = [r for r in campaign["runs"] if r["verdict"] not in ("detected", "quiet")]
    for run in wrong:
        lines.append(
            f"{run['verdict'].upper()}: {run['scenario']} {run['scenario_id']} (expected {run['expect']})"
        )
    unexpected = campaign["unexpected_alerts"]["count"]
    if unexpected:
        lines.append(f"{unexpected} alerts matched no run of any scenario (not a failure; see --json)")
    return "\n".join(lines)


def run(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parse_args(argv)
    try:
        body = campaign_body(args)
    except (OSError, ValueError, yaml.YAMLError) as e:
        err.write(f"auditgen-campaign: {e}\n")
        return ERROR
    client = Client(args.url, args.token)
    try:
        started = client.json("POST", "/campaigns", body)
        campaign_id = started["campaign_id"]
        timeout = started["detection_timeout_seconds"]
        err.write(f"campaign {campaign_id}: {len(started['runs'])} runs, detection timeout {timeout:g} s\n")
        campaign = follow(client, campaign_id, args.poll, args.wait, err)
        if args.json is not None:
            args.json.write_text(json.dumps(campaign, indent=2) + "\n")
        if args.junit is not None:
            args.junit.write_bytes(client.call("GET", f"/campaigns/{campaign_id}/junit"))
    except Failure as e:
        err.write(f"auditgen-campaign: {e}\n")
        return ERROR
    out.write(scorecard(campaign) + "\n")
    if campaign["state"] != "finished":
        err.write(f"auditgen-campaign: not finished after {args.wait:g} s\n")
        return UNFINISHED
    return OK if campaign["passed"] else FAILED


def main() -> None:
    sys.exit(run(sys.argv[1:]))
