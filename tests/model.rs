//! Model-based test of the SPSC ring: random operation sequences run against a region and
//! against a plain model of where every unit must land, checked after every step.
//!
//! The model predicts placement from the documented rule alone (record at the head, each blob at
//! the next 64-aligned position, a blob that would cross the ring's end skips to the next lap,
//! the descriptor table allocated the same way at commit), so the exact cursors, positions,
//! spans, blob addresses and the exact point where a non-blocking write finds the ring full are
//! all checked, not just "something came out".
//!
//! This is a plain proptest over a list of operations rather than `proptest-state-machine`: a
//! held [`Unit`] borrows its [`Reader`], which the state machine's `'static` system-under-test
//! cannot express without leaking the reader, and holding borrowed units (not only
//! [`OwnedUnit`]s) is part of what is tested.
//!
//! Everything runs on [`Backing::Anonymous`] (heap memory), so Miri runs this file too
//! (`ci/miri.sh`), with the case counts scaled down.

mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use shm_arena::{Backing, Error, OwnedUnit, Reader, Region, RegionOptions, Unit, Writer};

/// Bytes before the ring in a region.
const HEADER: usize = 4096;

use common::placement::{attempt, pattern, Attempt, BlobSpec, Ring, ALIGN};

/// A unit the model expects in the ring.
#[derive(Debug, Clone)]
struct Expected {
    start: u64,
    span: u64,
    /// (position, contents) of each blob.
    blobs: Vec<(u64, Vec<u8>)>,
}

/// A unit the test holds, in either of the two forms a reader hands out.
enum Held<'r> {
    Borrowed(Unit<'r>),
    Owned(OwnedUnit),
}

impl Held<'_> {
    fn position(&self) -> u64 {
        match self {
            Held::Borrowed(u) => u.position(),
            Held::Owned(u) => u.position(),
        }
    }

    fn span(&self) -> u64 {
        match self {
            Held::Borrowed(u) => u.span(),
            Held::Owned(u) => u.span(),
        }
    }

    fn blob_count(&self) -> usize {
        match self {
            Held::Borrowed(u) => u.blob_count(),
            Held::Owned(u) => u.blob_count(),
        }
    }

    fn blob(&self, i: usize) -> shm_arena::Result<&[u8]> {
        match self {
            Held::Borrowed(u) => u.blob(i),
            Held::Owned(u) => u.blob(i),
        }
    }

    fn end(self) {
        match self {
            Held::Borrowed(u) => u.end_unit(),
            Held::Owned(u) => u.end_unit(),
        }
    }
}

/// What a write did, for the edge-case tests to assert on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Committed {
        start: u64,
        span: u64,
    },
    /// Dropped before commit, on purpose or after an error.
    Aborted,
    /// `commit` itself failed (the descriptor table did not fit).
    CommitFailed,
}

/// One ring driven in lockstep with its model.
struct Harness<'r> {
    region: &'r Region,
    reader: &'r Reader,
    writer: Writer,
    cap: u64,
    /// The model's head: end of the last committed unit.
    head: u64,
    /// Committed, not taken yet, in order.
    queue: VecDeque<Expected>,
    /// Taken and not ended, with what they must hold.
    held: Vec<(Held<'r>, Expected)>,
    /// Write attempts so far (numbers the blob patterns).
    attempts: u64,
    /// Address of the ring's first byte, learnt from the first non-empty blob seen.
    ring: Cell<Option<usize>>,
}

impl<'r> Harness<'r> {
    fn new(region: &'r Region, reader: &'r Reader) -> Self {
        let h = Harness {
            region,
            reader,
            writer: region.writer().unwrap(),
            cap: region.capacity(),
            head: 0,
            queue: VecDeque::new(),
            held: Vec::new(),
            attempts: 0,
            ring: Cell::new(None),
        };
        h.check();
        h
    }

    /// Start of the oldest unit not yet ended, or the head.
    fn tail(&self) -> u64 {
        self.held
            .iter()
            .map(|(_, e)| e.start)
            .chain(self.queue.iter().map(|e| e.start))
            .min()
            .unwrap_or(self.head)
    }

