"""Case 10: Python values through shm_arena (``Writer.send`` / ``Reader.recv``) against pickle.

Python -> Python: one producer process (a child made with ``multiprocessing``'s *fork* start
method) sends values ``{"seq": i, "data": numpy uint8 array}`` to one consumer process (this
one), at 64 B, 64 KiB, 4 MiB and 32 MiB of array. The producer creates its array once and sends
the same array object for every item, for every contender alike (nothing rewrites it, so every
contender may keep a reference to it while it is in flight); the consumer touches every item
(checks that ``seq`` counts up by one, reads the array's first and last byte) and then drops
it. Contenders:

* ``shm_arena``: ``writer.send(value)`` / ``reader.recv()``. The array is copied once into its
  own blob of the ring (64 B stays inline in the envelope: below the 4096-byte offload
  threshold) and comes back as a read-only numpy view of shared memory; the unit ends when the
  consumer drops the value.
* ``queue``: ``multiprocessing.Queue`` (pickled in-band with the default protocol, a feeder
  thread and a pipe: the array is copied into the pickle, through the pipe, and out of it
  again).
* ``shm_pickle5``: ``multiprocessing.shared_memory`` and pickle protocol 5 out-of-band
  buffers, as ezmsg's shared-memory transport does it (``ezmsg.core.messagemarshal.Marshal``:
  ``pickle.dumps(obj, protocol=5, buffer_callback=...)``, the pickle stream and the raw
  out-of-band buffers written into a shared-memory slot behind a header of their lengths;
  ``pickle.loads(stream, buffers=views of the slot)`` on the other side, so the array is a view
  of shared memory, no copy). The ring: ``depth`` fixed slots of ``size + 4 KiB`` in one
  ``SharedMemory`` block, item ``i`` in slot ``i % depth``; the control channel is two pipes
  carrying 8-byte message ids, one forward ("item i is in its slot") and one back ("done with
  item i", sent once the consumer dropped the value), and the producer waits for the ack of item
  ``i - depth`` before it reuses that slot (ezmsg uses a TCP connection and leases per buffer for
  the same two messages; a pipe is the cheapest channel Python has, so the peer is not slowed by
  its control channel). Buffers in the slot start 64-byte aligned, like shm_arena's blobs.
* ``shm_arena_units`` (when ``send``/``recv`` are missing, or for reference): shm_arena's unit
  API with no envelope, ``writer.write_unit([seq bytes, array])`` and ``np.frombuffer`` of
  ``unit.blob(1)``: what the value encoding costs on top of the transport.

Room in flight is the same for all: shm_arena's ring is the smallest power of two holding
four items (``size`` rounded up to 64 plus 256 bytes of headers, at least 64 KiB), and
``depth`` (the queue's ``maxsize``, the number of slots) is the number of items that ring holds
wherever it wraps: one less than its capacity divides into, since a blob never straddles the
end of the ring (6 for 64 KiB and above, 203 for 64 B).

Rust -> Python at 4 MiB: the crate's ``values_peer`` example (``send --name <region> --count N
--size 4194304``) writes N ``Frame`` values (``seq``, a label, a few small fields, a 2x64
``Array<f32>`` and ``data``, an ``Array<u8>`` of 4 MiB that it refills with ``seq % 251`` before
each send, then copies into the ring) into a named region this process created; this process
``recv``s them and checks ``seq`` and the first and last byte of ``data``. Against the
limit: one core copying 4 MiB (``numpy.copyto`` into a preallocated array), items/s. The same
limit is shown against Python -> Python at 4 MiB (the producer copies each item once). Source
and destination of that copy stay in the cache (8 MiB; this machine's L3 is 32 MiB) while every
transport's working set does not (``depth`` items of 4 MiB), so a second limit,
``memcpy_ring``, copies into consecutive 4 MiB parts of a destination as large as shm_arena's
ring (32 MiB), as a ring's writer does.

Also, in one process, what taking one value costs the consumer when it is already in the ring
(``recv``, the touch and the drop; median over many values): the issue asks for a few
microseconds, not a copy, at 4 MiB.

Timing: items/s from the arrival of item ``depth + 2`` (more than one lap of every ring: the
pages of shared memory are faulted in before the clock starts, for all contenders alike; a
fresh page of shared memory costs 4-5 us on this VM, a fresh 32 MiB some 40 ms where writing
it again takes 3 ms) to the first item that arrives after the time budget (0.3 s quick, 1 s
full; at least 5 items); the producer (still sending, or waiting for room) is then killed: a
drain would cost as much as the run for the slow contenders, and every timed item was already
checked. Contenders are interleaved within each rep (a load change hits them alike; the order
rotates from rep to rep); each reports the median of its reps and their spread
(``(max - min) / median``). A contender that cannot run is listed under ``unavailable`` with
the reason, never given a number.

Run by ``ci/bench-report.sh`` inside its virtualenv (NumPy and the shm_arena package); writes
JSON to ``--out``::

    python values_bench.py [--quick] [--values-peer PATH] --out values.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import struct
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np

KIB = 1 << 10
MIB = 1 << 20
SIZES = (64, 64 * KIB, 4 * MIB, 32 * MIB)
RUST_SIZE = 4 * MIB
# Headers around one item in shm_arena's ring (unit header, envelope, blob alignment): an
# estimate that sizes the rings, not a measurement.
ITEM_OVERHEAD = 256
SLOT_EXTRA = 4 * KIB  # room for the header and pickle stream in a pickle-5 slot
TIMEOUT = 30.0  # no single wait may take longer: a stuck run fails instead of hanging
MIN_TIMED = 5  # at least this many timed items per run
U64 = struct.Struct("<Q")

ctx = mp.get_context("fork")


def item_bytes(size: int) -> int:
    return -(-size // 64) * 64 + ITEM_OVERHEAD


def ring_capacity(size: int) -> int:
    """shm_arena's ring: the smallest power of two holding four items, at least 64 KiB."""
    need = 4 * item_bytes(size)
    return max(64 * KIB, 1 << (need - 1).bit_length())


