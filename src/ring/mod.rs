//! The ring protocol, one concern per file, shared by both modes. No public types: the
//! handles in `writer.rs` and `reader/` drive it.
//!
//! - [`view`]: a committed unit's record, validated once, and its blobs, validated per access.
//! - [`release`]: ending units in any order; the tail moves over the ended prefix.
//! - [`claim`]: MPMC readers claiming units from any lane with a CAS.
//! - [`cursors`]: a lane's cursors as a handle attaching to it finds them.
//! - [`presence`], [`process`]: participant slots (who holds a role) and process liveness.
//! - [`participants`]: attaching writers and readers, and what a blocked handle concludes
//!   about the other role (closed, alive, dead).
//! - [`reap`]: releasing the units of a reader that died.
//!
//! Positions grow monotonically (never reset), so a record's stamp (its own start position
//! plus state bits) tells the unit of this lap from a stale one; every position, span and
//! descriptor read from shared memory is validated before use.

pub(crate) mod claim;
pub(crate) mod cursors;
pub(crate) mod participants;
pub(crate) mod presence;
pub(crate) mod process;
pub(crate) mod reap;
pub(crate) mod release;
pub(crate) mod view;
