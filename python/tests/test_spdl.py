"""SPDL 0.8.0's own ``iterate_in_subprocess`` driving ``shm_arena.Arena``: real worker
processes under fork, spawn and forkserver, real numpy arrays, nothing mocked."""

import os
import signal
import time

import numpy as np
import pytest

import shm_arena

spdl_pipeline = pytest.importorskip("spdl.pipeline")
iterate_in_subprocess = spdl_pipeline.iterate_in_subprocess

METHODS = ["fork", "spawn", "forkserver"]
MIB = 1 << 20


class Items:
    """A re-iterable source (each pass starts over), built in the worker: dicts holding a
    numpy array, bytes and small values. Optional failure modes for the error tests."""

    def __init__(self, count, size=MIB, fail_at=None, kill_at=None):
        self.count, self.size, self.fail_at, self.kill_at = count, size, fail_at, kill_at

    def __iter__(self):
        for i in range(self.count):
            if i == self.fail_at:
                raise ValueError(f"item {i} failed in the worker")
            if i == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield {
                "id": i,
                "array": np.full(self.size // 4, i, dtype=np.int32),
                "raw": bytes([i % 256]) * 5000,
                "small": ("x", i, 2.5),
            }


def make_items(count, size=MIB, fail_at=None, kill_at=None):
    return Items(count, size, fail_at, kill_at)


def check(item, i, size=MIB):
    assert item["id"] == i
    array = item["array"]
    assert isinstance(array, np.ndarray) and array.shape == (size // 4,)
    assert (array == i).all()
    assert item["raw"] == bytes([i % 256]) * 5000
    assert item["small"] == ("x", i, 2.5)


def dev_shm():
    """What is in /dev/shm, but for multiprocessing's semaphores (``sem.mp-*``: SPDL's queues,
    released by Python's resource tracker on its own schedule)."""
    return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.")}


def iterate(arena, count, method, **kwargs):
    import functools

    return iterate_in_subprocess(
        functools.partial(make_items, count, **kwargs),
        arena=arena,
        mp_context=method,
        timeout=30,
    )


@pytest.mark.parametrize("method", METHODS)
def test_round_trips_two_passes_and_views_kept_across_passes(method):
    """Every item of two passes arrives intact; the arrays are zero-copy views of shared
    memory; the items of pass 1, all kept, are still intact after pass 2 reused the ring."""
    before = dev_shm()
    arena = shm_arena.Arena(64 * MIB)
    it = iterate(arena, 12, method)
    kept = []
    for i, item in enumerate(it):
        check(item, i)
        assert not item["array"].flags.owndata, "zero-copy: the array views shared memory"
        kept.append(item)
    second = 0
    for i, item in enumerate(it):
        check(item, i)
        second += 1
    assert second == 12
    for i, item in enumerate(kept):
        check(item, i)  # pass 2 did not overwrite what pass 1's consumer still holds
    del it, kept
    assert dev_shm() <= before, "nothing left in /dev/shm"


@pytest.mark.parametrize("method", METHODS)
def test_a_worker_error_reaches_the_parent(method):
    arena = shm_arena.Arena(16 * MIB)
    it = iterate(arena, 10, method, fail_at=3)
    got = []
    with pytest.raises(Exception, match="item 3 failed"):
        for item in it:
            got.append(item["id"])
    assert got == [0, 1, 2]


def test_a_killed_producer_ends_the_iteration():
    arena = shm_arena.Arena(16 * MIB)
    it = iterate(arena, 10, "spawn", kill_at=4)
    got = []
    started = time.monotonic()
    with pytest.raises(Exception):
        for item in it:
            got.append(item["id"])
    # Items the worker made before it died come in order and intact; the last ones may be lost
    # with the worker (SPDL's queue hands envelopes to a feeder thread, which dies with it).
    assert got == list(range(len(got))) and len(got) <= 4
    assert time.monotonic() - started < 25


def test_walking_away_from_a_blocked_producer_finishes_quickly():
    """The consumer holds an item and stops while the producer is blocked on a full arena:
    tearing down must not wait for the producer's own timeout."""
    before = dev_shm()
    arena = shm_arena.Arena(4 * MIB, timeout=60.0)  # one 1 MiB item at a time, nearly
    it = iterate(arena, 50, "spawn")
    held = []
    for item in it:
        held.append(item)  # pins its unit
        if len(held) == 2:
            break
    time.sleep(0.5)  # the producer is blocked for space by now
    started = time.monotonic()
    del it
    import gc

    gc.collect()
    assert time.monotonic() - started < 15
    check(held[0], 0)
    check(held[1], 1)
    del held
    assert dev_shm() <= before


def test_pinning_more_than_the_capacity_fails_with_buffer_error_not_a_hang():
    arena = shm_arena.Arena(4 * MIB, timeout=1.0)
    it = iterate(arena, 20, "spawn")
    held = []
    started = time.monotonic()
    with pytest.raises(Exception, match="BufferError|no room"):
        for item in it:
            held.append(item)
    assert len(held) < 20
    for i, item in enumerate(held):
        check(item, i)  # never corrupted
    assert time.monotonic() - started < 25


def test_arena_protocol_directly():
    """The endpoints as SPDL calls them, in one process: offsets and spans round-trip, views
    are writable and alias shared memory, an unread unit can be discarded."""
    arena = shm_arena.Arena(1 * MIB)
    writer, reader = arena.open_writer(), arena.open_reader()
    assert reader.zero_copy is True
    writer.reset()
    spans = []
    for i in range(3):
        writer.begin_unit()
        offset, nbytes = writer.write_binary(memoryview(bytes([i]) * 10000).cast("B"))
        assert nbytes == 10000
        spans.append((writer.commit_unit(), offset))
    writer.begin_unit()
    writer.write_binary(b"aborted")
    writer.abort_unit()
    reader.reset()
    view = reader.read_binary(spans[0][1], 10000)
    assert not view.readonly and bytes(view[:3]) == bytes([0]) * 3
    view[0] = 99  # writable, as torch.frombuffer wants
    reader.end_unit(spans[0][0], [view])
    reader.end_unit(spans[1][0], [])  # discarded unread
    view2 = reader.read_binary(spans[2][1], 10000)
    assert bytes(view2[:2]) == bytes([2]) * 2
    reader.end_unit(spans[2][0], [view2])
    with pytest.raises(shm_arena.CorruptError):
        reader.read_binary(spans[0][1], 10000)  # ended: not handed out again
    arena.shutdown_arena()
    arena.close()
    arena.unlink()
    assert view[0] == 99, "close() tolerates live views"


@pytest.mark.parametrize("prefault", [True, False])
def test_prefault_populates_the_ring_at_creation(prefault, rss_shmem):
    """With ``prefault`` (the default) the whole ring is resident as soon as the arena exists;
    without it, none of it is until first touched. Then items go through either way."""
    before = rss_shmem()
    arena = shm_arena.Arena(64 * MIB, prefault=prefault)
    grown = rss_shmem() - before
    if prefault:
        assert grown >= 64 * MIB, f"only {grown} bytes resident after creation"
    else:
        assert grown < 4 * MIB, f"{grown} bytes resident before any item"
    for i, item in enumerate(iterate(arena, 3, "fork")):
        check(item, i)
        del item
