//! Model-based test of MPMC mode: random sequences of operations over several writer and
//! reader handles, scheduled on one thread, run against a region and against a plain model,
//! checked after every step. (The real races are loom's: loom-tests/; dead processes are
//! tests/mpmc_processes.rs's, apart from one regression at the end of this file.)
//!
//! The model knows, per lane, the SPSC placement rule (record at the head, each blob at the
//! next 64-aligned position, a blob that would cross the lane's end skips to the next lap, the
//! descriptor table allocated the same way at commit), the head, tail and claim cursors and the
//! FIFO of committed units not yet claimed; and, per handle, which lane a writer holds and
//! which lane a reader looks at first. So it predicts exactly:
//! - whether each blob and each commit succeeds, or gives `UnitTooLarge`, `WouldBlock`
//!   (`try_begin_unit`), `Timeout` or `Closed(Reader)` (`begin_unit` with a zero timeout) -
//!   the tail only moves over the prefix of ended units, so ends out of order matter;
//! - which unit `try_next_unit` / `next_unit` hands to which reader (lane, position, span,
//!   bytes): readers scan the lanes round-robin, first `slot % lanes`, then the lane they last
//!   claimed from until they have taken [`LANE_STREAK`] units from it in a row, then the lane
//!   after it;
//! - which lane a new writer and which slot a new reader gets (the lowest free one), and
//!   `RoleTaken` when there is none;
//! - `Closed(Writer)` exactly when a writer attached once, none is attached now and every lane
//!   is drained;
//! - every lane's `(head, tail, claim)` after every step, and the bytes and addresses of every
//!   unit still held (units held by a dropped reader stay valid).
//!
//! Held units are [`OwnedUnit`]s, so reader handles can be dropped while their units live on;
//! the borrowed [`Unit`] guard is checked and ended at once. The model runs on
//! [`Backing::Anonymous`] (heap memory) and scales its case counts down under Miri
//! (ci/miri.sh runs it). Cases: 256, or `PROPTEST_CASES`.

mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use shm_arena::{
    Backing, Error, Mode, OwnedUnit, Reader, Region, RegionOptions, Role, Unit, Writer,
};

use common::placement::{attempt, Attempt, BlobSpec, Ring, ALIGN};

/// A committed unit as the model expects it.
#[derive(Debug, Clone)]
struct Expected {
    lane: u32,
    start: u64,
    span: u64,
    /// (position, contents) of each blob.
    blobs: Vec<(u64, Vec<u8>)>,
    /// The reader slot that took it (set when it is read).
    slot: u32,
}

/// How a writer waits when its lane is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// `try_begin_unit`: `WouldBlock`.
    WouldBlock,
    /// `begin_unit` with a zero timeout, readers attached or none ever attached: `Timeout`.
    Timeout,
    /// `begin_unit`, every reader that attached is gone: `Closed(Reader)`.
    Closed,
}

impl WhenFull {
    fn matches(self, got: &Error) -> bool {
        match self {
            WhenFull::WouldBlock => matches!(got, Error::WouldBlock(_)),
            WhenFull::Timeout => matches!(got, Error::Timeout { .. }),
            WhenFull::Closed => matches!(got, Error::Closed(Role::Reader)),
        }
    }
}

/// Read access shared by both unit forms (to check them with one function).
trait Held {
    fn lane(&self) -> u32;
    fn position(&self) -> u64;
    fn span(&self) -> u64;
    fn blob_count(&self) -> usize;
    fn blob(&self, i: usize) -> shm_arena::Result<&[u8]>;
    fn blobs(&self) -> Vec<shm_arena::Result<&[u8]>>;
}

