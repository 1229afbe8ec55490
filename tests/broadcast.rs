//! Broadcast regions between threads: every subscriber sees every unit, in order; the two
//! policies; attach, detach and late joins; ends in any order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_arena::{Backing, Error, Mode, Policy, Region, RegionOptions};

const SECOND: Duration = Duration::from_secs(1);

fn region(capacity: u64, subscribers: u32) -> Region {
    Region::create_with(
        RegionOptions::new(capacity)
            .broadcast(subscribers)
            .backing(Backing::Anonymous),
    )
    .unwrap()
}

/// A payload whose bytes say which unit it is: `seq` and a pattern derived from it.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![(seq % 251) as u8; len.max(8)];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    bytes
}

fn check(bytes: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert!(
        bytes[8..].iter().all(|&b| b == (seq % 251) as u8),
        "unit {seq} is corrupt"
    );
    seq
}

fn every_subscriber_sees_every_unit(subscribers: u32) {
    let region = region(1 << 16, subscribers);
    assert_eq!(region.mode(), Mode::Broadcast { subscribers });
    let units = 5_000u64;
    let started = Arc::new(std::sync::Barrier::new(subscribers as usize + 1));
    let threads: Vec<_> = (0..subscribers)
        .map(|i| {
            let sub = region.subscriber(Policy::Backpressure).unwrap();
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                started.wait();
                let mut held = Vec::new();
                for expected in 0..units {
                    let unit = sub.next_unit(SECOND * 10).unwrap();
                    assert_eq!(check(unit.blob(0).unwrap()), expected);
                    // Subscriber 0 holds a few units at a time and ends them newest first.
                    if i == 0 {
                        held.push(unit);
                        if held.len() == 3 {
                            while let Some(u) = held.pop() {
                                drop(u);
                            }
                        }
                    }
                }
                drop(held);
                assert!(matches!(sub.next_unit(SECOND * 10), Err(Error::Closed(_))));
            })
        })
        .collect();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(SECOND * 10));
    started.wait();
    for seq in 0..units {
        writer
            .write_unit(&[&payload(seq, 8 + (seq as usize * 7) % 900)])
            .unwrap();
    }
    drop(writer);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn broadcast_two_subscribers_see_every_unit_in_order() {
    every_subscriber_sees_every_unit(2);
}

#[test]
fn broadcast_four_subscribers_see_every_unit_in_order() {
    every_subscriber_sees_every_unit(4);
}

#[test]
fn broadcast_units_end_in_any_order_within_a_subscriber() {
    let region = region(4096, 1);
    let sub = region.subscriber(Policy::Backpressure).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO));
    // Four units of ~1 KiB fill the 4 KiB ring.
    for seq in 0..3 {
        writer.write_unit(&[&payload(seq, 900)]).unwrap();
    }
    let a = sub.try_next_unit().unwrap().unwrap();
    let b = sub.try_next_unit().unwrap().unwrap();
    let c = sub.try_next_unit().unwrap().unwrap();
    writer.write_unit(&[&payload(3, 900)]).unwrap();
    assert!(matches!(
        writer.write_unit(&[&payload(4, 900)]),
        Err(Error::Timeout { .. })
    ));
    drop(c);
    drop(b);
    assert!(
        matches!(
            writer.write_unit(&[&payload(4, 900)]),
            Err(Error::Timeout { .. })
        ),
        "the oldest unit still pins the ring"
    );
    assert_eq!(check(a.blob(0).unwrap()), 0);
    drop(a);
    writer.write_unit(&[&payload(4, 900)]).unwrap();
    for seq in 3..5 {
        assert_eq!(
            check(sub.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
            seq
        );
    }
}

