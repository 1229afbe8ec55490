//! The OS side of regions: memfd, POSIX shm and heap backings, created and opened, sealed,
//! mapped and sized against their header.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, SealFlags};

use super::{Backing, Region, RegionOptions};
use crate::layout::{validate_header_bytes, Prefix, FLAG_PREFAULT, HEADER_SIZE};
use crate::storage::mapped::{region_len, Mapped};
use crate::sync::Arc;
use crate::{Error, Result};

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
                                return Err(Error::io(format!("sizing {name} to {len} bytes"), e));
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
            name: None,
        })
    }

    /// Opens a named region created by another process with [`Backing::Named`].
    ///
    /// # Errors
    /// As [`open_fd`](Self::open_fd); [`Error::Io`] if no such object exists.
    pub fn open_name(name: &str) -> Result<Region> {
        let fd = rustix::shm::open(name, rustix::shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| Error::io(format!("shm_open({name})"), e))?;
        Region::open_fd(fd)
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
}
