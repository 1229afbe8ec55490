//! Participants: which handle holds which lane and reader slot, in both modes, and what a
//! blocked handle concludes about the other role (closed, alive, or dead).
//!
//! A writer handle holds a lane (an SPSC region has one), a reader handle a reader slot (an
//! SPSC region has one). Attaching takes a slot that is free, detached, or held by a dead
//! process (see [`presence`](super::presence)); a reader that takes a dead reader's slot first
//! releases the units the dead one held ([`reap`](super::reap)), and a writer that takes a dead
//! writer's lane first publishes a unit the dead one had stamped but not yet published
//! ([`cursors::publish_stamped`]).

use crate::error::Role;
use crate::layout::{Expected, READERS_GONE, SHUT_DOWN};
use crate::ring::presence::{any_pid, attach, detach, presence, still_held, Held, Presence};
use crate::ring::{cursors, process, reap};
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::wait::{notify, Signal};
use crate::{Error, Result};

/// Attaches a writer: the first free lane, else one whose writer died. Returns the lane.
///
/// # Errors
/// [`Error::RoleTaken`] when every lane has a live writer; [`Error::Corrupt`] if a dead
/// writer's lane holds impossible cursors (the lane is left attached to us, and unusable).
pub(crate) fn attach_writer(store: &Store) -> Result<(u32, Held)> {
    let lanes = store.geometry().lanes;
    for pass in 0..2 {
        for lane in 0..lanes {
            let slot = &store.lane(lane).writer.0;
            // First pass: free or detached lanes only (no /proc look-ups).
            if pass == 0 && presence(slot, false) == Presence::Alive {
                continue;
            }
            let Some((held, takeover)) = attach(slot) else {
                continue;
            };
            clear_expected(store);
            if takeover {
                if let Err(e) = cursors::publish_stamped(store, lane) {
                    detach_writer(store, lane, held);
                    return Err(e);
                }
            }
            return Ok((lane, held));
        }
    }
    Err(Error::RoleTaken {
        role: Role::Writer,
        pid: any_pid(lanes, |i| &store.lane(i).writer.0),
    })
}

/// A writer handle was dropped: readers may now see the region closed.
pub(crate) fn detach_writer(store: &Store, lane: u32, held: Held) {
    if !still_held(&store.lane(lane).writer.0, held) {
        // Taken over, or a copy made by `fork`: the slot is someone else's.
        return;
    }
    detach(&store.lane(lane).writer.0, held);
    notify(store, Signal::Data);
}

/// Attaches a reader: the first free slot, else one whose reader died (after releasing the
/// units it held). Returns the slot.
///
/// # Errors
/// [`Error::RoleTaken`] when every slot has a live reader; [`Error::Timeout`] if the units of
/// a dead reader could not be released (a live reader kept them unclear for a second).
pub(crate) fn attach_reader(store: &Store) -> Result<(u32, Held)> {
    let readers = store.geometry().readers;
    for pass in 0..2 {
        for slot in 0..readers {
            let participant = &store.reader_slot(slot).reader;
            if pass == 0 && presence(participant, false) == Presence::Alive {
                continue;
            }
            let Some((held, takeover)) = attach(participant) else {
                continue;
            };
            if takeover {
                // The dead holder's units (MPMC: its tag) are ours now: release them before we
                // take any.
                reap::reap_slot_everywhere(store, slot)?;
            }
            // Relaxed: nothing reads our intent before we publish one with a CAS after it.
            store.reader_slot(slot).intent.store(0, Ordering::Relaxed);
            clear_expected(store);
            // Relaxed: only a hint; writers confirm it from the slots (see `readers_gone`).
            store
                .shared()
                .signals
                .0
                .hints
                .fetch_and(!READERS_GONE, Ordering::Relaxed);
            return Ok((slot, held));
        }
    }
    Err(Error::RoleTaken {
        role: Role::Reader,
        pid: any_pid(readers, |i| &store.reader_slot(i).reader),
    })
}

/// A reader's hold on its slot, shared by the [`Reader`](crate::Reader) and every
/// [`OwnedUnit`](crate::OwnedUnit) it handed out: those units are the slot's (MPMC: tagged with
/// it; SPSC: below the claim cursor the slot's reader moves), so the slot must stay attached,
/// and not be handed to another reader (whose death would release them), until the last of
/// them is gone.
#[derive(Debug)]
pub(crate) struct SlotLease {
    pub store: Arc<Store>,
    pub slot: u32,
    pub held: Held,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        detach_reader(&self.store, self.slot, self.held);
    }
}

