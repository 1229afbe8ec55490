//! Cases 1 and 2, and the two-thread sweep for the plot: one writer thread, one reader thread.
//!
//! Every contender does the same work per unit: the writer copies `size` bytes from a prepared
//! source and stamps a counter into the first 8; the reader checksums every byte it receives.
//! Each run starts its clock before spawning the writer (a thread spawn is ~50 us against runs
//! of 100+ ms) and stops it when the reader has read the last unit.

use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use shm_arena::Region;

use crate::util::{checksum, fill, source, TIMEOUT};

/// Bytes of buffering every contender gets: 4 units, and at least 1 MiB so small units are not
/// throttled by a tiny ring.
pub fn ring_bytes(size: usize) -> usize {
    (4 * size).max(1 << 20)
}

/// Runs `write(i)` for `units` units on a new thread and `read()` as often on this one.
fn two_threads(
    units: u64,
    mut write: impl FnMut(u64) + Send,
    mut read: impl FnMut() -> u64,
) -> Duration {
    let _pin = crate::util::pin_parent();
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(move || {
            crate::util::pin_thread(1);
            for i in 0..units {
                write(i);
            }
        });
        let mut sum = 0u64;
        for _ in 0..units {
            sum = sum.wrapping_add(read());
        }
        sum
    });
    std::hint::black_box(sum);
    start.elapsed()
}

/// Spins (then yields) until `ready()`, failing after [`TIMEOUT`].
#[inline]
fn spin_until(mut ready: impl FnMut() -> bool, what: &str) {
    if ready() {
        return;
    }
    let backoff = Backoff::new();
    let deadline = Instant::now() + TIMEOUT;
    while !ready() {
        if backoff.is_completed() {
            assert!(Instant::now() < deadline, "{what} timed out");
            std::thread::yield_now();
        } else {
            backoff.snooze();
        }
    }
}

/// The ring both shm-arena contenders use for units of `size` bytes, with its two handles.
fn arena_ring(size: usize) -> (Region, shm_arena::Writer, shm_arena::Reader) {
    let need = 2 * shm_arena::unit_size(&[size]) as usize;
    let capacity = ring_bytes(size).max(need).next_power_of_two() as u64;
    let region = Region::create(capacity).expect("memfd region");
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let reader = region.reader().expect("reader");
    (region, writer, reader)
}

/// shm-arena: the writer fills a blob in place, the reader sums it where it lies.
pub fn arena(size: usize, units: u64) -> Duration {
    let (_region, mut writer, reader) = arena_ring(size);
    let src = source(size);
    two_threads(
        units,
        move |i| {
            let mut unit = writer.begin_unit().expect("begin unit");
            fill(unit.blob_mut(size).expect("blob"), &src, i);
            unit.commit().expect("commit");
        },
        || {
            let unit = reader.next_unit(TIMEOUT).expect("next unit");
            checksum(unit.blob(0).expect("blob 0"))
        },
    )
}

/// shm-arena with batches on both sides: the writer publishes `batch` units per head store,
/// the reader takes and ends runs of up to `batch` units (the same payload work per unit).
pub fn arena_batched(size: usize, units: u64, batch: usize) -> Duration {
    let (_region, mut writer, reader) = arena_ring(size);
    let src = source(size);
    let _pin = crate::util::pin_parent();
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(move || {
            crate::util::pin_thread(1);
            let mut writer = writer.begin_batch(batch as u32);
            for i in 0..units {
                let mut unit = writer.begin_unit().expect("begin unit");
                fill(unit.blob_mut(size).expect("blob"), &src, i);
                unit.commit().expect("commit");
            }
        });
        let mut sum = 0u64;
        let mut got = 0;
        while got < units {
            let run = reader.next_batch(batch, TIMEOUT).expect("next batch");
            for unit in run.iter() {
                sum = sum.wrapping_add(checksum(unit.blob(0).expect("blob 0")));
            }
            got += run.len() as u64;
        }
        sum
    });
    std::hint::black_box(sum);
    start.elapsed()
}

/// rtrb: a byte ring written and read with its chunk API (the ring holds a whole number of
/// units, so a unit never wraps).
pub fn rtrb(size: usize, units: u64) -> Duration {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<u8>::new(ring_bytes(size));
    let src = source(size);
    two_threads(
        units,
        move |i| {
            spin_until(|| producer.slots() >= size, "rtrb writer");
            let mut chunk = producer.write_chunk_uninit(size).expect("slots checked");
            let (first, second) = chunk.as_mut_slices();
            debug_assert!(second.is_empty());
            // SAFETY: `first` holds the chunk's `size` slots (a unit never wraps: the ring is a
            // multiple of `size`); u8 and MaybeUninit<u8> share a layout; the ring's slots never
            // overlap `src`.
            let first = unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), first.as_mut_ptr().cast(), size);
                std::slice::from_raw_parts_mut(first.as_mut_ptr().cast::<u8>(), size)
            };
            crate::util::stamp(first, i);
            // SAFETY: all `size` slots were initialised above.
            unsafe { chunk.commit_all() };
        },
        move || {
            spin_until(|| consumer.slots() >= size, "rtrb reader");
            let chunk = consumer.read_chunk(size).expect("slots checked");
            let (first, second) = chunk.as_slices();
            let sum = checksum(first).wrapping_add(checksum(second));
            chunk.commit_all();
            sum
        },
    )
}

