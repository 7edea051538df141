"""Core benchmark: store apply rate and memory, codec rates. Prints a table.

    python bench/bench_core.py            # full run (100k devices x 3 origins)
    python bench/bench_core.py --quick    # a smaller run, for a smoke test

Measures, on one core:
* store apply rate for N devices x 3 origins (every change a new version; a realistic mix in
  which most changes alter the cluster value), at N = 1k, 10k, 100k known devices, to show
  that the cost per change is flat;
* memory of the store holding 100k devices x 3 origins (tracemalloc, Python allocations);
* pbxmesh frame encode/decode per change (batches of 100 changes per frame), and Asterisk
  ast_event encode/decode per event.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
import tracemalloc

from pbxmesh.eid import EID
from pbxmesh.states import DeviceState
from pbxmesh.store import DeviceStore
from pbxmesh.wire import asterisk, frame

ORIGINS = [EID.generate() for _ in range(3)]
STATES = [int(s) for s in DeviceState]


def _changes(n_devices: int, n_changes: int, seed: int = 1) -> list[tuple[EID, str, int, int]]:
    rnd = random.Random(seed)
    names = [f"PJSIP/{i:06d}" for i in range(n_devices)]
    version = 1 << 40
    out = []
    for _ in range(n_changes):
        version += 1
        out.append((rnd.choice(ORIGINS), rnd.choice(names), rnd.choice(STATES), version))
    return out


def _fill(store: DeviceStore, n_devices: int) -> None:
    version = 1
    for origin in ORIGINS:
        for i in range(n_devices):
            store.apply(origin, f"PJSIP/{i:06d}", 1, version)
            version += 1


def bench_apply(n_devices: int, n_changes: int) -> float:
    store = DeviceStore()
    _fill(store, n_devices)
    changes = _changes(n_devices, n_changes)
    apply = store.apply
    gc.collect()
    t0 = time.perf_counter()
    for origin, device, state, version in changes:
        apply(origin, device, state, version)
    return n_changes / (time.perf_counter() - t0)


def bench_pipeline(n_devices: int, n_changes: int) -> float:
    """Decode frames of 100 changes and apply them: what a node does per received change."""
    store = DeviceStore()
    _fill(store, n_devices)
    changes = _changes(n_devices, n_changes)
    frames = []
    for start in range(0, n_changes, 100):
        chunk = changes[start : start + 100]
        items = tuple(frame.DeviceItem(d, s, v) for _, d, s, v in chunk)
        frames.append(
            frame.encode(
                frame.Frame(
                    type=frame.FrameType.CHANGES,
                    origin=ORIGINS[0],
                    seq=start,
                    name="n",
                    items=items,
                )
            )
        )
    apply = store.apply
    gc.collect()
    t0 = time.perf_counter()
    for data in frames:
        decoded = frame.decode(data)
        origin = decoded.origin
        for item in decoded.items:
            apply(origin, item.device, item.state, item.version)  # type: ignore[union-attr]
    return n_changes / (time.perf_counter() - t0)


def bench_memory(n_devices: int) -> float:
    gc.collect()
    tracemalloc.start()
    store = DeviceStore()
    _fill(store, n_devices)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) == n_devices
    return current / 1e6


def bench_frame(n_changes: int) -> tuple[float, float]:
    origin = ORIGINS[0]
    batches = []
    for start in range(0, n_changes, 100):
        items = tuple(
            frame.DeviceItem(f"PJSIP/{i:06d}", 2, (1 << 40) + i) for i in range(start, start + 100)
        )
        batches.append(
            frame.Frame(
                type=frame.FrameType.CHANGES, origin=origin, seq=start, name="pbx1", items=items
            )
        )
    t0 = time.perf_counter()
    encoded = [frame.encode(f) for f in batches]
    t1 = time.perf_counter()
    for data in encoded:
        frame.decode(data)
    t2 = time.perf_counter()
    return n_changes / (t1 - t0), n_changes / (t2 - t1)


def bench_asterisk(n_events: int) -> tuple[float, float]:
    events = [
        asterisk.AstDeviceStateChange(f"PJSIP/{i:06d}", 2, 1, ORIGINS[0]) for i in range(n_events)
    ]
    t0 = time.perf_counter()
    encoded = [asterisk.encode_event(e) for e in events]
    t1 = time.perf_counter()
    for data in encoded:
        asterisk.decode_event(data)
    t2 = time.perf_counter()
    return n_events / (t1 - t0), n_events / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = ap.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    n_changes = 50_000 if args.quick else 500_000
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    rates: dict[int, float] = {}
    piped: dict[int, float] = {}
    for n in sizes:
        rates[n] = max(bench_apply(n, n_changes) for _ in range(3))
        rows.append((f"store apply, {n:>7,} devices x 3 origins", f"{rates[n]:,.0f} changes/s"))
    for n in sizes:
        piped[n] = max(bench_pipeline(n, n_changes) for _ in range(3))
        rows.append((f"frame decode + apply, {n:>7,} devices", f"{piped[n]:,.0f} changes/s"))
    lo, hi = sizes[0], sizes[-1]
    rows.append((f"store apply: rate at {hi:,} / rate at {lo:,}", f"{rates[hi] / rates[lo]:.2f}"))
    rows.append(
        (f"decode + apply: rate at {hi:,} / rate at {lo:,}", f"{piped[hi] / piped[lo]:.2f}")
    )
    mem_n = sizes[-1]
    rows.append((f"store memory, {mem_n:,} devices x 3 origins", f"{bench_memory(mem_n):.1f} MB"))
    enc, dec = bench_frame(n_changes // 5)
    rows.append(("pbxmesh frame encode (100 changes/frame)", f"{enc:,.0f} changes/s"))
    rows.append(("pbxmesh frame decode (100 changes/frame)", f"{dec:,.0f} changes/s"))
    enc, dec = bench_asterisk(n_changes // 10)
    rows.append(("ast_event encode (res_corosync format)", f"{enc:,.0f} events/s"))
    rows.append(("ast_event decode (res_corosync format)", f"{dec:,.0f} events/s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 24}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
