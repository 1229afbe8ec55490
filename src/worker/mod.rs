//! Worker processes: a named function runs in a child process and produces units into an arena;
//! the parent iterates them. The Rust counterpart of SPDL's `iterate_in_subprocess`.
//!
//! Closures cannot cross a process boundary, so workers are *registered by name* in `main`,
//! before anything else runs. The parent starts the worker by re-executing its own executable
//! (spawn-style: exec, never a fork of a possibly multi-threaded parent that then keeps running
//! its copy of the parent's state); in that process [`Registry::run_if_worker`] sees the
//! worker's environment, runs the named function and exits.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use shm_arena::codec::Array;
//! use shm_arena::worker::{iterate_in_subprocess, Options, Output, Registry};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Frame<'a> {
//!     id: u64,
//!     #[serde(borrow)]
//!     pixels: Array<'a, f32>,
//! }
//!
//! /// Runs in the worker process: sends `count` frames.
//! fn frames(count: u64, out: &mut Output) -> shm_arena::Result<()> {
//!     let pixels = vec![0.5f32; 256 * 256];
//!     for id in 0..count {
//!         out.send(&Frame { id, pixels: Array::from_slice(&pixels, &[256, 256])? })?;
//!     }
//!     Ok(())
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in main: in a worker process this runs the worker and exits.
//!     Registry::new().register("frames", frames).run_if_worker();
//!
//!     for item in iterate_in_subprocess("frames", &100u64, Options::default())? {
//!         let item = item?;                       // a worker failure ends the loop here
//!         let frame: Frame = item.decode()?;      // borrows from shared memory
//!         assert_eq!(frame.pixels.shape(), &[256, 256]);
//!     }                                           // dropping the item frees its space
//!     Ok(())
//! }
//! ```
//!
//! (`no_run`: a doc test cannot register itself as a worker; `tests/worker.rs` runs all of this
//! for real, and `examples/pipeline.rs` is a complete program.)
//!
//! Behind the `worker` cargo feature, on by default (`default-features = false` leaves the
//! arena alone).
//!
//! # Consuming the output
//!
//! One way: iterate the [`Subprocess`] that [`iterate_in_subprocess`] returns. It yields
//! `Result<`[`Item`]`, `[`WorkerError`]`>`; an [`Item`] is an owned unit that may be held, sent
//! to another thread and decoded in place ([`Item::decode`]) or into an owned value
//! (`item?.decode::<T>()`); dropping it returns its space to the worker. [`Item::blob`] reads
//! units the worker wrote blob by blob through [`Output::writer`].
//!
//! # Errors
//!
//! [`WorkerError`] is the worker's own error type, deliberately not a variant of
//! [`crate::Error`]: most of its variants are about a worker *process* (name, pid, exit status,
//! the message it sent), which the arena knows nothing of. Arena errors the worker machinery
//! meets (creating the region, spawning, decoding) come wrapped, unchanged, in
//! [`WorkerError::Arena`], so `?` works from [`crate::Error`] into it. Inside the worker
//! process, [`Output::send`] returns plain [`crate::Error`]s.
//!
//! # What crosses the process boundary
//!
//! - The arena: a memfd region inherited by the child (no name in `/dev/shm` at any time), so
//!   nothing is left behind whichever process dies.
//! - The worker's name and the initializer's name, in environment variables.
//! - The arguments, encoded with [`crate::codec`] into an inherited, sealed memfd (no size limit
//!   as with environment variables or command lines).
//! - A status pipe: the worker writes one short message (done, the error it returned, or the
//!   panic message) before it exits, so the parent can report *why* it stopped.
//! - With [`Options::max_in_flight`], a small counter page (another memfd) the parent bumps when
//!   an item is ended and the worker waits on with a futex.
//!
//! # Failure handling
//!
//! | What happens | What the parent sees |
//! |---|---|
//! | the worker returns `Err(e)` | [`WorkerError::Failed`] with `e`'s message, after the items it sent |
//! | the worker panics | [`WorkerError::Panicked`] with the panic message and location |
//! | the worker exits without returning (for example it calls [`std::process::exit`]), whatever its status | [`WorkerError::ExitedEarly`] with the status, after the items it sent |
//! | the worker is killed by a signal | [`WorkerError::Signaled`] naming the signal, within about 100 ms of its death |
//! | the worker sends nothing for [`Options::inactivity_timeout`] | [`WorkerError::Inactive`]; the worker is stopped |
//! | the parent is killed (even SIGKILL) | the worker gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`) |
//! | the parent drops the iterator early | the ring is closed, so the worker's next send fails with [`crate::Error::Closed`] and it exits; after [`Options::stop_timeout`] it gets SIGTERM, one second later SIGKILL; it is always reaped |
//!
//! After an error the iteration is over: the next call returns `None`.

mod child;
mod error;
mod limit;
mod parent;
mod protocol;
mod registry;
mod spawn;

pub use child::Output;
pub use error::WorkerError;
pub use parent::{iterate_in_subprocess, Item, Subprocess};
pub use protocol::WORKER_ENV;
pub use registry::Registry;
pub use spawn::Options;
