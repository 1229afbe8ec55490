"""The package's own API: regions, units, zero-copy views that keep their unit alive."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import shm_arena


def test_round_trip_bytes_and_arrays_in_place():
    region = shm_arena.Region(1 << 16)
    writer, reader = region.writer(), region.reader()
    with writer.begin_unit() as unit:
        assert unit.push(b"header") == 0
        view = unit.blob_mut(4096)
        assert not view.readonly and len(view) == 4096
        np.frombuffer(view, dtype=np.float32)[:] = np.arange(1024, dtype=np.float32)
        assert unit.blob_count == 2
    got = reader.next_unit(1.0)
    assert bytes(got.blob(0)) == b"header"
    samples = np.frombuffer(got.blob(1), dtype=np.float32)
    assert (samples == np.arange(1024, dtype=np.float32)).all()
    # Zero-copy, read-only: the array views shared memory, nobody can write it through here.
    assert not samples.flags.owndata and not samples.flags.writeable
    with pytest.raises(ValueError):
        samples[0] = 1.0


def test_numpy_arrays_and_memoryviews_are_pushed_as_their_bytes():
    region = shm_arena.Region(1 << 16)
    writer, reader = region.writer(), region.reader()
    data = np.arange(100, dtype=np.int64)
    writer.write_unit([data, memoryview(b"abc"), bytearray(b"xyz")])
    unit = reader.next_unit(1.0)
    assert (np.frombuffer(unit.blob(0), dtype=np.int64) == data).all()
    assert [bytes(unit.blob(i)) for i in (1, 2)] == [b"abc", b"xyz"]
    with pytest.raises(ValueError, match="not C-contiguous"):
        writer.write_unit([np.arange(100)[::2]])


def test_an_exception_in_the_block_aborts_the_unit():
    region = shm_arena.Region(1 << 16)
    writer, reader = region.writer(), region.reader()
    with pytest.raises(KeyError):
        with writer.begin_unit() as unit:
            unit.push(b"never published")
            raise KeyError("boom")
    assert reader.try_next_unit() is None
    writer.write_unit([b"next"])
    assert bytes(reader.next_unit(1.0).blob(0)) == b"next"


def test_a_view_keeps_its_unit_alive_after_end_unit():
    """The space of a unit whose view lives is not reused: the writer waits (here: times out)
    instead of overwriting it, and gets it once the view is gone."""
    region = shm_arena.Region(1 << 12)  # room for two units of 1500 bytes (1600 with record)
    writer, reader = region.writer(timeout=0.3), region.reader()
    writer.write_unit([bytes([1]) * 1500])
    unit = reader.next_unit(1.0)
    array = np.frombuffer(unit.blob(0), dtype=np.uint8)
    unit.end_unit()
    with pytest.raises(RuntimeError):
        unit.blob(0)  # this object gave its hold up
    writer.write_unit([bytes([2]) * 1500])  # fits beside the first
    with pytest.raises(TimeoutError):
        writer.write_unit([bytes([3]) * 1500])  # would need the first unit's space
    assert (array == 1).all(), "the held unit is intact"
    del array
    second = reader.next_unit(1.0)
    assert bytes(second.blob(0)) == bytes([2]) * 1500
    second.end_unit()
    writer.write_unit([bytes([3]) * 1500])  # the space is back
    assert bytes(reader.next_unit(1.0).blob(0)) == bytes([3]) * 1500


def test_errors_are_python_exceptions_with_context():
    region = shm_arena.Region(1 << 16)
    writer, reader = region.writer(), region.reader()
    with pytest.raises(TimeoutError, match="committed unit"):
        reader.next_unit(0.05)
    with pytest.raises(ValueError, match="exceeds the ring's unit limit"):
        with writer.begin_unit() as unit:
            unit.blob_mut(1 << 20)
    with pytest.raises(shm_arena.RoleTakenError):
        region.writer()
    with pytest.raises(ValueError, match="power of two"):
        shm_arena.Region(5000)
    with pytest.raises(ValueError, match="timeout"):
        reader.next_unit(-1.0)
    writer.close()
    with pytest.raises(shm_arena.ClosedError):
        reader.next_unit(1.0)


def test_shutdown_wakes_a_blocked_writer():
    region = shm_arena.Region(1 << 12)
    writer, reader = region.writer(timeout=30.0), region.reader()
    writer.write_unit([b"x" * 1500])
    held = reader.next_unit(1.0)
    errors = []

    def produce():
        try:
            for _ in range(10):
                writer.write_unit([b"y" * 1500])
        except shm_arena.ShutdownError as e:
            errors.append(e)

    thread = threading.Thread(target=produce)
    started = time.monotonic()
    thread.start()
    time.sleep(0.2)
    region.shutdown()
    thread.join(10)
    assert not thread.is_alive() and errors, "the writer was released by the shutdown"
    assert time.monotonic() - started < 10
    assert bytes(held.blob(0)) == b"x" * 1500


def test_waits_release_the_gil():
    """A thread blocked in next_unit lets the others run Python code."""
    region = shm_arena.Region(1 << 16)
    writer, reader = region.writer(), region.reader()
    got = []
    thread = threading.Thread(target=lambda: got.append(bytes(reader.next_unit(10.0).blob(0))))
    thread.start()
    counted = 0
    until = time.monotonic() + 0.3
    while time.monotonic() < until:
        counted += 1
    writer.write_unit([b"late"])
    thread.join(10)
    assert got == [b"late"]
    assert counted > 10_000, f"the main thread ran only {counted} loops while the other waited"


def test_a_signal_interrupts_a_wait_without_a_deadline():
    region = shm_arena.Region(1 << 16)
    reader = region.reader()
    _writer = region.writer()

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            reader.next_unit(None)
        assert time.monotonic() - started < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _child_reads(name, count, queue):
    region = shm_arena.Region.open_name(name)
    reader = region.reader()
    total = 0
    for i in range(count):
        unit = reader.next_unit(10.0)
        array = np.frombuffer(unit.blob(0), dtype=np.uint32)
        assert (array == i).all()
        total += int(array.size)
        unit.end_unit()
    queue.put(total)


def test_a_named_region_between_two_processes():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    region = shm_arena.Region(1 << 20, backing="named")
    name = region.name
    assert name and os.path.exists("/dev/shm" + name)
    writer = region.writer(timeout=10.0)
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(name, 50, queue))
    child.start()
    for i in range(50):
        with writer.begin_unit() as unit:
            np.frombuffer(unit.blob_mut(4 * 1024), dtype=np.uint32)[:] = i
    assert queue.get(timeout=30) == 50 * 1024
    child.join(30)
    assert child.exitcode == 0
    del unit, writer, region  # the unit writer object holds its writer
    assert not os.path.exists("/dev/shm" + name), "the creator's last handle removed the name"


def _write_one_then_die(region):
    writer = region.writer()
    writer.write_unit([b"last words"])
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_writer_is_reported_to_a_reader_waiting_without_deadline():
    import multiprocessing as mp

    region = shm_arena.Region(1 << 16)
    reader = region.reader()
    child = mp.get_context("fork").Process(target=_write_one_then_die, args=(region,))
    child.start()
    assert bytes(reader.next_unit(10.0).blob(0)) == b"last words"
    started = time.monotonic()
    with pytest.raises(shm_arena.PeerGoneError):
        reader.next_unit(None)  # waits in slices; each one looks at the writer
    assert time.monotonic() - started < 5
    child.join(10)


def test_handles_copied_by_fork_leave_the_parents_roles_alone():
    """A forked child's copies of the parent's reader, writer and named region are dropped in
    the child without detaching the parent's roles or removing the parent's name."""
    region = shm_arena.Region(1 << 16, backing="named")
    name = region.name
    writer, reader = region.writer(), region.reader()
    pid = os.fork()
    if pid == 0:  # the child: drop every copy, running their Rust destructors here
        import gc

        del writer, reader, region
        gc.collect()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists("/dev/shm" + name), "the child did not remove the parent's name"
    writer.write_unit([b"still mine"])  # the writer role was not detached by the child
    assert bytes(reader.next_unit(1.0).blob(0)) == b"still mine"
    with pytest.raises(shm_arena.RoleTakenError):
        region.reader()  # nor the reader role


@pytest.mark.parametrize("prefault", [False, True])
def test_prefault_populates_the_region_at_creation(prefault, rss_shmem):
    """``prefault=True`` makes the whole ring resident at once; the default leaves it to the
    first lap. Units go through either way."""
    before = rss_shmem()
    region = shm_arena.Region(32 << 20, prefault=prefault)
    grown = rss_shmem() - before
    if prefault:
        assert grown >= 32 << 20, f"only {grown} bytes resident after creation"
    else:
        assert grown < 2 << 20, f"{grown} bytes resident before any unit"
    writer, reader = region.writer(), region.reader()
    with writer.begin_unit() as unit:
        unit.push(b"first lap")
    assert bytes(reader.next_unit(5.0).blob(0)) == b"first lap"
