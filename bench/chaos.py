"""The chaos drill: random mixed faults from a seed under steady load, then an oracle.

    python bench/chaos.py --seed 7 --minutes 10            # a long run (root; corosync or nats)
    python bench/chaos.py --seed 7 --minutes 1 --nodes 5
    python bench/chaos.py --replay OUT/schedule.json       # the same faults again
    python bench/chaos.py --seed 7 --minutes 2 --only partition,kill_node
    python bench/chaos.py --seed 7 --minutes 10 --transport nats  # nats-server per namespace

What it does, and the fault kinds: tests/harness/chaos.py and docs/reliability.md. Prints a
summary and writes ``schedule.json`` (the faults, enough to run them again), ``trace.json``
(when each fault began and ended), ``report.json`` and, when it diverged, every daemon's and
engine's log, to ``--out`` (default: a new temp dir). Exits 1 when it did not converge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.chaos import KINDS, DrillConfig, load_schedule, run_drill  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, default=1.0, help="how long faults are injected")
    p.add_argument("--nodes", type=int, default=3, choices=range(3, 9), metavar="3-8")
    p.add_argument("--rate", type=float, default=10.0, help="changes per second per PBX")
    p.add_argument("--burst", type=int, default=10_000, help="changes in one burst fault")
    p.add_argument("--only", default="", help="comma-separated fault kinds (default: all)")
    p.add_argument("--max-concurrent", type=int, default=2, help="faults at once, at most")
    p.add_argument("--settle", type=float, default=120.0, help="seconds allowed to converge")
    p.add_argument("--out", type=Path, help="directory for the trace and the report")
    p.add_argument("--replay", type=Path, help="a schedule.json to run again")
    p.add_argument(
        "--transport",
        choices=("corosync", "nats"),
        default="corosync",
        help="the engine under the nodes (one corosync or nats-server per namespace)",
    )
    args = p.parse_args()
    kinds = tuple(k for k in args.only.split(",") if k) or tuple(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    replay = None
    seed, seconds, nodes = args.seed, args.minutes * 60, args.nodes
    if args.replay:
        replay = load_schedule(args.replay)
        conf = json.loads(args.replay.read_text())["config"]
        seed, seconds, nodes = conf["seed"], conf["seconds"], conf["size"]
        args.transport = conf.get("transport", "corosync")
    cfg = DrillConfig(
        seed=seed,
        seconds=seconds,
        size=nodes,
        rate=args.rate,
        burst=args.burst,
        kinds=kinds,
        max_concurrent=args.max_concurrent,
        settle_timeout=args.settle,
        out=args.out,
        replay=replay,
        transport=args.transport,
    )
    report = run_drill(cfg)
    print(report.summary())
    for error in report.fault_errors:
        print("harness:", error.splitlines()[0])
    print(f"results in {report.out}")
    return 0 if report.converged else 1


if __name__ == "__main__":
    raise SystemExit(main())
