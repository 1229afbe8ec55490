//! The in-flight limit ([`Options::max_in_flight`](super::Options::max_in_flight)): a page of
//! counters in a small memfd shared by the parent and the worker.
//!
//! The ring bounds items in flight by bytes; this bounds them by count, which matters for small
//! items (a ring of 16 MiB holds thousands of 4 KiB items). The worker counts the items it
//! sends; the parent bumps `ENDED` each time it ends one. Both counters wrap (u32); only their
//! difference is used.
//!
//! Sleeping uses the crate's one futex protocol ([`crate::futex`]): `ENDED` and `CLOSED` are
//! plain data, and the worker sleeps on a separate word, `SIGNAL`, with the armed bit. The
//! Dekker pair is the SeqCst fence in [`Limit::wait_below`] (after arming `SIGNAL`, before
//! re-loading `ENDED`/`CLOSED`) and the SeqCst fence in `Limit::wake_worker`, called by
//! [`Limit::end_one`] and [`Limit::close`] (after bumping `ENDED` or setting `CLOSED`, before
//! [`disarm`]): either the parent sees the arming and wakes, or the worker's re-check sees the
//! change. So the parent makes a wake syscall only when the worker is (about to be) asleep.
//!
//! The page is private to one parent and the worker it started (same executable), so its
//! layout is not a stable format.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use crate::futex::{arm, disarm, wait as futex_wait, wake as futex_wake};
use crate::{Error, Result, Role};

const PAGE: u64 = 4096;
/// Items the parent has ended (data: a counter, never slept on).
const ENDED: usize = 0;
/// Set by the parent when it stops reading, so a sleeping worker gives up at once (data).
const CLOSED: usize = 64;
/// The futex word the worker sleeps on: armed bit and wake rounds ([`crate::futex`]). On its
/// own cache line, apart from the counters.
const SIGNAL: usize = 128;

/// How often a sleeping worker checks that the parent still reads.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A mapping of the counter page.
#[derive(Debug)]
pub(crate) struct Limit {
    map: memmap2::MmapRaw,
}

impl Limit {
    /// Creates the page (parent side); the descriptor is for the child to inherit.
    pub(crate) fn create() -> Result<(Limit, OwnedFd)> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create(
            "shm-arena-limit",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| Error::io("memfd_create for the in-flight counter", e))?;
        rustix::fs::ftruncate(&fd, PAGE).map_err(|e| Error::io("sizing the counter page", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| Error::io("sealing the counter page", e))?;
        let limit = Limit::open(&fd)?;
        Ok((limit, fd))
    }

    /// Maps the page from an inherited descriptor (worker side).
    pub(crate) fn open(fd: &OwnedFd) -> Result<Limit> {
        let stat = rustix::fs::fstat(fd).map_err(|e| Error::io("fstat of the counter page", e))?;
        if u64::try_from(stat.st_size).unwrap_or(0) < PAGE {
            return Err(Error::InvalidArgument(format!(
                "the in-flight counter page is {} bytes, expected {PAGE}",
                stat.st_size
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(PAGE as usize)
            .map_raw(fd)
            .map_err(|e| Error::io("mapping the counter page", e))?;
        Ok(Limit { map })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= PAGE as usize && offset % 4 == 0);
        // SAFETY: the mapping is PAGE bytes, page-aligned, and lives as long as `self`; the
        // offset is in bounds and 4-aligned. The memory is only ever accessed atomically, by
        // this process and the peer, which is what `AtomicU32::from_ptr` requires.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    /// Parent: one more item ended; wakes the worker if it sleeps.
    pub(crate) fn end_one(&self) {
        // Release: pairs with the Acquire loads of ENDED in `below` (and so `wait_below`): the
        // worker that sees the new count also sees that the unit was ended (its space returned).
        self.word(ENDED).fetch_add(1, Ordering::Release);
        self.wake_worker();
    }

    /// Parent: stops the worker's waits for good.
    pub(crate) fn close(&self) {
        // Release: pairs with the Acquire load of CLOSED in `wait_below`.
        self.word(CLOSED).store(1, Ordering::Release);
        self.wake_worker();
    }

    /// Parent, after changing ENDED or CLOSED: wakes the worker if it armed SIGNAL.
    fn wake_worker(&self) {
        // SeqCst fence: the parent's half of the Dekker pair with the fence in `wait_below`
        // (between arming SIGNAL and re-loading ENDED/CLOSED): either `disarm` sees the
        // arming, or the worker's re-check sees the change (module docs, `crate::futex`).
        fence(Ordering::SeqCst);
        let signal = self.word(SIGNAL);
        if disarm(signal) {
            futex_wake(signal);
        }
    }

    /// Worker: whether fewer than `max` of the `sent` items are in flight now.
    pub(crate) fn below(&self, sent: u32, max: u32) -> bool {
        // Acquire: pairs with the Release increment in `end_one`.
        in_flight_below(sent, self.word(ENDED).load(Ordering::Acquire), max)
    }

    /// Worker: waits until fewer than `max` of the `sent` items are in flight.
    ///
    /// `reader_alive` is asked every [`CHECK_INTERVAL`] while sleeping.
    ///
    /// # Errors
    /// [`Error::Closed`] once the parent stopped reading; the error of `reader_alive` if the
    /// parent died.
    pub(crate) fn wait_below(
        &self,
        sent: u32,
        max: u32,
        reader_alive: impl Fn() -> Result<()>,
    ) -> Result<()> {
        let signal = self.word(SIGNAL);
        let ready = || -> Result<bool> {
            // Acquire: pairs with the Release store in `close`.
            if self.word(CLOSED).load(Ordering::Acquire) != 0 {
                return Err(Error::Closed(Role::Reader));
            }
            Ok(self.below(sent, max))
        };
        loop {
            if ready()? {
                return Ok(());
            }
            let armed = arm(signal);
            // SeqCst fence: the worker's half of the Dekker pair with the fence in
            // `wake_worker`: orders the arming before the re-check of ENDED and CLOSED.
            fence(Ordering::SeqCst);
            if ready()? {
                return Ok(());
            }
            futex_wait(signal, armed, Some(CHECK_INTERVAL));
            reader_alive()?;
        }
    }
}

/// Whether `sent - ended < max`, with wrapping counters. Units written through the raw writer
/// are ended but not counted as sent, so the difference may go "negative": that counts as
/// nothing in flight.
fn in_flight_below(sent: u32, ended: u32, max: u32) -> bool {
    let in_flight = sent.wrapping_sub(ended);
    in_flight < max || in_flight > u32::MAX / 2
}
