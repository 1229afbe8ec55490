//! Handing a region to a child process: the descriptor is inherited across exec.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{Region, REGION_FD_ENV};
use crate::layout::Expected;
use crate::ring::participants::{expect_child, prune_expected};
use crate::storage::Storage;
use crate::sync::Arc;
use crate::{Error, Result};

impl Region {
    /// Lets the child that `command` will start open this region with
    /// [`Region::from_env`]: the descriptor is inherited (close-on-exec cleared in the child
    /// only) and its number is put in [`REGION_FD_ENV`].
    ///
    /// The child also records itself in the region as *expected* (between fork and exec, so
    /// before anything of it runs): until a handle of the other role attaches, a side waiting
    /// for one (a reader in [`Reader::next_unit`](crate::Reader::next_unit), a writer waiting
    /// for space, [`Region::wait_for_peer`]) gets [`Error::PeerGone`] within about 100 ms of
    /// every expected child having died, instead of waiting for its deadline. The region
    /// remembers up to eight children that have not attached yet (more go unrecorded); those
    /// that died are forgotten when the region is handed to the next one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an anonymous region, which cannot be shared.
    pub fn share_with_child(&self, command: &mut std::process::Command) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let fd: RawFd = self
            .fd
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("an anonymous region cannot be shared".into()))?
            .as_raw_fd();
        command.env(REGION_FD_ENV, fd.to_string());
        prune_expected(self.store());
        // The mapping is inherited by the forked child at the same address; passed as an
        // integer because the closure must be `Send + Sync`.
        let expected = std::ptr::from_ref(&self.store().shared().expected.0) as usize;
        // Keeps the mapping (and so `expected`) alive until the command is dropped: the
        // closure may run for every spawn of the command.
        let keep = Arc::clone(&self.store);
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl and
        // getpid (async-signal-safe) on a descriptor number the child inherited from fork, and
        // atomics on the inherited mapping, which `keep` keeps mapped in the parent and so in
        // the child at fork time.
        unsafe {
            command.pre_exec(move || {
                let _ = &keep;
                let expected = &*(expected as *const Expected);
                expect_child(
                    expected,
                    rustix::process::getpid().as_raw_nonzero().get() as u32,
                );
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
