//! Loom models of the SPSC ring protocol (issue 2): laps with wrap, out-of-order ends, full-ring
//! blocking, shutdown. Run with `ci/loom.sh`.
//!
//! The regions are the loom heap model (`Region::create_model`): its atomics are loom's, its
//! futex is a loom mutex + condvar that ignores timeouts (a lost wake-up is a loom deadlock),
//! and every 64-byte slot of ring bytes is a loom `UnsafeCell`, so a blob byte read or written
//! without the protocol's happens-before is reported as a causality violation. On top of that,
//! every model checks each byte it reads against what the writer wrote.
//!
//! Placement, for reading the expected positions: a unit starts at the head with its 64-byte
//! record, each blob follows at the next 64-aligned position, and a blob that would cross the
//! ring's physical end skips to the next lap (the skipped bytes count in the unit's span).
#![cfg(shm_arena_loom)]

use loom::thread;
use loom_tests::{blob, check_blob, model, LONG};
use shm_arena::{Error, Region, Role, Writer};

/// Unit number `unit` with one blob of `len` bytes, copied in with `push`.
fn write_pushed(writer: &mut Writer, unit: u8, len: usize) {
    let mut w = writer.begin_unit().expect("begin_unit");
    assert_eq!(w.push(&blob(unit, len)).expect("push"), 0);
    w.commit().expect("commit");
}

/// The same, but filled in place through `blob_mut`.
fn write_in_place(writer: &mut Writer, unit: u8, len: usize) {
    let mut w = writer.begin_unit().expect("begin_unit");
    let dst = w.blob_mut(len).expect("blob_mut");
    for (i, b) in dst.iter_mut().enumerate() {
        *b = loom_tests::pattern(unit, i);
    }
    w.commit().expect("commit");
}

/// Model 1: four units across two laps of a 512-byte ring (max unit 256), where the third
/// unit's blob does not fit before the ring's end and skips to the next lap, and the writer has
/// to reuse bytes the reader read in the first lap.
///
/// | unit | blob          | start | record    | blob      | span             |
/// |------|---------------|-------|-----------|-----------|------------------|
/// | 0    | 128 (push)    | 0     | 0..64     | 64..192   | 192              |
/// | 1    | 100 (in place)| 192   | 192..256  | 256..356  | 192              |
/// | 2    | 128 (push)    | 384   | 384..448  | 512..640  | 256 (64 skipped) |
/// | 3    | 0 (push)      | 640   | 640..704  | -         | 64               |
///
/// Unit 2 needs the tail at 128 (unit 0 ended) and unit 3 at 192 (unit 1 ended), so the
/// writer's waits for space are part of the model; unit 2's blob overwrites unit 0's bytes and
/// unit 3's record lies on unit 0's blob.
#[test]
fn laps_with_wrap() {
    model("laps_with_wrap", || {
        let region = Region::create_model(512);
        let mut writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        assert_eq!(writer.max_unit(), 256);

        let producer = thread::spawn(move || {
            write_pushed(&mut writer, 0, 128);
            write_in_place(&mut writer, 1, 100);
            write_pushed(&mut writer, 2, 128);
            write_pushed(&mut writer, 3, 0);
        });

        // (unit, position, span, blob length)
        let expected = [
            (0u8, 0u64, 192u64, 128usize),
            (1, 192, 192, 100),
            (2, 384, 256, 128),
            (3, 640, 64, 0),
        ];
        for (unit, position, span, len) in expected {
            let u = reader.next_unit(LONG).unwrap();
            assert_eq!(
                (u.position(), u.span(), u.blob_count()),
                (position, span, 1),
                "unit {unit}"
            );
            check_blob(unit, len, u.blob(0).unwrap());
            u.end_unit();
        }
        producer.join().unwrap();

        // Every unit ended in order: the tail caught up with the head, nothing is left.
        let cursors = region.cursors();
        assert_eq!((cursors.head, cursors.tail), (704, 704));
        assert!(matches!(
            reader.try_next_unit(),
            Err(Error::Closed(Role::Writer))
        ));
    });
}