macro_rules! held {
    ($t:ty) => {
        impl Held for $t {
            fn lane(&self) -> u32 {
                <$t>::lane(self)
            }
            fn position(&self) -> u64 {
                <$t>::position(self)
            }
            fn span(&self) -> u64 {
                <$t>::span(self)
            }
            fn blob_count(&self) -> usize {
                <$t>::blob_count(self)
            }
            fn blob(&self, i: usize) -> shm_arena::Result<&[u8]> {
                <$t>::blob(self, i)
            }
            fn blobs(&self) -> Vec<shm_arena::Result<&[u8]>> {
                <$t>::blobs(self).collect()
            }
        }
    };
}
held!(Unit<'_>);
held!(OwnedUnit);

/// The model of one lane.
#[derive(Debug, Default)]
struct Lane {
    /// End of the last committed unit.
    head: u64,
    /// Committed, not claimed yet, in commit order (the lane's claim cursor is the first one's
    /// start, or the head).
    queue: VecDeque<Expected>,
    /// A writer handle holds the lane now.
    attached: bool,
    /// A writer handle held it once (the lane is then "detached", not "free").
    ever: bool,
}

/// Units a reader claims in a row from one lane before it looks at the next lane first (the
/// crate's `reader::LANE_STREAK`).
const LANE_STREAK: u32 = 16;

/// A reader handle and the model of its state.
struct ReaderHandle {
    reader: Reader,
    slot: u32,
    /// The lane it looks at first on its next claim.
    next: u32,
    /// Units claimed in a row from `next`.
    streak: u32,
}

/// One MPMC region driven in lockstep with its model.
struct Harness {
    region: Region,
    cap: u64,
    lanes: u32,
    /// Writer handles with the lane the model says each holds, in attach order.
    writers: Vec<(Writer, u32)>,
    readers: Vec<ReaderHandle>,
    model: Vec<Lane>,
    /// Reader slots held now.
    slots: Vec<bool>,
    /// Some reader attached once.
    readers_ever: bool,
    /// Claimed units not ended yet (owned: they outlive their reader), with what they hold.
    held: Vec<(OwnedUnit, Expected)>,
    /// Write attempts so far (numbers the blob patterns).
    attempts: u64,
    /// Address of each lane's first byte, learnt from the first non-empty blob seen in it.
    bases: Vec<Cell<Option<usize>>>,
}

impl Harness {
    fn new(cap: u64, lanes: u32, readers: u32) -> Self {
        let region = Region::create_with(
            RegionOptions::new(cap)
                .mpmc(lanes, readers)
                .backing(Backing::Anonymous),
        )
        .unwrap();
        assert_eq!(
            region.mode(),
            Mode::Mpmc {
                writers: lanes,
                readers
            }
        );
        assert_eq!(region.capacity(), cap);
        let h = Harness {
            region,
            cap,
            lanes,
            writers: Vec::new(),
            readers: Vec::new(),
            model: (0..lanes).map(|_| Lane::default()).collect(),
            slots: vec![false; readers as usize],
            readers_ever: false,
            held: Vec::new(),
            attempts: 0,
            bases: (0..lanes).map(|_| Cell::new(None)).collect(),
        };
        h.check();
        h
    }

    /// Start of the lane's oldest unit not ended, or its head: the tail only moves over the
    /// prefix of ended units.
    fn tail(&self, lane: u32) -> u64 {
        let model = &self.model[lane as usize];
        self.held
            .iter()
            .filter(|(_, e)| e.lane == lane)
            .map(|(_, e)| e.start)
            .chain(model.queue.iter().map(|e| e.start))
            .min()
            .unwrap_or(model.head)
    }

    fn claim(&self, lane: u32) -> u64 {
        let model = &self.model[lane as usize];
        model.queue.front().map_or(model.head, |e| e.start)
    }

    /// What a reader must get when every lane is empty: `Closed(Writer)` once a writer
    /// attached and none is attached now.
    fn closed(&self) -> bool {
        self.model.iter().all(|l| !l.attached) && self.model.iter().any(|l| l.ever)
    }

    fn new_writer(&mut self) {
        let free = self.model.iter().position(|l| !l.attached);
        match (free, self.region.writer()) {
            (Some(lane), Ok(writer)) => {
                let lane = lane as u32;
                assert_eq!(
                    writer.lane(),
                    lane,
                    "a new writer takes the lowest free lane"
                );
                assert_eq!(writer.capacity(), self.cap);
                assert_eq!(writer.max_unit(), self.cap / 2);
                let model = &mut self.model[lane as usize];
                model.attached = true;
                model.ever = true;
                self.writers.push((writer, lane));
            }
            (None, Err(Error::RoleTaken { role, pid })) => {
                assert_eq!((role, pid), (Role::Writer, std::process::id()));
            }
            (free, got) => panic!("new writer: model says lane {free:?}, region says {got:?}"),
        }
    }

    fn drop_writer(&mut self, i: usize) {
        let (writer, lane) = self.writers.remove(i);
        drop(writer);
        self.model[lane as usize].attached = false;
    }

    /// Whether reader slot `slot` is attached: its handle lives, or an owned unit it handed
    /// out does (the unit carries the slot's tag, so the slot stays attached until it ends).
    fn slot_in_use(&self, slot: u32) -> bool {
        self.slots[slot as usize] || self.held.iter().any(|(_, e)| e.slot == slot)
    }

    fn slots_in_use(&self) -> usize {
        (0..self.slots.len() as u32)
            .filter(|&s| self.slot_in_use(s))
            .count()
    }

    fn new_reader(&mut self) {
        let free = (0..self.slots.len() as u32).position(|s| !self.slot_in_use(s));
        match (free, self.region.reader()) {
            (Some(slot), Ok(reader)) => {
                assert_eq!(reader.capacity(), self.cap);
                let slot = slot as u32;
                self.slots[slot as usize] = true;
                self.readers_ever = true;
                self.readers.push(ReaderHandle {
                    reader,
                    slot,
                    next: slot % self.lanes,
                    streak: 0,
                });
            }
            (None, Err(Error::RoleTaken { role, pid })) => {
                assert_eq!((role, pid), (Role::Reader, std::process::id()));
            }
            (free, got) => panic!("new reader: model says slot {free:?}, region says {got:?}"),
        }
    }

    /// Drops a reader handle; the units it handed out stay held and valid (and keep its slot).
    fn drop_reader(&mut self, i: usize) {
        let handle = self.readers.remove(i);
        self.slots[handle.slot as usize] = false;
        drop(handle.reader);
    }

    /// Writes one unit with writer `w`. Errors end the unit unless `keep_going`, in which case
    /// the failed blob is left out and the rest are still written (the unit stays open after
    /// an error). Only commits if `commit`. Returns whether a unit was committed.
    fn write(
        &mut self,
        w: usize,
        blobs: &[BlobSpec],
        commit: bool,
        keep_going: bool,
        blocking: bool,
    ) -> bool {
        let id = self.attempts;
        self.attempts += 1;
        let cap = self.cap;
        let lane = self.writers[w].1;
        let (tail, head) = (self.tail(lane), self.model[lane as usize].head);
        let full = if !blocking {
            WhenFull::WouldBlock
        } else if self.readers_ever && self.slots_in_use() == 0 {
            WhenFull::Closed
        } else {
            WhenFull::Timeout
        };
        // Every reader that attached has detached: the unit could never be read, so it fails
        // at once, blocking or not, full or not.
        let readers_gone = self.readers_ever && self.slots_in_use() == 0;
        let base = &self.bases[lane as usize];
        let writer = &mut self.writers[w].0;
        assert_eq!(writer.lane(), lane);
        let begun = if blocking {
            // Zero: a full lane fails at once (after a short spin) instead of waiting.
            writer.set_timeout(Some(Duration::ZERO));
            writer.begin_unit()
        } else {
            writer.try_begin_unit()
        };
        let unit = match begun {
            Ok(unit) => {
                assert!(
                    !readers_gone,
                    "begin_unit with every reader detached must fail"
                );
                unit
            }
            Err(Error::Closed(Role::Reader)) if readers_gone => return false,
            Err(e) => panic!("lane {lane}: begin_unit failed: {e:?}"),
        };
        let ring = Ring {
            cap,
            head,
            tail,
            check_address: &|addr, pos| check_address(base, cap, addr, pos),
            full: &|e| full.matches(e),
        };
        match attempt(unit, id, &ring, blobs, commit, keep_going) {
            Attempt::Aborted | Attempt::CommitFailed => false,
            Attempt::Committed { start, span, blobs } => {
                let lane_model = &mut self.model[lane as usize];
                lane_model.head = start + span;
                lane_model.queue.push_back(Expected {
                    lane,
                    start,
                    span,
                    blobs,
                    slot: u32::MAX,
                });
                true
            }
        }
    }

    /// What reader `r` must get next, moving the model on: a unit (the front of the first lane
    /// with one, scanning round-robin from the reader's next lane), `Err(true)` for
    /// `Closed(Writer)`, `Err(false)` for nothing yet.
    fn predict_read(&mut self, r: usize) -> Result<Expected, bool> {
        let first = self.readers[r].next;
        for i in 0..self.lanes {
            let lane = (first + i) % self.lanes;
            if let Some(unit) = self.model[lane as usize].queue.pop_front() {
                let reader = &mut self.readers[r];
                reader.streak = if lane == first { reader.streak + 1 } else { 1 };
                if reader.streak == LANE_STREAK {
                    (reader.next, reader.streak) = ((lane + 1) % self.lanes, 0);
                } else {
                    reader.next = lane;
                }
                return Ok(unit);
            }
        }
        Err(self.closed())
    }

    /// Reader `r` takes the next unit (`next_unit` with a zero timeout if `blocking`); holds
    /// it as an [`OwnedUnit`] if `hold`, else checks the borrowed guard and ends it at once.
    fn read(&mut self, r: usize, hold: bool, blocking: bool) {
        let expected = self.predict_read(r);
        let reader = &self.readers[r].reader;
        let got = if blocking {
            reader.next_unit(Duration::ZERO).map(Some)
        } else {
            reader.try_next_unit()
        };
        match (expected, got) {
            (Ok(expected), Ok(Some(unit))) => {
                self.check_unit(&unit, &expected);
                if hold {
                    let mut expected = expected;
                    expected.slot = self.readers[r].slot;
                    self.held.push((unit.into_owned(), expected));
                } else {
                    unit.end_unit();
                }
            }
            (Err(false), Ok(None)) if !blocking => {}
            (Err(false), Err(Error::Timeout { .. })) if blocking => {}
            (Err(true), Err(Error::Closed(Role::Writer))) => {}
            (expected, got) => panic!(
                "reader in slot {}: model says {expected:?}, reader says {got:?}",
                self.readers[r].slot
            ),
        }
    }

    fn end(&mut self, i: usize) {
        let (unit, expected) = self.held.remove(i);
        self.check_unit(&unit, &expected);
        unit.end_unit();
    }

    /// Takes and ends everything with a fresh reader, then drops every writer: the region is
    /// empty and closed.
    fn finish(mut self) {
        // Held units first: they may keep every reader slot attached.
        while !self.held.is_empty() {
            self.end(self.held.len() - 1);
        }
        if self.readers.is_empty() {
            self.new_reader();
        }
        loop {
            let expected = self.predict_read(0);
            let got = self.readers[0].reader.try_next_unit();
            match (expected, got) {
                (Ok(expected), Ok(Some(unit))) => self.check_unit(&unit, &expected),
                (Err(false), Ok(None)) | (Err(true), Err(Error::Closed(Role::Writer))) => break,
                (expected, got) => panic!("drain: model says {expected:?}, reader says {got:?}"),
            }
            self.check();
        }
        while !self.held.is_empty() {
            self.end(self.held.len() - 1);
        }
        while !self.writers.is_empty() {
            self.drop_writer(0);
        }
        self.check();
        for lane in 0..self.lanes {
            let c = self.region.lane_cursors(lane).unwrap();
            assert!(c.head == c.tail && c.tail == c.claim, "lane {lane}: {c:?}");
        }
        // No writer is left: closed for every reader, unless none ever attached (then the
        // region is merely empty).
        let ever = self.model.iter().any(|l| l.ever);
        for handle in &self.readers {
            let got = handle.reader.try_next_unit();
            if ever {
                assert!(matches!(got, Err(Error::Closed(Role::Writer))), "{got:?}");
            } else {
                assert!(matches!(got, Ok(None)), "{got:?}");
            }
        }
    }

    /// The invariants that hold between any two operations.
    fn check(&self) {
        for lane in 0..self.lanes {
            let c = self.region.lane_cursors(lane).unwrap();
            let head = self.model[lane as usize].head;
            assert_eq!(
                (c.head, c.tail, c.claim),
                (head, self.tail(lane), self.claim(lane)),
                "lane {lane}: cursors (head, tail, claim)"
            );
            assert!(c.head - c.tail <= self.cap);
            // Every unit not ended lies in [tail, head) and no two overlap; the claimed ones
            // are exactly those before the claim cursor.
            let mut ranges: Vec<(u64, u64)> = self
                .held
                .iter()
                .filter(|(_, e)| e.lane == lane)
                .map(|(u, _)| (u.position(), u.span()))
                .chain(
                    self.model[lane as usize]
                        .queue
                        .iter()
                        .map(|e| (e.start, e.span)),
                )
                .collect();
            ranges.sort_unstable();
            for w in ranges.windows(2) {
                assert!(
                    w[0].0 + w[0].1 <= w[1].0,
                    "lane {lane}: units {w:?} overlap"
                );
            }
            if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
                assert!(first.0 >= c.tail && last.0 + last.1 <= c.head);
            }
            for (unit, _) in self.held.iter().filter(|(_, e)| e.lane == lane) {
                assert!(
                    unit.position() < c.claim,
                    "a held unit lies before the claim"
                );
            }
        }
        assert_eq!(self.region.lane_cursors(self.lanes), None);
        assert_eq!(
            Some(self.region.cursors()),
            self.region.lane_cursors(0),
            "cursors() is lane 0's"
        );
        for (writer, lane) in &self.writers {
            assert_eq!(writer.lane(), *lane);
        }
        for (unit, expected) in &self.held {
            self.check_unit(unit, expected);
        }
    }

    /// A unit is where the model put it and holds what was written, untouched by any write
    /// since (in its own lane or another).
    fn check_unit(&self, unit: &impl Held, expected: &Expected) {
        assert_eq!(
            (unit.lane(), unit.position(), unit.span()),
            (expected.lane, expected.start, expected.span),
            "unit (lane, position, span)"
        );
        assert_eq!(unit.blob_count(), expected.blobs.len());
        let base = &self.bases[expected.lane as usize];
        for (i, (pos, data)) in expected.blobs.iter().enumerate() {
            let blob = unit.blob(i).unwrap();
            assert!(
                blob == data.as_slice(),
                "blob {i} of the unit at ({}, {}) ({} bytes) differs from what was written",
                expected.lane,
                expected.start,
                data.len()
            );
            if !blob.is_empty() {
                check_address(base, self.cap, blob.as_ptr() as usize, *pos);
            }
        }
        let all = unit.blobs();
        assert_eq!(all.len(), expected.blobs.len());
        for (got, (_, data)) in all.into_iter().zip(&expected.blobs) {
            assert!(got.unwrap() == data.as_slice());
        }
        assert!(matches!(
            unit.blob(expected.blobs.len()),
            Err(Error::InvalidArgument(_))
        ));
        // Lanes do not overlap: every pair of known lane starts is a lane apart at least.
        let bases: Vec<usize> = self.bases.iter().filter_map(Cell::get).collect();
        for (i, a) in bases.iter().enumerate() {
            for b in &bases[i + 1..] {
                assert!(a.abs_diff(*b) >= self.cap as usize, "lanes overlap");
            }
        }
    }
}

