//! Futex words in shared memory: the one sleep/wake protocol of the crate.
//!
//! A futex word here is a `u32` whose bit 0 ([`ARMED`]) says that a sleeper may be waiting on
//! it; the other bits count wake rounds. The side that made progress calls [`disarm`] after a
//! SeqCst fence and makes the wake syscall only when it returns true, so the uncontended hot
//! path stays in user space, and the waker that wakes clears the bit (and bumps the count) in
//! one CAS, so a round of sleepers costs one syscall, not one per unit until they run. (With a
//! count of sleepers instead, a writer whose reader slept on the same CPU paid a wake syscall
//! on every commit until the reader ran again.)
//!
//! The sleeping side [`arm`]s the word with an RMW, issues a SeqCst fence, re-checks its
//! condition, and sleeps only while the word still holds the armed value it wrote. The fence
//! pairs with the waker's fence as a Dekker pair: either the waker's load in [`disarm`] sees
//! the arming (or a later value), or the re-check sees the progress. A later value is either
//! still armed (the waker wakes) or was disarmed by another waker, which also bumped the
//! count, so the kernel does not let us sleep on the old value: we re-check, and that second
//! arming falls after the waker's load, so its re-check sees the progress.
//!
//! The ring's signals (`wait.rs`) and the worker's in-flight limit use this protocol; the
//! syscalls ([`wait`], [`wake`]) are process-shared (not `FUTEX_PRIVATE`): the words live in
//! memory shared between processes.

use crate::sync::{AtomicU32, Ordering};

/// Bit 0 of a futex word: a sleeper may be waiting on it.
pub(crate) const ARMED: u32 = 1;

/// Sleeper side: marks the word armed and returns the value to sleep on. Follow it with a
/// SeqCst fence, then re-check the condition before sleeping.
#[inline]
pub(crate) fn arm(word: &AtomicU32) -> u32 {
    // Relaxed RMW: ordered by the caller's SeqCst fence. An RMW even when the word is already
    // armed: the Dekker argument needs a store of ours before the fence.
    word.fetch_or(ARMED, Ordering::Relaxed) | ARMED
}

/// Waker side, after its progress and a SeqCst fence: whether sleepers must be woken (the
/// word was armed and this call disarmed it). Make the wake syscall when it returns true.
#[inline]
pub(crate) fn disarm(word: &AtomicU32) -> bool {
    // Relaxed: the caller's fence orders it (see the module docs).
    let seen = word.load(Ordering::Relaxed);
    // Disarm and bump in one step. A failed CAS means another waker did it and woke everyone
    // armed before it; a sleeper armed after it re-checks after our fence (module docs).
    // Relaxed: the progress reaches the woken through their own Acquire re-checks, ordered by
    // the fences; the word only decides whether and when they sleep.
    seen & ARMED != 0
        && word
            .compare_exchange(
                seen,
                seen.wrapping_add(2) & !ARMED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// Sleeps while `word == expected`, at most `timeout`. Spurious returns are fine: every caller
/// re-checks its condition.
#[cfg(not(shm_arena_loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    #[cfg(miri)]
    {
        let _ = (word, expected, timeout);
        std::thread::yield_now();
    }
    #[cfg(not(miri))]
    {
        use rustix::thread::futex;
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        // Not FUTEX_PRIVATE: the word lives in memory shared between processes.
        // Errors are EAGAIN (word changed), ETIMEDOUT and EINTR: all mean "re-check".
        let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
    }
}

/// Wakes every sleeper on `word`, in any process.
#[cfg(not(shm_arena_loom))]
pub(crate) fn wake(word: &AtomicU32) {
    #[cfg(not(miri))]
    {
        let _ = rustix::thread::futex::wake(
            word,
            rustix::thread::futex::Flags::empty(),
            i32::MAX as u32,
        );
    }
    #[cfg(miri)]
    let _ = word;
}

#[cfg(all(test, not(shm_arena_loom), not(miri)))]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sync::Ordering;

    /// One wake reaches every sleeper (broadcast subscribers sleep on one word): a count the
    /// kernel reads as negative (`u32::MAX`) wakes only one of them.
    #[test]
    fn wake_wakes_every_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                let word = Arc::clone(&word);
                std::thread::spawn(move || {
                    let started = Instant::now();
                    // One futex sleep, not a loop: a sleeper the wake misses sleeps 10 s.
                    wait(&word, 0, Some(Duration::from_secs(10)));
                    started.elapsed()
                })
            })
            .collect();
        // Long enough for every thread to be asleep in the kernel.
        std::thread::sleep(Duration::from_millis(300));
        word.store(1, Ordering::SeqCst);
        wake(&word);
        for sleeper in sleepers {
            let slept = sleeper.join().unwrap();
            assert!(
                slept < Duration::from_secs(5),
                "a sleeper slept {slept:?}: not woken"
            );
        }
    }
}
