//! Regions: creating and opening the shared memory that holds a ring.

use std::fmt;

use crate::error::Role;
use crate::layout::{validate_capacity, Geometry};
use crate::reader::Reader;
use crate::storage::{Storage, Store};
use crate::sync::Arc;
use crate::writer::Writer;
use crate::{Error, Result};

#[cfg(not(shm_arena_loom))]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What memory backs a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// An anonymous memory file (`memfd_create`): no name anywhere, shared with a child process
    /// by passing its descriptor (see [`Region::share_with_child`]). Sealed against shrinking
    /// and growing, so a peer cannot truncate it under a reader (no SIGBUS).
    #[default]
    Memfd,
    /// A POSIX shared-memory object with a random name, created exclusively with mode 0600 and
    /// unlinked when the creator's last handle goes (or by [`Region::unlink`]). Any process of
    /// the same user that knows the name can open it. Unlike a memfd it cannot be sealed: a
    /// process of that user could truncate it after it was opened, and the next access would
    /// raise SIGBUS. Prefer [`Backing::Memfd`] when the peer is a child process.
    Named,
    /// Private heap memory: threads of this process only.
    Anonymous,
}

/// How many handles share a region's ring.
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
}

impl Mode {
    pub(crate) fn geometry(self) -> Geometry {
        match self {
            Mode::Spsc => Geometry::SPSC,
            Mode::Mpmc { writers, readers } => Geometry {
                lanes: writers,
                readers,
            },
        }
    }

    fn of(geometry: Geometry) -> Mode {
        if geometry.is_mpmc() {
            Mode::Mpmc {
                writers: geometry.lanes,
                readers: geometry.readers,
            }
        } else {
            Mode::Spsc
        }
    }
}

/// Settings for [`Region::create_with`].
#[derive(Debug, Clone, Copy)]
pub struct RegionOptions {
    /// Ring size in bytes: a power of two, at least 4096 (the page size). In MPMC mode, the
    /// size of each writer's lane (the region holds `writers` of them).
    pub capacity: u64,
    /// What memory backs the region.
    pub backing: Backing,
    /// SPSC (the default) or MPMC.
    pub mode: Mode,
    /// Populate every page of the region when it is created and whenever a process opens it
    /// (`MAP_POPULATE`), instead of faulting pages in during the ring's first lap. Costs the
    /// whole region's memory and the time to zero it up front; pays off when the first units'
    /// latency matters or the ring is lapped only a few times. Default: off.
    pub prefault: bool,
}

impl RegionOptions {
    /// A memfd-backed SPSC ring of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        RegionOptions {
            capacity,
            backing: Backing::Memfd,
            mode: Mode::Spsc,
            prefault: false,
        }
    }

    /// Sets [`prefault`](Self::prefault).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// MPMC mode: up to `writers` writer handles (1..=[`MAX_WRITERS`](crate::layout::MAX_WRITERS)),
    /// each with a lane of `capacity` bytes, and up to `readers` reader handles
    /// (1..=[`MAX_READERS`](crate::layout::MAX_READERS)).
    pub fn mpmc(mut self, writers: u32, readers: u32) -> Self {
        self.mode = Mode::Mpmc { writers, readers };
        self
    }

    /// Chooses the backing memory.
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }
}

/// A snapshot of a lane's cursors (see [`Region::cursors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    /// Every unit before this position is committed.
    pub head: u64,
    /// Every unit before this position was ended and its bytes returned to the writer.
    pub tail: u64,
    /// MPMC: every unit before this position was taken by a reader. SPSC: 0 (the reader
    /// keeps its position privately).
    pub claim: u64,
}

/// Environment variable naming the descriptor a child inherits (see
/// [`Region::share_with_child`]).
pub const REGION_FD_ENV: &str = "SHM_ARENA_FD";

