"""Broadcast regions from Python: one writer, N subscribers that each see every unit, through
read-only views of the one copy in shared memory (real shared memory, real child processes)."""

import gc
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

import shm_arena


def frame(seq, n=1024):
    return {"seq": seq, "name": f"frame {seq}", "data": np.full(n, seq % 251, dtype=np.uint8)}


def test_every_subscriber_sees_every_value_in_order_as_shared_read_only_arrays():
    region = shm_arena.Region(1 << 20, subscribers=3)
    subs = [region.subscriber() for _ in range(3)]
    assert sorted(s.slot for s in subs) == [0, 1, 2]
    writer = region.writer(timeout=5.0)
    for seq in range(40):
        writer.send(frame(seq, 8192))
    for sub in subs:
        got = [sub.recv(timeout=1.0) for _ in range(40)]
        assert [v["seq"] for v in got] == list(range(40))
        for v in got:
            assert v["name"] == f"frame {v['seq']}"
            data = v["data"]
            assert data.shape == (8192,) and (data == v["seq"] % 251).all()
            assert not data.flags.owndata, "an offloaded array is a view of the ring"
            assert not data.flags.writeable, "a subscriber's view is shared, so read-only"
            with pytest.raises(ValueError):
                data[0] = 1
        assert sub.try_next_unit() is None


def test_blobs_of_a_subscribers_unit_cannot_be_written():
    region = shm_arena.Region(1 << 16, subscribers=2)
    a, b = region.subscriber(), region.subscriber()
    writer = region.writer()
    writer.write_unit([b"shared bytes"])
    unit = a.next_unit(1.0)
    view = unit.blob(0)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 0  # memoryview of a read-only buffer
    with pytest.raises(ValueError):
        np.frombuffer(view, dtype=np.uint8).setflags(write=True)
    assert bytes(b.next_unit(1.0).blob(0)) == b"shared bytes", "the other copy is untouched"


def test_policies_slots_and_roles():
    region = shm_arena.Region(1 << 16, subscribers=2)
    a = region.subscriber()
    b = region.subscriber("leaky")
    assert (a.policy, b.policy) == ("backpressure", "leaky")
    with pytest.raises(shm_arena.RoleTakenError):
        region.subscriber()
    slot = b.slot
    del b
    gc.collect()
    c = region.subscriber("leaky")  # the slot b left is free again
    assert c.slot == slot
    with pytest.raises(ValueError, match="policy"):
        region.subscriber("lossy")
    with pytest.raises(ValueError, match="subscriber"):
        region.reader()  # a broadcast region has subscribers, not a reader
    with pytest.raises(ValueError, match="not a broadcast region"):
        shm_arena.Region(1 << 16).subscriber()
    with pytest.raises(ValueError):
        shm_arena.Region(1 << 16, subscribers=0)


def test_a_late_subscriber_starts_at_the_head():
    region = shm_arena.Region(1 << 16, subscribers=2)
    early = region.subscriber()
    writer = region.writer(timeout=2.0)
    for seq in range(5):
        writer.send(seq)
    late = region.subscriber()
    for seq in range(5, 8):
        writer.send(seq)
    assert [early.recv(1.0) for _ in range(8)] == list(range(8))
    assert [late.recv(1.0) for _ in range(3)] == [5, 6, 7]
    assert late.try_next_unit() is None


