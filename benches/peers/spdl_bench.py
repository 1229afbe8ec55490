"""Case 6, SPDL side: items/s through SPDL's ``iterate_in_subprocess``.

Three transports, as the issue asks: SPDL's segment pool arena, its ring arena, and no arena
(items pickled through a ``multiprocessing`` queue); the two arenas again with prepared items
(modes ``pool_prepared`` and ``ring_prepared``, see ``Items``); when the ``shm_arena`` package is
installed, also SPDL with ``shm_arena.Arena`` (mode ``shm_arena``), shm_arena's own API with a
forked child writing items in place and this process reading them (mode ``native``), and one
core copying the same bytes (mode ``memcpy``, the limit). Each item is a NumPy ``uint8`` array of
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
import functools
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

    With ``prepared`` the item is made once, before the first, and only its 8-byte stamp
    changes from item to item (a producer whose items already exist): the transport's own copy
    is then the only one, for SPDL's arenas and for the Rust harness's ``send, prepared item``.
    """

    def __init__(self, size: int, count: int, reuse: bool, prepared: bool = False) -> None:
        self.size = size
        self.count = count
        self.reuse = reuse
        self.prepared = prepared
        self.src = (np.arange(size, dtype=np.uint64) * 31 + 7).astype(np.uint8)

    def __iter__(self):
        item = np.empty(self.size, dtype=np.uint8)
        if self.prepared:
            np.copyto(item, self.src)
        for i in range(self.count):
            if not self.reuse:
                item = np.empty(self.size, dtype=np.uint8)
            if not self.prepared:
                np.copyto(item, self.src)
            item[:8] = np.frombuffer(np.uint64(i).tobytes(), dtype=np.uint8)
            yield item


def make_items(size: int, count: int, reuse: bool, prepared: bool = False) -> Items:
    return Items(size, count, reuse, prepared)


def checksum(item) -> int:
    return int(np.frombuffer(item, dtype=np.uint64).sum(dtype=np.uint64))


def run_once(mode: str, size: int, count: int) -> float:
    import functools

    from spdl.pipeline import (
        SharedMemoryRingBuffer,
        SharedMemorySegmentPool,
        iterate_in_subprocess,
    )

    prepared = mode.endswith("_prepared")
    mode = mode.removesuffix("_prepared")
    if mode == "pool":
        arena = SharedMemorySegmentPool(segment_size=size, count=BUFFER_SIZE + 2)
    elif mode == "ring":
        arena = SharedMemoryRingBuffer(capacity=(BUFFER_SIZE + 2) * size)
    elif mode == "shm_arena":
        import shm_arena

        # The same room as SPDL's arenas (BUFFER_SIZE + 2 items), rounded up to a power of
        # two, and at least two items' worth (an item may use at most half the ring).
        arena = shm_arena.Arena(max((BUFFER_SIZE + 2) * size, 2 * size + 2 * MIB))
    else:
        arena = None
    iterable = iterate_in_subprocess(
        functools.partial(make_items, size, count, arena is not None, prepared),
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


def _native_producer(region, size: int, count: int) -> None:
    """The worker of the native mode (a forked child): fills each item in place in shared
    memory, one copy from the prepared source, counter stamped, as the other producers do."""
    src = (np.arange(size, dtype=np.uint64) * 31 + 7).astype(np.uint8)
    writer = region.writer(timeout=60.0)
    for i in range(count):
        with writer.begin_unit() as unit:
            dst = np.frombuffer(unit.blob_mut(size), dtype=np.uint8)
            np.copyto(dst, src)
            dst[:8] = np.frombuffer(np.uint64(i).tobytes(), dtype=np.uint8)
    writer.close()


def run_native(size: int, count: int) -> float:
    """shm_arena's own API: a forked child writes items in place, this process reads each one
    where it lies (zero-copy numpy view, every byte summed) and ends it."""
    import multiprocessing as mp

    import shm_arena

    capacity = 1 << max(22, (4 * size - 1).bit_length())  # room for 4 items, like the others
    region = shm_arena.Region(capacity)
    reader = region.reader()
    child = mp.get_context("fork").Process(target=_native_producer, args=(region, size, count))
    child.start()
    start = None
    total = 0
    for n in range(count):
        unit = reader.next_unit(60.0)
        total ^= checksum(unit.blob(0))
        unit.end_unit()
        if start is None:
            start = time.perf_counter()
    elapsed = time.perf_counter() - start
    child.join(60)
    if child.exitcode != 0:
        raise RuntimeError(f"native producer exited with {child.exitcode}")
    return (count - 1) / elapsed


def run_memcpy(size: int, count: int) -> float:
    """The limit: one core copying the same bytes (numpy.copyto into a preallocated array)."""
    src = (np.arange(size, dtype=np.uint64) * 31 + 7).astype(np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    start = time.perf_counter()
    for _ in range(count):
        np.copyto(dst, src)
    return count / (time.perf_counter() - start)


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
    try:
        import shm_arena  # noqa: F401

        ours = ["shm_arena", "native", "memcpy"]
    except ImportError:
        ours = []
        print("  shm_arena is not installed: its rows are left out", file=sys.stderr)
    runners = {"native": run_native, "memcpy": run_memcpy}
    for size, count in plan:
        modes = ["pool", "ring", "none", "pool_prepared", "ring_prepared"] + ours
        samples: dict[str, list[float]] = {m: [] for m in modes}
        for rep in range(reps):
            # Interleaved, like the Rust harness: a load change hits every mode alike.
            for mode in modes:
                print(f"  [spdl {size // MIB} MiB] rep {rep + 1}/{reps}: {mode}", file=sys.stderr)
                run = runners.get(mode, functools.partial(run_once, mode))
                samples[mode].append(run(size, count))
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