/// One shared mapping: a header followed by the data ring (SPSC) or one ring per writer
/// (MPMC).
///
/// An SPSC region hands out one [`Writer`] and one [`Reader`] (each in whichever process
/// opened it). An MPMC region ([`Region::create_mpmc`]) hands out up to its limits of each, in
/// any processes; see [`Mode::Mpmc`] and the crate docs for its guarantees. Handles keep the
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
        if let Mode::Mpmc { .. } = options.mode {
            options
                .mode
                .geometry()
                .validate_mpmc()
                .map_err(Error::InvalidArgument)?;
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

    /// Creates a memfd-backed MPMC region: up to `writers` writer handles, each with a lane of
    /// `lane_capacity` bytes, and up to `readers` reader handles.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::{Error, Region};
    ///
    /// let region = Region::create_mpmc(1 << 16, 2, 2)?;
    /// let (mut a, mut b) = (region.writer()?, region.writer()?);
    /// let (r1, r2) = (region.reader()?, region.reader()?);
    /// a.write_unit(&[b"from a"])?;
    /// b.write_unit(&[b"from b"])?;
    /// let u1 = r1.next_unit(Duration::from_secs(1))?;
    /// let u2 = r2.next_unit(Duration::from_secs(1))?;
    /// let mut got = vec![u1.blob(0)?.to_vec(), u2.blob(0)?.to_vec()];
    /// got.sort();
    /// assert_eq!(got, [b"from a".to_vec(), b"from b".to_vec()]);
    /// drop((u1, u2, a, b));
    /// assert!(matches!(r1.next_unit(Duration::from_secs(1)), Err(Error::Closed(_))));
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad capacity or limits; [`Error::Io`] if the OS
    /// refuses.
    pub fn create_mpmc(lane_capacity: u64, writers: u32, readers: u32) -> Result<Region> {
        Region::create_with(RegionOptions::new(lane_capacity).mpmc(writers, readers))
    }

    /// SPSC or MPMC, with the MPMC limits.
    pub fn mode(&self) -> Mode {
        Mode::of(self.store.geometry())
    }

    /// Attaches a writer handle in this process. SPSC: the region's one writer. MPMC: takes a
    /// free lane, or the lane of a writer whose process died (its committed units are still
    /// delivered; the unit it had begun is dropped).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if an SPSC region's writer was attached before (by any process), or
    /// every lane of an MPMC region has a live writer.
    pub fn writer(&self) -> Result<Writer> {
        Writer::attach(Arc::clone(&self.store))
    }

    /// Attaches a reader handle in this process. SPSC: the region's one reader. MPMC: takes a
    /// free slot, or the slot of a reader whose process died (after releasing its units).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if an SPSC region's reader was attached before (by any process), or
    /// every MPMC reader slot has a live reader.
    pub fn reader(&self) -> Result<Reader> {
        Reader::attach(Arc::clone(&self.store))
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

    /// Whether the process attached as `role` is still alive (true while none is attached).
    /// MPMC: whether no handle of that role is attached by a dead process.
    pub fn peer_alive(&self, role: Role) -> bool {
        use crate::participants::{holder, Holder};
        let store = &*self.store;
        let geometry = store.geometry();
        if !geometry.is_mpmc() {
            return crate::peer::check(store.shared(), role).is_ok();
        }
        let dead = |owner| matches!(holder(owner, true), Holder::Dead(_));
        match role {
            Role::Writer => !(0..geometry.lanes).any(|l| dead(&store.lane(l).owner.0)),
            Role::Reader => !(0..geometry.readers).any(|s| dead(&store.reader_slot(s).owner)),
        }
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

    /// Under loom: [`create_model`](Self::create_model) in any mode (capacity per lane).
    #[doc(hidden)]
    pub fn create_model_with(capacity: u64, mode: Mode) -> Region {
        assert!(capacity.is_power_of_two() && capacity >= 128);
        Region {
            store: Arc::new(crate::storage::model::Model::new(capacity, mode.geometry())),
        }
    }
}

#[cfg(not(shm_arena_loom))]
mod os {
    use super::*;
    use crate::layout::{validate_header_bytes, Prefix, FLAG_PREFAULT, HEADER_SIZE};
    use crate::storage::mapped::{region_len, Mapped};
    use rustix::fs::{MemfdFlags, Mode, SealFlags};

    fn map(fd: &OwnedFd, len: u64, what: &str, populate: bool) -> Result<memmap2::MmapRaw> {
        let len = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("{len} bytes do not fit in memory")))?;
        let mut options = memmap2::MmapOptions::new();
        options.len(len);
        if populate {
            options.populate();
        }
        options
            .map_raw(fd)
            .map_err(|e| Error::io(format!("mapping {len} bytes of {what}"), e))
    }

    fn random_name() -> Result<String> {
        use std::io::Read;
        let mut bytes = [0u8; 12];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| Error::io("reading /dev/urandom for a segment name", e))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("/shm-arena-{hex}"))
    }

    impl Region {
        pub(super) fn create_backing(options: RegionOptions) -> Result<Region> {
            let geometry = options.mode.geometry();
            let len = region_len(options.capacity, geometry);
            let (fd, name) = match options.backing {
                Backing::Anonymous => {
                    let store = Mapped::heap(options.capacity, geometry)
                        .map_err(|e| Error::io("allocating an anonymous region", e))?;
                    if options.prefault {
                        store.touch_pages();
                    }
                    return Ok(Region::init(store, options, None, None));
                }
                Backing::Memfd => {
                    let fd = rustix::fs::memfd_create(
                        "shm-arena",
                        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
                    )
                    .map_err(|e| Error::io("memfd_create", e))?;
                    rustix::fs::ftruncate(&fd, len)
                        .map_err(|e| Error::io(format!("sizing a memfd to {len} bytes"), e))?;
                    rustix::fs::fcntl_add_seals(
                        &fd,
                        SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
                    )
                    .map_err(|e| Error::io("sealing the memfd", e))?;
                    (fd, None)
                }
                Backing::Named => {
                    let mut attempt = 0;
                    loop {
                        let name = random_name()?;
                        match rustix::shm::open(
                            name.as_str(),
                            rustix::shm::OFlags::CREATE
                                | rustix::shm::OFlags::EXCL
                                | rustix::shm::OFlags::RDWR,
                            Mode::RUSR | Mode::WUSR,
                        ) {
                            Ok(fd) => {
                                if let Err(e) = rustix::fs::ftruncate(&fd, len) {
                                    let _ = rustix::shm::unlink(name.as_str());
                                    return Err(Error::io(
                                        format!("sizing {name} to {len} bytes"),
                                        e,
                                    ));
                                }
                                break (fd, Some(name));
                            }
                            Err(rustix::io::Errno::EXIST) if attempt < 8 => attempt += 1,
                            Err(e) => return Err(Error::io(format!("shm_open({name})"), e)),
                        }
                    }
                }
            };
            let map = match map(&fd, len, "a new region", options.prefault) {
                Ok(map) => map,
                Err(e) => {
                    if let Some(name) = &name {
                        let _ = rustix::shm::unlink(name.as_str());
                    }
                    return Err(e);
                }
            };
            let store = Mapped::from_map(map, options.capacity, geometry, name.clone());
            Ok(Region::init(store, options, Some(fd), name))
        }

        fn init(
            store: Mapped,
            options: RegionOptions,
            fd: Option<OwnedFd>,
            name: Option<String>,
        ) -> Region {
            let flags = if options.prefault { FLAG_PREFAULT } else { 0 };
            let prefix = Prefix::new(
                options.capacity,
                options.mode.geometry(),
                std::process::id(),
                flags,
            );
            // SAFETY: the region starts with at least a header page, freshly created by us and
            // not yet visible to any other handle; Prefix is plain data and the base is
            // page-aligned.
            unsafe { store.base().cast::<Prefix>().write(prefix) };
            Region {
                store: Arc::new(store),
                fd,
                name,
            }
        }

        /// Opens a region from a descriptor (a memfd or shm object another process created).
        ///
        /// The header is validated before anything else is trusted: magic, layout version,
        /// capacity, and that the object's size matches the header (a truncated region fails
        /// here, never with SIGBUS later). A memfd without seals against shrinking gets them.
        ///
        /// # Errors
        /// [`Error::Corrupt`] for an invalid header or size; [`Error::Io`] if the OS refuses.
        pub fn open_fd(fd: OwnedFd) -> Result<Region> {
            Region::open_inner(fd, None)
        }

        /// Opens a named region created by another process with [`Backing::Named`].
        ///
        /// # Errors
        /// As [`open_fd`](Self::open_fd); [`Error::Io`] if no such object exists.
        pub fn open_name(name: &str) -> Result<Region> {
            let fd = rustix::shm::open(name, rustix::shm::OFlags::RDWR, Mode::empty())
                .map_err(|e| Error::io(format!("shm_open({name})"), e))?;
            Region::open_inner(fd, None)
        }

        fn open_inner(fd: OwnedFd, name: Option<String>) -> Result<Region> {
            if let Ok(seals) = rustix::fs::fcntl_get_seals(&fd) {
                if !seals.contains(SealFlags::SHRINK) && !seals.contains(SealFlags::SEAL) {
                    // Best effort: a memfd made without ALLOW_SEALING refuses, which is fine.
                    let _ = rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK);
                }
            }
            let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat of the region", e))?;
            let len = u64::try_from(stat.st_size).unwrap_or(0);
            if len < HEADER_SIZE as u64 {
                return Err(Error::corrupt(
                    format!("region is {len} bytes, shorter than its {HEADER_SIZE}-byte header"),
                    0,
                ));
            }
            let header = map(&fd, HEADER_SIZE as u64, "a region header", false)?;
            let mut bytes = [0u8; std::mem::size_of::<Prefix>()];
            // SAFETY: the mapping is HEADER_SIZE bytes; the prefix is copied out with a volatile
            // read because another process may be writing it.
            unsafe {
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = header.as_ptr().add(i).read_volatile();
                }
            }
            drop(header);
            let prefix = validate_header_bytes(&bytes, len)?;
            let map = map(&fd, len, "the region", prefix.flags & FLAG_PREFAULT != 0)?;
            let store = Mapped::from_map(map, prefix.capacity, prefix.geometry(), None);
            Ok(Region {
                store: Arc::new(store),
                fd: Some(fd),
                name,
            })
        }

        /// The descriptor of a memfd or named region (none for [`Backing::Anonymous`]).
        pub fn fd(&self) -> Option<BorrowedFd<'_>> {
            self.fd.as_ref().map(|fd| fd.as_fd())
        }

        /// The name of a [`Backing::Named`] region this process created.
        pub fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }

        /// Removes the name of a [`Backing::Named`] region now (mappings stay valid). Do this
        /// once the peer has opened it; otherwise it happens when the creator's last handle goes.
        ///
        /// # Errors
        /// [`Error::Io`] if the name is already gone.
        pub fn unlink(&mut self) -> Result<()> {
            if let Some(name) = self.name.take() {
                rustix::shm::unlink(name.as_str())
                    .map_err(|e| Error::io(format!("shm_unlink({name})"), e))?;
            }
            Ok(())
        }

        /// Lets the child that `command` will start open this region with
        /// [`Region::from_env`]: the descriptor is inherited (close-on-exec cleared in the child
        /// only) and its number is put in [`REGION_FD_ENV`].
        ///
        /// # Errors
        /// [`Error::InvalidArgument`] for an anonymous region, which cannot be shared.
        pub fn share_with_child(&self, command: &mut std::process::Command) -> Result<()> {
            use std::os::unix::process::CommandExt;
            let fd: RawFd = self
                .fd
                .as_ref()
                .ok_or_else(|| {
                    Error::InvalidArgument("an anonymous region cannot be shared".into())
                })?
                .as_raw_fd();
            command.env(REGION_FD_ENV, fd.to_string());
            // SAFETY: the closure runs in the forked child before exec and only calls fcntl
            // (async-signal-safe) on a descriptor number the child inherited from fork.
            unsafe {
                command.pre_exec(move || {
                    let fd = BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                    Ok(())
                });
            }
            Ok(())
        }

        /// In a child started with [`share_with_child`](Self::share_with_child): opens the
        /// inherited region. Takes the descriptor at most once per process.
        ///
        /// # Errors
        /// [`Error::InvalidArgument`] if the variable is missing or malformed, the descriptor
        /// is not open, or it was taken already; otherwise as [`open_fd`](Self::open_fd).
        pub fn from_env() -> Result<Region> {
            use std::sync::atomic::{AtomicBool, Ordering};
            static TAKEN: AtomicBool = AtomicBool::new(false);
            let value = std::env::var(REGION_FD_ENV).map_err(|_| {
                Error::InvalidArgument(format!(
                    "{REGION_FD_ENV} is not set: not started with share_with_child"
                ))
            })?;
            let raw: RawFd = value.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!("{REGION_FD_ENV}={value:?} is not a descriptor"))
            })?;
            if raw < 0 {
                return Err(Error::InvalidArgument(format!("{REGION_FD_ENV}={raw}")));
            }
            // SAFETY: only borrowed for the check; F_GETFD does not act on the descriptor.
            let valid = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(raw) }).is_ok();
            if !valid {
                return Err(Error::InvalidArgument(format!(
                    "{REGION_FD_ENV}={raw} is not an open descriptor"
                )));
            }
            // Relaxed: the flag only guards against taking the same descriptor twice.
            if TAKEN.swap(true, Ordering::Relaxed) {
                return Err(Error::InvalidArgument(format!(
                    "the inherited region ({REGION_FD_ENV}={raw}) was opened already"
                )));
            }
            // SAFETY: the descriptor is open (checked), was inherited for us by
            // `share_with_child`, and TAKEN makes this the only owner in this process.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            Region::open_fd(fd)
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