/// The writer of models 2 and 3: three units of record + one 64-byte blob (128 bytes each) in
/// a 256-byte ring, so the first two fill it and the third waits until unit 0's span is
/// returned. The third is built with `begin_unit` + `push`, so the wait happens inside `push`.
fn three_units_into_full_ring(mut writer: Writer) {
    write_pushed(&mut writer, 0, 64);
    write_pushed(&mut writer, 1, 64);
    write_pushed(&mut writer, 2, 64);
}

/// Takes unit `unit` (at `position`) and checks its bytes.
fn take(reader: &shm_arena::Reader, unit: u8, position: u64) -> shm_arena::Unit<'_> {
    let u = reader.next_unit(LONG).unwrap();
    assert_eq!((u.position(), u.span()), (position, 128), "unit {unit}");
    check_blob(unit, 64, u.blob(0).unwrap());
    u
}

/// After every unit of [`three_units_into_full_ring`] was ended, the tail reached the head.
fn assert_all_returned(region: &Region) {
    let cursors = region.cursors();
    assert_eq!((cursors.head, cursors.tail), (384, 384));
}

/// Model 2a: the reader holds both units of a full ring and ends the second first. That must
/// not move the tail (unit 0 is still held: the writer must keep waiting, or it would overwrite
/// unit 0's bytes while they are read, which loom reports); ending unit 0 then moves the tail
/// over both and releases the writer.
#[test]
fn out_of_order_ends() {
    model("out_of_order_ends", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || three_units_into_full_ring(writer));

        let u0 = take(&reader, 0, 0);
        let u1 = take(&reader, 1, 128);
        u1.end_unit();
        // Unit 0 still readable after the later unit ended (and loom checks no write races it).
        check_blob(0, 64, u0.blob(0).unwrap());
        u0.end_unit();
        take(&reader, 2, 256).end_unit();

        producer.join().unwrap();
        assert_all_returned(&region);
    });
}

/// Model 2b: as 2a, but unit 1 is made owned and ended by another thread while the reader ends
/// unit 0: the two releases race (one marks its record released, the other moves the tail and
/// must see that mark, or the tail stops after unit 0 and the writer waits forever).
#[test]
fn out_of_order_ends_owned_second() {
    model("out_of_order_ends_owned_second", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || three_units_into_full_ring(writer));

        let u0 = take(&reader, 0, 0);
        let u1 = take(&reader, 1, 128).into_owned();
        let consumer = thread::spawn(move || {
            check_blob(1, 64, u1.blob(0).unwrap());
            drop(u1);
        });
        u0.end_unit();
        take(&reader, 2, 256).end_unit();

        consumer.join().unwrap();
        producer.join().unwrap();
        assert_all_returned(&region);
    });
}

/// Model 2c: the mirror of 2b: unit 0 is owned by another thread and the reader ends unit 1,
/// so the thread holding the tail's unit ends it concurrently with (often after) the later one.
#[test]
fn out_of_order_ends_owned_first() {
    model("out_of_order_ends_owned_first", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || three_units_into_full_ring(writer));

        let u0 = take(&reader, 0, 0).into_owned();
        let u1 = take(&reader, 1, 128);
        let consumer = thread::spawn(move || {
            check_blob(0, 64, u0.blob(0).unwrap());
            u0.end_unit();
        });
        u1.end_unit();
        take(&reader, 2, 256).end_unit();

        consumer.join().unwrap();
        producer.join().unwrap();
        assert_all_returned(&region);
    });
}

