//! Loom models of the crate's broadcast mode (issue 18, docs/BROADCAST.md) on the heap model
//! (`Region::create_model_with`), as `spsc.rs` and `mpmc.rs` model the other modes: every
//! 64-byte slot of ring bytes is a loom `UnsafeCell`, so a subscriber reading bytes the writer
//! is overwriting is a causality violation, and every byte read is checked against what the
//! writer wrote. Run with `ci/loom.sh broadcast`.
//!
//! Ring: 512 bytes (max unit 256). Units of one 128-byte blob take 192 bytes, except where the
//! blob skips the ring's end: unit 0 at 0..192, unit 1 at 192..384, unit 2 at 384..640 (blob at
//! 512), unit 3 at 640..832. So unit 2 needs unit 0's bytes back, unit 3 unit 1's.
//!
//! Mutations checked by hand at bound 1 (each makes a model fail, then was undone):
//! - the writer's fence after publishing a tail (F_w in `Reclaimer::reclaim`) removed:
//!   `broadcast_backpressure_and_leaky_lap` reports a causality violation on ring bytes and
//!   `broadcast_late_join` a corrupt record under its join;
//! - the leaky subscriber's fence after its pin (F_s in `take::Cursor::take`) removed:
//!   `broadcast_backpressure_and_leaky_lap` reports a causality violation;
//! - the join not checking the tail again after pinning it (`slots::join`):
//!   `broadcast_late_join` fails (the units it counts were overwritten);
//! - the join moving its pin to the head without waking a waiting writer: loom reports a
//!   deadlock in `broadcast_late_join` (a lost wake-up this model found).
//!
//! `broadcast_two_backpressure` at bound 2: 1,061,543 executions, 219 s; CI runs all three at
//! bound 1 (`LOOM_UNCAPPED=1 ci/loom.sh broadcast` for the full bound).
#![cfg(shm_arena_loom)]

use loom::thread;
use loom_tests::{blob, check_blob, model_capped, LONG};
use shm_arena::{Error, Mode, Policy, Region, Writer};

fn write(writer: &mut Writer, unit: u8) {
    writer.write_unit(&[&blob(unit, 128)]).expect("write_unit");
}

fn region(subscribers: u32) -> Region {
    Region::create_model_with(512, Mode::Broadcast { subscribers })
}

/// Two backpressure subscribers, three units: the third needs the first unit's bytes, which
/// the writer may reuse only once both subscribers ended it. Subscriber A holds two units at
/// once and ends them newest first; B ends each as it reads it.
#[test]
fn broadcast_two_backpressure() {
    model_capped("broadcast_two_backpressure", 1, || {
        let region = region(2);
        let a = region.subscriber(Policy::Backpressure).unwrap();
        let b = region.subscriber(Policy::Backpressure).unwrap();
        let mut writer = region.writer().unwrap();
        let producer = thread::spawn(move || {
            for unit in 0..3 {
                write(&mut writer, unit);
            }
        });
        let other = thread::spawn(move || {
            for unit in 0..3 {
                let u = b.next_unit(LONG).unwrap();
                check_blob(unit, 128, u.blob(0).unwrap());
            }
        });
        let first = a.next_unit(LONG).unwrap();
        let second = a.next_unit(LONG).unwrap();
        check_blob(0, 128, first.blob(0).unwrap());
        check_blob(1, 128, second.blob(0).unwrap());
        drop(second);
        check_blob(0, 128, first.blob(0).unwrap());
        drop(first);
        check_blob(2, 128, a.next_unit(LONG).unwrap().blob(0).unwrap());
        producer.join().unwrap();
        other.join().unwrap();
    });
}

/// One backpressure and one leaky subscriber; the writer writes four units (two laps' worth
/// of space) and never waits for the leaky one, which reads concurrently and may be lapped: it
/// gets units in order, each checked byte by byte (a unit overwritten under it is a causality
/// violation), and every unit is delivered or counted as missed.
#[test]
fn broadcast_backpressure_and_leaky_lap() {
    model_capped("broadcast_backpressure_and_leaky_lap", 1, || {
        let region = region(2);
        let steady = region.subscriber(Policy::Backpressure).unwrap();
        let leaky = region.subscriber(Policy::Leaky).unwrap();
        let mut writer = region.writer().unwrap();
        let producer = thread::spawn(move || {
            for unit in 0..4 {
                write(&mut writer, unit);
            }
        });
        let reader = thread::spawn(move || {
            let (mut next, mut taken) = (0u8, 0);
            while next < 4 && taken < 2 {
                match leaky.try_next_unit() {
                    Ok(Some(u)) => {
                        check_blob(next, 128, u.blob(0).unwrap());
                        next += 1;
                        taken += 1;
                    }
                    Ok(None) => thread::yield_now(),
                    Err(Error::Lagged { missed }) => next += missed as u8,
                    Err(Error::Closed(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (leaky, next)
        });
        for unit in 0..4 {
            let u = steady.next_unit(LONG).unwrap();
            check_blob(unit, 128, u.blob(0).unwrap());
        }
        producer.join().unwrap();
        let (leaky, mut next) = reader.join().unwrap();
        // The writer is done: what is left is delivered or counted, up to unit 3.
        loop {
            match leaky.try_next_unit() {
                Ok(Some(u)) => {
                    check_blob(next, 128, u.blob(0).unwrap());
                    next += 1;
                }
                Ok(None) | Err(Error::Closed(_)) => break,
                Err(Error::Lagged { missed }) => next += missed as u8,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, 4, "every unit delivered or missed");
    });
}

/// A subscriber joins while the writer laps the ring past an early backpressure subscriber:
/// what it gets is a contiguous run of units ending at the last one, each intact (its join
/// pins the published tail, fences, and checks the tail again before it counts the units up
/// to the head, so the writer never reuses bytes it is about to read).
#[test]
fn broadcast_late_join() {
    model_capped("broadcast_late_join", 1, || {
        let region = region(2);
        let early = region.subscriber(Policy::Backpressure).unwrap();
        let mut writer = region.writer().unwrap();
        let region = std::sync::Arc::new(region);
        let late_region = std::sync::Arc::clone(&region);
        let producer = thread::spawn(move || {
            for unit in 0..3 {
                write(&mut writer, unit);
            }
        });
        let late = thread::spawn(move || {
            let late = late_region.subscriber(Policy::Backpressure).unwrap();
            // A backpressure subscriber holds the writer back: it reads until the writer is
            // gone.
            let mut got = Vec::new();
            loop {
                match late.next_unit(LONG) {
                    Ok(u) => got.push(u.blob(0).unwrap().to_vec()),
                    Err(Error::Closed(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            got
        });
        for unit in 0..3 {
            check_blob(unit, 128, early.next_unit(LONG).unwrap().blob(0).unwrap());
        }
        producer.join().unwrap();
        let got = late.join().unwrap();
        let first = 3 - got.len() as u8;
        for (i, bytes) in got.iter().enumerate() {
            check_blob(first + i as u8, 128, bytes);
        }
    });
}
