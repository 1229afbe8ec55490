//! The subscribing side of a broadcast region: every subscriber sees every unit.

use std::fmt;
use std::time::{Duration, Instant};

use crate::broadcast::slots::{attach_subscriber, detach_subscriber};
use crate::broadcast::take::Cursor;
use crate::ring::participants::check_writers;
use crate::ring::presence::Held;
use crate::ring::view::View;
use crate::spin::SpinBudget;
use crate::storage::Store;
use crate::sync::{Arc, Mutex};
use crate::tuning::{BUSY_POLLS_PER_YIELD, PEER_CHECK_INTERVAL};
use crate::wait::{deadline_after, wait_for, Signal};
use crate::{Error, Result};

use super::Unit;

pub use crate::broadcast::policy::Policy;

/// One subscriber of a broadcast region ([`Region::subscriber`](crate::Region::subscriber)):
/// it sees every unit the writer commits after it attached, in commit order, as read-only
/// views shared with the other subscribers (no subscriber can change what another reads).
///
/// Units may be held at once and ended in any order, as a [`Reader`](crate::Reader)'s. What
/// the writer may reuse: nothing a subscriber holds; nothing a [`Policy::Backpressure`]
/// subscriber has not taken yet. A subscriber whose process dies is detached by a writer
/// waiting on it within about 100 ms; a writer that dies is reported to every subscriber
/// ([`Error::PeerGone`](crate::Error::PeerGone)) once it took everything committed.
///
/// `Send` but not `Sync`: one thread takes units at a time; owned units
/// ([`Unit::into_owned`]) end on any thread. Dropping it detaches it, once its owned units
/// are gone too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::{Error, Policy, Region, RegionOptions};
///
/// let region = Region::create_with(RegionOptions::new(1 << 16).broadcast(2))?;
/// let (a, b) = (region.subscriber(Policy::Backpressure)?, region.subscriber(Policy::Backpressure)?);
/// let mut writer = region.writer()?;
/// writer.write_unit(&[b"one"])?;
/// writer.write_unit(&[b"two"])?;
/// drop(writer);
/// for subscriber in [&a, &b] {
///     let first = subscriber.next_unit(Duration::from_secs(1))?;
///     let second = subscriber.next_unit(Duration::from_secs(1))?;
///     assert_eq!((first.blob(0)?, second.blob(0)?), (&b"one"[..], &b"two"[..]));
///     drop(first); // in any order
///     assert!(matches!(subscriber.try_next_unit(), Err(Error::Closed(_))));
/// }
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct Subscriber {
    shared: Arc<Shared>,
    /// How long `next_unit` spins before it sleeps.
    spin: SpinBudget,
    /// `next_unit` polls without ever sleeping ([`set_busy_poll`](Self::set_busy_poll)).
    busy_poll: bool,
}

/// What a subscriber shares with its owned units: the region, its slot, its cursor.
pub(crate) struct Shared {
    store: Arc<Store>,
    held: Held,
    cursor: Mutex<Cursor>,
}