def test_a_held_view_holds_a_backpressure_writer_back():
    region = shm_arena.Region(1 << 16, subscribers=1)
    sub = region.subscriber()
    writer = region.writer(timeout=0.3)
    payload = np.arange(25_000 // 8, dtype=np.int64)  # two fit in 64 KiB, three do not
    writer.send(payload)
    held = sub.recv(1.0)  # a view of the first unit, still alive
    writer.send(payload)
    assert (sub.recv(1.0) == payload).all()  # read and gone: only `held` pins space
    with pytest.raises(TimeoutError):
        for _ in range(4):
            writer.send(payload)
    assert (held == payload).all(), "the held view was not overwritten"
    del held
    gc.collect()
    writer.send(payload)  # the space came back with the last view


def test_a_leaky_subscriber_never_slows_the_writer_and_its_lag_is_exact():
    region = shm_arena.Region(1 << 16, subscribers=1)
    sub = region.subscriber("leaky")
    writer = region.writer(timeout=0.5)
    sent = 200
    for seq in range(sent):
        writer.send({"seq": seq, "pad": b"x" * 3000})  # ~ 20 per lap: lapped many times
    with pytest.raises(shm_arena.LaggedError) as lagged:
        sub.recv(1.0)
    missed = lagged.value.missed
    assert 0 < missed < sent
    got = []
    while (unit := sub.try_next_unit()) is not None:
        got.append(unit.decode()["seq"])
    assert got == list(range(missed, sent)), "after the lag, every unit still in the ring, in order"
    assert len(got) + missed == sent


def test_a_leaky_subscriber_that_is_lapped_while_reading_reports_each_lag():
    region = shm_arena.Region(1 << 16, subscribers=2)
    leaky = region.subscriber("leaky")
    writer = region.writer(timeout=0.5)
    delivered, missed, seq = [], 0, 0
    for _ in range(30):
        for _ in range(15):
            writer.send({"seq": seq, "pad": b"x" * 3000})
            seq += 1
        for _ in range(3):  # reads slower than the writer writes
            try:
                delivered.append(leaky.recv(0.5)["seq"])
            except shm_arena.LaggedError as e:
                missed += e.missed
    while True:
        try:
            unit = leaky.try_next_unit()
        except shm_arena.LaggedError as e:
            missed += e.missed
            continue
        if unit is None:
            break
        delivered.append(unit.decode()["seq"])
    assert delivered == sorted(set(delivered)), "in order, no duplicates"
    assert len(delivered) + missed == seq, "every unit is either delivered or counted as missed"
    assert missed > 0


def _subscribe_and_check(region, slot_queue, count, out):
    sub = region.subscriber()
    slot_queue.put(sub.slot)
    total = 0
    for seq in range(count):
        value = sub.recv(10.0)
        assert value["seq"] == seq and value["name"] == f"frame {seq}"
        assert (value["data"] == seq % 251).all() and not value["data"].flags.writeable
        total += int(value["data"].sum())
    out.put(total)


def test_two_subscriber_processes_each_see_every_value():
    ctx = mp.get_context("fork")
    region = shm_arena.Region(1 << 20, subscribers=2)
    slots, out = ctx.Queue(), ctx.Queue()
    count = 300
    children = [
        ctx.Process(target=_subscribe_and_check, args=(region, slots, count, out)) for _ in range(2)
    ]
    for child in children:
        child.start()
    assert sorted(slots.get(timeout=30) for _ in children) == [0, 1]
    writer = region.writer(timeout=10.0)
    for seq in range(count):
        writer.send(frame(seq, 16384))
    expected = sum((seq % 251) * 16384 for seq in range(count))
    assert [out.get(timeout=60) for _ in children] == [expected, expected]
    for child in children:
        child.join(30)
        assert child.exitcode == 0


def _subscribe_and_stall(region, ready):
    sub = region.subscriber()
    ready.put(sub.slot)
    time.sleep(3600)  # never reads: the writer fills the ring and waits for this process


def test_a_killed_stalled_subscriber_stops_holding_the_writer_back():
    ctx = mp.get_context("fork")
    region = shm_arena.Region(1 << 16, subscribers=2)
    alive = region.subscriber()
    ready = ctx.Queue()
    child = ctx.Process(target=_subscribe_and_stall, args=(region, ready))
    child.start()
    ready.get(timeout=30)
    writer = region.writer(timeout=0.3)
    sent = 0
    while True:  # the live subscriber keeps up; the stalled one fills the ring
        try:
            writer.send({"seq": sent, "pad": b"x" * 3000})
        except TimeoutError:
            break
        assert alive.recv(1.0)["seq"] == sent
        sent += 1
        assert sent < 100, "the writer never waited for the stalled subscriber"
    assert sent > 10
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    writer.timeout = 5.0
    started = time.monotonic()
    writer.send({"seq": sent, "pad": b"x" * 3000})  # waits until the dead slot is detached
    resumed = time.monotonic() - started
    assert resumed < 2.0, f"the writer stalled {resumed:.2f} s on a dead subscriber"
    assert alive.recv(1.0)["seq"] == sent
    for seq in range(sent + 1, sent + 100):  # and goes on without it
        writer.send({"seq": seq, "pad": b"x" * 3000})
        assert alive.recv(1.0)["seq"] == seq


def _write_then_die(region, count):
    writer = region.writer(timeout=10.0)
    for seq in range(count):
        writer.send(seq)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_writer_is_reported_to_every_subscriber_after_what_it_committed():
    ctx = mp.get_context("fork")
    region = shm_arena.Region(1 << 16, subscribers=2)
    subs = [region.subscriber(), region.subscriber("leaky")]
    child = ctx.Process(target=_write_then_die, args=(region, 50))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    for sub in subs:
        assert [sub.recv(1.0) for _ in range(50)] == list(range(50))
        started = time.monotonic()
        with pytest.raises(shm_arena.PeerGoneError):
            sub.recv(None)  # no deadline: each slice of the wait looks at the writer
        assert time.monotonic() - started < 5


def test_a_busy_polling_subscriber_gets_what_a_sleeping_one_gets():
    region = shm_arena.Region(1 << 16, subscribers=2)
    busy = region.subscriber(busy_poll=True)
    asleep = region.subscriber("leaky")
    writer = region.writer(timeout=2.0)
    with pytest.raises(TimeoutError):
        busy.recv(0.05)
    for seq in range(50):
        writer.send({"seq": seq})
    assert [busy.recv(1.0)["seq"] for _ in range(50)] == list(range(50))
    assert [asleep.recv(1.0)["seq"] for _ in range(50)] == list(range(50))