/// A reader handle was dropped (with its last owned unit): writers may now see the region
/// closed.
fn detach_reader(store: &Store, slot: u32, held: Held) {
    let reader = store.reader_slot(slot);
    if !still_held(&reader.reader, held) {
        // Taken over by a process that believed us dead, or a copy made by `fork`: the slot
        // and its units are someone else's.
        return;
    }
    // Release: a survivor that reads the cleared intent sees our tags.
    reader.intent.store(0, Ordering::Release);
    let others = (0..store.geometry().readers)
        .any(|s| s != slot && presence(&store.reader_slot(s).reader, false) == Presence::Alive);
    if !others {
        // Relaxed: published by the Release store of `detach` below, so a writer that sees
        // this slot detached (Acquire, in `check_readers`) sees the hint too and fails every
        // later `begin_unit` at once. Only a hint (see `readers_gone`): the slots are the truth.
        store
            .shared()
            .signals
            .0
            .hints
            .fetch_or(READERS_GONE, Ordering::Relaxed);
    }
    detach(&reader.reader, held);
    for lane in 0..store.geometry().lanes {
        notify(store, Signal::Space(lane));
    }
}

/// Whether the region was shut down.
///
/// # Errors
/// [`Error::Shutdown`] once it was.
#[inline]
pub(crate) fn shut_down(store: &Store) -> Result<()> {
    // Acquire: pairs with the Release `fetch_or` in `shutdown`.
    if store.shared().signals.0.hints.load(Ordering::Acquire) & SHUT_DOWN != 0 {
        return Err(Error::Shutdown);
    }
    Ok(())
}

/// Shuts the region down for good: every handle's waits end with [`Error::Shutdown`] (readers
/// after draining what was committed), and no unit can be begun any more.
pub(crate) fn shutdown(store: &Store) {
    // Release: pairs with the Acquire load in `shut_down`.
    store
        .shared()
        .signals
        .0
        .hints
        .fetch_or(SHUT_DOWN, Ordering::Release);
    notify(store, Signal::Data);
    for lane in 0..store.geometry().lanes {
        notify(store, Signal::Space(lane));
    }
}

/// For a writer beginning a unit: whether every reader detached, so the unit could never be
/// read. Cheap while readers are attached (one load of a hint word); confirmed from the reader
/// slots when the hint says so.
#[inline]
pub(crate) fn readers_gone(store: &Store, lane: u32) -> Result<()> {
    let hints = &store.shared().signals.0.hints;
    // Relaxed: only a hint; the slots are read with Acquire below before anything fails.
    if hints.load(Ordering::Relaxed) & (READERS_GONE | SHUT_DOWN) == 0 {
        return Ok(());
    }
    let checked = check_readers(store, lane, false);
    if checked.is_ok() {
        // A reader attached since the hint was set (or one is still detaching): drop the hint.
        // If the readers then turn out gone, `check_readers` sets it again when a wait for
        // space sees so.
        hints.fetch_and(!READERS_GONE, Ordering::Relaxed);
    }
    checked
}

/// For a writer blocked on `lane`: releases units held by dead readers, then reports whether
/// any reader is left.
///
/// # Errors
/// [`Error::Closed`] when every reader that attached detached; [`Error::PeerGone`] when they
/// are all gone and at least one died.
/// With `check_pid` false: no /proc look-ups and no clean-up, only clean detaches count.
pub(crate) fn check_readers(store: &Store, lane: u32, check_pid: bool) -> Result<()> {
    shut_down(store)?;
    let mut alive = false;
    let mut dead_pid = None;
    let mut seen = false;
    for slot in 0..store.geometry().readers {
        match presence(&store.reader_slot(slot).reader, check_pid) {
            Presence::Free => {}
            Presence::Alive => {
                alive = true;
                seen = true;
            }
            Presence::Detached => seen = true,
            Presence::Dead(pid) => {
                seen = true;
                dead_pid = Some(pid);
                reap::reap_lane(store, lane, slot);
            }
        }
    }
    if !seen && check_pid {
        // Nobody attached yet: a child the region was handed to that died before attaching
        // is the reader that will never come.
        expected_dead(store, Role::Reader)?;
    }
    let gone = match (alive, seen, dead_pid) {
        (true, _, _) | (false, false, _) => return Ok(()),
        (false, true, Some(pid)) => Error::PeerGone {
            role: Role::Reader,
            pid,
        },
        (false, true, None) => Error::Closed(Role::Reader),
    };
    // Relaxed: a hint for this writer's next `begin_unit` (program order) and other writers;
    // a hint cleared by a writer racing with a detaching reader is set again here, so a writer
    // that saw the readers gone fails every later `begin_unit` at once.
    store
        .shared()
        .signals
        .0
        .hints
        .fetch_or(READERS_GONE, Ordering::Relaxed);
    Err(gone)
}

/// For readers: whether every writer is gone. `check_pid` also counts dead writers as gone.
///
/// # Errors
/// [`Error::Closed`] when at least one writer attached and none is attached now;
/// [`Error::PeerGone`] instead when a gone writer died. The caller must still drain the lanes
/// (after this returned an error) before passing the error on.
#[inline]
pub(crate) fn check_writers(store: &Store, check_pid: bool) -> Result<()> {
    shut_down(store)?;
    let mut seen = false;
    let mut dead_pid = None;
    for lane in 0..store.geometry().lanes {
        match presence(&store.lane(lane).writer.0, check_pid) {
            Presence::Free => {}
            Presence::Alive => return Ok(()),
            Presence::Detached => seen = true,
            Presence::Dead(pid) => {
                seen = true;
                dead_pid = Some(pid);
            }
        }
    }
    match (seen, dead_pid) {
        // Nobody attached yet: a child the region was handed to that died before attaching
        // is the writer that will never come.
        (false, _) if check_pid => expected_dead(store, Role::Writer),
        (false, _) => Ok(()),
        (true, Some(pid)) => Err(Error::PeerGone {
            role: Role::Writer,
            pid,
        }),
        (true, None) => Err(Error::Closed(Role::Writer)),
    }
}