/// Model 3: full-ring blocking released by the reader. The writer fills the 256-byte ring and
/// blocks in `push` of the third unit; the reader, possibly blocked itself on an empty ring,
/// ends units in order. Every wait is a futex wait without timeout in the loom store, so a
/// wake-up lost on either side is a loom deadlock.
#[test]
fn full_ring_blocks_until_reader_ends() {
    model("full_ring_blocks_until_reader_ends", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || three_units_into_full_ring(writer));

        for (unit, position) in [(0, 0), (1, 128), (2, 256)] {
            take(&reader, unit, position).end_unit();
        }

        producer.join().unwrap();
        assert_all_returned(&region);
    });
}

/// Model 4a: dropping the writer wakes a reader blocked in `next_unit`; the reader first
/// drains what was committed (unit 0, even if the writer closed before the reader looked),
/// never sees the aborted unit, then gets `Closed(Writer)`, and keeps getting it.
#[test]
fn writer_drop_wakes_reader() {
    model("writer_drop_wakes_reader", || {
        let region = Region::create_model(256);
        let mut writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || {
            write_pushed(&mut writer, 0, 64);
            {
                // Aborted: filled but never committed; must never reach the reader.
                let mut aborted = writer.begin_unit().unwrap();
                aborted.push(&blob(1, 64)).unwrap();
            }
            drop(writer);
        });

        let u0 = reader.next_unit(LONG).unwrap();
        assert_eq!(u0.position(), 0);
        check_blob(0, 64, u0.blob(0).unwrap());
        u0.end_unit();
        assert!(matches!(
            reader.next_unit(LONG),
            Err(Error::Closed(Role::Writer))
        ));
        assert!(matches!(
            reader.try_next_unit(),
            Err(Error::Closed(Role::Writer))
        ));

        producer.join().unwrap();
        let cursors = region.cursors();
        assert_eq!((cursors.head, cursors.tail), (128, 128));
    });
}

/// The writer of models 4b and 4c: tries `n` units of record + 64-byte blob into a 256-byte
/// ring whose reader goes away, and checks that the results are some successes, then
/// `Closed(Reader)` for good, with the last attempt (for which there is never room) failing.
fn write_until_closed(mut writer: Writer, n: u8) {
    let mut closed = false;
    for unit in 0..n {
        match writer.write_unit(&[&blob(unit, 64)]) {
            Ok(()) => assert!(!closed, "unit {unit} committed after Closed"),
            Err(Error::Closed(Role::Reader)) => closed = true,
            Err(e) => panic!("unit {unit}: unexpected error {e:?}"),
        }
    }
    assert!(closed, "the last unit cannot fit and must fail with Closed");
    assert!(matches!(
        writer.begin_unit(),
        Err(Error::Closed(Role::Reader))
    ));
}

/// Model 4b: dropping the reader wakes a writer blocked for space: the third unit of a
/// 256-byte ring can only get room from the reader, which never takes anything.
#[test]
fn reader_drop_wakes_writer() {
    model("reader_drop_wakes_writer", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || write_until_closed(writer, 3));
        drop(reader);
        producer.join().unwrap();
    });
}

/// Model 4c: an owned unit outlives its reader: the reader takes unit 0 as owned, drops
/// itself (waking the writer, which cannot get room for unit 3 whatever happens), and ends the
/// owned unit afterwards, which may give the writer room for unit 2 but must not corrupt the
/// cursors or touch bytes unsafely.
#[test]
fn owned_unit_outlives_reader() {
    model("owned_unit_outlives_reader", || {
        let region = Region::create_model(256);
        let writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || write_until_closed(writer, 4));

        let u0 = reader.next_unit(LONG).unwrap().into_owned();
        drop(reader);
        check_blob(0, 64, u0.blob(0).unwrap());
        u0.end_unit();

        producer.join().unwrap();
        let cursors = region.cursors();
        assert_eq!(cursors.tail, 128, "only unit 0 was ended");
    });
}