    /// Writes one unit with `try_begin_unit`. Errors end the unit unless `keep_going`, in which
    /// case the failed blob is left out and the rest are still written (the unit stays open
    /// after an error). Only commits if `commit`.
    fn write(&mut self, blobs: &[BlobSpec], commit: bool, keep_going: bool) -> Written {
        let id = self.attempts;
        self.attempts += 1;
        let (cap, ring_base) = (self.cap, &self.ring);
        let ring = Ring {
            cap,
            head: self.head,
            tail: self.tail(),
            check_address: &|addr, pos| check_address(ring_base, cap, addr, pos),
            full: &|e| matches!(e, Error::WouldBlock(_)),
        };
        let unit = self.writer.try_begin_unit().unwrap();
        match attempt(unit, id, &ring, blobs, commit, keep_going) {
            Attempt::Aborted => Written::Aborted,
            Attempt::CommitFailed => Written::CommitFailed,
            Attempt::Committed { start, span, blobs } => {
                self.head = start + span;
                self.queue.push_back(Expected { start, span, blobs });
                Written::Committed { start, span }
            }
        }
    }

    /// Takes the next unit if there is one and holds it.
    fn take(&mut self, owned: bool) -> bool {
        let got = self.reader.try_next_unit().unwrap();
        match (self.queue.pop_front(), got) {
            (None, None) => false,
            (Some(expected), Some(unit)) => {
                let held = if owned {
                    Held::Owned(unit.into_owned())
                } else {
                    Held::Borrowed(unit)
                };
                self.held.push((held, expected));
                true
            }
            (expected, got) => panic!("model expects {expected:?}, reader gave {got:?}"),
        }
    }

    /// Ends the `i`-th held unit (in the order taken).
    fn end(&mut self, i: usize) {
        let (unit, _) = self.held.remove(i);
        unit.end();
    }

    /// Takes and ends everything, then checks that the ring is empty.
    fn drain(&mut self) {
        while self.take(false) {}
        for (unit, _) in self.held.drain(..) {
            unit.end();
        }
        self.check();
        assert_eq!(self.tail(), self.head);
    }