/// A blob at `addr` (writer or reader side) that the model put at position `pos` of a lane is
/// 64-aligned and at offset `pos % cap` of the lane; the first one seen fixes where the lane is.
fn check_address(base: &Cell<Option<usize>>, cap: u64, addr: usize, pos: u64) {
    assert_eq!(addr % ALIGN as usize, 0, "blob alignment");
    let lane_base = base.get().unwrap_or(addr - (pos % cap) as usize);
    base.set(Some(lane_base));
    assert_eq!(addr - lane_base, (pos % cap) as usize, "blob placement");
}

/// One step of a random sequence. Handles are picked by index among those attached now; a
/// step naming a kind of handle or unit of which there is none does nothing.
#[derive(Debug, Clone)]
enum Op {
    /// Write a unit; `commit: false` aborts it; `blocking`: `begin_unit` with a zero timeout
    /// instead of `try_begin_unit`.
    Write {
        w: Index,
        blobs: Vec<BlobSpec>,
        commit: bool,
        keep_going: bool,
        blocking: bool,
    },
    /// Take the next unit; `hold` it (owned) or end it at once (borrowed); `blocking`:
    /// `next_unit` with a zero timeout instead of `try_next_unit`.
    Read {
        r: Index,
        hold: bool,
        blocking: bool,
    },
    /// End one held unit, any one.
    End(Index),
    DropWriter(Index),
    NewWriter,
    DropReader(Index),
    NewReader,
}