def warm_items(size: int) -> int:
    """Items taken before the clock starts: one lap of shm_arena's ring and one more, so every
    page of every contender's shared memory has been written once."""
    return depth_for(size) + 2


def depth_for(size: int) -> int:
    """Items in flight for every contender: as many as shm_arena's ring holds wherever it
    wraps. A blob never straddles the ring's end, so up to one item's worth of the tail of a
    lap may go unused: the ring holds one item less than its capacity divides into."""
    return ring_capacity(size) // item_bytes(size) - 1


def make_array(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.uint64) * 31 + 7).astype(np.uint8)


def has_values_api() -> bool:
    import shm_arena

    return hasattr(shm_arena.Writer, "send") and hasattr(shm_arena.Reader, "recv")


# --- contenders ------------------------------------------------------------------------------
#
# Each contender has `produce()` (run in the forked child: sends values until it is killed, or
# a wait of TIMEOUT fails if this process went away), `recv()` (the next value, in this
# process), `done(seq)` (called once the consumer dropped the value) and `close()`.


def produce_loop(send, size: int) -> None:
    data = make_array(size)
    i = 0
    while True:
        send({"seq": i, "data": data})
        i += 1


class ShmArenaValues:
    name = "shm_arena"

    def __init__(self, size: int, depth: int) -> None:
        import shm_arena

        self.size = size
        self.region = shm_arena.Region(ring_capacity(size))
        self.reader = self.region.reader()

    def produce(self) -> None:
        writer = self.region.writer(timeout=TIMEOUT)
        produce_loop(writer.send, self.size)

    def recv(self):
        return self.reader.recv(TIMEOUT)

    def done(self, seq: int) -> None:
        pass

    def close(self) -> None:
        del self.reader, self.region


class ShmArenaUnits(ShmArenaValues):
    name = "shm_arena_units"

    def produce(self) -> None:
        writer = self.region.writer(timeout=TIMEOUT)
        data = make_array(self.size)
        i = 0
        while True:
            writer.write_unit([U64.pack(i), data])
            i += 1

    def recv(self):
        unit = self.reader.next_unit(TIMEOUT)
        value = {
            "seq": U64.unpack(unit.blob(0))[0],
            "data": np.frombuffer(unit.blob(1), dtype=np.uint8),
        }
        unit.end_unit()  # the unit's space returns once `data` is dropped too
        return value


class QueuePickle:
    name = "queue"

    def __init__(self, size: int, depth: int) -> None:
        self.size = size
        self.queue = ctx.Queue(maxsize=depth)

    def produce(self) -> None:
        produce_loop(lambda value: self.queue.put(value, timeout=TIMEOUT), self.size)

    def recv(self):
        return self.queue.get(timeout=TIMEOUT)

    def done(self, seq: int) -> None:
        pass

    def close(self) -> None:
        self.queue.close()
        self.queue.join_thread()


