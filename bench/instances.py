"""Scaling out on one machine: N instances of the installed service against one, in the same run.

    python bench/instances.py --instances 3 --runs 3 [--seconds 10] [--queue-per-instance] [--spool]

Starts a private RabbitMQ node (tests/broker.py; the shared broker is not touched) with a policy that caps
the bench queues at 200,000 messages (nobody consumes), then, --runs times in turn: one service, and N
services with one seed and their own names (`twistd -n auditgen --rate=100000 --instance=bench-K
--instances=N`, so each outbox stays full and each publisher works flat out), all on one queue (or one queue
each with --queue-per-instance). After a second of warm-up it reads every instance's confirmed-events counter,
waits --seconds, reads it again, and stops them. Printed: the median confirmed events/s of one instance and of
N together, their ratio, and the cores the machine has: instances scale until the cores, or the queue's one
Erlang process in the broker, are used up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.broker import PrivateBroker
from tests.support.twistd import Service

CONFIRMED = "audit_events_generator_published_success_total"


async def confirmed_per_second(
    reactor: Any, node: PrivateBroker, work: Path, count: int, seconds: float, args: argparse.Namespace
) -> float:
    """Confirmed events/s of `count` instances together, over `seconds` after a second of warm-up."""
    tag = uuid.uuid4().hex[:8]
    services = []
    for k in range(count):
        folder = work / f"{tag}-{k}"
        folder.mkdir()
        queue = f"bench-instances-{tag}" + (f"-{k}" if args.queue_per_instance else "")
        extra = ["--rate=100000", "--seed=bench", f"--instance=bench-{k}", f"--instances={count}"]
        services.append(
            Service(
                reactor,
                rabbitmq_port=node.port,
                queue=queue,
                workdir=folder,
                spool_dir=folder / "spool" if args.spool else None,
                extra_args=extra,
            )
        )
    try:
        await defer.gatherResults([defer.ensureDeferred(s.start()) for s in services])
        await task.deferLater(reactor, 1.0, lambda: None)
        before = [(await s.metrics()).total(CONFIRMED) for s in services]
        began = reactor.seconds()
        await task.deferLater(reactor, seconds, lambda: None)
        after = [(await s.metrics()).total(CONFIRMED) for s in services]
        elapsed = reactor.seconds() - began
    finally:
        for service in services:
            if service.running():
                await service.terminate()
            service.cleanup()
    for queue in {s.queue for s in services}:
        await deferToThread(node.delete_queue, queue)
    return float(sum(after) - sum(before)) / float(elapsed)


async def main(reactor: Any) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--queue-per-instance", action="store_true")
    parser.add_argument("--spool", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="auditgen-instances-"))
    node = PrivateBroker(reactor, base_dir=work)
    one: list[float] = []
    many: list[float] = []
    try:
        await node.start()
        await node.ctl(
            "set_policy", "bench-cap", "^bench-instances-", '{"max-length":200000}', "--apply-to", "queues"
        )
        for run in range(1, args.runs + 1):
            one.append(await confirmed_per_second(reactor, node, work, 1, args.seconds, args))
            many.append(await confirmed_per_second(reactor, node, work, args.instances, args.seconds, args))
            print(f"run {run}: 1 instance {one[-1]:,.0f}/s, {args.instances} instances {many[-1]:,.0f}/s")
    finally:
        await node.stop()
    queues = "one queue each" if args.queue_per_instance else "one queue"
    outbox = "spool" if args.spool else "memory outbox"
    print(f"\nmedians of {args.runs} runs of {args.seconds:g} s, {queues}, {outbox}, {os.cpu_count()} cores:")
    print(f"  1 instance    {statistics.median(one):>9,.0f} confirmed events/s")
    print(f"  {args.instances} instances  {statistics.median(many):>9,.0f} confirmed events/s")
    print(f"  ratio {statistics.median(many) / statistics.median(one):.2f}")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