#[test]
fn broadcast_the_writer_waits_for_the_slowest_backpressure_subscriber() {
    let region = region(4096, 2);
    let fast = region.subscriber(Policy::Backpressure).unwrap();
    let slow = region.subscriber(Policy::Backpressure).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::from_millis(50)));
    let mut seq = 0;
    loop {
        match writer.write_unit(&[&payload(seq, 500)]) {
            Ok(()) => {}
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert_eq!(
            check(fast.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
            seq
        );
        seq += 1;
        assert!(seq < 100, "the writer never waited for the slow subscriber");
    }
    assert!(seq >= 4);
    // The slow one takes and ends one unit: room for one more.
    assert_eq!(
        check(slow.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
        0
    );
    writer.write_unit(&[&payload(seq, 500)]).unwrap();
    assert_eq!(
        check(fast.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
        seq
    );
    // A writer blocked on it continues when it ends units from another thread.
    let drain = std::thread::spawn(move || {
        for expected in 1..=seq + 20 {
            let unit = slow.next_unit(SECOND * 10).unwrap();
            assert_eq!(check(unit.blob(0).unwrap()), expected);
        }
        slow
    });
    writer.set_timeout(Some(SECOND * 10));
    for s in seq + 1..=seq + 20 {
        writer.write_unit(&[&payload(s, 500)]).unwrap();
        assert_eq!(check(fast.next_unit(SECOND).unwrap().blob(0).unwrap()), s);
    }
    drain.join().unwrap();
}

#[test]
fn broadcast_a_leaky_subscriber_never_holds_the_writer_and_counts_its_lag_exactly() {
    let region = region(4096, 1);
    let leaky = region.subscriber(Policy::Leaky).unwrap();
    assert_eq!(leaky.policy(), Policy::Leaky);
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO)); // any wait would fail
    let committed = 1_000u64;
    for seq in 0..committed {
        writer.write_unit(&[&payload(seq, 200)]).unwrap();
    }
    let Err(Error::Lagged { missed }) = leaky.try_next_unit() else {
        panic!("a subscriber lapped many times reports its lag");
    };
    let mut delivered = 0;
    while let Some(unit) = leaky.try_next_unit().unwrap() {
        assert_eq!(check(unit.blob(0).unwrap()), missed + delivered);
        delivered += 1;
    }
    assert_eq!(missed + delivered, committed);
    assert!(delivered > 0 && missed > 0);
}

#[test]
fn broadcast_lag_counts_add_up_while_a_leaky_subscriber_reads_slowly() {
    let region = region(8192, 2);
    let leaky = region.subscriber(Policy::Leaky).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO));
    let (mut delivered, mut missed, mut last) = (0u64, 0u64, None);
    let mut take = |n: usize| {
        for _ in 0..n {
            match leaky.try_next_unit() {
                Ok(Some(unit)) => {
                    let seq = check(unit.blob(0).unwrap());
                    assert!(last < Some(seq), "in order, no duplicates");
                    assert_eq!(seq, delivered + missed, "nothing lost uncounted");
                    last = Some(seq);
                    delivered += 1;
                }
                Ok(None) => break,
                Err(Error::Lagged { missed: m }) => missed += m,
                Err(e) => panic!("{e}"),
            }
        }
    };
    for round in 0..200u64 {
        for i in 0..37 {
            writer.write_unit(&[&payload(round * 37 + i, 100)]).unwrap();
        }
        take(5);
    }
    take(usize::MAX);
    assert_eq!(delivered + missed, 200 * 37);
    assert!(missed > 0);
}

#[test]
fn broadcast_a_unit_a_leaky_subscriber_holds_is_never_overwritten() {
    let region = region(4096, 1);
    let leaky = region.subscriber(Policy::Leaky).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::from_millis(20)));
    writer.write_unit(&[&payload(0, 1000)]).unwrap();
    let held = leaky.try_next_unit().unwrap().unwrap();
    let mut seq = 1;
    let err = loop {
        match writer.write_unit(&[&payload(seq, 1000)]) {
            Ok(()) => seq += 1,
            Err(e) => break e,
        }
        assert!(seq < 20, "the writer overwrote a held unit");
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(check(held.blob(0).unwrap()), 0, "intact");
    drop(held);
    writer.write_unit(&[&payload(seq, 1000)]).unwrap();
    // Units after the held one were still in the ring, unless lapped: delivered or counted.
    let mut got = Vec::new();
    let mut missed = 0;
    loop {
        match leaky.try_next_unit() {
            Ok(Some(unit)) => got.push(check(unit.blob(0).unwrap())),
            Ok(None) => break,
            Err(Error::Lagged { missed: m }) => missed += m,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got.len() as u64 + missed, seq);
    assert_eq!(got.last(), Some(&seq));
}

#[test]
fn broadcast_a_late_subscriber_starts_at_the_head() {
    let region = region(1 << 16, 2);
    let early = region.subscriber(Policy::Backpressure).unwrap();
    let mut writer = region.writer().unwrap();
    for seq in 0..10 {
        writer.write_unit(&[&payload(seq, 100)]).unwrap();
    }
    let late = region.subscriber(Policy::Leaky).unwrap();
    for seq in 10..15 {
        writer.write_unit(&[&payload(seq, 100)]).unwrap();
    }
    for seq in 0..15 {
        assert_eq!(
            check(early.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
            seq
        );
    }
    for seq in 10..15 {
        assert_eq!(
            check(late.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
            seq
        );
    }
    assert!(late.try_next_unit().unwrap().is_none());
    // A late leaky subscriber's lag count starts from its join, too.
    let region = region_with_history();
    let late = region.0.subscriber(Policy::Leaky).unwrap();
    let mut writer = region.1;
    for seq in 1000..3000 {
        writer.write_unit(&[&payload(seq, 100)]).unwrap();
    }
    let Err(Error::Lagged { missed }) = late.try_next_unit() else {
        panic!("lapped")
    };
    let first = check(late.try_next_unit().unwrap().unwrap().blob(0).unwrap());
    assert_eq!(
        first,
        1000 + missed,
        "missed counts units since the join, exactly"
    );
}

/// A region whose writer committed 1000 units, no subscriber attached.
fn region_with_history() -> (Region, shm_arena::Writer) {
    let region = region(4096, 1);
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO));
    for seq in 0..1000 {
        writer.write_unit(&[&payload(seq, 100)]).unwrap();
    }
    (region, writer)
}

#[test]
fn broadcast_detaching_a_blocking_subscriber_lets_the_writer_go_on() {
    let region = region(4096, 2);
    let stays = region.subscriber(Policy::Backpressure).unwrap();
    let leaves = region.subscriber(Policy::Backpressure).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::from_millis(20)));
    let mut seq = 0;
    while writer.write_unit(&[&payload(seq, 500)]).is_ok() {
        stays.try_next_unit().unwrap().unwrap();
        seq += 1;
    }
    let done = Arc::new(AtomicBool::new(false));
    let blocked = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            writer.set_timeout(Some(SECOND * 10));
            let started = Instant::now();
            writer.write_unit(&[&payload(seq, 500)]).unwrap();
            done.store(true, Ordering::SeqCst);
            (writer, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !done.load(Ordering::SeqCst),
        "the writer waits for the full subscriber"
    );
    drop(leaves);
    let (_writer, waited) = blocked.join().unwrap();
    assert!(waited < SECOND * 10);
    assert_eq!(
        check(stays.try_next_unit().unwrap().unwrap().blob(0).unwrap()),
        seq
    );
}

