//! Asymmetric fences for the wake-up handshakes: the side that makes progress (a commit, an
//! in-order release) pays a compiler fence, the side about to sleep pays a `membarrier`
//! system call.
//!
//! Every wake-up is a store-buffer (Dekker) pattern: the waker stores its progress, then loads
//! the waiter count; the waiter raises the count, then re-checks the progress. Each side needs
//! a full fence between its store and its load, or both could miss the other. A full fence
//! (`mfence` on x86) on every unit is most of the cost of a small unit, so the fast side uses
//! [`light`], and the sleeping side, which is about to make a system call anyway, uses
//! [`heavy`]: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` makes every running thread of every
//! process registered for it execute a full barrier before the call returns (a thread that is
//! not running passes one when it is scheduled), which stands in for the fence the fast side
//! skipped. This is the kernel's documented use of membarrier (see membarrier(2)).
//!
//! A process uses the compiler-only [`light`] only after its own registration succeeded, so a
//! sleeper's `membarrier` always reaches it. If a sleeper cannot call `membarrier` (a seccomp
//! filter, an old kernel), it falls back to a full fence; a wake-up it then misses is caught
//! by its wait's 100 ms slice, never a hang. Under loom and Miri both sides are plain SeqCst
//! fences, so loom checks the protocol with the symmetric handshake. Setting the environment
//! variable `SHM_ARENA_SYMMETRIC_FENCES` (to anything) before the first handle attaches turns
//! the asymmetric pair off in that process (for comparison, or a kernel without membarrier).

#[cfg(not(any(shm_arena_loom, miri)))]
mod imp {
    use std::sync::atomic::{compiler_fence, AtomicU8, Ordering};

    use crate::sync::fence;

    const UNKNOWN: u8 = 0;
    const REGISTERED: u8 = 1;
    const UNAVAILABLE: u8 = 2;

    /// Whether this process registered for global expedited membarriers.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Registers this process (once; later calls are a load). Call before the first use of
    /// [`light`] by any handle of this process, i.e. when a handle attaches.
    pub(crate) fn register() {
        // Relaxed: the flag only says whether our own registration already happened; the
        // system call itself orders nothing we rely on beyond "registered before use".
        if STATE.load(Ordering::Relaxed) != UNKNOWN {
            return;
        }
        use rustix::thread::{membarrier, MembarrierCommand};
        let state = if std::env::var_os("SHM_ARENA_SYMMETRIC_FENCES").is_none()
            && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
        {
            REGISTERED
        } else {
            UNAVAILABLE
        };
        STATE.store(state, Ordering::Relaxed);
    }

    /// The fast side's half of a handshake.
    #[inline]
    pub(crate) fn light() {
        // Relaxed: set once, before any handle of this process exists.
        if STATE.load(Ordering::Relaxed) == REGISTERED {
            // Keeps the compiler from moving the progress store after the waiter-count load;
            // the CPU's reordering is undone by the sleeper's membarrier.
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The sleeping side's half: after raising the waiter count, before re-checking.
    pub(crate) fn heavy() {
        use rustix::thread::{membarrier, MembarrierCommand};
        // Our own full fence first (the syscall is one too, but say so explicitly), then the
        // barrier on every registered process's running threads.
        fence(Ordering::SeqCst);
        let _ = membarrier(MembarrierCommand::GlobalExpedited);
    }

    /// Whether this process's fast paths skip the CPU fence (for reports and tests).
    pub(crate) fn asymmetric() -> bool {
        STATE.load(Ordering::Relaxed) == REGISTERED
    }
}

#[cfg(any(shm_arena_loom, miri))]
mod imp {
    use crate::sync::{fence, Ordering};

    pub(crate) fn register() {}

    pub(crate) fn light() {
        fence(Ordering::SeqCst);
    }

    pub(crate) fn heavy() {
        fence(Ordering::SeqCst);
    }

    pub(crate) fn asymmetric() -> bool {
        false
    }
}

pub(crate) use imp::{asymmetric, heavy, light, register};
