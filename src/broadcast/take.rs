//! A subscriber's side: taking units in commit order, noticing a lap (leaky), and ending units
//! in any order. Ends are kept in process-private memory: the records are shared by every
//! subscriber, so a subscriber marks nothing in them; only its pin is shared.

use std::collections::VecDeque;

use super::policy::Policy;
use crate::layout::{BLOB_ALIGN, UNPINNED};
use crate::ring::participants::check_writers;
use crate::ring::view::View;
use crate::storage::{Storage, Store};
use crate::sync::{fence, Ordering};
use crate::wait::{wake_if_waiting, Signal};
use crate::{Error, Result};

use super::seqlock;

/// Where a subscriber is, and what it holds. Behind the subscriber's own lock: units end on any
/// thread.
#[derive(Debug)]
pub(crate) struct Cursor {
    policy: Policy,
    slot: u32,
    /// Position of the next unit to take.
    next: u64,
    /// Units committed before `next`.
    seq: u64,
    /// The head as last loaded: it never moves back.
    head_seen: u64,
    /// Units taken and not ended, oldest first, with whether each has ended (a unit ended out
    /// of order waits here until the ones before it end).
    taken: VecDeque<(u64, bool)>,
    /// The pin as last stored.
    pin: u64,
}

impl Cursor {
    /// A subscriber starting at `next`, with `seq` units before it.
    pub(crate) fn new(policy: Policy, slot: u32, next: u64, seq: u64) -> Cursor {
        Cursor {
            policy,
            slot,
            next,
            seq,
            head_seen: next,
            taken: VecDeque::new(),
            pin: match policy {
                Policy::Backpressure => next,
                Policy::Leaky => UNPINNED,
            },
        }
    }

    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// Takes the next committed unit, if there is one.
    ///
    /// # Errors
    /// [`Error::Lagged`] once after a leaky subscriber was lapped (it moved to the oldest unit
    /// still in the ring); [`Error::Closed`] / [`Error::PeerGone`] once the writer is gone and
    /// every unit it committed was taken; [`Error::Corrupt`] for impossible cursors or records.
    pub(crate) fn take(&mut self, store: &Store) -> Result<Option<View>> {
        let lane = store.lane(0);
        let pos = self.next;
        if self.policy == Policy::Leaky {
            if self.taken.is_empty() {
                // Relaxed: the fence below orders it before the tail load (and pairs with the
                // writer's fence after it publishes a tail, see `Reclaimer::reclaim`).
                store
                    .reader_slot(self.slot)
                    .pin
                    .store(pos, Ordering::Relaxed);
                self.pin = pos;
            }
            // SeqCst fence (F_s): pairs with the writer's F_w. Our pin (stored now, or before an
            // earlier F_s while we hold a unit) is at or below `pos`: either the writer's scan
            // sees it and reuses nothing from it on, or we see its new tail below.
            fence(Ordering::SeqCst);
            // Acquire: pairs with the Release tail store in `seqlock::publish`.
            let tail = lane.tail.0.load(Ordering::Acquire);
            if tail > pos {
                return Err(self.lapped(store));
            }
        }
        // Acquire (in `check_writers`): pairs with the writer's Release detach; loaded before
        // the head, so that a writer seen gone comes with its final head.
        let gone = check_writers(store, false).err();
        // Acquire: pairs with the Release head store in `UnitWriter::commit`: the records and
        // blobs before it are visible.
        let head = lane.head.0.load(Ordering::Acquire);
        if head < self.head_seen || head % BLOB_ALIGN != 0 {
            return Err(Error::corrupt(
                format!("head cursor {head} moved back from {}", self.head_seen),
                pos,
            ));
        }
        self.head_seen = head;
        if head <= pos {
            self.unpin_if_idle(store);
            return match gone {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        // A backpressure subscriber is never more than a ring behind (it pins `pos`); a leaky
        // one may be, but then the tail is past `pos` and it did not get here.
        let view = View::read(store, 0, pos, head.min(pos + store.capacity()))?;
        self.next = pos + view.span;
        self.seq += 1;
        self.taken.push_back((pos, false));
        // Relaxed: for people reading the header only.
        store
            .reader_slot(self.slot)
            .cursor
            .store(self.next, Ordering::Relaxed);
        Ok(Some(view))
    }

    /// The lap of a leaky subscriber: moves to the published tail and counts what it missed.
    fn lapped(&mut self, store: &Store) -> Error {
        let (tail, seq) = match seqlock::read(store) {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        if tail <= self.next || tail % BLOB_ALIGN != 0 || seq < self.seq {
            return Error::corrupt(
                format!(
                    "broadcast tail {tail} with {seq} units before it, for a subscriber at {} \
                     with {} units before it",
                    self.next, self.seq
                ),
                tail,
            );
        }
        let missed = seq - self.seq;
        self.next = tail;
        self.seq = seq;
        self.head_seen = self.head_seen.max(tail);
        self.unpin_if_idle(store);
        Error::Lagged { missed }
    }

    /// A leaky subscriber that holds no unit pins nothing between takes, so the writer never
    /// waits for its pace.
    fn unpin_if_idle(&mut self, store: &Store) {
        if self.policy == Policy::Leaky && self.taken.is_empty() && self.pin != UNPINNED {
            self.pin = UNPINNED;
            // Relaxed: nothing was read under this pin (a later pin comes with its own fence).
            store
                .reader_slot(self.slot)
                .pin
                .store(UNPINNED, Ordering::Relaxed);
            // SeqCst fence: pairs with the fence of a writer about to sleep in `wait_for`: one
            // that saw our pin while we looked for a unit is woken.
            fence(Ordering::SeqCst);
            wake_if_waiting(store, Signal::Space(0));
        }
    }

    /// Ends the unit taken at `start`: the pin moves past every unit ended in order, and the
    /// writer is woken if it may be waiting for that.
    pub(crate) fn end(&mut self, store: &Store, start: u64) {
        let Some(entry) = self.taken.iter_mut().find(|(s, _)| *s == start) else {
            debug_assert!(false, "unit at {start} ended twice or never taken");
            return;
        };
        entry.1 = true;
        while self.taken.front().is_some_and(|&(_, ended)| ended) {
            self.taken.pop_front();
        }
        let pin = match (self.taken.front(), self.policy) {
            (Some(&(oldest, _)), _) => oldest,
            (None, Policy::Backpressure) => self.next,
            (None, Policy::Leaky) => UNPINNED,
        };
        if pin == self.pin {
            return;
        }
        debug_assert!(pin > self.pin || self.pin == UNPINNED || pin == UNPINNED);
        self.pin = pin;
        // Release: pairs with the writer's Acquire pin loads (`slots::min_pin`): our reads of
        // the units below the new pin happen before the writer reuses their bytes.
        store
            .reader_slot(self.slot)
            .pin
            .store(pin, Ordering::Release);
        // SeqCst fence: pairs with the fence of a writer about to sleep in `wait_for` (armed,
        // then its poll loads the pins), so the wake-up is not lost.
        fence(Ordering::SeqCst);
        wake_if_waiting(store, Signal::Space(0));
    }
}
