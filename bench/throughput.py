"""Confirmed-publish throughput: auditgen's outbox + publisher, with and without the spool, against a raw
pika TwistedProtocolConnection publisher in confirm mode, measured in the same run.

    python bench/throughput.py --events 50000 --runs 3 [--window 1000] [--raw-windows 100,300,1000,3000]

"auditgen (memory, world)" is the in-memory pipeline with events drawn from the service's default world,
as the service makes them; compare its ratio with "auditgen (memory)".

Each run publishes --events persistent messages to a fresh durable queue (deleted afterwards) and times
until the last broker ack. Printed: each variant's median events/s over the runs, and its ratio to the raw
publisher. The machine is shared and noisy: compare the ratios, not the absolute figures across runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from auditgen.amqp.publisher import Publisher
from auditgen.config import MAX_RATE, Broker
from auditgen.events import Catalog, EventFactory, encode
from auditgen.generator import Generator
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxService
from auditgen.spool import Spool
from auditgen.world import World, build


async def _delete_queue(reactor: Any, host: str, port: int, queue: str) -> None:
    conn = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), TwistedProtocolConnection())
    await conn.ready
    channel = await conn.channel()
    await channel.queue_delete(queue)
    conn.close()
    await conn.closed


async def raw_pika(reactor: Any, host: str, port: int, events: int, window: int, body: bytes) -> float:
    """The anchor: a bare confirm-mode publisher keeping `window` messages in flight."""
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    conn = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), TwistedProtocolConnection())
    await conn.ready
    channel = await conn.channel()
    await channel.confirm_delivery()
    await channel.queue_declare(queue=queue, durable=True)
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    done: defer.Deferred[None] = defer.Deferred()
    state = {"sent": 0, "acked": 0}

    def publish() -> None:
        while state["sent"] < events and state["sent"] - state["acked"] < window:
            state["sent"] += 1
            channel.basic_publish("", queue, body, properties=properties).addCallback(acked)

    def acked(_: Any) -> None:
        state["acked"] += 1
        if state["acked"] == events:
            done.callback(None)
        else:
            publish()

    start = time.perf_counter()
    publish()
    await done
    elapsed = time.perf_counter() - start
    conn.close()
    await conn.closed
    await _delete_queue(reactor, host, port, queue)
    return events / elapsed


async def auditgen(
    reactor: Any,
    host: str,
    port: int,
    events: int,
    window: int,
    spool_dir: str | None,
    world: World | None = None,
) -> float:
    """The service's own pipeline: the generator at full rate into the outbox (default capacity, so it
    holds back when the broker lags), the publisher draining it; timed until `events` confirms."""
    queue = f"bench-auditgen-{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    spool = Spool(spool_dir, reactor) if spool_dir else None
    outbox = Outbox(10_000, metrics, reactor, spool=spool)
    opened = OutboxService(outbox, spool, metrics)
    opened.startService()
    if opened._opened is not None:
        await opened._opened
    publisher = Publisher(
        reactor, Broker(host, port, "guest", "guest", "/"), queue, outbox, metrics, max_unconfirmed=window
    )
    publisher.startService()
    while not publisher.connected:
        await task.deferLater(reactor, 0.01, lambda: None)
    factory = EventFactory(Catalog.builtin(), world=world)
    generator = Generator(reactor, MAX_RATE, factory.generate, outbox, metrics)

    def confirmed() -> float:
        # The counter itself: collecting the whole registry every 10 ms would cost more than we measure.
        value: float = metrics.published_success._value.get()
        return value

    start = time.perf_counter()
    generator.startService()
    while confirmed() < events:
        await task.deferLater(reactor, 0.01, lambda: None)
    elapsed = time.perf_counter() - start
    generator.stopService()
    await publisher.stopService()
    await opened.stopService()
    await _delete_queue(reactor, host, port, queue)
    return confirmed() / elapsed


async def main(reactor: Any, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000, help="auditgen's AUDITGEN_MAX_UNCONFIRMED")
    parser.add_argument(
        "--raw-windows",
        default="100,300,1000,3000",
        help="windows tried for raw pika; the best is the anchor",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    args = parser.parse_args(argv)
    body = encode(EventFactory(Catalog.builtin()).generate())
    raw_windows = [int(w) for w in args.raw_windows.split(",")]
    results: dict[str, list[float]] = {f"raw pika, window {w}": [] for w in raw_windows}
    results.update({"auditgen (memory)": [], "auditgen (memory, world)": [], "auditgen (spool)": []})
    world = build(None)  # the world the service builds with AUDITGEN_WORLD=true and default sizes
    for run in range(args.runs):
        for w in raw_windows:
            rate = await raw_pika(reactor, args.host, args.port, args.events, w, body)
            results[f"raw pika, window {w}"].append(rate)
        results["auditgen (memory)"].append(
            await auditgen(reactor, args.host, args.port, args.events, args.window, None)
        )
        results["auditgen (memory, world)"].append(
            await auditgen(reactor, args.host, args.port, args.events, args.window, None, world)
        )
        with tempfile.TemporaryDirectory() as spool_dir:
            results["auditgen (spool)"].append(
                await auditgen(reactor, args.host, args.port, args.events, args.window, spool_dir)
            )
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    best = max((name for name in medians if name.startswith("raw")), key=medians.__getitem__)
    anchor = medians[best]
    print(
        f"\nmedians of {args.runs} runs, {args.events} persistent events each, auditgen window {args.window}"
    )
    print(f"(anchor: the best raw pika window, {best}):")
    for name, median in medians.items():
        print(f"  {name:<24} {median:>10,.0f} events/s   ratio to the anchor {median / anchor:.2f}")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
