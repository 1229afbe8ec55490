//! MPMC mode with threads: exactly-once delivery, per-lane order, limits, closing.
//! (Processes, dead peers and kills: tests/mpmc_processes.rs; the model: tests/mpmc_model.rs.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm_arena::{Backing, Error, Mode, Region, RegionOptions, Role};

const WAIT: Duration = Duration::from_secs(20);

fn region(lane_capacity: u64, writers: u32, readers: u32) -> Region {
    Region::create_with(
        RegionOptions::new(lane_capacity)
            .mpmc(writers, readers)
            .backing(Backing::Anonymous),
    )
    .unwrap()
}

/// Payload of unit `seq` of writer `w`: its identity, then bytes derived from both, so a
/// reader can check every byte without shared state.
fn payload(w: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 12);
    v.extend_from_slice(&w.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (i as u64 ^ seq ^ (u64::from(w) * 31)) as u8));
    v
}

fn check(bytes: &[u8]) -> (u32, u64) {
    let w = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[4..12].try_into().unwrap());
    assert_eq!(
        bytes,
        payload(w, seq, bytes.len() - 12),
        "bytes of ({w}, {seq})"
    );
    (w, seq)
}

/// Three writers and three readers on threads, units of many sizes through small lanes (many
/// laps, out-of-order ends because readers hold units across claims): every unit arrives
/// exactly once, intact, and each reader sees each writer's units in commit order.
#[test]
fn threads_deliver_every_unit_exactly_once() {
    let (writers, readers, per_writer) = (3u32, 3u32, 3000u64);
    let region = region(1 << 14, writers, readers);
    assert_eq!(region.mode(), Mode::Mpmc { writers, readers });
    let got = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..readers {
            let reader = region.reader().unwrap();
            let got = Arc::clone(&got);
            s.spawn(move || {
                let mut mine = Vec::new();
                let mut held = Vec::new();
                loop {
                    // Units held across a wait would pin their lanes' tails, so end them first
                    // (an arena cannot reuse space a reader still holds).
                    let next = match reader.try_next_unit() {
                        Ok(Some(unit)) => Ok(unit),
                        Ok(None) => {
                            held.clear();
                            reader.next_unit(WAIT)
                        }
                        Err(e) => Err(e),
                    };
                    match next {
                        Ok(unit) => {
                            mine.push(check(unit.blob(0).unwrap()));
                            // Hold up to two units and end them newest first: out of order.
                            held.push(unit.into_owned());
                            if held.len() == 3 {
                                held.remove(1);
                                held.pop();
                            }
                        }
                        Err(Error::Closed(Role::Writer)) => break,
                        Err(e) => panic!("reader: {e}"),
                    }
                }
                // Per-lane claim order: this reader saw each writer's units in order.
                for w in 0..writers {
                    let seqs: Vec<u64> = mine.iter().filter(|u| u.0 == w).map(|u| u.1).collect();
                    assert!(
                        seqs.windows(2).all(|p| p[0] < p[1]),
                        "writer {w} out of order"
                    );
                }
                got.lock().unwrap().extend(mine);
            });
        }
        for _ in 0..writers {
            let mut writer = region.writer().unwrap();
            writer.set_timeout(Some(WAIT));
            s.spawn(move || {
                let w = writer.lane();
                for seq in 0..per_writer {
                    let len = (seq * 7919 % 3000) as usize;
                    writer.write_unit(&[&payload(w, seq, len)]).unwrap();
                }
            });
        }
    });
    let got = got.lock().unwrap();
    let unique: HashSet<_> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "a unit was delivered twice");
    assert_eq!(
        got.len() as u64,
        u64::from(writers) * per_writer,
        "units lost"
    );
    for l in 0..writers {
        let c = region.lane_cursors(l).unwrap();
        assert!(
            c.head == c.tail && c.tail == c.claim,
            "lane {l} not drained: {c:?}"
        );
    }
}

/// Limits are enforced, and a dropped handle's place can be taken again.
#[test]
fn limits_and_reattach() {
    let region = region(4096, 2, 1);
    let a = region.writer().unwrap();
    let b = region.writer().unwrap();
    assert_ne!(a.lane(), b.lane());
    assert!(matches!(
        region.writer(),
        Err(Error::RoleTaken {
            role: Role::Writer,
            ..
        })
    ));
    let r = region.reader().unwrap();
    assert!(matches!(
        region.reader(),
        Err(Error::RoleTaken {
            role: Role::Reader,
            ..
        })
    ));
    let lane = a.lane();
    drop(a);
    let mut c = region.writer().unwrap();
    assert_eq!(c.lane(), lane, "the detached lane is reused");
    c.write_unit(&[b"again"]).unwrap();
    let unit = r.next_unit(WAIT).unwrap();
    assert_eq!((unit.lane(), unit.blob(0).unwrap()), (lane, &b"again"[..]));
    drop(unit);
    drop(r);
    assert!(
        region.reader().is_ok(),
        "the detached reader slot is reused"
    );
    for (w, r) in [(0, 1), (64, 1), (1, 0), (1, 62)] {
        assert!(
            matches!(
                Region::create_with(RegionOptions::new(4096).mpmc(w, r)),
                Err(Error::InvalidArgument(_))
            ),
            "{w} writers, {r} readers"
        );
    }
}

