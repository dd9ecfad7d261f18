"""In-process generation speed: events/s of the generator's `make` alone (no outbox, no broker), plain and
with sessions, without a world and with worlds of several sizes, measured in the same run.

    python bench/generation.py --events 100000 --runs 5 [--hosts 12,1000,100000]

Printed: each variant's median events/s over the runs and its ratio to the variant without a world. The
machine is shared and noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from auditgen.events import Catalog, EventFactory
from auditgen.sessions import SessionMix
from auditgen.world import World, build


def make(world: World | None, session_share: float) -> Callable[[], Mapping[str, Any]]:
    factory = EventFactory(Catalog.builtin(), random.Random(1), world=world)
    if session_share == 0:
        return factory.generate
    return SessionMix(factory, random.Random(2), session_share, 20)


def rate(make: Callable[[], Mapping[str, Any]], events: int) -> float:
    """Events per second of this process's CPU time: other processes on a shared machine slow the wall
    clock far more than they slow this count."""
    start = time.process_time()
    for _ in range(events):
        make()
    return events / (time.process_time() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", default="12,100000", help="world sizes to try, comma-separated")
    parser.add_argument("--session-share", type=float, default=0.3, help="AUDITGEN_SESSION_SHARE")
    args = parser.parse_args(argv)
    worlds: dict[str, World | None] = {"no world": None}
    for hosts in (int(h) for h in args.hosts.split(",")):
        started = time.perf_counter()
        worlds[f"world of {hosts} hosts"] = build("bench", hosts, max(10, hosts // 100))
        print(f"built a world of {hosts} hosts in {time.perf_counter() - started:.1f} s", flush=True)
    variants = {
        f"{name}, {label}": make(world, share)
        for name, world in worlds.items()
        for label, share in (("plain", 0.0), (f"sessions {args.session_share:g}", args.session_share))
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, variant in variants.items():  # interleaved, so load changes hit every variant alike
            results[name].append(rate(variant, args.events))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
    medians = {name: statistics.median(r) for name, r in results.items()}
    print(f"\nmedians of {args.runs} runs of {args.events} events each:")
    for name, median in medians.items():
        anchor = medians[f"no world, {name.split(', ', 1)[1]}"]
        print(f"  {name:<44} {median:>10,.0f} events/s   ratio to no world {median / anchor:.2f}")


if __name__ == "__main__":
    main()
