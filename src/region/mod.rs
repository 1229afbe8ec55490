//! Regions: the handle on one shared mapping, from which writers and readers attach.
//!
//! The handle and its options live here; the OS backings (memfd, POSIX shm, heap) are in
//! `os.rs`, handing a region to a child process in `inherit.rs`.

use std::fmt;

use crate::error::Role;
use crate::layout::validate_capacity;
use crate::reader::Reader;
use crate::reader::{Policy, Subscriber};
use crate::ring::participants::{expected_dead, role_alive, role_attached};
use crate::storage::{Storage, Store};
use crate::sync::Arc;
use crate::writer::Writer;
use crate::{Error, Result};

#[cfg(not(shm_arena_loom))]
use std::os::fd::OwnedFd;

#[cfg(not(shm_arena_loom))]
mod inherit;
mod options;
#[cfg(not(shm_arena_loom))]
mod os;

pub use options::{Backing, Mode, RegionOptions};

/// A snapshot of a lane's cursors (see [`Region::cursors`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// writer.write_unit(&[&[0u8; 100]])?; // record 64 + blob 128 (aligned)
/// let unit = reader.next_unit(Duration::from_secs(1))?;
/// let c = region.cursors();
/// assert_eq!((c.head, c.claim, c.tail), (192, 192, 0)); // committed, taken, not ended
/// drop(unit);
/// assert_eq!(region.cursors().tail, 192);
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    /// Every unit before this position is committed.
    pub head: u64,
    /// Every unit before this position was ended and its bytes returned to the writer.
    pub tail: u64,
    /// Every unit before this position was taken by a reader.
    pub claim: u64,
}

/// Environment variable naming the descriptor a child inherits (see
/// [`Region::share_with_child`]).
pub const REGION_FD_ENV: &str = "SHM_ARENA_FD";

/// One shared mapping: a header followed by the data ring (SPSC) or one ring per writer
/// (MPMC).
///
/// An SPSC region hands out one [`Writer`] and one [`Reader`] (each in whichever process
/// opened it) at a time. An MPMC region ([`RegionOptions::mpmc`]) hands out up to its limits
/// of each, in any processes; see [`Mode::Mpmc`] and the crate docs for its guarantees. Handles keep the
/// mapping alive, so the region itself may be dropped once they exist.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let mut writer = region.writer()?;
/// let reader = region.reader()?;
///
/// let mut unit = writer.begin_unit()?;
/// unit.push(b"metadata")?;
/// unit.blob_mut(4)?.copy_from_slice(&[1, 2, 3, 4]); // filled in place
/// unit.commit()?;
///
/// let unit = reader.next_unit(Duration::from_secs(1))?;
/// assert_eq!(unit.blob(0)?, b"metadata");
/// assert_eq!(unit.blob(1)?, &[1, 2, 3, 4]);
/// drop(unit); // ends the unit: its space goes back to the writer
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct Region {
    store: Arc<Store>,
    #[cfg(not(shm_arena_loom))]
    fd: Option<OwnedFd>,
    #[cfg(not(shm_arena_loom))]
    name: Option<String>,
}

impl Region {
    /// Creates a memfd-backed region with a ring of `capacity` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad capacity; [`Error::Io`] if the OS refuses.
    pub fn create(capacity: u64) -> Result<Region> {
        Region::create_with(RegionOptions::new(capacity))
    }

    /// Creates a region as `options` say.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad capacity; [`Error::Io`] if the OS refuses.
    pub fn create_with(options: RegionOptions) -> Result<Region> {
        validate_capacity(options.capacity).map_err(Error::InvalidArgument)?;
        match options.mode {
            Mode::Spsc => {}
            Mode::Mpmc { .. } => options
                .mode
                .geometry()
                .validate_mpmc()
                .map_err(Error::InvalidArgument)?,
            Mode::Broadcast { .. } => options
                .mode
                .geometry()
                .validate_broadcast()
                .map_err(Error::InvalidArgument)?,
        }
        #[cfg(not(any(shm_arena_loom, miri)))]
        {
            // The ring must be whole pages so the header page and the ring map cleanly.
            let page = rustix::param::page_size() as u64;
            if options.capacity % page != 0 {
                return Err(Error::InvalidArgument(format!(
                    "capacity {} is not a multiple of the page size {page}",
                    options.capacity
                )));
            }
        }
        Region::create_backing(options)
    }