/// A stalled writer (a unit begun, never committed) holds back no other writer's units.
#[test]
fn a_stalled_writer_blocks_nobody_else() {
    let region = region(4096, 2, 1);
    let mut stalled = region.writer().unwrap();
    let mut other = region.writer().unwrap();
    let reader = region.reader().unwrap();
    {
        let mut open = stalled.begin_unit().unwrap();
        open.push(b"never committed").unwrap();
        for i in 0..100u8 {
            other.write_unit(&[&[i; 200]]).unwrap();
            let unit = reader.next_unit(WAIT).unwrap();
            assert_eq!(unit.blob(0).unwrap(), &[i; 200]);
        }
        // `open` goes out of scope uncommitted: the unit is aborted, nothing is published.
    }
    assert!(reader.try_next_unit().unwrap().is_none());
}

/// Closing: readers see Closed only after every writer detached and all lanes drained;
/// writers see Closed once every reader detached and their lane is full.
#[test]
fn closing_both_ways() {
    let region = region(4096, 2, 2);
    let mut a = region.writer().unwrap();
    let b = region.writer().unwrap();
    let r1 = region.reader().unwrap();
    let r2 = region.reader().unwrap();
    a.write_unit(&[b"last words"]).unwrap();
    drop(a);
    // One writer left: nothing to read, but not closed.
    let first = r1.next_unit(WAIT).unwrap();
    assert_eq!(first.blob(0).unwrap(), b"last words");
    assert!(r2.try_next_unit().unwrap().is_none());
    drop(b);
    assert!(matches!(
        r2.try_next_unit(),
        Err(Error::Closed(Role::Writer))
    ));
    assert!(matches!(
        r1.next_unit(WAIT),
        Err(Error::Closed(Role::Writer))
    ));
    drop(first);

    let region2 = self::region(4096, 1, 2);
    let mut w = region2.writer().unwrap();
    w.set_timeout(Some(WAIT));
    drop((region2.reader().unwrap(), region2.reader().unwrap()));
    let err = loop {
        if let Err(e) = w.write_unit(&[&[0; 1000]]) {
            break e;
        }
    };
    assert!(matches!(err, Error::Closed(Role::Reader)), "{err}");
}

/// Values through an MPMC region: `send` from two writers, `decode` by two readers, leaves
/// borrowed from the unit (no copy out), each value decoded by exactly one reader.
#[test]
fn values_through_mpmc() {
    use shm_arena::codec::Bytes;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Value<'a> {
        writer: u32,
        seq: u32,
        #[serde(borrow)]
        payload: Bytes<'a>,
    }
    // Lanes large enough for all 20 values of a writer: they are written before any is read.
    let region = region(1 << 18, 2, 2);
    let readers = [region.reader().unwrap(), region.reader().unwrap()];
    let writers = [region.writer().unwrap(), region.writer().unwrap()];
    for mut writer in writers {
        writer.set_timeout(Some(WAIT));
        let w = writer.lane();
        for seq in 0..20u32 {
            let payload = vec![(w * 50 + seq) as u8; 5000];
            writer
                .send(&Value {
                    writer: w,
                    seq,
                    payload: Bytes::from(&payload[..]),
                })
                .unwrap();
        }
    }
    let mut seen = HashSet::new();
    for i in 0..40 {
        let unit = readers[i % 2].next_unit(WAIT).unwrap();
        let value: Value<'_> = unit.decode().unwrap();
        let bytes: &[u8] = &value.payload;
        assert_eq!(
            bytes,
            &vec![(value.writer * 50 + value.seq) as u8; 5000][..]
        );
        // Offloaded as blob 0, borrowed straight from shared memory.
        assert_eq!(bytes.as_ptr(), unit.blob(0).unwrap().as_ptr());
        assert_eq!(value.writer, unit.lane());
        assert!(seen.insert((value.writer, value.seq)), "decoded twice");
    }
    assert_eq!(seen.len(), 40);
    assert!(matches!(
        readers[0].try_next_unit(),
        Err(Error::Closed(Role::Writer))
    ));
}
