//! MPMC participants: who holds which lane and reader slot, who is alive, and cleaning up
//! after readers that died holding units.
//!
//! Every writer handle holds one lane, every reader handle one reader slot. A slot's `state`
//! word is `takeovers << 2 | SLOT_*`; attaching is a compare-and-swap on it, so two handles
//! never hold the same slot, and taking over a dead holder's slot bumps the takeover count so a
//! stale compare-and-swap from an earlier look fails.
//!
//! # Dead readers
//!
//! A reader claims a unit in three steps (see `claim.rs`): it publishes its *intent*
//! (`position | lane + 1`) in its slot, moves the lane's claim cursor with a CAS, then tags the
//! unit's record with `CLAIMED_BASE + slot` and clears the intent. A reader that dies holds
//! units that are either tagged with its slot, or (if it died between the CAS and the tag)
//! untagged below the claim cursor with its intent naming them. [`reap_lane`] marks such units
//! RELEASED, so the tail moves over them and the writer gets its space back; they are lost,
//! not redelivered.
//!
//! The untagged case is ambiguous only in appearance: a live reader whose CAS won the same unit
//! published the same intent before its CAS, and clears it only after tagging. A survivor that
//! loaded the claim cursor (Acquire, synchronising with the winner's CAS) therefore sees either
//! the winner's intent or its tag. So an untagged unit is released only when no live reader's
//! intent names it, and a dead reader's does.

use crate::error::Role;
use crate::layout::{
    Owner, BLOB_ALIGN, CLAIMED_BASE, COMMITTED, RELEASED, SLOT_ATTACHED, SLOT_DETACHED, SLOT_FREE,
    STATE_MASK,
};
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::wait::{notify, Signal};
use crate::{Error, Result};

/// What an owner word says about its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
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
pub(crate) fn holder(owner: &Owner, check_pid: bool) -> Holder {
    // Acquire: pairs with the AcqRel CAS in `attach` and the Release store in `detach`.
    let state = owner.state.load(Ordering::Acquire);
    match state & 3 {
        SLOT_FREE => Holder::Free,
        SLOT_DETACHED => Holder::Detached,
        SLOT_ATTACHED if check_pid => {
            // Acquire: pairs with the Release stores in `attach`.
            let pid = owner.pid.load(Ordering::Acquire);
            let start = owner.start_time.load(Ordering::Acquire);
            if pid == 0 {
                // Attached a moment ago: the pid is being written.
                return Holder::Alive;
            }
            let pid = u32::try_from(pid).unwrap_or(u32::MAX);
            if crate::peer::alive(pid, start) {
                Holder::Alive
            } else {
                Holder::Dead(pid)
            }
        }
        SLOT_ATTACHED => Holder::Alive,
        _ => Holder::Dead(0), // 3 is never written: treat a corrupt slot as abandoned
    }
}

/// Takes `owner` for this process if it is free, detached, or held by a dead process.
/// Returns whether it was taken and, when it was, whether a dead holder was displaced.
fn attach(owner: &Owner) -> Option<bool> {
    // Acquire: pairs with the CAS below run by an earlier holder.
    let state = owner.state.load(Ordering::Acquire);
    let takeover = match state & 3 {
        SLOT_FREE | SLOT_DETACHED => false,
        _ => match holder(owner, true) {
            Holder::Dead(_) => true,
            _ => return None,
        },
    };
    let next = ((state >> 2).wrapping_add(1) << 2) | SLOT_ATTACHED;
    // AcqRel: the Acquire half orders our reads of the slot after the previous holder's
    // writes; the Release half publishes the takeover to `holder`.
    owner
        .state
        .compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    Some(takeover)
}

/// Writes this process into an owner slot just taken.
fn set_pid(owner: &Owner) {
    let (pid, start) = crate::peer::me();
    // Relaxed: published by the Release pid store, which `holder` reads (Acquire) first.
    owner.start_time.store(start, Ordering::Relaxed);
    // Release: pairs with the Acquire pid load in `holder`.
    owner.pid.store(u64::from(pid), Ordering::Release);
}

/// Marks a slot detached (a clean drop).
fn detach(owner: &Owner) {
    // Acquire: pairs with our own attach (the word is ours alone while attached). Not
    // asserted to be ATTACHED: shared memory is untrusted (the fuzzer overwrites it), and
    // detaching is right whatever it says now.
    let state = owner.state.load(Ordering::Acquire);
    // Release: pairs with the Acquire load in `holder`: everything we committed or released
    // happens before a peer sees us gone.
    owner
        .state
        .store((state & !3) | SLOT_DETACHED, Ordering::Release);
}

