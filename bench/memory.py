"""Resident memory under steady full load: the generator at full rate plus wrk posting events.

    python bench/memory.py --minutes 10 [--connections 20] [--spool] [--every 5]

Starts a private RabbitMQ node (tests/support/broker.py; the shared broker is not touched) with a policy
that caps the bench queue at 200,000 messages (so the broker does not fill up while nobody consumes), the
installed service (`twistd -n auditgen --rate=100000`, so the outbox stays full and the publisher works
flat out) and wrk with --connections keep-alive connections posting events, for --minutes minutes. It
samples the service's RSS (VmRSS) every --every seconds and prints min / median / max and the mean of the
first and of the last minute (flat means those two agree). Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import LUA
from tests.support.broker import PrivateBroker
from tests.support.twistd import Service


async def main(reactor: Any) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--spool", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="auditgen-memory-"))
    node = PrivateBroker(reactor, base_dir=work)
    service: Service | None = None
    load: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, float]] = []
    try:
        await node.start()
        await node.ctl(
            "set_policy", "bench-cap", "^bench-memory-", '{"max-length":200000}', "--apply-to", "queues"
        )
        service = Service(
            reactor,
            rabbitmq_port=node.port,
            queue=f"bench-memory-{uuid.uuid4().hex[:8]}",
            workdir=work,
            spool_dir=work / "spool" if args.spool else None,
            extra_args=["--rate=100000"],
        )
        await service.start()
        script = work / "post.lua"
        script.write_text(LUA)
        seconds = int(args.minutes * 60)
        load = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{args.connections}",
                f"-d{seconds}s",
                "-s",
                str(script),
                f"{service.url}/generate_event",
            ],
            stdout=subprocess.DEVNULL,
        )
        start = reactor.seconds()
        while reactor.seconds() - start < seconds:
            rss = service.rss_kib()
            if rss is not None:
                samples.append((reactor.seconds() - start, rss / 1024))
                print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:6.1f} MB", flush=True)
            await task.deferLater(reactor, args.every, lambda: None)
    finally:
        if load is not None and load.poll() is None:
            load.terminate()
            load.wait()
        if service is not None and service.running():
            await service.terminate()
        await node.stop()
    values = [mb for _, mb in samples]
    first = [mb for t, mb in samples if t < 60]
    last = [mb for t, mb in samples if t >= samples[-1][0] - 60]
    print(
        f"\nRSS over {args.minutes} min at full load ({len(values)} samples): min {min(values):.1f} MB, "
        f"median {statistics.median(values):.1f} MB, max {max(values):.1f} MB; "
        f"first minute {statistics.mean(first):.1f} MB, last minute {statistics.mean(last):.1f} MB"
    )


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