impl Subscriber {
    pub(crate) fn attach(store: Arc<Store>, policy: Policy) -> Result<Subscriber> {
        let start = attach_subscriber(&store, policy)?;
        let cursor = Cursor::new(policy, start.slot, start.position, start.seq);
        Ok(Subscriber {
            shared: Arc::new(Shared {
                store,
                held: start.held,
                cursor: Mutex::new(cursor),
            }),
            spin: SpinBudget::default(),
            busy_poll: false,
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The region, for an owned unit.
    pub(crate) fn store_arc(&self) -> Arc<Store> {
        Arc::clone(&self.shared.store)
    }

    /// Ends the unit taken at `start`.
    pub(crate) fn end(&self, start: u64) {
        self.shared.end(start);
    }

    /// The handle an owned unit keeps.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    fn take(&self) -> Result<Option<View>> {
        self.shared.cursor().take(&self.shared.store)
    }

    /// The next unit, if one is committed now. Never blocks.
    ///
    /// # Errors
    /// [`Error::Lagged`](crate::Error::Lagged) once after a [`Policy::Leaky`] subscriber was
    /// lapped; [`Error::Closed`](crate::Error::Closed) once the writer detached and every unit
    /// it committed was taken; [`Error::PeerGone`](crate::Error::PeerGone) likewise when its
    /// process died; [`Error::Corrupt`](crate::Error::Corrupt) if the cursors or the next
    /// record are impossible.
    pub fn try_next_unit(&self) -> Result<Option<Unit<'_>>> {
        Ok(self.take()?.map(|view| Unit::of_subscriber(self, view)))
    }

    /// The next unit, waiting at most `timeout` for one (spinning briefly, then sleeping on the
    /// region's futex; the writer's process is checked every 100 ms).
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) after `timeout`; otherwise as
    /// [`try_next_unit`](Self::try_next_unit).
    pub fn next_unit(&self, timeout: Duration) -> Result<Unit<'_>> {
        if let Some(unit) = self.try_next_unit()? {
            return Ok(unit);
        }
        if self.busy_poll {
            return self.busy_next_unit(timeout);
        }
        let store = self.store();
        let view = wait_for(
            store,
            Signal::Data,
            &self.spin,
            deadline_after(Some(timeout)),
            "a committed unit",
            || check_writers(store, true),
            || self.take(),
        )?;
        Ok(Unit::of_subscriber(self, view))
    }

    /// Makes [`next_unit`](Self::next_unit) poll without ever sleeping (`true`), instead of
    /// spinning for a budget that adapts to how long its waits are and then sleeping on the
    /// region's futex (`false`, the default). Busy polling takes a CPU for as long as the
    /// subscriber waits, and gives the lowest latency when every busy subscriber has a CPU of
    /// its own; on a machine with fewer CPUs than busy processes, sleeping is faster (the
    /// yields every few hundred polls keep a shared CPU from being held for a whole tick).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::{Policy, Region, RegionOptions};
    ///
    /// let region = Region::create_with(RegionOptions::new(1 << 16).broadcast(1))?;
    /// let mut sub = region.subscriber(Policy::Backpressure)?;
    /// sub.set_busy_poll(true);
    /// region.writer()?.write_unit(&[b"tick"])?;
    /// assert_eq!(sub.next_unit(Duration::from_secs(1))?.blob(0)?, b"tick");
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn set_busy_poll(&mut self, on: bool) {
        self.busy_poll = on;
    }

    /// [`next_unit`](Self::next_unit) without sleeping: polls, yields the CPU every
    /// [`BUSY_POLLS_PER_YIELD`] polls, looks at the writer's process every
    /// [`PEER_CHECK_INTERVAL`].
    fn busy_next_unit(&self, timeout: Duration) -> Result<Unit<'_>> {
        let store = self.store();
        let started = Instant::now();
        let mut next_check = started + PEER_CHECK_INTERVAL;
        let mut polls = 0u32;
        loop {
            if let Some(view) = self.take()? {
                return Ok(Unit::of_subscriber(self, view));
            }
            polls = polls.wrapping_add(1);
            if polls % BUSY_POLLS_PER_YIELD != 0 {
                std::hint::spin_loop();
                continue;
            }
            std::thread::yield_now();
            let now = Instant::now();
            if now >= next_check {
                if let Err(gone) = check_writers(store, true) {
                    // What the writer committed before it went is still delivered.
                    return match self.take()? {
                        Some(view) => Ok(Unit::of_subscriber(self, view)),
                        None => Err(gone),
                    };
                }
                next_check = now + PEER_CHECK_INTERVAL;
            }
            if now - started >= timeout {
                return Err(Error::Timeout {
                    what: "a committed unit",
                    waited: now - started,
                });
            }
        }
    }

    /// The policy chosen at attach.
    pub fn policy(&self) -> Policy {
        self.shared.cursor().policy()
    }

    /// The subscriber slot this handle holds (`0..subscribers`).
    pub fn slot(&self) -> u32 {
        self.shared.cursor().slot()
    }
}

impl Shared {
    fn cursor(&self) -> crate::sync::MutexGuard<'_, Cursor> {
        // A panic while the lock was held left the cursor as it was before the call: go on.
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the unit taken at `start`.
    pub(crate) fn end(&self, start: u64) {
        self.cursor().end(&self.store, start);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let slot = self.cursor().slot();
        detach_subscriber(&self.store, slot, self.held);
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("cursor", &*self.shared.cursor())
            .finish()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}