/// Attaches a writer: the first free lane, else one whose writer died. Returns the lane.
///
/// # Errors
/// [`Error::RoleTaken`] when every lane has a live writer.
pub(crate) fn attach_writer(store: &Store) -> Result<u32> {
    let lanes = store.geometry().lanes;
    for pass in 0..2 {
        for lane in 0..lanes {
            let owner = &store.lane(lane).owner.0;
            // First pass: free or detached lanes only (no /proc look-ups).
            if pass == 0 && holder(owner, false) == Holder::Alive {
                continue;
            }
            if attach(owner).is_some() {
                set_pid(owner);
                return Ok(lane);
            }
        }
    }
    Err(Error::RoleTaken {
        role: Role::Writer,
        pid: any_pid(store.geometry().lanes, |i| &store.lane(i).owner.0),
    })
}

/// A writer handle was dropped: readers may now see the region closed.
pub(crate) fn detach_writer(store: &Store, lane: u32) {
    detach(&store.lane(lane).owner.0);
    notify(store, Signal::Data);
}

/// Attaches a reader: the first free slot, else one whose reader died (after releasing the
/// units it held). Returns the slot.
///
/// # Errors
/// [`Error::RoleTaken`] when every slot has a live reader.
pub(crate) fn attach_reader(store: &Store) -> Result<u32> {
    let readers = store.geometry().readers;
    for pass in 0..2 {
        for slot in 0..readers {
            let owner = &store.reader_slot(slot).owner;
            if pass == 0 && holder(owner, false) == Holder::Alive {
                continue;
            }
            let Some(takeover) = attach(owner) else {
                continue;
            };
            if takeover {
                // The dead holder's tag is ours now: release its units before we tag any.
                reap_slot_everywhere(store, slot)?;
            }
            // Relaxed: nothing reads our intent before we publish one with a CAS after it.
            store.reader_slot(slot).intent.store(0, Ordering::Relaxed);
            set_pid(owner);
            return Ok(slot);
        }
    }
    Err(Error::RoleTaken {
        role: Role::Reader,
        pid: any_pid(readers, |i| &store.reader_slot(i).owner),
    })
}

/// An MPMC reader's hold on its slot, shared by the [`Reader`](crate::Reader) and every
/// [`OwnedUnit`](crate::OwnedUnit) it handed out: the slot's tag marks those units, so the slot
/// must stay attached (and not be handed to another reader, whose death would release them)
/// until the last of them is gone.
#[derive(Debug)]
pub(crate) struct SlotLease {
    pub store: Arc<Store>,
    pub slot: u32,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        detach_reader(&self.store, self.slot);
    }
}

/// A reader handle was dropped: writers may now see the region closed.
fn detach_reader(store: &Store, slot: u32) {
    let reader = store.reader_slot(slot);
    // Release: a survivor that reads the cleared intent sees our tags.
    reader.intent.store(0, Ordering::Release);
    detach(&reader.owner);
    for lane in 0..store.geometry().lanes {
        notify(store, Signal::Space(lane));
    }
}

fn any_pid<'a>(n: u32, owner: impl Fn(u32) -> &'a Owner) -> u32 {
    (0..n)
        .map(|i| owner(i).pid.load(Ordering::Relaxed))
        .find(|&p| p != 0)
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}

/// After a slot was taken over from a dead reader: releases the units it held in every lane,
/// retrying while a live reader's claim in progress makes a unit's owner unclear.
fn reap_slot_everywhere(store: &Store, slot: u32) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let mut done = true;
        for lane in 0..store.geometry().lanes {
            done &= reap_lane(store, lane, slot);
        }
        if done {
            return Ok(());
        }
        if started.elapsed() > crate::wait::PEER_CHECK_INTERVAL * 10 {
            // Leave the slot as it is: attached, still naming the dead process (we have not
            // written our pid yet), so the next attach or a blocked writer cleans up again.
            // Marking it detached would let a later reader inherit the dead reader's tags.
            return Err(Error::Timeout {
                what: "releasing the units of a dead reader",
                waited: started.elapsed(),
            });
        }
        std::thread::yield_now();
    }
}

/// Whether a live reader other than `dead` has published `intent`.
fn live_intent(store: &Store, dead: u32, intent: u64) -> bool {
    (0..store.geometry().readers).any(|s| {
        let reader = store.reader_slot(s);
        // Acquire: pairs with the Release intent stores in `claim` (cleared after the tag).
        s != dead
            && reader.intent.load(Ordering::Acquire) == intent
            && !matches!(holder(&reader.owner, true), Holder::Dead(_))
    })
}

