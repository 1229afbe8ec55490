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
use crate::layout::READERS_GONE;
use crate::ring::presence::{any_pid, attach, detach, presence, set_pid, Presence};
use crate::ring::{cursors, reap};
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::wait::{notify, Signal};
use crate::{Error, Result};

/// Attaches a writer: the first free lane, else one whose writer died. Returns the lane.
///
/// # Errors
/// [`Error::RoleTaken`] when every lane has a live writer; [`Error::Corrupt`] if a dead
/// writer's lane holds impossible cursors (the lane is left attached to us, and unusable).
pub(crate) fn attach_writer(store: &Store) -> Result<u32> {
    let lanes = store.geometry().lanes;
    for pass in 0..2 {
        for lane in 0..lanes {
            let slot = &store.lane(lane).writer.0;
            // First pass: free or detached lanes only (no /proc look-ups).
            if pass == 0 && presence(slot, false) == Presence::Alive {
                continue;
            }
            let Some(takeover) = attach(slot) else {
                continue;
            };
            set_pid(slot);
            if takeover {
                if let Err(e) = cursors::publish_stamped(store, lane) {
                    detach_writer(store, lane);
                    return Err(e);
                }
            }
            return Ok(lane);
        }
    }
    Err(Error::RoleTaken {
        role: Role::Writer,
        pid: any_pid(lanes, |i| &store.lane(i).writer.0),
    })
}

/// A writer handle was dropped: readers may now see the region closed.
pub(crate) fn detach_writer(store: &Store, lane: u32) {
    detach(&store.lane(lane).writer.0);
    notify(store, Signal::Data);
}

/// Attaches a reader: the first free slot, else one whose reader died (after releasing the
/// units it held). Returns the slot.
///
/// # Errors
/// [`Error::RoleTaken`] when every slot has a live reader; [`Error::Timeout`] if the units of
/// a dead reader could not be released (a live reader kept them unclear for a second).
pub(crate) fn attach_reader(store: &Store) -> Result<u32> {
    let readers = store.geometry().readers;
    for pass in 0..2 {
        for slot in 0..readers {
            let participant = &store.reader_slot(slot).reader;
            if pass == 0 && presence(participant, false) == Presence::Alive {
                continue;
            }
            let Some(takeover) = attach(participant) else {
                continue;
            };
            if takeover {
                // The dead holder's units (MPMC: its tag) are ours now: release them before we
                // take any.
                reap::reap_slot_everywhere(store, slot)?;
            }
            // Relaxed: nothing reads our intent before we publish one with a CAS after it.
            store.reader_slot(slot).intent.store(0, Ordering::Relaxed);
            set_pid(participant);
            // Relaxed: only a hint; writers confirm it from the slots (see `readers_gone`).
            store
                .shared()
                .signals
                .0
                .hints
                .fetch_and(!READERS_GONE, Ordering::Relaxed);
            return Ok(slot);
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
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        detach_reader(&self.store, self.slot);
    }
}

/// A reader handle was dropped (with its last owned unit): writers may now see the region
/// closed.
fn detach_reader(store: &Store, slot: u32) {
    let reader = store.reader_slot(slot);
    // Release: a survivor that reads the cleared intent sees our tags.
    reader.intent.store(0, Ordering::Release);
    detach(&reader.reader);
    if !(0..store.geometry().readers)
        .any(|s| presence(&store.reader_slot(s).reader, false) == Presence::Alive)
    {
        // Relaxed: a hint (see `readers_gone`); the slot states are the truth.
        store
            .shared()
            .signals
            .0
            .hints
            .fetch_or(READERS_GONE, Ordering::Relaxed);
    }
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
    if hints.load(Ordering::Relaxed) & READERS_GONE == 0 {
        return Ok(());
    }
    let checked = check_readers(store, lane, false);
    if checked.is_ok() {
        // A reader attached since the hint was set: drop the stale hint. Racing with a
        // detach that sets it again costs at most a later slot scan.
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
#[inline]
pub(crate) fn check_writers(store: &Store, check_pid: bool) -> Result<()> {
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
        (false, _) => Ok(()),
        (true, Some(pid)) => Err(Error::PeerGone {
            role: Role::Writer,
            pid,
        }),
        (true, None) => Err(Error::Closed(Role::Writer)),
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
