"""Soak: the fault scenarios of tests/test_faults.py at a larger scale, then a long steady-load phase.

    python bench/soak.py --events-per-fault 100000 --minutes 30

It starts one private RabbitMQ node (tests/support/broker.py; the shared broker on 5672 is never touched) and,
for each fault (stop_app for 10 s, a network cut for 5 s, SIGTERM and restart on the same spool, SIGKILL
and restart on the same spool, a memory alarm for 5 s), runs the installed service (`twistd -n auditgen`,
the twistd next to this Python; tests/support/twistd.py) under load: keep-alive clients posting events at
--rate requests/s in all, plus the service's own generator every --interval seconds. About half of
--events-per-fault events are sent before the fault and the rest after it. A collector thread consumes
the queue while the scenario runs, so the queue stays short; at the end every event is checked by
event_id, and the scenario's sent / lost / duplicated figures are printed.

Then a steady phase of --minutes minutes without faults (with a spool unless --no-spool) samples the
service's RSS (VmRSS in /proc/<pid>/status) every --rss-every seconds and is counted the same way.

At the end it prints a table of sent / lost / duplicated per scenario, the RSS samples (min / median /
max, first and last) and any failed check, writes everything as JSON to --output if given, and exits
1 if anything was lost or a check failed. Install the service first (`pip install .`).

Everything it starts (the node, the service, the proxy, the collector) is stopped on exit, also on
Ctrl-C or SIGTERM: the first one cancels the run and cleans up in order; a second one kills at once.
Its working files (service logs, spools, the node's logs) are in --workdir, or a temporary directory
removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, task

from tests.support.broker import PrivateBroker, available
from tests.support.faults import FAULTS, Scenario, fault_scenario, run
from tests.support.tally import summary

LIVE: list[Any] = []  # brokers and scenarios to stop whatever happens


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-per-fault", type=int, default=100_000, help="events sent per fault")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the steady phase")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, in order (default: all: {','.join(FAULTS)}); empty for none",
    )
    parser.add_argument("--rate", type=float, default=300.0, help="POST /generate_event per second, in all")
    parser.add_argument("--clients", type=int, default=6, help="concurrent keep-alive clients")
    parser.add_argument("--interval", type=float, default=0.004, help="the service's --interval")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument(
        "--spool", action=argparse.BooleanOptionalAction, default=True, help="steady phase with a spool"
    )
    parser.add_argument("--workdir", type=Path, help="where logs and spools go (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    parser.add_argument("--output", type=Path, help="write every figure as JSON to this file")
    args = parser.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(args.faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    return args


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


async def soak(reactor: Any, args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    """Start the node, run each fault and the steady phase, and put every figure in report."""
    report.update(scenarios={}, failures={})
    node = PrivateBroker(reactor, base_dir=workdir, name=f"auditgen-soak-{int(time.time())}")
    LIVE.append(node)
    log(f"starting {node}")
    await node.start()
    options = {"clients": args.clients, "rate": args.rate, "interval": args.interval, "collect": True}
    try:
        for name in args.faults:
            log(f"{name}: {args.events_per_fault} events, half before the fault")
            scenario = fault_scenario(
                reactor, name, node, workdir / name, events_total=args.events_per_fault, **options
            )
            LIVE.append(scenario)
            try:
                await run(scenario)
            finally:
                LIVE.remove(scenario)
            _note(report, scenario)
        if args.minutes > 0:
            log(f"steady: {args.minutes} min of load, RSS every {args.rss_every} s")
            steady = Scenario(
                reactor,
                "steady",
                node,
                workdir / "steady",
                events_before=min(args.events_per_fault, 10_000) // 2,
                events_total=0,
                spool=args.spool,
                **options,
            )
            LIVE.append(steady)
            try:
                await steady.begin()
                await steady.steady(args.minutes * 60, args.rss_every)
                await steady.finish()
            finally:
                await steady.close()
                LIVE.remove(steady)
            _note(report, steady)
            report["rss_kib"] = {
                **summary(steady.rss_kib),
                "first": steady.rss_kib[0] if steady.rss_kib else None,
                "last": steady.rss_kib[-1] if steady.rss_kib else None,
                "samples": steady.rss_kib,
            }
    finally:
        log(f"stopping {node.node}")
        await node.stop()
        LIVE.remove(node)


def _note(report: dict[str, Any], s: Scenario) -> None:
    assert s.result is not None
    report["scenarios"][s.name] = s.result.as_dict()
    failures = s.failures()
    if failures:
        report["failures"][s.name] = failures
    print(s.report(), flush=True)
    for failure in failures:
        print(f"[faults]   FAILED: {failure}", flush=True)


def print_summary(report: dict[str, Any]) -> None:
    print("\nscenario          sent      lost  duplicated  seconds")
    for name, r in report["scenarios"].items():
        seconds = r["notes"].get("seconds", "")
        print(f"{name:<16} {r['sent']:>7} {r['lost']:>9} {r['duplicated']:>11}  {seconds}")
    rss = report.get("rss_kib")
    if rss:
        print(
            f"\nRSS of the service during the steady phase ({len(rss['samples'])} samples, KiB): "
            f"min {rss['min']}, median {rss['median']}, max {rss['max']}, first {rss['first']}, "
            f"last {rss['last']}"
        )
        print("samples:", " ".join(str(v) for v in rss["samples"]))
    for name, failures in report["failures"].items():
        for failure in failures:
            print(f"FAILED {name}: {failure.splitlines()[0]}")


def _kill_everything() -> None:
    """Synchronous last resort: SIGKILL every service run and node still alive."""
    for thing in list(LIVE):
        if isinstance(thing, Scenario):
            thing.service.cleanup()
        elif isinstance(thing, PrivateBroker):
            thing.kill()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not available():
        print("the RabbitMQ server scripts are not installed (see tests/support/broker.py)", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="auditgen-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    atexit.register(_kill_everything)
    outcome: dict[str, Any] = {}

    def start(reactor: Any) -> defer.Deferred[None]:
        main_run = defer.ensureDeferred(soak(reactor, args, workdir, outcome))
        interrupted: list[int] = []

        def interrupt(signum: int, _frame: FrameType | None) -> None:
            interrupted.append(signum)
            if len(interrupted) == 1:
                log(f"signal {signum}: stopping everything (again to kill at once)")
                reactor.callFromThread(main_run.cancel)
            else:
                _kill_everything()
                raise SystemExit(130)

        def install() -> None:  # after the reactor's own handlers, which would just stop it
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, interrupt)

        reactor.callWhenRunning(install)

        def done(result: Any) -> None:
            if interrupted:
                outcome["interrupted"] = True
            elif result is not None:
                outcome["error"] = result.getTraceback()

        return main_run.addBoth(done)

    try:
        task.react(start, [])
    except SystemExit:
        pass
    finally:
        _kill_everything()
    if args.output and outcome:
        args.output.write_text(json.dumps(outcome, indent=2))
    if "error" in outcome:
        print(outcome["error"], file=sys.stderr)
    if outcome.get("scenarios"):
        print_summary(outcome)
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"working files in {workdir}")
    if outcome.get("interrupted"):
        return 130
    if "error" in outcome or outcome.get("failures") or not outcome.get("scenarios"):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
