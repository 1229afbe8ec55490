//! Naming worker functions so a re-executed program can find them.

use std::collections::BTreeMap;
use std::fmt::{self, Display};

use serde::de::DeserializeOwned;

use super::child::{self, Entry, EntryError, Init, Output, Workers};
use super::protocol::WORKER_ENV;
use crate::codec::{self, NoBlobs};

/// The worker functions (and initializers) a program can run as a worker process.
///
/// Build it first thing in `main` and call [`run_if_worker`](Self::run_if_worker): in a normal
/// process that returns at once; in a process started by
/// [`iterate_in_subprocess`](super::iterate_in_subprocess) it runs the named worker and exits.
/// Registering in `main` (rather than in some lazily built global) makes sure that the parent
/// and the re-executed child agree on the names: they run the same code.
///
/// ```no_run
/// use shm_arena::worker::{Output, Registry};
///
/// fn count(up_to: u32, out: &mut Output) -> shm_arena::Result<()> {
///     for i in 0..up_to {
///         out.send(&i)?;
///     }
///     Ok(())
/// }
///
/// fn seed_rng() -> Result<(), String> {
///     Ok(())
/// }
///
/// fn main() {
///     Registry::new()
///         .register("count", count)
///         .register_initializer("seed_rng", seed_rng)
///         .run_if_worker();
///     // ... the parent's program ...
/// }
/// ```
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    initializers: BTreeMap<String, Init>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers the worker function `f` under `name`.
    ///
    /// In the worker process `f` gets the arguments the parent passed to
    /// [`iterate_in_subprocess`](super::iterate_in_subprocess), decoded as `A`, and an
    /// [`Output`] to send items with. Returning `Err(e)` ends the parent's iteration with
    /// [`WorkerError::Failed`](super::WorkerError::Failed) carrying `e.to_string()`, after the
    /// items sent before.
    ///
    /// # Panics
    /// If `name` is registered already (a programming error, caught on the first run).
    pub fn register<A, E, F>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        E: Display,
        F: Fn(A, &mut Output) -> Result<(), E> + 'static,
    {
        let entry: Entry = Box::new(move |bytes, output| {
            let args: A = codec::decode(bytes, &NoBlobs).map_err(|e| {
                EntryError::Args(format!(
                    "arguments do not decode as {}: {e}",
                    std::any::type_name::<A>()
                ))
            })?;
            f(args, output).map_err(|e| EntryError::Returned(e.to_string()))
        });
        let old = self.entries.insert(name.to_owned(), entry);
        assert!(old.is_none(), "worker {name:?} is registered twice");
        self
    }

    /// Registers an initializer: a function a worker runs once before its worker function when
    /// [`Options::initializer`](super::Options::initializer) names it (to seed generators,
    /// open files, set up logging).
    ///
    /// An `Err` or a panic stops the worker before it sends anything; the parent gets
    /// [`WorkerError::Setup`](super::WorkerError::Setup) or
    /// [`WorkerError::Panicked`](super::WorkerError::Panicked).
    ///
    /// # Panics
    /// If `name` is registered already as an initializer.
    pub fn register_initializer<E, F>(mut self, name: &str, f: F) -> Self
    where
        E: Display,
        F: Fn() -> Result<(), E> + 'static,
    {
        let init: Init = Box::new(move || f().map_err(|e| e.to_string()));
        let old = self.initializers.insert(name.to_owned(), init);
        assert!(old.is_none(), "initializer {name:?} is registered twice");
        self
    }

    /// The registered worker names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// Runs the worker this process was started for, then exits; returns at once in any
    /// other process.
    ///
    /// A process is a worker when [`WORKER_ENV`](super::WORKER_ENV) is set (by
    /// [`iterate_in_subprocess`](super::iterate_in_subprocess)). The worker attaches to the
    /// inherited arena as its writer, runs the initializer (if any) and the worker function,
    /// reports the outcome to the parent through a status pipe, closes the ring, and calls
    /// [`std::process::exit`] (so nothing after this call runs in a worker). A panic is caught
    /// and reported with its message; a worker whose parent closed the ring and whose function
    /// then failed counts as stopped, not failed.
    pub fn run_if_worker(&self) {
        if std::env::var_os(WORKER_ENV).is_none() {
            return;
        }
        let code = child::run(self);
        std::process::exit(code);
    }
}

impl Workers for Registry {
    fn worker(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    fn initializer(&self, name: &str) -> Option<&Init> {
        self.initializers.get(name)
    }

    fn worker_names(&self) -> Vec<&str> {
        self.names().collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("workers", &self.entries.keys().collect::<Vec<_>>())
            .field(
                "initializers",
                &self.initializers.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}
