//! A participant slot's word: who holds a role, whether the holder is attached, and whether its
//! process still runs.
//!
//! Every writer handle holds one lane's writer slot, every reader handle one reader slot, in
//! both modes. A slot's `state` word is `takeovers << 2 | SLOT_*`; attaching is a
//! compare-and-swap on it, so two handles never hold the same slot, and taking over a dead
//! holder's slot bumps the takeover count so a stale compare-and-swap from an earlier look
//! fails.

use crate::layout::{Participant, SLOT_ATTACHED, SLOT_DETACHED, SLOT_FREE};
use crate::ring::process;
use crate::sync::Ordering;

/// What a participant slot says about its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Nobody ever attached.
    Free,
    /// A handle is attached and its process runs.
    Alive,
    /// A handle is attached but its process is gone.
    Dead(u32),
    /// The holder detached cleanly.
    Detached,
}

/// Reads a slot's holder; with `check_pid` false, an attached holder counts as alive (no
/// /proc look-up: the fast path).
pub(crate) fn presence(slot: &Participant, check_pid: bool) -> Presence {
    // Acquire: pairs with the AcqRel CAS in `attach` and the Release store in `detach`.
    let state = slot.state.load(Ordering::Acquire);
    match state & 3 {
        SLOT_FREE => Presence::Free,
        SLOT_DETACHED => Presence::Detached,
        SLOT_ATTACHED if check_pid => {
            // Acquire: pairs with the Release pid store in `set_pid`.
            let pid = slot.pid.load(Ordering::Acquire);
            // Relaxed: published by the pid store loaded above.
            let start = slot.start_time.load(Ordering::Relaxed);
            if pid == 0 {
                // Attached a moment ago: the pid is being written.
                return Presence::Alive;
            }
            let pid = u32::try_from(pid).unwrap_or(u32::MAX);
            if process::alive(pid, start) {
                Presence::Alive
            } else {
                Presence::Dead(pid)
            }
        }
        SLOT_ATTACHED => Presence::Alive,
        _ => Presence::Dead(0), // 3 is never written: treat a corrupt slot as abandoned
    }
}

/// Takes `slot` for this process if it is free, detached, or held by a dead process.
/// Returns whether it was taken and, when it was, whether a dead holder was displaced.
pub(crate) fn attach(slot: &Participant) -> Option<bool> {
    // Acquire: pairs with the CAS below run by an earlier holder.
    let state = slot.state.load(Ordering::Acquire);
    let takeover = match state & 3 {
        SLOT_FREE | SLOT_DETACHED => false,
        _ => match presence(slot, true) {
            Presence::Dead(_) => true,
            _ => return None,
        },
    };
    let next = ((state >> 2).wrapping_add(1) << 2) | SLOT_ATTACHED;
    // AcqRel: the Acquire half orders our reads of the slot after the previous holder's
    // writes; the Release half publishes the takeover to `presence`.
    slot.state
        .compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    Some(takeover)
}

/// Writes this process into a slot just taken.
pub(crate) fn set_pid(slot: &Participant) {
    let (pid, start) = process::me();
    // Relaxed: published by the Release pid store, which `presence` reads (Acquire) first.
    slot.start_time.store(start, Ordering::Relaxed);
    // Release: pairs with the Acquire pid load in `presence`.
    slot.pid.store(u64::from(pid), Ordering::Release);
}

/// Marks a slot detached (a clean drop).
pub(crate) fn detach(slot: &Participant) {
    // Acquire: pairs with our own attach (the word is ours alone while attached). Not
    // asserted to be ATTACHED: shared memory is untrusted (the fuzzer overwrites it), and
    // detaching is right whatever it says now.
    let state = slot.state.load(Ordering::Acquire);
    // Release: pairs with the Acquire load in `presence`: everything we committed or released
    // happens before another participant sees us gone.
    slot.state
        .store((state & !3) | SLOT_DETACHED, Ordering::Release);
}

/// The pid of the first of `n` slots that names one (for `RoleTaken`), else 0.
pub(crate) fn any_pid<'a>(n: u32, slot: impl Fn(u32) -> &'a Participant) -> u32 {
    (0..n)
        .map(|i| slot(i).pid.load(Ordering::Relaxed))
        .find(|&p| p != 0)
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}
