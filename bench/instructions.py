"""CPU instructions per event of the in-memory pipeline (generator, outbox, publisher, confirms), without and
with the world, counted by valgrind's callgrind: the count does not drift with the machine's load as seconds
do, so two checkouts compare within a percent or two on a shared machine.

    python bench/instructions.py [--events 10000] [--source PATH_OF_ANOTHER_CHECKOUT]

Each variant runs twice, with a few events and with --events more, and the difference is divided by the extra
events, so start-up and connection costs drop out. Needs valgrind (Debian's package) and the broker on
127.0.0.1:5672. Under valgrind the pipeline runs about fifty times slower: 10,000 events take a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
from twisted.internet import defer, task
import bench.throughput as bt
from auditgen.world import build
world = build(None) if sys.argv[1] == "world" else None
events = int(sys.argv[2])
task.react(lambda r: defer.ensureDeferred(bt.auditgen(r, "127.0.0.1", 5672, events, 1000, None, world)))
"""
WARM_UP = 2000


def instructions(source: Path, variant: str, events: int) -> int:
    """Instructions the whole process ran to publish and confirm `events` events."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", CHILD]
    run = subprocess.run(
        [*command, variant, str(events)], env=env, capture_output=True, text=True, check=True, cwd=source
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--variants", default="none,world", help="none (no world) and/or world")
    args = parser.parse_args(argv)
    for variant in args.variants.split(","):
        few = instructions(args.source, variant, WARM_UP)
        many = instructions(args.source, variant, WARM_UP + args.events)
        print(
            f"{args.source} {variant}: {(many - few) / args.events:,.0f} instructions per event", flush=True
        )


if __name__ == "__main__":
    main()
