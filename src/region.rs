//! Regions: creating and opening the shared memory that holds a ring.

use std::fmt;

use crate::error::Role;
use crate::layout::validate_capacity;
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

/// Settings for [`Region::create_with`].
#[derive(Debug, Clone, Copy)]
pub struct RegionOptions {
    /// Ring size in bytes: a power of two, at least 4096 (the page size).
    pub capacity: u64,
    /// What memory backs the region.
    pub backing: Backing,
}

impl RegionOptions {
    /// A memfd-backed ring of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        RegionOptions {
            capacity,
            backing: Backing::Memfd,
        }
    }

    /// Chooses the backing memory.
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }
}

/// A snapshot of a ring's cursors (see [`Region::cursors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    /// Every unit before this position is committed.
    pub head: u64,
    /// Every unit before this position was ended and its bytes returned to the writer.
    pub tail: u64,
}

/// Environment variable naming the descriptor a child inherits (see
/// [`Region::share_with_child`]).
pub const REGION_FD_ENV: &str = "SHM_ARENA_FD";

/// One shared mapping: a header page followed by the data ring.
///
/// A region hands out one [`Writer`] and one [`Reader`] (each in whichever process opened it);
/// both keep the mapping alive, so the region itself may be dropped once they exist.
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

    /// Attaches this process as the region's writer.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a writer was attached before (by any process).
    pub fn writer(&self) -> Result<Writer> {
        Writer::attach(Arc::clone(&self.store))
    }

    /// Attaches this process as the region's reader.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] if a reader was attached before (by any process).
    pub fn reader(&self) -> Result<Reader> {
        Reader::attach(Arc::clone(&self.store))
    }

    #[cfg_attr(shm_arena_loom, allow(dead_code))]
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Ring size in bytes.
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    /// The ring's cursors now, for monitoring and tests: `head - tail` bytes are committed and
    /// not yet returned by the reader. A snapshot: both may move right after.
    pub fn cursors(&self) -> Cursors {
        use crate::sync::Ordering;
        let shared = self.store.shared();
        Cursors {
            // Acquire: pairs with the Release store in `UnitWriter::commit`.
            head: shared.head.0.load(Ordering::Acquire),
            // Acquire: pairs with the tail CAS in `advance_tail`.
            tail: shared.tail.0.load(Ordering::Acquire),
        }
    }

    /// Whether the process attached as `role` is still alive (true while none is attached).
    pub fn peer_alive(&self, role: Role) -> bool {
        crate::peer::check(self.store.shared(), role).is_ok()
    }
}

#[cfg(shm_arena_loom)]
impl Region {
    fn create_backing(options: RegionOptions) -> Result<Region> {
        Ok(Region {
            store: Arc::new(crate::storage::model::Model::new(options.capacity)),
        })
    }

    /// Under loom: a region with a capacity below the page size, to keep models small.
    #[doc(hidden)]
    pub fn create_model(capacity: u64) -> Region {
        assert!(capacity.is_power_of_two() && capacity >= 128);
        Region {
            store: Arc::new(crate::storage::model::Model::new(capacity)),
        }
    }
}

#[cfg(not(shm_arena_loom))]
mod os {
    use super::*;
    use crate::layout::{validate_header_bytes, Prefix, HEADER_SIZE, MODE_SPSC};
    use crate::storage::mapped::Mapped;
    use rustix::fs::{MemfdFlags, Mode, SealFlags};

    fn map(fd: &OwnedFd, len: u64, what: &str) -> Result<memmap2::MmapRaw> {
        let len = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("{len} bytes do not fit in memory")))?;
        memmap2::MmapOptions::new()
            .len(len)
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
            let len = HEADER_SIZE as u64 + options.capacity;
            let (fd, name) = match options.backing {
                Backing::Anonymous => {
                    let store = Mapped::heap(options.capacity)
                        .map_err(|e| Error::io("allocating an anonymous region", e))?;
                    return Ok(Region::init(store, options.capacity, None, None));
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
            let map = match map(&fd, len, "a new region") {
                Ok(map) => map,
                Err(e) => {
                    if let Some(name) = &name {
                        let _ = rustix::shm::unlink(name.as_str());
                    }
                    return Err(e);
                }
            };
            let store = Mapped::from_map(map, options.capacity, name.clone());
            Ok(Region::init(store, options.capacity, Some(fd), name))
        }

        fn init(store: Mapped, capacity: u64, fd: Option<OwnedFd>, name: Option<String>) -> Region {
            let prefix = Prefix::new(capacity, MODE_SPSC, std::process::id());
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
            let header = map(&fd, HEADER_SIZE as u64, "a region header")?;
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
            let map = map(&fd, len, "the region")?;
            let store = Mapped::from_map(map, prefix.capacity, None);
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
        d.field("capacity", &self.store.capacity());
        #[cfg(not(shm_arena_loom))]
        d.field("fd", &self.fd).field("name", &self.name);
        d.finish()
    }
}
