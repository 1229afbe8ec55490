//! A participant slot's word: who holds a role, whether the holder is attached, and whether its
//! process still runs.
//!
//! Every writer handle holds one lane's writer slot, every reader handle one reader slot, in
//! both modes. A slot's `state` word is `pid << 32 | takeovers << 2 | SLOT_*`: attaching is one
//! compare-and-swap that names the new holder's process in the same store, so a process that
//! dies right after attaching is already known by its pid (a pid written separately, later,
//! would leave a slot that looks attached by nobody, and is never taken over). Taking over a
//! dead holder's slot bumps the takeover count so a stale compare-and-swap from an earlier
//! look fails. The holder's start time (to tell a reused pid apart) follows in a second word,
//! tagged with the low bits of the takeover count: a start time left by an earlier holder
//! does not match, and counts as unknown.

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

/// Bits of the state word below the holder's pid.
const PID_SHIFT: u32 = 32;
/// The takeover count's bits in the state word (above the two state bits).
const TAKEOVERS: u64 = (1 << (PID_SHIFT - 2)) - 1;
/// The start-time word: `generation << 48 | start time`.
const START_BITS: u32 = 48;

/// The low bits of a state word's takeover count, as the start-time word carries them.
fn generation(state: u64) -> u64 {
    (state >> 2) & 0xffff
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
            let pid = u32::try_from(state >> PID_SHIFT).unwrap_or(u32::MAX);
            if pid == 0 {
                // Never written by `attach`: a corrupt slot, treated as abandoned.
                return Presence::Dead(0);
            }
            // Acquire: pairs with the Release store in `attach`.
            let word = slot.start_time.load(Ordering::Acquire);
            let start = if word >> START_BITS == generation(state) {
                word & ((1 << START_BITS) - 1)
            } else {
                0 // not written yet by this holder: unknown
            };
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

/// A slot this process holds: the state word it attached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held(u64);

/// Takes `slot` for this process if it is free, detached, or held by a dead process.
/// Returns `None` if it was not taken, else the hold and whether a dead holder was displaced.
pub(crate) fn attach(slot: &Participant) -> Option<(Held, bool)> {
    // Acquire: pairs with the CAS below run by an earlier holder.
    let state = slot.state.load(Ordering::Acquire);
    let takeover = match state & 3 {
        SLOT_FREE | SLOT_DETACHED => false,
        _ => match presence(slot, true) {
            Presence::Dead(_) => true,
            _ => return None,
        },
    };
    let (pid, start) = process::me();
    let takeovers = ((state >> 2).wrapping_add(1)) & TAKEOVERS;
    let next = (u64::from(pid) << PID_SHIFT) | (takeovers << 2) | SLOT_ATTACHED;
    // AcqRel: the Acquire half orders our reads of the slot after the previous holder's
    // writes; the Release half publishes the takeover to `presence`.
    slot.state
        .compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    // Release: pairs with the Acquire start-time load in `presence`. Until it lands the start
    // time counts as unknown (the pid alone decides).
    slot.start_time.store(
        (generation(next) << START_BITS) | (start & ((1 << START_BITS) - 1)),
        Ordering::Release,
    );
    // Relaxed: for people reading the header; `presence` reads the pid in the state word.
    slot.pid.store(u64::from(pid), Ordering::Relaxed);
    Some((Held(next), takeover))
}

/// Whether the slot is still held as `held` says (not taken over since), by this process: a
/// handle that crossed a `fork` is a copy, and the slot stays its original holder's.
pub(crate) fn still_held(slot: &Participant, held: Held) -> bool {
    // Relaxed: a check of our own word; `detach` decides with a CAS.
    slot.state.load(Ordering::Relaxed) == held.0 && held.is_this_process()
}

impl Held {
    /// Whether this process attached the slot (not a process forked from it since).
    fn is_this_process(self) -> bool {
        self.0 >> PID_SHIFT == u64::from(process::me_pid())
    }
}

/// Marks a slot detached (a clean drop), unless another process took it over meanwhile (it
/// believed us dead): then the slot is theirs and stays as it is.
pub(crate) fn detach(slot: &Participant, held: Held) {
    if !held.is_this_process() {
        // A copy made by `fork`: the slot is the parent's.
        return;
    }
    // Release: pairs with the Acquire load in `presence`: everything we committed or released
    // happens before another participant sees us gone. Relaxed on failure: nothing to do.
    let _ = slot.state.compare_exchange(
        held.0,
        (held.0 & !3) | SLOT_DETACHED,
        Ordering::Release,
        Ordering::Relaxed,
    );
}

/// Under loom: marks the holder of `slot` dead, as if its process had been killed (its
/// handles must then never be used again; their drops leave the slot alone).
#[cfg(shm_arena_loom)]
pub(crate) fn model_kill(slot: &Participant) {
    // Acquire: pairs with the AcqRel CAS in `attach` (the word we rewrite is the holder's).
    let state = slot.state.load(Ordering::Acquire);
    let dead = (u64::from(process::MODEL_DEAD_PID) << PID_SHIFT) | (state & ((1 << PID_SHIFT) - 1));
    // Release: pairs with the Acquire load in `presence`.
    slot.state.store(dead, Ordering::Release);
}

/// The pid of the first of `n` slots that names one (for `RoleTaken`), else 0.
pub(crate) fn any_pid<'a>(n: u32, slot: impl Fn(u32) -> &'a Participant) -> u32 {
    (0..n)
        // Relaxed: only for an error message.
        .map(|i| slot(i).state.load(Ordering::Relaxed) >> PID_SHIFT)
        .find(|&p| p != 0)
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}

/// A state word for tests: attached by `pid`.
#[cfg(test)]
pub(crate) fn attached_by(pid: u64) -> u64 {
    (pid << PID_SHIFT) | SLOT_ATTACHED
}
