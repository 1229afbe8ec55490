//! Loom models of the broadcast protocol of `docs/BROADCAST.md` (issue 18) on a miniature of
//! it, written before the code existed (`broadcast.rs` models the crate's own code): a ring of
//! two one-word slots addressed by unit
//! number (a position is a unit index here; real positions are byte offsets, which changes
//! nothing in the handshakes), the writer's reclaim limit `tail`, each backpressure
//! subscriber's ended prefix and each leaky subscriber's `hold`, with exactly the orderings
//! and fences the design names. Every slot is a loom `UnsafeCell`, so a subscriber reading a
//! slot the writer is overwriting (or a write racing a held view) is a causality violation,
//! and every value read is checked against the unit number it must be.
//!
//! Removing either SeqCst fence of the leaky handshake (F_w in `write`, F_s in `read_leaky`)
//! makes `broadcast_backpressure_and_leaky_lap_protocol` fail with a causality violation on a slot.

#![cfg(shm_arena_loom)]

use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use loom::sync::{Condvar, Mutex};
use loom::thread;
use loom_tests::model;

/// Ring slots: unit `u` lives in slot `u % CAP`.
const CAP: u64 = 2;
/// Nothing held (a leaky subscriber's `hold`).
const NONE: u64 = u64::MAX;

/// A futex stand-in: waiters re-check their condition under the lock, wakers take the lock
/// after their store, so no wake-up is lost (loom cannot explore spin loops).
#[derive(Default)]
struct Bell {
    lock: Mutex<()>,
    cv: Condvar,
}

impl Bell {
    fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        let mut guard = self.lock.lock().unwrap();
        while !ready() {
            guard = self.cv.wait(guard).unwrap();
        }
    }

    fn ring(&self) {
        let _guard = self.lock.lock().unwrap();
        self.cv.notify_all();
    }
}

/// The shared words of a broadcast lane with `bp` backpressure and `leaky` leaky subscribers.
struct Lane {
    slots: [UnsafeCell<u64>; CAP as usize],
    /// Every unit before it is committed (Release store by the writer).
    head: AtomicU64,
    /// Reclaim limit: units before it may be overwritten (Release store by the writer).
    tail: AtomicU64,
    /// Per backpressure subscriber: every unit before it was ended.
    ended: Vec<AtomicU64>,
    /// Per backpressure subscriber: attached (the participant slot's state).
    attached: Vec<AtomicBool>,
    /// Per leaky subscriber: the oldest unit it holds a view of, or [`NONE`].
    hold: Vec<AtomicU64>,
    /// Subscribers wait on it for data.
    data: Bell,
    /// The writer waits on it for space.
    space: Bell,
}

// SAFETY: the slots are touched only as the protocol under test allows; loom reports any
// access it does not order as a causality violation, which is what these models check.
unsafe impl Sync for Lane {}

impl Lane {
    /// `bp` backpressure subscribers (attached from the start unless `late`) and `leaky`
    /// leaky ones.
    fn new(bp: usize, leaky: usize, late: bool) -> Lane {
        Lane {
            slots: [UnsafeCell::new(u64::MAX), UnsafeCell::new(u64::MAX)],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            ended: (0..bp).map(|_| AtomicU64::new(0)).collect(),
            attached: (0..bp).map(|_| AtomicBool::new(!late)).collect(),
            hold: (0..leaky).map(|_| AtomicU64::new(NONE)).collect(),
            data: Bell::default(),
            space: Bell::default(),
        }
    }

    /// The writer publishing `units` units, reclaiming space as `docs/BROADCAST.md` says.
    fn write(&self, units: u64) {
        for u in 0..units {
            // Unit u reuses the slot of unit u - CAP: every unit before u + 1 - CAP must be
            // reclaimable.
            let want = (u + 1).saturating_sub(CAP);
            self.space.wait_until(|| {
                if self.slowest() < want {
                    return false;
                }
                // Release: pairs with the Acquire tail load of leaky subscribers.
                self.tail.store(want, Ordering::Release);
                // F_w. SeqCst fence: pairs with F_s in `read_leaky` (tail stored, then holds
                // loaded; hold stored, then tail loaded: one side sees the other) and with
                // the fence of `join_backpressure` (our head stores before it, the slots
                // loaded after it; its slot stored, then the head loaded).
                fence(Ordering::SeqCst);
                // Acquire: pairs with the Release hold stores of `read_leaky` that raise it.
                // A held view pins the ring: wait for it to be ended.
                self.slowest() >= want
                    && self.hold.iter().all(|h| h.load(Ordering::Acquire) >= want)
            });
            // SAFETY (model): the reclaim limit above says no subscriber reads this slot.
            self.slots[(u % CAP) as usize].with_mut(|p| unsafe { *p = u });
            // Release: pairs with the Acquire head loads of subscribers.
            self.head.store(u + 1, Ordering::Release);
            self.data.ring();
        }
    }