#[test]
fn broadcast_roles_and_modes() {
    let region = region(4096, 2);
    let a = region.subscriber(Policy::Backpressure).unwrap();
    let b = region.subscriber(Policy::Leaky).unwrap();
    assert_ne!(a.slot(), b.slot());
    assert!(matches!(
        region.subscriber(Policy::Backpressure),
        Err(Error::RoleTaken { .. })
    ));
    let slot = b.slot();
    drop(b);
    assert_eq!(
        region.subscriber(Policy::Backpressure).unwrap().slot(),
        slot
    );
    let err = region.reader().unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("subscriber")),
        "{err}"
    );
    let spsc = Region::create_with(RegionOptions::new(4096).backing(Backing::Anonymous)).unwrap();
    assert!(matches!(
        spsc.subscriber(Policy::Leaky),
        Err(Error::InvalidArgument(_))
    ));
    for n in [0, shm_arena::MAX_READERS + 1] {
        assert!(matches!(
            Region::create_with(RegionOptions::new(4096).broadcast(n)),
            Err(Error::InvalidArgument(_))
        ));
    }
    let _writer = region.writer().unwrap();
    assert!(matches!(region.writer(), Err(Error::RoleTaken { .. })));
}

#[test]
fn broadcast_with_no_subscriber_the_writer_never_waits() {
    let region = region(4096, 3);
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO));
    for seq in 0..10_000 {
        writer.write_unit(&[&payload(seq, 300)]).unwrap();
    }
}

#[test]
fn broadcast_owned_units_end_on_other_threads_and_are_shared() {
    let region = region(1 << 16, 1);
    let sub = region.subscriber(Policy::Backpressure).unwrap();
    let mut writer = region.writer().unwrap();
    writer.send(&("frame", 7u32)).unwrap();
    let unit = sub.next_unit(SECOND).unwrap().into_owned();
    assert!(unit.is_shared());
    drop(sub); // the owned unit keeps the slot
    assert!(matches!(
        region.subscriber(Policy::Backpressure),
        Err(Error::RoleTaken { .. })
    ));
    std::thread::spawn(move || {
        let (name, n): (&str, u32) = unit.decode().unwrap();
        assert_eq!((name, n), ("frame", 7));
    })
    .join()
    .unwrap();
    region.subscriber(Policy::Backpressure).unwrap();
}

#[test]
fn broadcast_a_subscriber_waiting_without_units_times_out_and_wakes_on_commit() {
    let region = region(4096, 2);
    let subs: Vec<_> = (0..2)
        .map(|_| region.subscriber(Policy::Backpressure).unwrap())
        .collect();
    let mut writer = region.writer().unwrap();
    assert!(matches!(
        subs[0].next_unit(Duration::from_millis(20)),
        Err(Error::Timeout { .. })
    ));
    let waiters: Vec<_> = subs
        .into_iter()
        .map(|sub| {
            std::thread::spawn(move || {
                let unit = sub.next_unit(SECOND * 10).unwrap();
                check(unit.blob(0).unwrap())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // both asleep on the futex
    writer.write_unit(&[&payload(42, 64)]).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), 42);
    }
}

#[test]
fn broadcast_a_busy_polling_subscriber_gets_every_unit_times_out_and_sees_the_end() {
    let region = region(4096, 2);
    let mut busy = region.subscriber(Policy::Backpressure).unwrap();
    busy.set_busy_poll(true);
    let started = Instant::now();
    assert!(matches!(
        busy.next_unit(Duration::from_millis(30)),
        Err(Error::Timeout { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(30));
    let mut writer = region.writer().unwrap();
    let reader = std::thread::spawn(move || {
        for expected in 0..2_000 {
            let unit = busy.next_unit(SECOND * 10).unwrap();
            assert_eq!(check(unit.blob(0).unwrap()), expected);
        }
        busy.next_unit(SECOND * 10).map(|_| ()).unwrap_err()
    });
    writer.set_timeout(Some(SECOND * 10));
    for seq in 0..2_000 {
        writer.write_unit(&[&payload(seq, 300)]).unwrap();
    }
    drop(writer);
    assert!(matches!(reader.join().unwrap(), Error::Closed(_)));
}