/// In a child process between fork and exec (see `Region::share_with_child`): records the
/// child's pid as expected to attach. Async-signal-safe: atomics only, no allocation. A full
/// table records nothing (the child's death before attaching then goes unnoticed, as for a
/// region handed over by other means).
#[cfg_attr(shm_arena_loom, allow(dead_code))]
pub(crate) fn expect_child(expected: &Expected, pid: u32) {
    for entry in &expected.pids {
        // Relaxed: the parent and the other participants read the pid later with a /proc
        // look-up; nothing else is published with it.
        if entry
            .compare_exchange(0, u64::from(pid), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// A handle attached in this process: it is no longer merely expected.
fn clear_expected(store: &Store) {
    let pid = u64::from(std::process::id());
    for entry in &store.shared().expected.0.pids {
        // Relaxed: see `expect_child`.
        let _ = entry.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Forgets expected children whose process is gone (before handing the region to one more).
#[cfg_attr(shm_arena_loom, allow(dead_code))]
pub(crate) fn prune_expected(store: &Store) {
    for entry in &store.shared().expected.0.pids {
        // Relaxed: see `expect_child`.
        let pid = entry.load(Ordering::Relaxed);
        if pid != 0 && !process::alive(u32::try_from(pid).unwrap_or(u32::MAX), 0) {
            let _ = entry.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// For a side waiting on `role` when no participant of it ever attached: whether every child
/// the region was handed to (and that has not attached) is dead.
///
/// # Errors
/// [`Error::PeerGone`] naming one of them when there is at least one and all are dead.
pub(crate) fn expected_dead(store: &Store, role: Role) -> Result<()> {
    let mut dead = None;
    for entry in &store.shared().expected.0.pids {
        // Relaxed: see `expect_child`.
        let pid = entry.load(Ordering::Relaxed);
        if pid == 0 {
            continue;
        }
        let pid = u32::try_from(pid).unwrap_or(u32::MAX);
        if process::alive(pid, 0) {
            return Ok(());
        }
        dead = Some(pid);
    }
    match dead {
        Some(pid) => Err(Error::PeerGone { role, pid }),
        None => Ok(()),
    }
}

/// Whether a participant of `role` is attached by a live process.
pub(crate) fn role_attached(store: &Store, role: Role) -> bool {
    let alive = |slot| presence(slot, true) == Presence::Alive;
    let geometry = store.geometry();
    match role {
        Role::Writer => (0..geometry.lanes).any(|l| alive(&store.lane(l).writer.0)),
        Role::Reader => (0..geometry.readers).any(|s| alive(&store.reader_slot(s).reader)),
    }
}

/// Whether a role has no participant attached by a dead process (true while none is
/// attached).
pub(crate) fn role_alive(store: &Store, role: Role) -> bool {
    let dead = |slot| matches!(presence(slot, true), Presence::Dead(_));
    let geometry = store.geometry();
    match role {
        Role::Writer => !(0..geometry.lanes).any(|l| dead(&store.lane(l).writer.0)),
        Role::Reader => !(0..geometry.readers).any(|s| dead(&store.reader_slot(s).reader)),
    }
}

#[cfg(all(test, not(shm_arena_loom), not(miri)))]
mod tests {
    use super::*;
    use crate::layout::CLAIMED_BASE;
    use crate::{Backing, Region, RegionOptions};

    /// A pid no process has: above the kernel's pid limit (at most 2^22).
    const DEAD_PID: u64 = (1 << 22) + 12345;

    /// The only reader is dead: a blocked writer's check releases its unit, then reports it.
    #[test]
    fn a_dead_reader_blocks_no_writer() {
        let region = Region::create_with(
            RegionOptions::new(4096)
                .mpmc(1, 2)
                .backing(Backing::Anonymous),
        )
        .unwrap();
        let mut writer = region.writer().unwrap();
        writer.write_unit(&[&[1; 100]]).unwrap();
        let store = region.store();
        let slot = &store.reader_slot(0).reader;
        slot.state.store(
            crate::ring::presence::attached_by(DEAD_PID),
            Ordering::Relaxed,
        );
        // Claimed and tagged by the dead reader.
        store.lane(0).claim.0.store(192, Ordering::Relaxed);
        store
            .record(0, 0)
            .word
            .store(CLAIMED_BASE, Ordering::Relaxed);
        assert!(matches!(
            check_readers(store, 0, true),
            Err(Error::PeerGone {
                role: Role::Reader,
                ..
            })
        ));
        assert_eq!(store.lane(0).tail.0.load(Ordering::Relaxed), 192);
    }
}