/// Marks RELEASED every unit of `lane` held by the dead reader in `dead`; returns false if a
/// unit's owner was unclear (a live reader is mid-claim) or the lane moved under us, so the
/// caller should look again.
pub(crate) fn reap_lane(store: &Store, lane: u32, dead: u32) -> bool {
    let cursors = store.lane(lane);
    let tag = CLAIMED_BASE + u64::from(dead);
    // Acquire: pairs with the claim CAS of every reader (see the module docs).
    let claim = cursors.claim.0.load(Ordering::Acquire);
    // Acquire: pairs with the tail stores in `View::release` / `advance_tail`.
    let mut pos = cursors.tail.0.load(Ordering::Acquire);
    // Acquire: pairs with the dead reader's last intent store.
    let dead_intent = store.reader_slot(dead).intent.load(Ordering::Acquire);
    let cap = store.capacity();
    if pos > claim || claim - pos > cap || pos % BLOB_ALIGN != 0 || claim % BLOB_ALIGN != 0 {
        return true; // corrupt or moved: nothing we can safely act on
    }
    let mut complete = true;
    let mut marked = false;
    while pos < claim {
        let rec = store.record(lane, pos);
        // Acquire: pairs with the Release tag store in `claim` and the Release mark.
        let word = rec.word.load(Ordering::Acquire);
        if word & !STATE_MASK != pos {
            // The tail passed this unit and the writer reused it: start again later.
            complete = false;
            break;
        }
        let span = rec.span.load(Ordering::Relaxed);
        if span % BLOB_ALIGN != 0 || span == 0 || span > claim - pos {
            complete = false;
            break;
        }
        let state = word & STATE_MASK;
        let release = if state == tag {
            true
        } else if state == COMMITTED {
            let intent = pos | u64::from(lane + 1);
            if live_intent(store, dead, intent) {
                complete = false;
                false
            } else {
                dead_intent == intent
            }
        } else {
            false
        };
        // AcqRel: the Acquire half re-validates the word we judged; the Release half pairs
        // with the Acquire mark load in `advance_tail`.
        if release
            && rec
                .word
                .compare_exchange(word, pos | RELEASED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            marked = true;
        }
        pos += span;
    }
    if marked {
        crate::unit::after_mark(store, lane);
    }
    complete
}

/// For a writer blocked on `lane`: releases units held by dead readers, then reports whether
/// any reader is left.
///
/// # Errors
/// [`Error::Closed`] when every reader that attached detached; [`Error::PeerGone`] when they
/// are all gone and at least one died.
/// With `check_pid` false: no /proc look-ups and no clean-up, only clean detaches count.
pub(crate) fn check_readers(store: &Store, lane: u32, check_pid: bool) -> Result<()> {
    let mut alive = false;
    let mut dead_pid = None;
    let mut seen = false;
    for slot in 0..store.geometry().readers {
        match holder(&store.reader_slot(slot).owner, check_pid) {
            Holder::Free => {}
            Holder::Alive => {
                alive = true;
                seen = true;
            }
            Holder::Detached => seen = true,
            Holder::Dead(pid) => {
                seen = true;
                dead_pid = Some(pid);
                reap_lane(store, lane, slot);
            }
        }
    }
    match (alive, seen, dead_pid) {
        (true, _, _) | (false, false, _) => Ok(()),
        (false, true, Some(pid)) => Err(Error::PeerGone {
            role: Role::Reader,
            pid,
        }),
        (false, true, None) => Err(Error::Closed(Role::Reader)),
    }
}

/// For readers: whether every writer is gone. `check_pid` also counts dead writers as gone.
///
/// # Errors
/// [`Error::Closed`] when at least one writer attached and none is attached now;
/// [`Error::PeerGone`] instead when a gone writer died. The caller must still drain the lanes
/// (after this returned an error) before passing the error on.
pub(crate) fn check_writers(store: &Store, check_pid: bool) -> Result<()> {
    let mut seen = false;
    let mut dead_pid = None;
    for lane in 0..store.geometry().lanes {
        match holder(&store.lane(lane).owner.0, check_pid) {
            Holder::Free => {}
            Holder::Alive => return Ok(()),
            Holder::Detached => seen = true,
            Holder::Dead(pid) => {
                seen = true;
                dead_pid = Some(pid);
            }
        }
    }
    match (seen, dead_pid) {
        (false, _) => Ok(()),
        (true, Some(pid)) => Err(Error::PeerGone {
            role: Role::Writer,
            pid,
        }),
        (true, None) => Err(Error::Closed(Role::Writer)),
    }
}

/// The clean-up rules, case by case, on states a dying reader can leave behind (set up by
/// hand: a real death lands in one of them at random, see tests/mpmc_processes.rs).
#[cfg(all(test, not(shm_arena_loom), not(miri)))]
mod tests {
    use super::*;
    use crate::{Backing, Region, RegionOptions};

    /// A pid no process has: above the kernel's pid limit (at most 2^22).
    const DEAD_PID: u64 = (1 << 22) + 12345;