/// Blob lengths: mostly small, some big, some around the one-blob limit (`cap / 2 - 64`).
fn blob_len(cap: u64) -> impl Strategy<Value = usize> {
    let limit = (cap / 2 - ALIGN) as usize;
    prop_oneof![
        1 => Just(0usize),
        10 => 1..=256usize,
        4 => 257..=1500usize,
        1 => (limit - 128)..=(limit + 64),
    ]
}

fn op(cap: u64) -> impl Strategy<Value = Op> {
    let write = (
        any::<Index>(),
        prop::collection::vec((blob_len(cap), any::<bool>()), 0..=3),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(w, blobs, commit, keep_going, blocking)| Op::Write {
            w,
            blobs,
            commit,
            keep_going,
            blocking,
        });
    let read = (
        any::<Index>(),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(r, hold, blocking)| Op::Read { r, hold, blocking });
    prop_oneof![
        12 => write,
        10 => read,
        8 => any::<Index>().prop_map(Op::End),
        1 => any::<Index>().prop_map(Op::DropWriter),
        1 => Just(Op::NewWriter),
        1 => any::<Index>().prop_map(Op::DropReader),
        1 => Just(Op::NewReader),
    ]
}

/// A region and a sequence to run on it.
#[derive(Debug, Clone)]
struct Scenario {
    /// Bytes per lane.
    cap: u64,
    /// Writer (lane) and reader limits.
    lanes: u32,
    readers: u32,
    /// Handles attached before the first step (none: the region is not closed for readers
    /// before a writer attached, nor for writers before a reader did).
    first_writers: u32,
    first_readers: u32,
    ops: Vec<Op>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let steps = if cfg!(miri) {
        20..=30usize
    } else {
        1..=300usize
    };
    (
        prop::sample::select(vec![4096u64, 8192]),
        1..=3u32,
        1..=3u32,
    )
        .prop_flat_map(move |(cap, lanes, readers)| {
            (
                0..=lanes,
                0..=readers,
                prop::collection::vec(op(cap), steps.clone()),
            )
                .prop_map(move |(first_writers, first_readers, ops)| Scenario {
                    cap,
                    lanes,
                    readers,
                    first_writers,
                    first_readers,
                    ops,
                })
        })
}