/// Model 5: a reader dies holding a unit while the writer waits for space; a new reader takes
/// the role over. The dead reader's unit is released by the takeover (which also wakes the
/// writer: no peer check runs under loom), never delivered again, and the new reader gets the
/// units that follow, in order, with their bytes.
#[test]
fn reader_takeover_releases_the_dead_readers_units() {
    model("reader_takeover_releases_the_dead_readers_units", || {
        let region = Region::create_model(256);
        let mut writer = region.writer().unwrap();
        let dead = region.reader().unwrap();
        let producer = thread::spawn(move || {
            for unit in 0..3 {
                write_pushed(&mut writer, unit, 64);
            }
        });

        let u0 = dead.next_unit(LONG).unwrap();
        check_blob(0, 64, u0.blob(0).unwrap());
        // The reader's process dies holding unit 0: nothing of it runs any more.
        std::mem::forget(u0);
        region.model_kill(Role::Reader, 0);
        drop(dead); // its slot was taken from it: the drop leaves the slot alone

        let reader = region.reader().unwrap();
        for (unit, position) in [(1u8, 128u64), (2, 256)] {
            let u = reader.next_unit(LONG).unwrap();
            assert_eq!(u.position(), position, "unit {unit}");
            check_blob(unit, 64, u.blob(0).unwrap());
        }
        producer.join().unwrap();
        let cursors = region.cursors();
        assert_eq!((cursors.head, cursors.tail), (384, 384));
    });
}

/// Model 6: a writer dies with a unit begun and not committed, while the reader takes what it
/// committed; a new writer takes the role over and continues after the last committed unit,
/// on bytes the dead writer's unfinished unit had filled.
#[test]
fn writer_takeover_continues_after_the_last_commit() {
    model("writer_takeover_continues_after_the_last_commit", || {
        let region = Region::create_model(256);
        let mut dead = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let first = thread::spawn(move || {
            write_pushed(&mut dead, 0, 64);
            let mut unfinished = dead.begin_unit().unwrap();
            unfinished.push(&blob(9, 64)).unwrap();
            // The process dies here: the unit is never committed nor aborted.
            std::mem::forget(unfinished);
            dead
        });
        let u0 = reader.next_unit(LONG).unwrap();
        check_blob(0, 64, u0.blob(0).unwrap());
        drop(u0);
        let dead = first.join().unwrap();
        region.model_kill(Role::Writer, 0);
        drop(dead);

        let mut writer = region.writer().unwrap();
        let second = thread::spawn(move || {
            write_pushed(&mut writer, 1, 64);
            write_pushed(&mut writer, 2, 64);
        });
        for (unit, position) in [(1u8, 128u64), (2, 256)] {
            let u = reader.next_unit(LONG).unwrap();
            assert_eq!(u.position(), position, "unit {unit}");
            check_blob(unit, 64, u.blob(0).unwrap());
        }
        second.join().unwrap();
    });
}

/// Model 7: batches on both sides. The writer publishes two units per head store and must
/// publish what is pending before it waits for space (the third unit needs the first two
/// ended); the reader takes runs of up to two units and ends each run with one tail store.
#[test]
fn batches_publish_and_end_runs() {
    model("batches_publish_and_end_runs", || {
        let region = Region::create_model(256);
        let mut writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        let producer = thread::spawn(move || {
            let mut batch = writer.begin_batch(2);
            for unit in 0..3 {
                write_pushed(&mut batch, unit, 64);
            }
        });
        let mut next = 0u8;
        while next < 3 {
            let batch = reader.next_batch(2, LONG).unwrap();
            for u in batch.iter() {
                assert_eq!(u.position(), u64::from(next) * 128);
                check_blob(next, 64, u.blob(0).unwrap());
                next += 1;
            }
        }
        producer.join().unwrap();
        assert!(matches!(
            reader.try_next_batch(2),
            Err(Error::Closed(Role::Writer))
        ));
        let cursors = region.cursors();
        assert_eq!((cursors.head, cursors.tail), (384, 384));
    });
}
