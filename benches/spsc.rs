//! SPSC throughput between two threads: shm-arena against `rtrb`, `crossbeam-channel` and one
//! plain `memcpy`, for units of 64 B, 4 KiB and 1 MiB.
//!
//! Every contender does the same work per unit: the writer copies `size` bytes from a prepared
//! source buffer and stamps a counter into the first 8 bytes; the reader checksums every byte
//! it receives (through `black_box`, so no read can be optimised away).
//!
//! - `shm-arena`: a memfd region; the writer fills a blob in place, the reader sums it where it
//!   lies (one copy in, zero out).
//! - `rtrb`: a byte ring of the same capacity, written and read with its chunk API.
//! - `crossbeam-channel`: a bounded channel of `Vec<u8>` holding the same bytes; the writer
//!   allocates and fills a `Vec` per unit, the reader sums and frees it.
//! - `memcpy`: one thread copies into a destination buffer of the same size as the rings, then
//!   sums it: the cost of one copy plus the read, with no synchronisation at all.
//!
//! The writer runs in a long-lived thread per contender; the measured thread sends it the number
//! of units to write and then reads them, so thread start-up is never measured, and criterion's
//! linear fit removes the constant cost of waking the writer.
//!
//! `cargo bench --bench spsc` takes a couple of minutes; add `-- --quick` for a faster pass.

mod harness;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_utils::Backoff;
use harness::{contender, Transfer, TwoThreads};
use shm_arena::Region;

/// Unit sizes and their labels in the report.
const SIZES: [(usize, &str); 3] = [(64, "64B"), (4096, "4KiB"), (1 << 20, "1MiB")];

/// A stuck benchmark should fail, not hang the machine.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of buffering each contender gets: 64 units, and at least 1 MiB so small units are not
/// throttled by a tiny ring (64 MiB for 1 MiB units).
fn ring_bytes(size: usize) -> usize {
    (64 * size).max(1 << 20)
}

/// What every writer copies in; distinct bytes so the checksum depends on all of them.
fn source(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// Writes the unit counter over the first bytes, so consecutive units differ.
fn stamp(unit: &mut [u8], counter: u64) {
    let n = unit.len().min(8);
    unit[..n].copy_from_slice(&counter.to_le_bytes()[..n]);
}

/// Reads every byte: a wrapping sum of little-endian words (the compiler vectorises it).
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |acc, w| {
        acc.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")))
    });
    words
        .remainder()
        .iter()
        .fold(sum, |acc, &b| acc.wrapping_add(u64::from(b)))
}

fn arena(size: usize) -> impl Transfer {
    // The unit (record + blob) must fit in half the ring; 64 units of 1 MiB need 64 MiB.
    let capacity = ring_bytes(size).next_power_of_two() as u64;
    let region = Region::create(capacity).expect("memfd region");
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let reader = region.reader().expect("reader");
    // Writer and reader keep the mapping alive.
    drop(region);
    let src = source(size);
    TwoThreads::new(
        move |i| {
            let mut unit = writer.begin_unit().expect("begin unit");
            let blob = unit.blob_mut(size).expect("blob");
            blob.copy_from_slice(&src);
            stamp(blob, i);
            unit.commit().expect("commit");
        },
        move |_| {
            let unit = reader.next_unit(TIMEOUT).expect("next unit");
            checksum(unit.blob(0).expect("blob 0"))
        },
    )
}

fn rtrb(size: usize) -> impl Transfer {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<u8>::new(ring_bytes(size));
    let src = source(size);
    TwoThreads::new(
        move |i| {
            let backoff = Backoff::new();
            while producer.slots() < size {
                backoff.snooze();
            }
            let mut chunk = producer.write_chunk_uninit(size).expect("slots checked");
            let (first, second) = chunk.as_mut_slices();
            let (head, tail) = src.split_at(first.len());
            // SAFETY: `first` and `second` are the chunk's `size` slots, `first.len() +
            // second.len() == size == src.len()`; u8 and MaybeUninit<u8> share a layout, and the
            // ring's slots never overlap `src`.
            unsafe {
                std::ptr::copy_nonoverlapping(head.as_ptr(), first.as_mut_ptr().cast(), head.len());
                std::ptr::copy_nonoverlapping(
                    tail.as_ptr(),
                    second.as_mut_ptr().cast(),
                    tail.len(),
                );
            }
            // The ring holds a whole number of units, so a unit never wraps and the stamp lands
            // in `first`.
            debug_assert!(second.is_empty());
            for (slot, byte) in first.iter_mut().zip(i.to_le_bytes()) {
                slot.write(byte);
            }
            // SAFETY: all `size` slots were initialised by the copies above.
            unsafe { chunk.commit_all() };
        },
        move |_| {
            let backoff = Backoff::new();
            let deadline = Instant::now() + TIMEOUT;
            while consumer.slots() < size {
                assert!(Instant::now() < deadline, "rtrb reader timed out");
                backoff.snooze();
            }
            let chunk = consumer.read_chunk(size).expect("slots checked");
            let (first, second) = chunk.as_slices();
            let sum = checksum(first).wrapping_add(checksum(second));
            chunk.commit_all();
            sum
        },
    )
}

fn crossbeam_channel(size: usize) -> impl Transfer {
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<u8>>(ring_bytes(size) / size);
    let src = source(size);
    TwoThreads::new(
        move |i| {
            let mut unit = Vec::with_capacity(size);
            unit.extend_from_slice(&src);
            stamp(&mut unit, i);
            sender.send_timeout(unit, TIMEOUT).expect("send");
        },
        move |_| {
            let unit = receiver.recv_timeout(TIMEOUT).expect("recv");
            checksum(&unit)
        },
    )
}

/// One copy and one read on a single thread, through a destination as large as the rings so
/// it has the same cache footprint.
struct Memcpy {
    src: Vec<u8>,
    dst: Vec<u8>,
    at: usize,
}

fn memcpy(size: usize) -> impl Transfer {
    Memcpy {
        src: source(size),
        dst: vec![0; ring_bytes(size)],
        at: 0,
    }
}

impl Transfer for Memcpy {
    fn transfer(&mut self, units: u64) -> Duration {
        let size = self.src.len();
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..units {
            let unit = &mut self.dst[self.at..self.at + size];
            unit.copy_from_slice(&self.src);
            stamp(unit, i);
            sum = sum.wrapping_add(checksum(unit));
            self.at = (self.at + size) % self.dst.len();
        }
        black_box(sum);
        start.elapsed()
    }
}

fn spsc(c: &mut Criterion) {
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("spsc/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        contender(&mut group, "shm-arena", || arena(size));
        contender(&mut group, "rtrb", || rtrb(size));
        contender(&mut group, "crossbeam-channel", || crossbeam_channel(size));
        contender(&mut group, "memcpy", || memcpy(size));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Short by default (the whole run takes a couple of minutes); command-line options such as
    // `--measurement-time` or `--quick` still override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = spsc
}
criterion_main!(benches);
