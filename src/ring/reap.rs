//! Releasing the units of a reader that died, so its writers get their space back.
//!
//! SPSC: the one reader publishes its position in the lane's claim cursor before it hands a
//! unit out, so every unit below the claim cursor that is not marked RELEASED was held by it.
//!
//! MPMC: a reader claims a unit in three steps (see `claim.rs`): it publishes its *intent*
//! (`position | lane + 1`) in its slot, moves the lane's claim cursor with a CAS, then tags the
//! unit's record with `CLAIMED_BASE + slot` and clears the intent. A reader that dies holds
//! units that are either tagged with its slot, or (if it died between the CAS and the tag)
//! untagged below the claim cursor with its intent naming them. The untagged case is ambiguous
//! only in appearance: a live reader whose CAS won the same unit published the same intent
//! before its CAS, and clears it only after tagging. A survivor that loaded the claim cursor
//! (Acquire, synchronising with the winner's CAS) therefore sees either the winner's intent or
//! its tag. So an untagged unit is released only when no live reader's intent names it, and a
//! dead reader's does.
//!
//! Either way the units are lost to the dead reader, never delivered twice (at most once for
//! the units a reader held when it died).

use crate::layout::{BLOB_ALIGN, CLAIMED_BASE, COMMITTED, RELEASED, STATE_MASK};
use crate::ring::presence::{presence, Presence};
use crate::ring::release::after_mark;
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
use crate::tuning::PEER_CHECK_INTERVAL;
use crate::{Error, Result};

/// After a slot was taken over from a dead reader: releases the units it held in every lane,
/// retrying while a live reader's claim in progress makes a unit's owner unclear.
pub(crate) fn reap_slot_everywhere(store: &Store, slot: u32) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let mut done = true;
        for lane in 0..store.geometry().lanes {
            done &= reap_lane(store, lane, slot);
        }
        if done {
            return Ok(());
        }
        if started.elapsed() > PEER_CHECK_INTERVAL * 10 {
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
            && !matches!(presence(&reader.reader, true), Presence::Dead(_))
    })
}

/// Marks RELEASED every unit of `lane` held by the dead reader in `dead` (MPMC: tagged with its
/// slot or named by its intent; SPSC: every unit below the claim cursor not ended yet);
/// returns false if a unit's owner was unclear (a live reader is mid-claim) or the lane moved
/// under us, so the caller should look again.
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
    let mpmc = store.geometry().mpmc;
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
        // SPSC: the one reader held every unit below the claim cursor it moved.
        let release = if !mpmc {
            state == COMMITTED
        } else if state == tag {
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
        after_mark(store, lane);
    }
    complete
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
        let owner = &store.reader_slot(slot).reader;
        owner.state.store(
            crate::ring::presence::attached_by(DEAD_PID),
            Ordering::Relaxed,
        );
    }

    /// Marks slot `slot` attached by this (live) process.
    fn live(store: &Store, slot: u32) {
        let owner = &store.reader_slot(slot).reader;
        owner.state.store(
            crate::ring::presence::attached_by(u64::from(std::process::id())),
            Ordering::Relaxed,
        );
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

    /// SPSC: every unit below the claim cursor that was not ended belonged to the one reader.
    #[test]
    fn spsc_units_below_the_claim_cursor_of_a_dead_reader_are_released() {
        let region =
            Region::create_with(RegionOptions::new(4096).backing(Backing::Anonymous)).unwrap();
        let mut writer = region.writer().unwrap();
        writer.write_unit(&[&[1; 100]]).unwrap();
        writer.write_unit(&[&[2; 100]]).unwrap();
        writer.write_unit(&[&[3; 100]]).unwrap();
        let store = region.store();
        dead(store, 0);
        // The reader took the first two units and ended the second one (out of order).
        claim_first(store);
        store.lane(0).claim.0.store(384, Ordering::Relaxed);
        set_word(store, 192, 192 | RELEASED);
        assert!(reap_lane(store, 0, 0));
        assert_eq!(word(store, 0), RELEASED);
        assert_eq!(
            tail(store),
            384,
            "the tail moves over both units, not the third"
        );
        assert_eq!(word(store, 384), 384 | COMMITTED);
    }
}
