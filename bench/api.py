"""HTTP API throughput and latency: POST /generate_event answered after the broker's confirm, against a
trivial Klein handler that parses the same JSON and answers 202 without publishing, in the same run.

    python bench/api.py --runs 3 --seconds 10 [--connections 20] [--spool] [--bulk]

Needs wrk (Debian package `wrk`) and the broker on --host/--port (default 127.0.0.1:5672). For each run
it starts the installed service (`twistd -n auditgen`, generator off, a fresh queue) and the trivial
handler, loads each with wrk (--connections keep-alive connections), and prints requests/s, p50/p99
latency, the ratio to the trivial handler, and whether every event answered 202 reached the queue
(lost must be 0). With --spool the service runs with a spool directory. With --bulk it instead posts
?count=1000 and reports confirmed events/s. Figures are medians of --runs runs.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pika

BODY = json.dumps({"event_type": "user_login", "action_result": "FAILURE", "user_id": "bench"})
LUA = f"""
wrk.method = "POST"
wrk.body = {json.dumps(BODY)}
wrk.headers["Content-Type"] = "application/json"
"""
TWISTD = str(Path(sys.executable).parent / "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0, status: int | None = None) -> None:
    """Poll url until it answers (with `status`, if given); raise after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if status is None or r.status == status:
                    return
        except OSError as e:
            code = getattr(e, "code", None)
            if status is None and code is not None:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer")
        time.sleep(0.1)


def trivial_server(port: int) -> None:
    """The anchor: Klein, same JSON parsing, 202 at once, nothing published."""
    from klein import Klein
    from twisted.internet import reactor
    from twisted.web.server import Site

    app = Klein()

    @app.route("/generate_event", methods=["POST"])
    def generate_event(request):  # type: ignore[no-untyped-def]
        fields = json.loads(request.content.read())
        request.setResponseCode(202)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"status": "success", "event_id": str(uuid.uuid4()), "n": len(fields)}).encode()

    site = Site(app.resource())
    site.log = lambda request: None  # type: ignore[method-assign]
    running: Any = reactor
    running.listenTCP(port, site, interface="127.0.0.1")
    running.run()


def wrk(url: str, seconds: int, connections: int, script: str) -> dict[str, float]:
    """Run wrk and read requests/s, latency percentiles and the count of non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return float(m.group(1)) * units[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
    }


def queue_count(host: str, port: int, queue: str, delete: bool = False) -> int:
    conn = pika.BlockingConnection(pika.ConnectionParameters(host=host, port=port))
    try:
        channel = conn.channel()
        count: int = channel.queue_declare(queue, durable=True, passive=True).method.message_count
        if delete:
            channel.queue_delete(queue)
        return count
    finally:
        conn.close()


def run_service(
    args: argparse.Namespace, queue: str, spool: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    port, metrics_port = free_port(), free_port()
    command = [
        TWISTD, "-n", "--pidfile=", "auditgen", f"--app-port={port}", f"--prometheus-port={metrics_port}",
        "--interval=0", f"--rabbitmq-host={args.host}", f"--rabbitmq-port={args.port}",
        f"--rabbitmq-queue={queue}", f"--max-unconfirmed={args.window}", "--confirm-wait=5",
        f"--outbox-max={args.outbox_max}",
    ]  # fmt: skip
    if spool:
        command.append(f"--spool-dir={spool}")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz", status=200)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--outbox-max", type=int, default=10000, help="AUDITGEN_OUTBOX_MAX")
    parser.add_argument("--spool", action="store_true")
    parser.add_argument("--bulk", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--serve-trivial", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_trivial:
        trivial_server(args.serve_trivial)
        return
    work = Path(tempfile.mkdtemp(prefix="auditgen-bench-"))
    script = work / "post.lua"
    script.write_text(LUA)
    ours: list[dict[str, float]] = []
    anchors: list[dict[str, float]] = []
    for run in range(args.runs):
        queue = f"bench-api-{uuid.uuid4().hex[:8]}"
        spool = str(work / f"spool-{run}") if args.spool else None
        process, port = run_service(args, queue, spool)
        try:
            path = "/generate_event?count=1000" if args.bulk else "/generate_event"
            result = wrk(f"http://127.0.0.1:{port}{path}", args.seconds, args.connections, str(script))
            answered = (result["requests"] - result["non2xx"]) * (1000 if args.bulk else 1)
            deadline = time.monotonic() + 60
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as r:
                    if json.load(r)["outbox_depth"] == 0 or time.monotonic() > deadline:
                        break
                time.sleep(0.2)
        finally:
            stop(process)
        received = queue_count(args.host, args.port, queue, delete=True)
        result["lost"] = max(0.0, answered - received)
        result["events_per_s"] = answered / args.seconds
        ours.append(result)
        anchor_port = free_port()
        trivial = subprocess.Popen(
            [sys.executable, __file__, "--serve-trivial", str(anchor_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{anchor_port}/", status=None)
            anchors.append(
                wrk(
                    f"http://127.0.0.1:{anchor_port}/generate_event",
                    args.seconds,
                    args.connections,
                    str(script),
                )
            )
        finally:
            trivial.terminate()
            trivial.wait()
        print(
            f"run {run + 1}: auditgen {result['rps']:,.0f} req/s (p99 {result['p99']:.1f} ms, lost "
            f"{result['lost']:.0f}), trivial Klein {anchors[-1]['rps']:,.0f} req/s",
            flush=True,
        )

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    kind = "bulk ?count=1000" if args.bulk else "single event"
    spool_note = "with spool" if args.spool else "memory outbox"
    setup = f"{args.connections} connections, {kind}, {spool_note}"
    print(f"\nmedians of {args.runs} runs of {args.seconds} s, {setup}:")
    for name, rows in (("auditgen", ours), ("trivial Klein", anchors)):
        rps, p50, p99 = med(rows, "rps"), med(rows, "p50"), med(rows, "p99")
        print(f"  {name:<14}{rps:>9,.0f} req/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    if args.bulk:
        print(f"  auditgen      {med(ours, 'events_per_s'):>9,.0f} events/s confirmed")
    ratio = med(ours, "rps") / med(anchors, "rps")
    print(f"  ratio to trivial Klein {ratio:.2f}; lost {sum(r['lost'] for r in ours):.0f}")


if __name__ == "__main__":
    main()
