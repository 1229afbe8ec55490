//! Subscriber slots: attaching (at the head, knowing how many units lie before it), detaching,
//! the writer's scan of the pins, and detaching subscribers whose process died.

use super::policy::Policy;
use crate::error::Role;
use crate::layout::{
    Participant, POLICY_BACKPRESSURE, POLICY_LEAKY, SLOT_ATTACHED, SLOT_DETACHED, UNPINNED,
};
use crate::ring::presence::{any_pid, attach, detach, presence, still_held, Held, Presence};
use crate::storage::{Storage, Store};
use crate::sync::{fence, Ordering};
use crate::wait::{notify, wake_if_waiting, Signal};
use crate::{Error, Result};

use super::seqlock;
use super::units::each_unit;

/// Where a subscriber that just attached starts.
#[derive(Debug)]
pub(crate) struct Start {
    pub slot: u32,
    pub held: Held,
    /// The head when it attached: the first unit it sees.
    pub position: u64,
    /// Units committed before `position`.
    pub seq: u64,
}

/// Attaches a subscriber with `policy` to a free, detached or dead slot, at the current head.
///
/// The late-join handshake (docs/BROADCAST.md, "Attach, detach, death"): the pin is set to the
/// published tail `R` *after* the attach CAS, then a SeqCst fence, then the tail is loaded
/// again. If it is still `R`, the writer's scan after its next publication sees the pin (or
/// its fence came first and it published nothing past `R` yet), so nothing at or after `R` is
/// reused until the pin moves: the units from `R` to the head can be counted from their
/// records, which gives the unit count at the head. Then the pin moves to the head
/// (backpressure) or is dropped (leaky).
///
/// # Errors
/// [`Error::RoleTaken`] if every slot has a live subscriber; [`Error::Corrupt`] if the
/// cursors or the records between them are impossible (the slot is detached again).
pub(crate) fn attach_subscriber(store: &Store, policy: Policy) -> Result<Start> {
    let slots = store.geometry().readers;
    for pass in 0..2 {
        for slot in 0..slots {
            let words = store.reader_slot(slot);
            if pass == 0 && presence(&words.reader, false) == Presence::Alive {
                continue;
            }
            // Relaxed: published by the attach CAS below (AcqRel), which the writer's scan
            // loads with Acquire before it reads these words.
            words.policy.store(policy_word(policy), Ordering::Relaxed);
            words.pin.store(UNPINNED, Ordering::Relaxed);
            let Some((held, _takeover)) = attach(&words.reader) else {
                continue;
            };
            // A dead predecessor's units need no release: nothing of a subscriber's is shared
            // but its pin, which is ours now.
            return match join(store, slot, policy) {
                Ok((position, seq)) => Ok(Start {
                    slot,
                    held,
                    position,
                    seq,
                }),
                Err(e) => {
                    detach_subscriber(store, slot, held);
                    Err(e)
                }
            };
        }
    }
    Err(Error::RoleTaken {
        role: Role::Reader,
        pid: any_pid(slots, |i| &store.reader_slot(i).reader),
    })
}

/// The late join of an attached slot: returns the head and the unit count before it.
fn join(store: &Store, slot: u32, policy: Policy) -> Result<(u64, u64)> {
    let words = store.reader_slot(slot);
    let lane = store.lane(0);
    let (tail, seq) = loop {
        let (tail, seq) = seqlock::read(store)?;
        words.pin.store(tail, Ordering::Relaxed);
        // SeqCst fence: pairs with the writer's fence after it publishes a new tail
        // (`Reclaimer::reclaim`): either the writer's scan after that fence sees this pin, or
        // the tail load below sees the new tail and we pin again.
        fence(Ordering::SeqCst);
        // Acquire: pairs with the Release tail store in `seqlock::publish`.
        if lane.tail.0.load(Ordering::Acquire) == tail {
            break (tail, seq);
        }
    };
    // Acquire: pairs with the Release head store of the writer's commits: the records before
    // it are complete.
    let head = lane.head.0.load(Ordering::Acquire);
    // The pinned units, from the tail to the head: count them.
    let mut count = 0u64;
    each_unit(store, tail, head, |_| count += 1)?;
    words.cursor.store(head, Ordering::Relaxed);
    let pin = match policy {
        Policy::Backpressure => head,
        Policy::Leaky => UNPINNED,
    };
    // Release: pairs with the writer's Acquire pin loads in `min_pin`.
    words.pin.store(pin, Ordering::Release);
    // SeqCst fence: pairs with the fence of a writer about to sleep in `wait_for` (armed, then
    // its poll loads the pins): a writer that saw the pin at the tail is woken (loom found the
    // lost wake-up without this).
    fence(Ordering::SeqCst);
    wake_if_waiting(store, Signal::Space(0));
    Ok((head, seq + count))
}

/// Detaches subscriber `slot` if this handle still holds it, and wakes a writer that may be
/// waiting for it.
pub(crate) fn detach_subscriber(store: &Store, slot: u32, held: Held) {
    let words = store.reader_slot(slot);
    if !still_held(&words.reader, held) {
        return;
    }
    detach(&words.reader, held);
    notify(store, Signal::Space(0));
}

/// The lowest pin of the attached subscribers ([`UNPINNED`] if none pins anything): the
/// writer reuses no byte at or after it. Detached, free and dead-but-not-yet-detached slots:
/// a dead one counts until [`detach_dead`] runs (the writer calls it every poll slice).
pub(crate) fn min_pin(store: &Store) -> u64 {
    let mut min = UNPINNED;
    for slot in 0..store.geometry().readers {
        let words = store.reader_slot(slot);
        // Acquire (in `presence`): pairs with the AcqRel attach CAS, so the pin read next is
        // at least the one stored before it.
        if presence(&words.reader, false) == Presence::Alive {
            // Acquire: pairs with the subscriber's Release pin stores (its reads of the units
            // it no longer pins happen before we reuse their bytes).
            min = min.min(words.pin.load(Ordering::Acquire));
        }
    }
    min
}

/// Detaches the slots of subscribers whose process died, so that their pins no longer hold
/// the writer back. Only the slot's state changes (a CAS from the dead holder's exact state,
/// so a subscriber taking the slot over at the same time wins or loses cleanly).
pub(crate) fn detach_dead(store: &Store) {
    for slot in 0..store.geometry().readers {
        detach_if_dead(&store.reader_slot(slot).reader);
    }
}

/// Marks a slot detached if its holder died. The state is loaded before and after the liveness
/// check, and the CAS expects that exact word: a subscriber that took the slot over meanwhile
/// has another word (the takeover count is part of it), so it is never detached.
fn detach_if_dead(participant: &Participant) {
    // Acquire: pairs with the holder's AcqRel attach CAS.
    let state = participant.state.load(Ordering::Acquire);
    if state & 3 != SLOT_ATTACHED {
        return;
    }
    if !matches!(presence(participant, true), Presence::Dead(_)) {
        return;
    }
    // Release: pairs with the Acquire state loads of scans (`min_pin`) and attaches.
    let _ = participant.state.compare_exchange(
        state,
        (state & !3) | SLOT_DETACHED,
        Ordering::Release,
        Ordering::Relaxed,
    );
}

/// The policy word of a slot.
fn policy_word(policy: Policy) -> u64 {
    match policy {
        Policy::Backpressure => POLICY_BACKPRESSURE,
        Policy::Leaky => POLICY_LEAKY,
    }
}