    /// SPSC or MPMC, with the MPMC limits.
    pub fn mode(&self) -> Mode {
        Mode::of(self.store.geometry())
    }

    /// Attaches a writer handle in this process: takes a free lane (SPSC: the one lane), or
    /// the lane of a writer that was dropped or whose process died. The new writer continues
    /// after the last unit committed there (a dead writer's committed units are still
    /// delivered; the unit it had begun is dropped).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if every lane has a live writer (SPSC: the writer is attached, in
    /// this process or another); [`Error::Corrupt`] if the lane's cursors are impossible.
    pub fn writer(&self) -> Result<Writer> {
        Writer::attach(Arc::clone(&self.store))
    }

    /// Attaches a reader handle in this process: takes a free reader slot (SPSC: the one
    /// slot), or the slot of a reader that detached (see [`Reader`]) or whose process died,
    /// after releasing the units the dead one held (lost to it, never delivered twice). An
    /// SPSC reader continues after the last unit its predecessor took.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if every reader slot has a live reader (SPSC: the reader is
    /// attached, in this process or another); [`Error::Corrupt`] if the cursors are
    /// impossible; [`Error::InvalidArgument`] on a broadcast region (it has subscribers:
    /// [`subscriber`](Self::subscriber)).
    pub fn reader(&self) -> Result<Reader> {
        if self.store.geometry().broadcast {
            return Err(Error::InvalidArgument(
                "a broadcast region has no reader: attach a subscriber (Region::subscriber)".into(),
            ));
        }
        Reader::attach(Arc::clone(&self.store))
    }

    /// Attaches a subscriber of a broadcast region ([`RegionOptions::broadcast`]) in this
    /// process: it sees every unit committed from now on, in order (see [`Subscriber`] for
    /// the two policies). Takes a free slot, or the slot of a subscriber that detached or whose
    /// process died.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::{Policy, Region, RegionOptions};
    ///
    /// let region = Region::create_with(RegionOptions::new(1 << 16).broadcast(2))?;
    /// let a = region.subscriber(Policy::Backpressure)?;
    /// let b = region.subscriber(Policy::Leaky)?;
    /// region.writer()?.write_unit(&[b"news"])?;
    /// assert_eq!(a.next_unit(Duration::from_secs(1))?.blob(0)?, b"news");
    /// assert_eq!(b.next_unit(Duration::from_secs(1))?.blob(0)?, b"news");
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if every subscriber slot has a live subscriber;
    /// [`Error::InvalidArgument`] if the region is not a broadcast region;
    /// [`Error::Corrupt`] if the cursors or the units between them are impossible.
    pub fn subscriber(&self, policy: Policy) -> Result<Subscriber> {
        if !self.store.geometry().broadcast {
            return Err(Error::InvalidArgument(format!(
                "subscriber(): this region is {:?}, not a broadcast region \
                 (RegionOptions::broadcast); attach a reader instead",
                self.mode()
            )));
        }
        Subscriber::attach(Arc::clone(&self.store), policy)
    }

    #[cfg_attr(shm_arena_loom, allow(dead_code))]
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Ring size in bytes (MPMC: of each lane).
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    /// The ring's cursors now (MPMC: lane 0's; see [`lane_cursors`](Self::lane_cursors)),
    /// for monitoring and tests: `head - tail` bytes are committed and not yet returned by the
    /// reader. A snapshot: both may move right after.
    pub fn cursors(&self) -> Cursors {
        self.lane_cursors(0).expect("every region has lane 0")
    }

    /// Lane `lane`'s cursors now (None if there is no such lane).
    pub fn lane_cursors(&self, lane: u32) -> Option<Cursors> {
        use crate::sync::Ordering;
        if lane >= self.store.geometry().lanes {
            return None;
        }
        let cursors = self.store.lane(lane);
        Some(Cursors {
            // Acquire: pairs with the Release store in `UnitWriter::commit`.
            head: cursors.head.0.load(Ordering::Acquire),
            // Acquire: pairs with the tail CAS in `advance_tail`.
            tail: cursors.tail.0.load(Ordering::Acquire),
            // Acquire: pairs with the claim CAS in `claim_in_lane`.
            claim: cursors.claim.0.load(Ordering::Acquire),
        })
    }

