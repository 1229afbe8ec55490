//! How a region is made: its size, mode and backing memory.

use crate::layout::Geometry;

/// What memory backs a region.
///
/// # Examples
///
/// ```
/// use shm_arena::{Backing, Region, RegionOptions};
///
/// let threads_only = Region::create_with(RegionOptions::new(1 << 16).backing(Backing::Anonymous))?;
/// assert!(threads_only.fd().is_none());
/// let named = Region::create_with(RegionOptions::new(1 << 16).backing(Backing::Named))?;
/// assert!(named.name().unwrap().starts_with("/shm-arena-"));
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// An anonymous memory file (`memfd_create`): no name anywhere, shared with a child process
    /// by passing its descriptor (see [`Region::share_with_child`](crate::Region::share_with_child)). Sealed against shrinking
    /// and growing, so a peer cannot truncate it under a reader (no SIGBUS).
    #[default]
    Memfd,
    /// A POSIX shared-memory object with a random name, created exclusively with mode 0600 and
    /// unlinked when the creator's last handle goes (or by [`Region::unlink`](crate::Region::unlink)). Any process of
    /// the same user that knows the name can open it. Unlike a memfd it cannot be sealed: a
    /// process of that user could truncate it after it was opened, and the next access would
    /// raise SIGBUS. Prefer [`Backing::Memfd`] when the peer is a child process.
    Named,
    /// Private heap memory: threads of this process only.
    Anonymous,
}

/// How many handles share a region's ring.
///
/// # Examples
///
/// ```
/// use shm_arena::{Mode, Region, RegionOptions};
///
/// assert_eq!(Region::create(1 << 16)?.mode(), Mode::Spsc);
/// let mpmc = Region::create_with(RegionOptions::new(1 << 16).mpmc(2, 4))?;
/// assert_eq!(mpmc.mode(), Mode::Mpmc { writers: 2, readers: 4 });
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One writer, one reader.
    Spsc,
    /// Up to `writers` writer handles (one lane each) and `readers` reader handles, in any
    /// processes.
    Mpmc {
        /// Writer limit: the number of lanes.
        writers: u32,
        /// Reader limit.
        readers: u32,
    },
    /// One writer and up to `subscribers` subscriber handles, each of which sees every unit
    /// ([`RegionOptions::broadcast`]).
    Broadcast {
        /// Subscriber limit.
        subscribers: u32,
    },
}

impl Mode {
    pub(crate) fn geometry(self) -> Geometry {
        match self {
            Mode::Spsc => Geometry::SPSC,
            Mode::Mpmc { writers, readers } => Geometry::mpmc(writers, readers),
            Mode::Broadcast { subscribers } => Geometry::broadcast(subscribers),
        }
    }

    pub(crate) fn of(geometry: Geometry) -> Mode {
        if geometry.mpmc {
            Mode::Mpmc {
                writers: geometry.lanes,
                readers: geometry.readers,
            }
        } else if geometry.broadcast {
            Mode::Broadcast {
                subscribers: geometry.readers,
            }
        } else {
            Mode::Spsc
        }
    }
}

/// Settings for [`Region::create_with`](crate::Region::create_with): a builder.
///
/// # Examples
///
/// ```
/// use shm_arena::{Backing, Mode, Region, RegionOptions};
///
/// // Two writers with a 64 KiB lane each, three readers, in POSIX shared memory.
/// let options = RegionOptions::new(1 << 16).mpmc(2, 3).backing(Backing::Named);
/// let region = Region::create_with(options)?;
/// assert_eq!(region.mode(), Mode::Mpmc { writers: 2, readers: 3 });
/// assert!(region.name().is_some());
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RegionOptions {
    pub(crate) capacity: u64,
    pub(crate) backing: Backing,
    pub(crate) mode: Mode,
    pub(crate) prefault: bool,
}

impl RegionOptions {
    /// A memfd-backed SPSC ring of `capacity` bytes: a power of two, at least 4096 (the page
    /// size) and a multiple of the page size. In MPMC mode, the size of each writer's lane
    /// (the region holds one per writer).
    pub fn new(capacity: u64) -> Self {
        RegionOptions {
            capacity,
            backing: Backing::Memfd,
            mode: Mode::Spsc,
            prefault: false,
        }
    }

    /// Populate every page of the region when it is created and whenever a process opens it
    /// (`MAP_POPULATE`), instead of faulting pages in during the ring's first lap. Costs the
    /// whole region's memory and the time to zero it up front; pays off when the first units'
    /// latency matters or the ring is lapped only a few times. Default: off.
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// MPMC mode (the only way to ask for it): up to `writers` writer handles
    /// (1..=[`MAX_WRITERS`](crate::MAX_WRITERS)), each with a lane of `capacity` bytes, and up
    /// to `readers` reader handles (1..=[`MAX_READERS`](crate::MAX_READERS)).
    pub fn mpmc(mut self, writers: u32, readers: u32) -> Self {
        self.mode = Mode::Mpmc { writers, readers };
        self
    }

    /// Broadcast mode: one writer, and up to `subscribers` subscriber handles
    /// (1..=[`MAX_READERS`](crate::MAX_READERS)), in any processes, each of which sees every
    /// unit ([`Region::subscriber`](crate::Region::subscriber)).
    ///
    /// # Examples
    ///
    /// ```
    /// use shm_arena::{Mode, Region, RegionOptions};
    ///
    /// let region = Region::create_with(RegionOptions::new(1 << 16).broadcast(4))?;
    /// assert_eq!(region.mode(), Mode::Broadcast { subscribers: 4 });
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn broadcast(mut self, subscribers: u32) -> Self {
        self.mode = Mode::Broadcast { subscribers };
        self
    }

    /// Chooses the backing memory (default [`Backing::Memfd`]).
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }
}
