//! Helpers shared by the loom models in `tests/`, which are built only with
//! `--cfg shm_arena_loom` (see `ci/loom.sh`). Without that cfg this crate is empty.

#[cfg(shm_arena_loom)]
pub use with_loom::*;

#[cfg(shm_arena_loom)]
mod with_loom {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set: an unbounded search of
    /// these models would not finish, so running a test by hand stays bounded too.
    pub const DEFAULT_PREEMPTIONS: usize = 2;

    /// Timeout for blocking reads. The loom store does not model timeouts (its futex waits
    /// until woken), so this only has to be longer than any real-time execution of a model:
    /// a lost wake-up shows as a loom deadlock, never as a `Timeout`.
    pub const LONG: Duration = Duration::from_secs(3600);

    /// Explores `f` exhaustively up to the preemption bound from `LOOM_MAX_PREEMPTIONS`
    /// (default [`DEFAULT_PREEMPTIONS`]) and prints how many executions that took and how long,
    /// under `name` (shown with `--nocapture`).
    pub fn model<F>(name: &str, f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        model_capped(name, usize::MAX, f);
    }

    /// [`model`] with the preemption bound capped at `cap` unless `LOOM_UNCAPPED` is set: for
    /// models whose search at the CI bound takes minutes (their full-bound runs are recorded
    /// in the model's docs; run them with `LOOM_UNCAPPED=1 ci/loom.sh`).
    pub fn model_capped<F>(name: &str, cap: usize, f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        let mut builder = loom::model::Builder::new();
        let mut bound = builder.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
        if std::env::var_os("LOOM_UNCAPPED").is_none() {
            bound = bound.min(cap);
        }
        builder.preemption_bound = Some(bound);
        // A std atomic, outside loom's view: it only counts the executions loom ran.
        let executions = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&executions);
        let counted = move || {
            counter.fetch_add(1, Ordering::Relaxed);
            f();
        };
        let started = Instant::now();
        if std::env::var_os("LOOM_LOG").is_some() {
            // Only `loom::model` installs the tracing subscriber that prints loom's log of the
            // failing execution; it takes the bound from the environment alone.
            assert!(
                std::env::var_os("LOOM_MAX_PREEMPTIONS").is_some(),
                "set LOOM_MAX_PREEMPTIONS with LOOM_LOG (an unbounded search does not finish)"
            );
            loom::model(counted);
        } else {
            builder.check(counted);
        }
        eprintln!(
            "loom model {name}: preemption bound {bound}, {} executions, {:.2?}",
            executions.load(Ordering::Relaxed),
            started.elapsed()
        );
    }

    /// The byte at `index` of the blob of unit number `unit`: distinct per unit and never the
    /// zero the ring starts with, so a read of stale, foreign or unwritten bytes is caught.
    pub fn pattern(unit: u8, index: usize) -> u8 {
        let b = (unit.wrapping_mul(53) ^ (index as u8).wrapping_mul(7)).wrapping_add(unit);
        if b == 0 {
            0xA5
        } else {
            b
        }
    }

    /// The whole blob of `len` bytes for unit number `unit`.
    pub fn blob(unit: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| pattern(unit, i)).collect()
    }

    /// Asserts that `got` is exactly the blob the writer wrote for unit number `unit`.
    pub fn check_blob(unit: u8, len: usize, got: &[u8]) {
        assert_eq!(got.len(), len, "unit {unit}: blob length");
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, pattern(unit, i), "unit {unit}: byte {i} of {len}");
        }
    }
}