fn config() -> ProptestConfig {
    common::config::proptest_config("proptest-regressions/mpmc_model.txt")
}

fn run(s: &Scenario) {
    let mut h = Harness::new(s.cap, s.lanes, s.readers);
    for _ in 0..s.first_writers {
        h.new_writer();
    }
    for _ in 0..s.first_readers {
        h.new_reader();
    }
    h.check();
    for op in &s.ops {
        match op {
            Op::Write {
                w,
                blobs,
                commit,
                keep_going,
                blocking,
            } => {
                if !h.writers.is_empty() {
                    let w = w.index(h.writers.len());
                    h.write(w, blobs, *commit, *keep_going, *blocking);
                }
            }
            Op::Read { r, hold, blocking } => {
                if !h.readers.is_empty() {
                    h.read(r.index(h.readers.len()), *hold, *blocking);
                }
            }
            Op::End(i) => {
                if !h.held.is_empty() {
                    h.end(i.index(h.held.len()));
                }
            }
            Op::DropWriter(w) => {
                if !h.writers.is_empty() {
                    h.drop_writer(w.index(h.writers.len()));
                }
            }
            Op::NewWriter => h.new_writer(),
            Op::DropReader(r) => {
                if !h.readers.is_empty() {
                    h.drop_reader(r.index(h.readers.len()));
                }
            }
            Op::NewReader => h.new_reader(),
        }
        h.check();
    }
    h.finish();
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mpmc_matches_model(s in scenario()) {
        run(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// Dead reader in a slot that a clean reader left: a regression found while writing the model
// ---------------------------------------------------------------------------------------------

/// Names what a child process does; absent in a normal test run.
const CHILD_ENV: &str = "SHM_ARENA_MPMC_MODEL_CHILD";

/// Entry point of the child process of [`takeover_keeps_units_of_a_clean_reader`], started
/// with `--ignored --exact child_main`; does nothing when run by hand.
#[test]
#[ignore = "child-process entry point, started by the other tests"]
fn child_main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Err(_) => {}
        // Attach a reader (taking the first free or detached slot), then die holding it.
        Ok("reader_dies") => {
            let region = Region::from_env().unwrap();
            match region.reader() {
                Ok(reader) => std::mem::forget(reader),
                Err(Error::RoleTaken { .. }) => std::process::exit(RESULT_ROLE_TAKEN),
                Err(e) => panic!("child reader: {e}"),
            }
            std::process::exit(0);
        }
        Ok(other) => panic!("unknown child role {other:?}"),
    }
}

/// Exit code of a child whose `region.reader()` found every slot taken.
const RESULT_ROLE_TAKEN: i32 = 3;

/// Runs [`child_main`] as `role` on `region`, waits (at most 60 s) for it to exit, and returns
/// its exit code.
fn run_child(region: &Region, role: &str) -> Option<i32> {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut command = std::process::Command::new(exe);
    command
        .args(["--ignored", "--exact", "child_main", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .stdout(std::process::Stdio::null());
    region.share_with_child(&mut command).unwrap();
    let mut child = command.spawn().expect("spawning a child process");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {role} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    status.code()
}

/// Regression (found by this model's author): a claimed unit is tagged with its reader's
/// *slot*. Before the fix, a reader that detached cleanly left its owned units tagged with a
/// slot the next reader could take; if that reader died, the survivor that cleaned up after it
/// released the first reader's live units and the writer overwrote them. Now owned units keep
/// their slot attached: the slot cannot be taken until they are gone.
#[test]
#[cfg_attr(miri, ignore = "starts a child process")]
fn takeover_keeps_units_of_a_clean_reader() {
    let region = Region::create_with(RegionOptions::new(4096).mpmc(1, 1)).unwrap();
    let mut writer = region.writer().unwrap();
    let first = region.reader().unwrap();
    writer.write_unit(&[&[7; 1000]]).unwrap();
    let held = first.try_next_unit().unwrap().unwrap().into_owned();
    let (start, span) = (held.position(), held.span());
    // A clean detach: `held` stays valid, keeps its space, and keeps the slot.
    drop(first);
    assert_eq!(run_child(&region, "reader_dies"), Some(RESULT_ROLE_TAKEN));
    assert!(matches!(
        region.reader(),
        Err(Error::RoleTaken {
            role: Role::Reader,
            ..
        })
    ));
    // The writer fills the lane around the held unit; it never reuses its bytes.
    while let Ok(mut unit) = writer.try_begin_unit() {
        if unit.push(&[8; 1000]).is_err() || unit.commit().is_err() {
            break;
        }
    }
    assert_eq!(region.lane_cursors(0).unwrap().tail, start);
    assert_eq!(held.blob(0).unwrap(), &[7; 1000][..]);
    // Once it is ended, the slot is free: a child takes it and dies holding it (no unit), and
    // taking over the dead slot releases nothing that anyone still holds.
    drop(held);
    assert_eq!(run_child(&region, "reader_dies"), Some(0));
    assert!(!region.peer_alive(Role::Reader));
    let survivor = region.reader().unwrap();
    let c = region.lane_cursors(0).unwrap();
    assert_eq!(c.tail, start + span, "only the ended unit was returned");
    let mut seen = 0;
    while let Some(unit) = survivor.try_next_unit().unwrap() {
        assert_eq!(unit.blob(0).unwrap(), &[8; 1000][..]);
        seen += 1;
    }
    assert!(seen > 0);
}
