"""Case 6, SPDL side: items/s through SPDL's ``iterate_in_subprocess``.

Three transports, as the issue asks: SPDL's segment pool arena, its ring arena, and no arena
(items pickled through a ``multiprocessing`` queue). Each item is a NumPy ``uint8`` array of
the given size; the worker fills it (one copy from a prepared source, then a counter stamped
into the first 8 bytes, as the Rust harness does), the parent reads every byte (a sum of
little-endian u64 words). Items/s are counted from the first item's arrival to the last one's,
so worker start-up is not measured; modes are interleaved over the reps and each reports its
best rep, as the Rust harness does.

Run by ``ci/bench-report.sh`` inside a virtualenv holding ``spdl_core`` and ``numpy``; writes
JSON to ``--out``::

    python spdl_bench.py [--quick] --out spdl.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

MIB = 1 << 20
BUFFER_SIZE = 3  # iterate_in_subprocess's default queue depth


class Items:
    """Re-iterable source of ``count`` arrays of ``size`` bytes (runs in the worker).

    With ``reuse`` the worker refills one array for every item, as the Rust harness refills one
    buffer: SPDL's arenas copy an item into shared memory before the worker asks for the next
    one (``_Arena.offload`` runs before ``data_q.put``), so the array is free again. Without an
    arena the queue pickles items in a feeder thread later, so each item needs an array of its
    own. Reusing keeps both harnesses from measuring their allocators instead of the transport
    (a fresh 32 MiB array costs numpy ~7 ms, with huge pages; a fresh 32 MiB `Vec` costs Rust
    ~25 ms in page faults).
    """

    def __init__(self, size: int, count: int, reuse: bool) -> None:
        self.size = size
        self.count = count
        self.reuse = reuse
        self.src = (np.arange(size, dtype=np.uint64) * 31 + 7).astype(np.uint8)

    def __iter__(self):
        item = np.empty(self.size, dtype=np.uint8)
        for i in range(self.count):
            if not self.reuse:
                item = np.empty(self.size, dtype=np.uint8)
            np.copyto(item, self.src)
            item[:8] = np.frombuffer(np.uint64(i).tobytes(), dtype=np.uint8)
            yield item


def make_items(size: int, count: int, reuse: bool) -> Items:
    return Items(size, count, reuse)


def checksum(item) -> int:
    return int(np.frombuffer(item, dtype=np.uint64).sum(dtype=np.uint64))


def run_once(mode: str, size: int, count: int) -> float:
    import functools

    from spdl.pipeline import (
        SharedMemoryRingBuffer,
        SharedMemorySegmentPool,
        iterate_in_subprocess,
    )

    if mode == "pool":
        arena = SharedMemorySegmentPool(segment_size=size, count=BUFFER_SIZE + 2)
    elif mode == "ring":
        arena = SharedMemoryRingBuffer(capacity=(BUFFER_SIZE + 2) * size)
    else:
        arena = None
    iterable = iterate_in_subprocess(
        functools.partial(make_items, size, count, arena is not None),
        buffer_size=BUFFER_SIZE,
        arena=arena,
        timeout=60,
    )
    start = None
    total = 0
    n = 0
    for item in iterable:
        total ^= checksum(item)
        n += 1
        del item  # the pool keeps a segment while a view of it is alive
        if start is None:
            start = time.perf_counter()
    elapsed = time.perf_counter() - start
    if n != count:
        raise RuntimeError(f"{mode}: got {n} items, expected {count}")
    # Let the worker go: the iterable's finaliser shuts it down.
    del iterable
    return (count - 1) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    reps = 3 if args.quick else 5
    plan = [
        (2 * MIB, 100 if args.quick else 500),
        (32 * MIB, 12 if args.quick else 60),
    ]
    results = []
    for size, count in plan:
        modes = ["pool", "ring", "none"]
        samples: dict[str, list[float]] = {m: [] for m in modes}
        for rep in range(reps):
            # Interleaved, like the Rust harness: a load change hits every mode alike.
            for mode in modes:
                print(f"  [spdl {size // MIB} MiB] rep {rep + 1}/{reps}: {mode}", file=sys.stderr)
                samples[mode].append(run_once(mode, size, count))
        for mode in modes:
            results.append(
                {
                    "size": size,
                    "items": count,
                    "mode": mode,
                    # Best rep, as the Rust harness reports: on a shared machine other load
                    # only ever slows a run down.
                    "items_per_s": max(samples[mode]),
                    "samples": samples[mode],
                }
            )
            print(
                f"    spdl {size // MIB} MiB {mode}: {results[-1]['items_per_s']:.1f} items/s",
                file=sys.stderr,
            )
    from importlib.metadata import version as dist_version

    version = dist_version("spdl_core")
    with open(args.out, "w") as f:
        json.dump({"spdl_version": version, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