class ShmPickle5:
    """ezmsg's way: pickle 5 with out-of-band buffers into shared-memory slots (see the module
    docstring for the ring and its control channel)."""

    name = "shm_pickle5"

    def __init__(self, size: int, depth: int) -> None:
        self.size = size
        self.depth = depth
        self.slot = -(-(size + SLOT_EXTRA) // 64) * 64
        self.shm = shared_memory.SharedMemory(create=True, size=depth * self.slot)
        self.ids_r, self.ids_w = os.pipe()
        self.acks_r, self.acks_w = os.pipe()
        self.open_fds = {self.ids_r, self.ids_w, self.acks_r, self.acks_w}

    def after_fork_parent(self) -> None:
        # Closing the write end of ids here makes a dead producer an end-of-file instead of a
        # hang. The read end of acks stays open, so acks never meet a closed pipe.
        os.close(self.ids_w)
        self.open_fds.remove(self.ids_w)

    def produce(self) -> None:
        os.close(self.ids_r)
        os.close(self.acks_w)
        mem = self.shm.buf
        acked = 0
        i = 0

        def send(obj) -> None:
            nonlocal acked, i
            while i - acked >= self.depth:  # slot i % depth still holds item i - depth
                got = os.read(self.acks_r, 4096)
                if not got:
                    raise EOFError("the consumer went away")
                acked += len(got) // 8
            buffers = []
            stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
            raws = [memoryview(stream)] + [b.raw() for b in buffers]
            base = (i % self.depth) * self.slot
            header = U64.pack(i) + U64.pack(len(raws)) + b"".join(U64.pack(r.nbytes) for r in raws)
            at = base + len(header)
            mem[base:at] = header
            for r in raws:
                at = -(-at // 64) * 64
                mem[at : at + r.nbytes] = r
                at += r.nbytes
            for b in buffers:
                b.release()
            os.write(self.ids_w, U64.pack(i))
            i += 1

        produce_loop(send, self.size)

    def recv(self):
        got = os.read(self.ids_r, 8)
        if len(got) != 8:
            raise EOFError("the producer went away")
        msg_id = U64.unpack(got)[0]
        mem = self.shm.buf
        base = (msg_id % self.depth) * self.slot
        if U64.unpack_from(mem, base)[0] != msg_id:
            raise RuntimeError(f"slot {msg_id % self.depth} holds the wrong message")
        count = U64.unpack_from(mem, base + 8)[0]
        lengths = struct.unpack_from(f"<{count}Q", mem, base + 16)
        at = base + 16 + 8 * count
        views = []
        for n in lengths:
            at = -(-at // 64) * 64
            views.append(mem[at : at + n])
            at += n
        return pickle.loads(views[0], buffers=views[1:])

    def done(self, seq: int) -> None:
        os.write(self.acks_w, U64.pack(seq))

    def close(self) -> None:
        for fd in self.open_fds:
            os.close(fd)
        self.shm.close()
        self.shm.unlink()


CONTENDERS = {c.name: c for c in (ShmArenaValues, QueuePickle, ShmPickle5, ShmArenaUnits)}


# --- one run ---------------------------------------------------------------------------------


def consume(recv, done, size: int, warm: int, budget: float) -> float:
    """Receives and touches values until `budget` seconds past item `warm`; returns items/s."""
    expected = 0
    ends = [7, ((size - 1) * 31 + 7) & 0xFF]  # make_array's first and last byte
    start = None
    while True:
        value = recv()
        seq = value["seq"]
        if seq != expected:
            raise RuntimeError(f"item {expected} expected, got {seq}")
        data = value["data"]
        if data[0] != ends[0] or data[-1] != ends[1]:
            raise RuntimeError(f"item {seq}: wrong bytes")
        del data, value
        done(seq)
        expected += 1
        if expected == warm:
            start = time.perf_counter()
        elif start is not None:
            now = time.perf_counter()
            if now - start >= budget and expected - warm >= MIN_TIMED:
                return (expected - warm) / (now - start)


def run_py(mode: str, size: int, budget: float) -> float:
    depth = depth_for(size)
    contender = CONTENDERS[mode](size, depth)
    child = ctx.Process(target=contender.produce, daemon=True)
    try:
        child.start()
        if hasattr(contender, "after_fork_parent"):
            contender.after_fork_parent()
        rate = consume(contender.recv, contender.done, size, warm_items(size), budget)
        if not child.is_alive():
            raise RuntimeError(f"{mode} producer exited with {child.exitcode}")
        return rate
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        contender.close()


def run_rust(peer: str, count: int) -> float:
    """The values_peer example writes `count` values of RUST_SIZE bytes; this process recvs
    them. Timed from item `warm_items` to the last one."""
    import shm_arena

    warm = warm_items(RUST_SIZE)
    region = shm_arena.Region(ring_capacity(RUST_SIZE), backing="named")
    reader = region.reader()
    cmd = [peer, "send", "--name", region.name, "--count", str(count), "--size", str(RUST_SIZE)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        start = None
        for expected in range(count):
            value = reader.recv(TIMEOUT)
            if value["seq"] != expected:
                raise RuntimeError(f"item {expected} expected, got {value['seq']}")
            data = value["data"]
            if data[0] != expected % 251 or data[-1] != expected % 251:  # values_peer's bytes
                raise RuntimeError(f"item {expected}: wrong bytes")
            del data, value
            if expected == warm:
                start = time.perf_counter()
        elapsed = time.perf_counter() - start
        if proc.wait(TIMEOUT) != 0:
            raise RuntimeError(f"values_peer exited with {proc.returncode}")
        return (count - 1 - warm) / elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        del reader, region


def run_memcpy(size: int, budget: float, span: int) -> float:
    """The limit: one core copying `size` bytes (numpy.copyto into a preallocated array), into
    the same array every time (`span == size`), or into consecutive parts of a `span`-byte one
    (as a ring's writer does: the destination is not in the cache)."""
    src = make_array(size)
    dst = np.ones(span, dtype=np.uint8)  # ones: its pages are there before the clock starts
    parts = [dst[i : i + size] for i in range(0, span - size + 1, size)]
    n = 0
    start = time.perf_counter()
    while True:
        np.copyto(parts[n % len(parts)], src)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget and n >= MIN_TIMED:
            return n / elapsed


def recv_cost(mode: str, size: int, rounds: int) -> float:
    """Microseconds one `recv` (or `next_unit` + `np.frombuffer` for the units API) takes, plus
    the touch and the drop, when the value is already in the ring: one process writes a ring's
    worth of values, then times taking each one. The median over `rounds` rings."""
    import shm_arena

    depth = depth_for(size)
    region = shm_arena.Region(ring_capacity(size))
    writer, reader = region.writer(timeout=TIMEOUT), region.reader()
    data = make_array(size)
    units = mode == "shm_arena_units"
    times = []
    seq = 0
    for _ in range(rounds):
        for i in range(depth):
            if units:
                writer.write_unit([U64.pack(seq + i), data])
            else:
                writer.send({"seq": seq + i, "data": data})
        for _ in range(depth):
            t = time.perf_counter()
            if units:
                unit = reader.next_unit(TIMEOUT)
                got = U64.unpack(unit.blob(0))[0]
                value = np.frombuffer(unit.blob(1), dtype=np.uint8)
                unit.end_unit()
            else:
                value = reader.recv(TIMEOUT)
                got = value["seq"]
                value = value["data"]
            touched = int(value[0]) ^ int(value[-1])
            del value
            times.append(time.perf_counter() - t)
            if got != seq or touched != 7 ^ (((size - 1) * 31 + 7) & 0xFF):
                raise RuntimeError(f"item {seq}: wrong value")
            seq += 1
    writer.close()
    times.sort()
    return 1e6 * times[len(times) // 2]


# --- main ------------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict:
    s = sorted(samples)
    median = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return {
        "items_per_s": median,
        "samples": samples,
        "min": s[0],
        "max": s[-1],
        "spread": (s[-1] - s[0]) / median,
    }


def find_peer(given: str | None) -> str | None:
    """The values_peer binary: `given` (an empty string: none), else the crate's release
    build of the example if there is one."""
    if given is not None:
        return given or None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "target", "release", "examples", "values_peer")
    return path if os.access(path, os.X_OK) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--values-peer", help="the values_peer example binary (default: "
                        "target/release/examples/values_peer, if built; empty: none)")
    parser.add_argument("--sizes", help="comma-separated item sizes in bytes (default: all)")
    parser.add_argument("--modes", help="comma-separated contenders (default: all that run)")
    args = parser.parse_args()
    reps = 3 if args.quick else 5
    budget = 0.3 if args.quick else 1.0
    rust_count = 300 if args.quick else 1000
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(SIZES)

    unavailable = []
    modes = ["queue", "shm_pickle5"]
    try:
        import shm_arena

        if has_values_api():
            modes = ["shm_arena"] + modes
        else:
            unavailable.append({"mode": "shm_arena", "why": "the package has no Writer.send / "
                                "Reader.recv yet"})
        modes.append("shm_arena_units")
        api = "send/recv" if has_values_api() else "units only"
        version = getattr(shm_arena, "__version__", None)
    except ImportError:
        unavailable.append({"mode": "shm_arena", "why": "the shm_arena package is not installed"})
        api = None
        version = None
    if args.modes:
        modes = [m for m in modes if m in args.modes.split(",")]
    peer = find_peer(args.values_peer)
    rust_modes = []
    if RUST_SIZE in sizes:
        rust_modes = [("limit", "memcpy"), ("limit", "memcpy_ring")]
        if peer is None:
            unavailable.append({"mode": "rust_shm_arena",
                                "why": "the values_peer example is not built"})
        elif not os.access(peer, os.X_OK):
            unavailable.append({"mode": "rust_shm_arena",
                                "why": f"no values_peer binary at {peer}"})
        elif api != "send/recv":
            unavailable.append({"mode": "rust_shm_arena",
                                "why": "the package has no Reader.recv yet"})
        else:
            rust_modes.insert(0, ("rust-py", "rust_shm_arena"))

    results = []
    for size in sizes:
        plan = [("py-py", m) for m in modes]
        if size == RUST_SIZE:
            plan += rust_modes
        samples: dict = {p: [] for p in plan}
        failed: dict = {}
        for rep in range(reps):
            k = rep % len(plan)
            for direction, mode in plan[k:] + plan[:k]:  # rotated: no mode always goes first
                if (direction, mode) in failed:
                    continue
                print(f"  [values {size} B] rep {rep + 1}/{reps}: {direction} {mode}",
                      file=sys.stderr)
                try:
                    if mode == "memcpy":
                        rate = run_memcpy(size, budget, size)
                    elif mode == "memcpy_ring":
                        rate = run_memcpy(size, budget, ring_capacity(size))
                    elif mode == "rust_shm_arena":
                        rate = run_rust(peer, rust_count)
                    else:
                        rate = run_py(mode, size, budget)
                except Exception as e:  # noqa: BLE001 - reported as not available
                    failed[(direction, mode)] = f"{type(e).__name__}: {e}"
                    print(f"    {direction} {mode} failed: {failed[(direction, mode)]}",
                          file=sys.stderr)
                    continue
                samples[(direction, mode)].append(rate)
        for (direction, mode), s in samples.items():
            if (direction, mode) in failed:
                unavailable.append({"mode": mode, "direction": direction, "size": size,
                                    "why": f"failed: {failed[(direction, mode)]}"})
                continue
            row = {"direction": direction, "size": size, "mode": mode,
                   "depth": depth_for(size), **summary(s)}
            results.append(row)
            print(f"    values {direction} {size} B {mode}: {row['items_per_s']:.1f} items/s "
                  f"(spread {100 * row['spread']:.0f}%)", file=sys.stderr)

    # What one recv costs the consumer (the "a few microseconds, not a copy").
    costs = []
    for size in sizes:
        for mode in (m for m in modes if m.startswith("shm_arena")):
            rounds = max(5, min(50, (1 << 30) // (depth_for(size) * size)))
            try:
                us = recv_cost(mode, size, rounds)
            except Exception as e:  # noqa: BLE001 - reported as not available
                unavailable.append({"mode": f"{mode} recv cost", "size": size,
                                    "why": f"failed: {type(e).__name__}: {e}"})
                continue
            costs.append({"size": size, "mode": mode, "median_us": us,
                          "samples": rounds * depth_for(size)})
            print(f"    values recv cost {size} B {mode}: {us:.1f} us", file=sys.stderr)

    with open(args.out, "w") as f:
        json.dump({
            "python": platform.python_version(),
            "numpy": np.__version__,
            "shm_arena": version,
            "shm_arena_api": api,
            "start_method": "fork",
            "quick": args.quick,
            "reps": reps,
            "budget_s": budget,
            "rust_count": rust_count,
            "results": results,
            "recv_cost_us": costs,
            "unavailable": unavailable,
        }, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