    /// One lane, two reader slots; two committed units; returns (region, unit positions).
    fn setup() -> (Region, crate::Writer, [u64; 2]) {
        let region = Region::create_with(
            RegionOptions::new(4096)
                .mpmc(1, 2)
                .backing(Backing::Anonymous),
        )
        .unwrap();
        let mut writer = region.writer().unwrap();
        writer.write_unit(&[&[1; 100]]).unwrap();
        writer.write_unit(&[&[2; 100]]).unwrap();
        (region, writer, [0, 192])
    }

    /// Marks slot `slot` attached by a process that does not exist.
    fn dead(store: &Store, slot: u32) {
        let owner = &store.reader_slot(slot).owner;
        owner.state.store(SLOT_ATTACHED, Ordering::Relaxed);
        owner.pid.store(DEAD_PID, Ordering::Relaxed);
    }

    /// Marks slot `slot` attached by this (live) process.
    fn live(store: &Store, slot: u32) {
        let owner = &store.reader_slot(slot).owner;
        owner.state.store(SLOT_ATTACHED, Ordering::Relaxed);
        owner
            .pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
    }

    /// Moves the claim cursor past the first unit, as a reader's CAS would.
    fn claim_first(store: &Store) {
        store.lane(0).claim.0.store(192, Ordering::Relaxed);
    }

    fn word(store: &Store, pos: u64) -> u64 {
        store.record(0, pos).word.load(Ordering::Relaxed)
    }

    /// Stamps the record at `pos` with `word` (a tag, as a reader's claim would).
    fn set_word(store: &Store, pos: u64, word: u64) {
        store.record(0, pos).word.store(word, Ordering::Relaxed);
    }

    /// Publishes `intent` in reader slot `slot`.
    fn set_intent(store: &Store, slot: u32, intent: u64) {
        store
            .reader_slot(slot)
            .intent
            .store(intent, Ordering::Relaxed);
    }

    fn tail(store: &Store) -> u64 {
        store.lane(0).tail.0.load(Ordering::Relaxed)
    }

    #[test]
    fn tagged_unit_of_a_dead_reader_is_released() {
        let (region, _writer, [first, _]) = setup();
        let store = region.store();
        dead(store, 0);
        claim_first(store);
        set_word(store, first, first | CLAIMED_BASE);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(tail(store), 192);
    }

    #[test]
    fn tagged_unit_of_another_reader_is_kept() {
        let (region, _writer, [first, _]) = setup();
        let store = region.store();
        dead(store, 0);
        live(store, 1);
        claim_first(store);
        let tagged = first | (CLAIMED_BASE + 1);
        set_word(store, first, tagged);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(word(store, first), tagged);
        assert_eq!(tail(store), 0);
    }

    #[test]
    fn untagged_unit_named_only_by_the_dead_readers_intent_is_released() {
        let (region, _writer, [first, _]) = setup();
        let store = region.store();
        dead(store, 0);
        claim_first(store);
        // Died between the claim CAS and the tag.
        set_intent(store, 0, first | 1);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(word(store, first), first | RELEASED);
        assert_eq!(tail(store), 192);
    }

    #[test]
    fn untagged_unit_also_named_by_a_live_reader_waits() {
        let (region, _writer, [first, _]) = setup();
        let store = region.store();
        dead(store, 0);
        live(store, 1);
        claim_first(store);
        // Both published the same intent; the live one may have won and not tagged yet.
        set_intent(store, 0, first | 1);
        set_intent(store, 1, first | 1);
        assert!(!reap_lane(store, 0, 0), "must ask to look again");
        assert_eq!(word(store, first), first | COMMITTED);
        // The live reader tags it (it had won): now the dead one's intent releases nothing.
        set_word(store, first, first | (CLAIMED_BASE + 1));
        set_intent(store, 1, 0);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(word(store, first), first | (CLAIMED_BASE + 1));
        assert_eq!(tail(store), 0);
    }

    #[test]
    fn unclaimed_units_are_never_touched() {
        let (region, _writer, [first, second]) = setup();
        let store = region.store();
        dead(store, 0);
        // Intent on the second unit, which nobody claimed (claim cursor still at the first).
        set_intent(store, 0, second | 1);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(word(store, first), first | COMMITTED);
        assert_eq!(word(store, second), second | COMMITTED);
    }

    #[test]
    fn a_dead_reader_blocks_no_writer() {
        let (region, _writer, [first, _]) = setup();
        let store = region.store();
        dead(store, 0);
        claim_first(store);
        set_word(store, first, first | CLAIMED_BASE);
        // The only reader is dead: the writer's check releases its unit, then reports it.
        assert!(matches!(
            check_readers(store, 0, true),
            Err(Error::PeerGone {
                role: Role::Reader,
                ..
            })
        ));
        assert_eq!(tail(store), 192);
    }
}