/// crossbeam-channel of `Vec<u8>`: the writer allocates and fills a `Vec` per unit, the reader
/// sums and frees it.
pub fn channel_vec(size: usize, units: u64) -> Duration {
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<u8>>(ring_bytes(size) / size);
    let src = source(size);
    two_threads(
        units,
        move |i| {
            let mut unit = Vec::with_capacity(size);
            unit.extend_from_slice(&src);
            crate::util::stamp(&mut unit, i);
            sender.send_timeout(unit, TIMEOUT).expect("send");
        },
        move || checksum(&receiver.recv_timeout(TIMEOUT).expect("recv")),
    )
}

/// The limit: one copy and one read of the same bytes on one thread, no synchronisation,
/// through a destination as large as the rings (same cache footprint).
pub fn memcpy(size: usize, units: u64) -> Duration {
    let src = source(size);
    let mut dst = vec![0u8; ring_bytes(size)];
    let mut at = 0;
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..units {
        let unit = &mut dst[at..at + size];
        fill(unit, &src, i);
        sum = sum.wrapping_add(checksum(unit));
        at = (at + size) % dst.len();
    }
    std::hint::black_box(sum);
    start.elapsed()
}

/// Case 1 only: 64-byte units by value.
pub const SMALL: usize = 64;

/// crossbeam-queue `ArrayQueue<[u8; 64]>`, both sides spinning on full/empty.
pub fn array_queue(units: u64) -> Duration {
    let queue = crossbeam_queue::ArrayQueue::<[u8; SMALL]>::new(ring_bytes(SMALL) / SMALL);
    let src = source(SMALL);
    two_threads(
        units,
        |i| {
            let mut unit = [0u8; SMALL];
            fill(&mut unit, &src, i);
            let mut unit = Some(unit);
            spin_until(
                || match queue.push(unit.take().expect("unit")) {
                    Ok(()) => true,
                    Err(back) => {
                        unit = Some(back);
                        false
                    }
                },
                "ArrayQueue writer",
            );
        },
        || {
            let mut got = None;
            spin_until(
                || {
                    got = queue.pop();
                    got.is_some()
                },
                "ArrayQueue reader",
            );
            checksum(&got.expect("popped"))
        },
    )
}

/// crossbeam-channel of `[u8; 64]` by value (no allocation per unit: the peer's best case).
pub fn channel_array(units: u64) -> Duration {
    let (sender, receiver) = crossbeam_channel::bounded::<[u8; SMALL]>(ring_bytes(SMALL) / SMALL);
    let src = source(SMALL);
    two_threads(
        units,
        move |i| {
            let mut unit = [0u8; SMALL];
            fill(&mut unit, &src, i);
            sender.send_timeout(unit, TIMEOUT).expect("send");
        },
        move || checksum(&receiver.recv_timeout(TIMEOUT).expect("recv")),
    )
}

/// bbqueue's framed producer/consumer (a u16 length header per frame) over a boxed 1 MiB
/// buffer, both sides spinning on full/empty.
pub fn bbqueue_framed(units: u64) -> Duration {
    use bbqueue::nicknames::GogiGui;
    use bbqueue::traits::storage::BoxedSlice;
    let queue = GogiGui::new_with_storage(BoxedSlice::new(ring_bytes(SMALL)));
    let producer = queue.framed_producer();
    let consumer = queue.framed_consumer();
    let src = source(SMALL);
    two_threads(
        units,
        move |i| {
            let mut grant = None;
            spin_until(
                || {
                    grant = producer.grant(SMALL as u16).ok();
                    grant.is_some()
                },
                "bbqueue writer",
            );
            let mut grant = grant.expect("granted");
            fill(&mut grant[..SMALL], &src, i);
            grant.commit(SMALL as u16);
        },
        move || {
            let mut grant = None;
            spin_until(
                || {
                    grant = consumer.read().ok();
                    grant.is_some()
                },
                "bbqueue reader",
            );
            let grant = grant.expect("read");
            let sum = checksum(&grant);
            grant.release();
            sum
        },
    )
}