    /// The invariants that hold between any two operations.
    fn check(&self) {
        let cursors = self.region.cursors();
        let tail = self.tail();
        assert_eq!(
            (cursors.head, cursors.tail),
            (self.head, tail),
            "cursors (head, tail)"
        );
        assert!(cursors.head - cursors.tail <= self.cap);
        // Every unit not ended lies in [tail, head), and no two overlap.
        let mut ranges: Vec<(u64, u64)> = self
            .held
            .iter()
            .map(|(u, _)| (u.position(), u.span()))
            .chain(self.queue.iter().map(|e| (e.start, e.span)))
            .collect();
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "units {w:?} overlap");
        }
        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
            assert!(first.0 >= tail && last.0 + last.1 <= self.head);
        }
        for (unit, expected) in &self.held {
            self.check_unit(unit, expected);
        }
    }

    /// A held unit is where the model put it and holds what was written, untouched by any
    /// write since.
    fn check_unit(&self, unit: &Held<'_>, expected: &Expected) {
        assert_eq!(
            (unit.position(), unit.span()),
            (expected.start, expected.span),
            "unit (position, span)"
        );
        assert_eq!(unit.blob_count(), expected.blobs.len());
        for (i, (pos, data)) in expected.blobs.iter().enumerate() {
            let blob = unit.blob(i).unwrap();
            assert!(
                blob == data.as_slice(),
                "blob {i} of the unit at {} ({} bytes) differs from what was written",
                expected.start,
                data.len()
            );
            if !blob.is_empty() {
                check_address(&self.ring, self.cap, blob.as_ptr() as usize, *pos);
            }
        }
        assert!(matches!(
            unit.blob(expected.blobs.len()),
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// A blob at `addr` (writer or reader side) that the model put at position `pos` is
/// 64-aligned and at the ring's offset `pos % cap`; the first one seen fixes where the ring is.
fn check_address(ring: &Cell<Option<usize>>, cap: u64, addr: usize, pos: u64) {
    assert_eq!(addr % ALIGN as usize, 0, "blob alignment");
    let base = ring.get().unwrap_or(addr - (pos % cap) as usize);
    ring.set(Some(base));
    // The ring follows a header page in a page-aligned allocation.
    assert_eq!((base - HEADER) % 4096, 0);
    assert_eq!(addr - base, (pos % cap) as usize, "blob placement");
}

/// One step of a random sequence.
#[derive(Debug, Clone)]
enum Op {
    /// Write a unit with `try_begin_unit`; `commit: false` aborts it.
    Write {
        blobs: Vec<BlobSpec>,
        commit: bool,
        keep_going: bool,
    },
    /// Take the next unit and hold it, borrowed or owned.
    Take { owned: bool },
    /// End one held unit, any one.
    End(Index),
}

/// Blob lengths: mostly small, some big, some near the one-blob limit, some over it.
fn blob_len(cap: u64) -> impl Strategy<Value = usize> {
    let max = (cap / 2) as usize;
    prop_oneof![
        1 => Just(0usize),
        12 => 1..=256usize,
        3 => 257..=max / 2,
        1 => (max - ALIGN as usize - 256)..=(max - ALIGN as usize),
        1 => (max - ALIGN as usize + 1)..=(cap as usize + 256),
    ]
}

fn op(cap: u64) -> impl Strategy<Value = Op> {
    let write = (
        prop::collection::vec((blob_len(cap), any::<bool>()), 0..=4),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(blobs, commit, keep_going)| Op::Write {
            blobs,
            commit,
            keep_going,
        });
    prop_oneof![
        4 => write,
        3 => any::<bool>().prop_map(|owned| Op::Take { owned }),
        3 => any::<Index>().prop_map(Op::End),
    ]
}

fn scenario() -> impl Strategy<Value = (u64, Vec<Op>)> {
    let steps = if cfg!(miri) {
        30..=40usize
    } else {
        1..=400usize
    };
    // Under Miri, the smallest ring only: blobs are at most a ring long, and copying them is
    // what costs.
    let caps = if cfg!(miri) {
        vec![4096u64]
    } else {
        vec![4096u64, 8192, 16384]
    };
    prop::sample::select(caps)
        .prop_flat_map(move |cap| (Just(cap), prop::collection::vec(op(cap), steps.clone())))
}

fn config() -> ProptestConfig {
    common::config::proptest_config("proptest-regressions/model.txt")
}

fn anonymous(cap: u64) -> Region {
    Region::create_with(RegionOptions::new(cap).backing(Backing::Anonymous)).unwrap()
}

fn run(cap: u64, ops: &[Op]) {
    let region = anonymous(cap);
    let reader = region.reader().unwrap();
    let mut h = Harness::new(&region, &reader);
    for op in ops {
        match op {
            Op::Write {
                blobs,
                commit,
                keep_going,
            } => {
                h.write(blobs, *commit, *keep_going);
            }
            Op::Take { owned } => {
                h.take(*owned);
            }
            Op::End(index) => {
                if !h.held.is_empty() {
                    h.end(index.index(h.held.len()));
                }
            }
        }
        h.check();
    }
    h.drain();
    drop(h);
    // The writer is gone: the reader sees the ring closed, not an empty ring.
    assert!(matches!(
        reader.try_next_unit(),
        Err(Error::Closed(shm_arena::Role::Writer))
    ));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ring_matches_model((cap, ops) in scenario()) {
        run(cap, &ops);
    }
}

/// Moves the (empty) ring's head to ring offset `phys` with 64-byte units taken and ended.
fn move_head_to(h: &mut Harness<'_>, phys: u64) {
    assert_eq!(h.tail(), h.head);
    while h.head % h.cap != phys {
        h.write(&[], true, false);
        assert!(h.take(false));
        h.end(0);
    }
    h.check();
}

/// Writes, takes and checks a unit; returns its (start, span).
fn write_and_take(h: &mut Harness<'_>, blobs: &[BlobSpec]) -> (u64, u64) {
    let Written::Committed { start, span } = h.write(blobs, true, false) else {
        panic!("unit {blobs:?} was not committed");
    };
    assert!(h.take(false));
    h.check();
    (start, span)
}

#[test]
fn unit_of_exactly_max_unit() {
    let caps: &[u64] = if cfg!(miri) { &[4096] } else { &[4096, 16384] };
    for &cap in caps {
        let max = cap / 2;
        let region = anonymous(cap);
        let reader = region.reader().unwrap();
        let mut h = Harness::new(&region, &reader);
        assert_eq!(h.writer.max_unit(), max);

        // One blob filling the unit to the byte.
        let one = (max - 64) as usize;
        assert_eq!(write_and_take(&mut h, &[(one, false)]), (0, max));
        // One byte more is refused at once, even though the ring has room.
        assert_eq!(h.write(&[(one + 1, true)], true, false), Written::Aborted);
        h.check();

        // Three blobs plus their table filling it to the byte; one byte more only fails at
        // commit, when the table is added, and publishes nothing.
        let third = ((max - 128) / 3 / 64 * 64) as usize;
        let last = (max - 128) as usize - 2 * third;
        assert_eq!(
            write_and_take(&mut h, &[(third, false), (third, true), (last, false)]),
            (max, max)
        );
        h.drain();
        let head = h.head;
        assert_eq!(
            h.write(
                &[(third, false), (third, true), (last + 1, false)],
                true,
                false
            ),
            Written::CommitFailed
        );
        h.check();
        assert_eq!(h.region.cursors().head, head);

        // Starting just past the middle, the blob must skip the ring's end: the span grows by
        // the skipped bytes but the unit is still accepted.
        move_head_to(&mut h, max + 64);
        let (start, span) = write_and_take(&mut h, &[(one, true)]);
        assert_eq!((start % cap, span), (max + 64, cap - 128));
        h.drain();
    }
}

#[test]
fn blob_ending_exactly_at_the_ring_end() {
    let cap = 4096;
    let region = anonymous(cap);
    let reader = region.reader().unwrap();
    let mut h = Harness::new(&region, &reader);

    // Record at cap - 512, blob filling [cap - 448, cap): no skip; the next blob is at the
    // lap's start.
    move_head_to(&mut h, cap - 512);
    let (start, span) = write_and_take(&mut h, &[(448, false), (64, true)]);
    assert_eq!(span, 512 + 64);
    assert_eq!(h.held[0].1.blobs[0].0, start + 64);
    assert_eq!(h.held[0].1.blobs[1].0 % cap, 0);
    h.drain();

    // A unit ending exactly at the ring's end leaves the head at the lap's start.
    move_head_to(&mut h, cap - 512);
    assert_eq!(write_and_take(&mut h, &[(448, true)]).1, 512);
    assert_eq!(h.head % cap, 0);
    h.drain();

    // One byte more and the blob skips to the lap's start, the skipped bytes in the span.
    move_head_to(&mut h, cap - 512);
    assert_eq!(write_and_take(&mut h, &[(449, false)]).1, 512 + 512);
    h.drain();
}

#[test]
fn zero_blob_and_zero_length_units() {
    let region = anonymous(4096);
    let reader = region.reader().unwrap();
    let mut h = Harness::new(&region, &reader);

    assert_eq!(write_and_take(&mut h, &[]), (0, 64));
    // Empty blobs take no space, but three of them still need a descriptor table.
    assert_eq!(write_and_take(&mut h, &[(0, false), (0, true)]), (64, 64));
    assert_eq!(
        write_and_take(&mut h, &[(0, false), (0, true), (0, false)]),
        (128, 128)
    );
    // An empty blob between two others does not move the next one.
    let (start, _) = write_and_take(&mut h, &[(10, false), (0, true), (10, false)]);
    let blobs = &h.held.last().unwrap().1.blobs;
    assert_eq!((blobs[0].0, blobs[2].0), (start + 64, start + 128));
    assert_eq!(h.held[0].0.blob_count(), 0);
    h.drain();
}

#[test]
fn descriptor_table_across_the_ring_end() {
    let cap = 4096;
    let region = anonymous(cap);
    let reader = region.reader().unwrap();
    let mut h = Harness::new(&region, &reader);

    // Four blobs, the first ending at the ring's end, the rest and the table on the next lap.
    move_head_to(&mut h, cap - 192);
    assert_eq!(write_and_take(&mut h, &[(100, false); 4]).1, 192 + 448);
    h.drain();

    // Five 64-byte blobs end 64 bytes before the ring's end; their 80-byte table skips it.
    move_head_to(&mut h, cap - 448);
    assert_eq!(write_and_take(&mut h, &[(64, true); 5]).1, 448 + 128);
    h.drain();

    // Many units with tables, wrapping several times, one held across each write. A unit is at
    // most 64 + 5 * 256 + 128 bytes, so two of them and a skip always fit.
    let units = if cfg!(miri) { 60 } else { 200 };
    for i in 0..units {
        let blobs: Vec<BlobSpec> = (0..3 + i % 3)
            .map(|b| ((i * 37 + b * 11) % 256, b % 2 == 0))
            .collect();
        write_and_take(&mut h, &blobs);
        if h.held.len() > 1 {
            h.end(i % 2);
        }
    }
    assert!(h.head > units as u64 / 40 * cap);
    h.drain();
}

#[test]
fn a_full_ring_refuses_until_the_oldest_unit_ends() {
    let cap = 4096;
    let region = anonymous(cap);
    let reader = region.reader().unwrap();
    let mut h = Harness::new(&region, &reader);

    // Four units of 1024 bytes fill the ring exactly.
    for _ in 0..4 {
        write_and_take(&mut h, &[(960, false)]);
    }
    // Not even a record fits: a unit without blobs fails when commit reserves it.
    assert_eq!(h.write(&[], true, false), Written::CommitFailed);
    assert_eq!(h.write(&[(1, false)], true, false), Written::Aborted);
    // Ending a unit other than the oldest frees nothing yet.
    h.end(1);
    h.check();
    assert_eq!(h.write(&[(1, false)], true, false), Written::Aborted);
    // Ending the oldest moves the tail over it and over the one already ended.
    h.end(0);
    h.check();
    assert_eq!(region.cursors().tail, 2048);
    write_and_take(&mut h, &[(960, true)]);
    write_and_take(&mut h, &[(960, true)]);
    assert_eq!(h.write(&[], true, false), Written::CommitFailed);
    h.drain();
}

/// A writer thread, a reader thread and a thread ending owned units out of order, on one ring;
/// small enough for Miri to check the cross-thread protocol for data races.
#[test]
fn threads_write_take_and_end_out_of_order() {
    let units: u64 = if cfg!(miri) { 300 } else { 5000 };
    let cap = 8192;
    let region = anonymous(cap);
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    let blobs_of = |i: u64| -> Vec<Vec<u8>> {
        (0..(i % 5) as usize)
            .map(|b| pattern(i, b, ((i as usize * 37 + b * 101) % 200) + b))
            .collect()
    };

    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..units {
                let mut unit = writer.begin_unit().unwrap();
                for (b, data) in blobs_of(i).iter().enumerate() {
                    if b % 2 == 0 {
                        unit.push(data).unwrap();
                    } else {
                        unit.blob_mut(data.len()).unwrap().copy_from_slice(data);
                    }
                }
                unit.commit().unwrap();
            }
            drop(writer);
        });
        let (to_ender, from_reader) = mpsc::channel::<(u64, OwnedUnit)>();
        s.spawn(move || {
            // Units are at most 64 + 4 * 256 + 64 bytes: three held leave room for the next.
            let mut window: Vec<(u64, OwnedUnit)> = Vec::new();
            let mut k = 0usize;
            for (i, unit) in from_reader {
                let expected = blobs_of(i);
                assert_eq!(unit.blob_count(), expected.len());
                window.push((i, unit));
                if window.len() > 3 {
                    k = (k + 1) % window.len();
                    let (i, unit) = window.remove(k);
                    for (b, data) in blobs_of(i).iter().enumerate() {
                        assert_eq!(unit.blob(b).unwrap(), data.as_slice(), "unit {i} blob {b}");
                    }
                    unit.end_unit();
                }
            }
        });
        let mut i = 0;
        loop {
            match reader.next_unit(Duration::from_secs(60)) {
                Ok(unit) => {
                    let position = unit.position();
                    assert_eq!(position % ALIGN, 0);
                    to_ender.send((i, unit.into_owned())).unwrap();
                    i += 1;
                }
                Err(Error::Closed(_)) => break,
                Err(e) => panic!("unit {i}: {e}"),
            }
        }
        assert_eq!(i, units);
    });
    let cursors = region.cursors();
    assert_eq!(cursors.head, cursors.tail);
    assert!(cursors.head > 4 * cap);
}
