//! How a value lies in a unit, the glue between the codec and the ring: every offloaded leaf
//! (a byte string or typed array at or above the offload threshold) is a blob of its own, in
//! the order the serializer meets them, and the envelope (everything else, with markers
//! pointing at those blobs) is the unit's **last** blob.
//!
//! The ring's handles call in here: `Writer::send` with its unit as the [`BlobSink`],
//! `Unit::decode` with the unit's blobs as a [`UnitSource`].

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::codec::{self, BlobSink, BlobSource, EncodeOptions};
use crate::{Error, Result};

/// A unit's blobs, as the decoder needs them.
pub(crate) trait UnitSource<'u> {
    /// Number of blobs in the unit, the envelope included.
    fn blob_count(&self) -> u64;
    /// Blob `index`, validated against the unit.
    fn blob(&self, index: usize) -> Result<&'u [u8]>;
}

/// The blobs of a unit other than its envelope, as markers name them.
struct Leaves<'s, S>(&'s S);

impl<'u, S: UnitSource<'u>> BlobSource<'u> for Leaves<'_, S> {
    fn blob(&self, index: u32) -> Result<&'u [u8]> {
        // The last blob is the envelope, not a leaf.
        if u64::from(index) + 1 >= self.0.blob_count() {
            return Err(Error::Codec(format!(
                "marker names blob {index}, but the unit has {} leaf blobs",
                self.0.blob_count().saturating_sub(1)
            )));
        }
        self.0.blob(index as usize)
    }
}

/// Decodes the value a unit holds, borrowing from the unit's blobs.
///
/// # Errors
/// [`Error::Codec`] if the unit has no envelope or the envelope is malformed or does not match
/// `T`; the unit's own errors for blobs outside it.
pub(crate) fn decode_unit<'u, T: Deserialize<'u>>(unit: &impl UnitSource<'u>) -> Result<T> {
    let Some(last) = unit.blob_count().checked_sub(1) else {
        return Err(Error::Codec(
            "the unit has no blobs, so no envelope: it was not written by send".into(),
        ));
    };
    let envelope = unit.blob(last as usize)?;
    codec::decode(envelope, &Leaves(unit))
}

thread_local! {
    /// The envelope being built, kept per thread so that sending allocates nothing once it has
    /// grown to the largest envelope (and the ring's writer keeps no codec state).
    static ENVELOPE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `value` into `unit`: its leaves as blobs, straight from the value (the one copy),
/// then the envelope as the last blob. The caller commits the unit.
///
/// # Errors
/// [`Error::Codec`] if serialization fails; the sink's errors (no room, unit too large).
pub(crate) fn encode_unit<T: Serialize + ?Sized>(
    value: &T,
    options: &EncodeOptions,
    unit: &mut impl BlobSink,
) -> Result<()> {
    ENVELOPE.with(|cell| {
        // A nested send from inside a Serialize impl would find the buffer taken: give it a
        // buffer of its own rather than panic.
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let envelope = match borrowed.as_deref_mut() {
            Ok(buffer) => buffer,
            Err(_) => &mut own,
        };
        envelope.clear();
        codec::encode(value, options, envelope, unit)?;
        unit.put_blob(envelope)?;
        Ok(())
    })
}