    /// Waits until a handle of `role` is attached by a live process, at most `timeout`.
    ///
    /// For regions handed to unrelated processes (a [`Backing::Named`] region opened by name):
    /// until the other side attaches, the region cannot know who it will be, so a reader's
    /// [`next_unit`](Reader::next_unit) simply waits for its deadline. Call this first to
    /// bound the wait for the other side to show up. (For a child started with
    /// [`share_with_child`](Self::share_with_child) the region knows the child: its death
    /// before attaching ends this wait, and the waits of the ring, with
    /// [`Error::PeerGone`].) Polls every few milliseconds.
    ///
    /// # Errors
    /// [`Error::Timeout`] if nobody attached in time; [`Error::PeerGone`] if every child the
    /// region was handed to died before attaching.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::{Error, Region, Role};
    ///
    /// let region = Region::create(1 << 16)?;
    /// let waited = region.wait_for_peer(Role::Writer, Duration::from_millis(20));
    /// assert!(matches!(waited, Err(Error::Timeout { .. })));
    /// let _writer = region.writer()?;
    /// region.wait_for_peer(Role::Writer, Duration::from_secs(1))?;
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn wait_for_peer(&self, role: Role, timeout: std::time::Duration) -> Result<()> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(100);
        loop {
            if role_attached(&self.store, role) {
                return Ok(());
            }
            expected_dead(&self.store, role)?;
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::Timeout {
                    what: match role {
                        Role::Writer => "a writer to attach",
                        Role::Reader => "a reader to attach",
                    },
                    waited,
                });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(std::time::Duration::from_millis(10));
        }
    }

    /// Shuts the region down for good, for every process that has it open: waits for space and
    /// for units end at once with [`Error::Shutdown`] (readers first drain what was
    /// committed), and `begin_unit` fails with it. For tearing a pipeline down while a writer
    /// may be blocked on a ring its consumer still holds units of.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::{Error, Region};
    ///
    /// let region = Region::create(1 << 16)?;
    /// let (mut writer, reader) = (region.writer()?, region.reader()?);
    /// writer.write_unit(&[b"last"])?;
    /// region.shutdown();
    /// assert!(matches!(writer.begin_unit(), Err(Error::Shutdown)));
    /// assert_eq!(reader.next_unit(Duration::from_secs(1))?.blob(0)?, b"last");
    /// assert!(matches!(reader.next_unit(Duration::from_secs(1)), Err(Error::Shutdown)));
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn shutdown(&self) {
        crate::ring::participants::shutdown(&self.store);
    }

    /// Whether no handle of `role` is attached by a process that died (true while none is
    /// attached).
    pub fn peer_alive(&self, role: Role) -> bool {
        role_alive(&self.store, role)
    }
}

#[cfg(shm_arena_loom)]
impl Region {
    fn create_backing(options: RegionOptions) -> Result<Region> {
        Ok(Region {
            store: Arc::new(crate::storage::model::Model::new(
                options.capacity,
                options.mode.geometry(),
            )),
        })
    }

    /// Under loom: a region with a capacity below the page size, to keep models small.
    #[doc(hidden)]
    pub fn create_model(capacity: u64) -> Region {
        Region::create_model_with(capacity, Mode::Spsc)
    }

    /// Under loom: marks the holder of `role`'s slot `index` (a lane for writers) dead, as if
    /// its process had been killed. Its handles must not be used afterwards (forget its unit
    /// guards; dropping the handle itself leaves the slot alone).
    #[doc(hidden)]
    pub fn model_kill(&self, role: Role, index: u32) {
        let slot = match role {
            Role::Writer => &self.store.lane(index).writer.0,
            Role::Reader => &self.store.reader_slot(index).reader,
        };
        crate::ring::presence::model_kill(slot);
    }

    /// Under loom: [`create_model`](Self::create_model) in any mode (capacity per lane).
    #[doc(hidden)]
    pub fn create_model_with(capacity: u64, mode: Mode) -> Region {
        assert!(capacity.is_power_of_two() && capacity >= 128);
        Region {
            store: Arc::new(crate::storage::model::Model::new(capacity, mode.geometry())),
        }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Region");
        d.field("capacity", &self.store.capacity())
            .field("mode", &self.mode());
        #[cfg(not(shm_arena_loom))]
        d.field("fd", &self.fd).field("name", &self.name);
        d.finish()
    }
}