    /// The ended prefix of the slowest attached backpressure subscriber (`u64::MAX`: none).
    fn slowest(&self) -> u64 {
        self.ended
            .iter()
            .zip(&self.attached)
            // Acquire: pairs with the Release store in `join_backpressure`.
            .filter(|(_, a)| a.load(Ordering::Acquire))
            // Acquire: pairs with the Release `ended` stores of backpressure subscribers:
            // their reads of the units they ended happen before we overwrite them.
            .map(|(e, _)| e.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A backpressure subscriber attaching while the writer runs: it starts at the head it
    /// loads after its fence, and reads every unit from there to `units - 1`; returns where
    /// it started.
    fn join_backpressure(&self, me: usize, units: u64) -> u64 {
        // Acquire: pairs with the writer's Release head store.
        let guess = self.head.load(Ordering::Acquire);
        self.ended[me].store(guess, Ordering::Relaxed);
        // Release: pairs with the writer's Acquire load in `slowest` (it then sees `guess`).
        self.attached[me].store(true, Ordering::Release);
        // SeqCst fence: pairs with F_w in `write`.
        fence(Ordering::SeqCst);
        // Acquire: pairs with the writer's Release head store.
        let start = self.head.load(Ordering::Acquire);
        // Release: pairs with the writer's Acquire load in `slowest`.
        self.ended[me].store(start, Ordering::Release);
        self.space.ring();
        for u in start..units {
            // Acquire: pairs with the writer's Release head store.
            self.data
                .wait_until(|| self.head.load(Ordering::Acquire) > u);
            // SAFETY (model): u is committed and not ended, so not reclaimable.
            let v = self.slots[(u % CAP) as usize].with(|p| unsafe { *p });
            assert_eq!(v, u, "late subscriber {me} read a wrong unit");
            // Release: as in `read_backpressure`.
            self.ended[me].store(u + 1, Ordering::Release);
            self.space.ring();
        }
        start
    }

    /// A backpressure subscriber reading every unit, in order; `batch` units are held at
    /// once and ended out of order (the last taken first), tracked privately.
    fn read_backpressure(&self, me: usize, units: u64, batch: u64) {
        let mut next = 0;
        while next < units {
            let take = batch.min(units - next);
            // Acquire: pairs with the writer's Release head store.
            self.data
                .wait_until(|| self.head.load(Ordering::Acquire) >= next + take);
            for u in next..next + take {
                // SAFETY (model): u is committed and not yet ended, so not reclaimable.
                let v = self.slots[(u % CAP) as usize].with(|p| unsafe { *p });
                assert_eq!(v, u, "backpressure subscriber {me} read a wrong unit");
            }
            // Ends in reverse: only the end of the unit at the ended prefix moves it, past
            // every unit ended before (kept privately); here that is the last end.
            next += take;
            // Release: pairs with the writer's Acquire load of `ended`.
            self.ended[me].store(next, Ordering::Release);
            self.space.ring();
        }
    }

    /// A leaky subscriber that reads until it passed unit `units - 1`, as fast or as slowly
    /// as loom schedules it, holding up to `batch` units at once (its `hold` stays at the
    /// oldest); returns (units delivered in order, units reported missed).
    fn read_leaky(&self, me: usize, units: u64, batch: usize) -> (Vec<u64>, u64) {
        let (mut c, mut missed, mut got) = (0, 0, Vec::new());
        // The units this subscriber holds, in process-private memory.
        let mut held = Vec::new();
        let end_all = |held: &mut Vec<u64>| {
            if held.is_empty() {
                return;
            }
            // Out of order: only the end of the oldest moves `hold`, to the oldest unit still
            // held, which is none once all are ended.
            held.clear();
            // Release: pairs with the writer's Acquire hold load: our reads happen before
            // the slots are reused.
            self.hold[me].store(NONE, Ordering::Release);
            self.space.ring();
        };
        while c < units {
            if held.is_empty() {
                // Relaxed: F_s orders it before the tail load.
                self.hold[me].store(c, Ordering::Relaxed);
                // F_s. SeqCst fence: pairs with F_w in `write`.
                fence(Ordering::SeqCst);
            }
            // Else `hold` (the oldest unit held, <= c) was published before an earlier F_s.
            // Acquire: pairs with the writer's Release tail store.
            let tail = self.tail.load(Ordering::Acquire);
            if tail > c {
                missed += tail - c;
                c = tail;
                continue;
            }
            // Acquire: pairs with the writer's Release head store.
            if self.head.load(Ordering::Acquire) <= c {
                // Nothing held while waiting (so the writer may lap us): end what we hold, and
                // drop the `hold = c` published above.
                held.clear();
                // Release: as in `end_all`.
                self.hold[me].store(NONE, Ordering::Release);
                self.space.ring();
                // Acquire: as above.
                self.data
                    .wait_until(|| self.head.load(Ordering::Acquire) > c);
                continue;
            }
            // SAFETY (model): hold <= c before F_s and tail <= c after it: not reclaimable.
            let v = self.slots[(c % CAP) as usize].with(|p| unsafe { *p });
            assert_eq!(v, c, "leaky subscriber {me} read a unit being overwritten");
            got.push(v);
            held.push(c);
            c += 1;
            if held.len() == batch {
                end_all(&mut held);
            }
        }
        end_all(&mut held);
        (got, missed)
    }
}

/// One writer, two backpressure subscribers, three units through a two-slot ring: each
/// subscriber sees every unit in order, and the writer never overwrites a unit either still
/// holds (the second subscriber holds two at once and ends them out of order).
#[test]
fn broadcast_two_backpressure_protocol() {
    model("broadcast_two_backpressure_protocol", || {
        const UNITS: u64 = 3;
        let lane = Arc::new(Lane::new(2, 0, false));
        let a = Arc::clone(&lane);
        let ta = thread::spawn(move || a.read_backpressure(0, UNITS, 1));
        let b = Arc::clone(&lane);
        let tb = thread::spawn(move || b.read_backpressure(1, UNITS, 2));
        lane.write(UNITS);
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// One writer, one backpressure and one leaky subscriber, four units through a two-slot
/// ring, so the writer may lap the leaky subscriber: it never reads a unit being
/// overwritten, never sees a unit twice or out of order, and its lag count is exact
/// (delivered + missed = every unit).
#[test]
fn broadcast_backpressure_and_leaky_lap_protocol() {
    model("broadcast_backpressure_and_leaky_lap_protocol", || {
        const UNITS: u64 = 4;
        let lane = Arc::new(Lane::new(1, 1, false));
        let a = Arc::clone(&lane);
        let ta = thread::spawn(move || a.read_backpressure(0, UNITS, 1));
        let b = Arc::clone(&lane);
        let tb = thread::spawn(move || b.read_leaky(0, UNITS, 1));
        lane.write(UNITS);
        ta.join().unwrap();
        let (got, missed) = tb.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
        assert_eq!(
            got.len() as u64 + missed,
            UNITS,
            "lag count: {got:?} {missed}"
        );
    });
}

/// A backpressure subscriber attaching while the writer publishes three units through a
/// two-slot ring with nobody else attached (so the writer does not wait for anybody before
/// it): it reads every unit from where it started, none of them being overwritten.
#[test]
fn broadcast_late_join_protocol() {
    model("broadcast_late_join_protocol", || {
        const UNITS: u64 = 3;
        let lane = Arc::new(Lane::new(1, 0, true));
        let a = Arc::clone(&lane);
        let ta = thread::spawn(move || a.join_backpressure(0, UNITS));
        lane.write(UNITS);
        assert!(ta.join().unwrap() <= UNITS);
    });
}

/// One writer and one leaky subscriber that holds two units at once (a whole two-slot ring),
/// four units: the views it holds pin the ring (the writer waits for them, not for its
/// reading pace), and it skips exactly what the writer reclaimed while it held nothing.
#[test]
fn broadcast_leaky_holds_two_protocol() {
    model("broadcast_leaky_holds_two_protocol", || {
        const UNITS: u64 = 4;
        let lane = Arc::new(Lane::new(0, 1, false));
        let b = Arc::clone(&lane);
        let tb = thread::spawn(move || b.read_leaky(0, UNITS, 2));
        lane.write(UNITS);
        let (got, missed) = tb.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
        assert_eq!(
            got.len() as u64 + missed,
            UNITS,
            "lag count: {got:?} {missed}"
        );
    });
}
