//! Case 5: MPMC with 2 writer threads and 2 reader threads, 64 B units, units/s, against
//! crossbeam-queue's `ArrayQueue<[u8; 64]>`.
//!
//! Every writer copies its 64 bytes in from a prepared source and stamps its counter into the
//! first 8; every reader checksums every byte it receives. Each run starts its clock before
//! spawning the threads (four spawns are ~0.2 ms against runs of 100+ ms) and stops it when the
//! last reader has seen the end (shm-arena: `Error::Closed` once the writers are gone and every
//! lane is drained; the queue: empty after the writers ended). The readers' unit count and
//! checksum total are then checked against what the writers wrote, so a contender that lost or
//! garbled units fails the case instead of looking fast.
//!
//! Threads are not pinned (`SHM_ARENA_PEERS_PIN` is for two threads): four busy threads share
//! the two CPUs here whatever we do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use shm_arena::{Backing, Error, Region, RegionOptions};

use crate::threads::{ring_bytes, SMALL};
use crate::util::{checksum, fill, source, TIMEOUT};

pub const WRITERS: u32 = 2;
pub const READERS: u32 = 2;

/// Units writer `w` of [`WRITERS`] writes out of `units`.
fn share(units: u64, w: u32) -> u64 {
    units / u64::from(WRITERS) + u64::from(u64::from(w) < units % u64::from(WRITERS))
}

/// Runs each of `writers` on a thread of its own, with its share of `units` (it writes units
/// `0..share`), and each of `readers` on one (each returns its unit count and checksum total);
/// `writers_gone` runs once every writer thread has ended. Checks the readers read exactly what
/// was written.
fn many_threads<W, R>(
    units: u64,
    writers: Vec<W>,
    readers: Vec<R>,
    writers_gone: impl FnOnce(),
) -> Duration
where
    W: FnOnce(u64) + Send,
    R: FnOnce() -> (u64, u64) + Send,
{
    assert_eq!(writers.len(), WRITERS as usize);
    let start = Instant::now();
    let (count, sum) = std::thread::scope(|s| {
        let readers: Vec<_> = readers.into_iter().map(|read| s.spawn(read)).collect();
        let writers: Vec<_> = writers
            .into_iter()
            .zip(0..)
            .map(|(write, w)| s.spawn(move || write(share(units, w))))
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        writers_gone();
        readers
            .into_iter()
            .map(|r| r.join().expect("reader thread"))
            .fold((0u64, 0u64), |(n, sum), (rn, rsum)| {
                (n + rn, sum.wrapping_add(rsum))
            })
    });
    let elapsed = start.elapsed();
    assert_eq!(count, units, "units read");
    let src = source(SMALL);
    let mut unit = [0u8; SMALL];
    let expected = (0..WRITERS)
        .flat_map(|w| 0..share(units, w))
        .fold(0u64, |acc, i| {
            fill(&mut unit, &src, i);
            acc.wrapping_add(checksum(&unit))
        });
    assert_eq!(sum, expected, "checksum of everything read");
    elapsed
}

/// shm-arena's MPMC mode: one lane per writer (each half of the 1 MiB every contender gets);
/// writers fill a blob in place, readers sum it where it lies and block in `next_unit` when
/// idle. A writer thread drops its handle when done; the readers see `Error::Closed` once both
/// are gone and every lane is drained.
pub fn arena(units: u64) -> Duration {
    let lane_capacity = (ring_bytes(SMALL) / WRITERS as usize).next_power_of_two() as u64;
    let region = Region::create_with(
        RegionOptions::new(lane_capacity)
            .mpmc(WRITERS, READERS)
            .backing(Backing::Anonymous),
    )
    .expect("anonymous MPMC region");
    // Attached before any thread starts, so no reader sees "every writer gone" early.
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let mut writer = region.writer().expect("writer");
            writer.set_timeout(Some(TIMEOUT));
            move |share: u64| {
                let src = source(SMALL);
                for i in 0..share {
                    let mut unit = writer.begin_unit().expect("begin unit");
                    fill(unit.blob_mut(SMALL).expect("blob"), &src, i);
                    unit.commit().expect("commit");
                }
            }
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let reader = region.reader().expect("reader");
            move || {
                let (mut count, mut sum) = (0u64, 0u64);
                loop {
                    match reader.next_unit(TIMEOUT) {
                        Ok(unit) => {
                            sum = sum.wrapping_add(checksum(unit.blob(0).expect("blob 0")));
                            count += 1;
                        }
                        Err(Error::Closed(_)) => return (count, sum),
                        Err(e) => panic!("next unit: {e}"),
                    }
                }
            }
        })
        .collect();
    many_threads(units, writers, readers, || {})
}

/// crossbeam-queue `ArrayQueue<[u8; 64]>` (as in case 1), both sides spinning (then yielding)
/// on full/empty; the readers stop when the queue is empty after the writers ended.
pub fn array_queue(units: u64) -> Duration {
    let queue = ArrayQueue::<[u8; SMALL]>::new(ring_bytes(SMALL) / SMALL);
    let closed = AtomicBool::new(false);
    let (queue, closed) = (&queue, &closed);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            move |share: u64| {
                let src = source(SMALL);
                for i in 0..share {
                    let mut unit = [0u8; SMALL];
                    fill(&mut unit, &src, i);
                    let backoff = Backoff::new();
                    let deadline = Instant::now() + TIMEOUT;
                    while let Err(back) = queue.push(unit) {
                        unit = back;
                        if backoff.is_completed() {
                            assert!(Instant::now() < deadline, "ArrayQueue writer timed out");
                        }
                        backoff.snooze();
                    }
                }
            }
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            move || {
                let (mut count, mut sum) = (0u64, 0u64);
                let backoff = Backoff::new();
                let mut idle_since = None;
                loop {
                    // Acquire: pairs with the Release store once the writers ended; their last
                    // pushes are then visible to the pop below.
                    let last_look = closed.load(Ordering::Acquire);
                    if let Some(unit) = queue.pop() {
                        sum = sum.wrapping_add(checksum(&unit));
                        count += 1;
                        backoff.reset();
                        idle_since = None;
                        continue;
                    }
                    if last_look {
                        return (count, sum);
                    }
                    if backoff.is_completed() {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        assert!(since.elapsed() < TIMEOUT, "ArrayQueue reader timed out");
                    }
                    backoff.snooze();
                }
            }
        })
        .collect();
    many_threads(units, writers, readers, || {
        // Release: pairs with the Acquire load in the readers.
        closed.store(true, Ordering::Release);
    })
}
